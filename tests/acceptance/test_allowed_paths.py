"""Paths outside the workspace, on purpose: ``workload_policy.allowed_paths``,
``policy.allowed_paths`` and ``--allow-path`` let path params reach real files (configuration
management writes /etc/ntp.conf); everything else stays refused.  ``exec.command`` resolves like
a shell's: ``./app`` in the working directory, a script beside the playbook through
``{{ ._gxo.plan_dir }}``."""

from __future__ import annotations

from pathlib import Path

from acceptance.harness import gxo_run, summary_of


def _write(work: Path, text: str) -> Path:
    path = work / "pb.yaml"
    path.write_text(text)
    return path


MANAGE = """\
name: config
schemaVersion: "1.0.0"
vars:
  root: /nonexistent
{policy}
workloads:
  - name: write
    lifecycle: {{policy: run_once}}
    process:
      module: filesystem:write
      params: {{path: "{{{{ .root }}}}/ntp.conf", content: "server pool.ntp.org\\n"}}
    register: written
  - name: manage
    lifecycle: {{policy: run_once}}
    needs: [write]
    process:
      module: filesystem:manage
      params: {{path: "{{{{ .root }}}}/ntp.conf", state: present, mode: "0640"}}
  - name: read
    lifecycle: {{policy: run_once}}
    needs: [manage]
    process:
      module: filesystem:read
      params: {{path: "{{{{ .root }}}}/ntp.conf"}}
    register: read_back
"""


def test_write_read_manage_under_allowed_paths(work: Path) -> None:
    root = work / "etc"
    root.mkdir()
    pb = _write(work, MANAGE.format(policy=f"workload_policy: {{allowed_paths: [{root}]}}"))
    run = gxo_run(pb, "--var", f"root={root}")
    assert run.rc == 0, run.explain()
    assert (root / "ntp.conf").read_text() == "server pool.ntp.org\n"
    assert (root / "ntp.conf").stat().st_mode & 0o777 == 0o640
    assert summary_of(run, "read")["content"] == "server pool.ntp.org\n"


def test_allow_path_flag_and_refusals(work: Path, tmp_path: Path) -> None:
    root = work / "etc"
    root.mkdir()
    pb = _write(work, MANAGE.format(policy=""))
    refused = gxo_run(pb, "--var", f"root={root}")
    assert refused.rc == 1 and not (root / "ntp.conf").exists(), refused.explain()
    assert "outside the workspace" in refused.end("write")["error"]
    ok = gxo_run(pb, "--var", f"root={root}", "--allow-path", str(root))
    assert ok.rc == 0 and (root / "ntp.conf").exists(), ok.explain()
    # a symlink inside the allowed root that leads out of it is refused
    (tmp_path / "elsewhere").mkdir()
    link = root / "link"
    link.symlink_to(tmp_path / "elsewhere")
    out = gxo_run(pb, "--var", f"root={link}", "--allow-path", str(root))
    assert out.rc == 1 and "outside the workspace and the allowed paths" in out.end("write")["error"], out.explain()
    assert list((tmp_path / "elsewhere").iterdir()) == []
    bad = gxo_run(pb, "--allow-path", "relative/dir")
    assert bad.rc == 2 and "not an absolute directory" in bad.stderr


def test_relative_escape_refused_without_allowed_root(work: Path) -> None:
    pb = _write(work, """\
name: escape
schemaVersion: "1.0.0"
workloads:
  - name: write
    lifecycle: {policy: run_once}
    process:
      module: filesystem:write
      params: {path: "../../escaped.txt", content: x}
""")
    run = gxo_run(pb)
    assert run.rc == 1 and "outside the workspace" in run.end("write")["error"], run.explain()


def test_exec_runs_a_binary_built_in_the_workspace_and_a_script_beside_the_playbook(work: Path) -> None:
    script = work / "deploy.sh"
    script.write_text("#!/bin/sh\necho deployed \"$1\"\n")
    script.chmod(0o755)
    pb = _write(work, """\
name: build-and-run
schemaVersion: "1.0.0"
workloads:
  - name: make_hello
    lifecycle: {policy: run_once}
    process:
      module: filesystem:write
      params: {path: bin/hello, content: "#!/bin/sh\\necho hello from $(pwd)\\n", mode: "0755"}
  - name: hello
    lifecycle: {policy: run_once}
    needs: [make_hello]
    process:
      module: exec
      params: {command: ./bin/hello}
    register: hello
  - name: hello_in_dir
    lifecycle: {policy: run_once}
    needs: [make_hello]
    process:
      module: exec
      params: {command: ./hello, working_dir: bin}
    register: hello_in_dir
  - name: deploy
    lifecycle: {policy: run_once}
    process:
      module: exec
      params: {command: "{{ ._gxo.plan_dir }}/deploy.sh", args: [now]}
    register: deployed
""")
    run = gxo_run(pb)
    assert run.rc == 0, run.explain()
    assert summary_of(run, "hello")["stdout"].startswith("hello from /")
    assert summary_of(run, "hello_in_dir")["stdout"].endswith("/bin")
    assert summary_of(run, "deploy")["stdout"] == "deployed now"
