"""ssh:* end to end against a throwaway OpenSSH server on loopback (the session's ``sshd``
fixture, tests/sshd.py).

``gxoc build`` then ``gxo exec``: a file written in the workspace goes up over SFTP, is read by a
remote command and comes back; the key and the password come from secrets and appear nowhere in
what gxo prints; a wrong password fails with one clear line.  E28's IaC hand-off runs as it is,
with a stub Terraform that reports this server's address.  On the kernel in this process: an
``ssh:connect`` connection serves several workloads and is closed when the run ends, whether it
ends normally, with a failure or by SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

import yaml

from acceptance.harness import EXAMPLES, HttpMock, build, gxo_exec, open_fds, summary_of, write_playbook

PLAYBOOK = """\
name: ssh-e2e
schemaVersion: "1.0.0"
vars:
  port: 22
  user: root
  known_hosts: ""
  remote_dir: /tmp
workloads:
  - name: payload
    lifecycle: {policy: run_once}
    process:
      module: filesystem:write
      params: {path: payload.txt, content: "hello over sftp; $(not run)"}
  - name: upload
    lifecycle: {policy: run_once}
    needs: [payload]
    process:
      module: ssh:upload
      params:
        host: 127.0.0.1
        port: "{{ .port }}"
        user: "{{ .user }}"
        private_key: '{{ secret "GXO_TEST_SSH_KEY" }}'
        known_hosts: "{{ .known_hosts }}"
        src: payload.txt
        dest: "{{ .remote_dir }}/up.txt"
        mode: "0640"
    register: up
  - name: remote_cat
    lifecycle: {policy: run_once}
    process:
      module: ssh:command
      params:
        host: 127.0.0.1
        port: "{{ .port }}"
        user: "{{ .user }}"
        private_key: '{{ secret "GXO_TEST_SSH_KEY" }}'
        known_hosts: "{{ .known_hosts }}"
        args: [cat, "{{ .up.dest }}"]
    register: cat
  - name: download
    lifecycle: {policy: run_once}
    needs: [remote_cat]
    process:
      module: ssh:download
      params:
        host: 127.0.0.1
        port: "{{ .port }}"
        user: "{{ .user }}"
        private_key: '{{ secret "GXO_TEST_SSH_KEY" }}'
        known_hosts: "{{ .known_hosts }}"
        src: "{{ .up.dest }}"
        dest: back.txt
    register: back
  - name: read_back
    lifecycle: {policy: run_once}
    needs: [download]
    process:
      module: filesystem:read
      params: {path: back.txt}
    register: copy
  - name: wrong_password
    lifecycle: {policy: run_once}
    ignore_errors: true
    process:
      module: ssh:command
      params:
        host: 127.0.0.1
        port: "{{ .port }}"
        user: "{{ .user }}"
        password: '{{ secret "GXO_TEST_SSH_PASSWORD" }}'
        known_hosts: "{{ .known_hosts }}"
        command: "true"
"""

PASSWORD = "wrong-pw-4f1c9a7e"


def test_upload_command_download_and_a_refused_password(sshd, work: Path) -> None:
    pb = work / "ssh.yaml"
    pb.write_text(PLAYBOOK)
    plan = build(pb, work)
    remote_dir = sshd.folder / "e2e"
    remote_dir.mkdir(exist_ok=True)
    run = gxo_exec(plan, "--var", f"port={sshd.port}", "--var", f"user={sshd.user}",
                   "--var", f"known_hosts={sshd.known_hosts.strip()}",
                   "--var", f"remote_dir={remote_dir}",
                   env={"GXO_TEST_SSH_KEY": sshd.key, "GXO_TEST_SSH_PASSWORD": PASSWORD})
    assert run.rc == 0, run.explain()
    assert "asyncssh" not in run.stderr and "Warning" not in run.stderr, run.stderr
    assert run.statuses == {"payload": "Completed", "upload": "Completed",
                            "remote_cat": "Completed", "download": "Completed",
                            "read_back": "Completed", "wrong_password": "Failed"}
    content = "hello over sftp; $(not run)"
    assert run.summary("upload") == {"bytes_written": len(content),
                                     "dest": f"{remote_dir}/up.txt", "mode": "0640"}
    assert (remote_dir / "up.txt").read_text() == content
    assert run.summary("remote_cat") == {"stdout": content, "stderr": "", "exit_code": 0}
    back = run.summary("download")
    assert (back["bytes"], back["mode"]) == (len(content), "0640")
    assert run.summary("read_back") == {"content": content}
    end = run.end("wrong_password")
    assert end["ignored"] is True
    assert end["error"].endswith(f"ssh {sshd.user}@127.0.0.1:{sshd.port}: authentication "
                                 f"failed for user {sshd.user}: the server refused the "
                                 f"password"), end
    # the credentials appear nowhere: not the password, not a line of the key
    assert PASSWORD.encode() not in run.raw
    for line in sshd.key.splitlines()[1:-1]:
        assert line.encode() not in run.raw


# --------------------------------------------------------------------------- ssh:connect in a run

CONNECT = """\
  - name: connect
    lifecycle: {{policy: run_once}}
    process:
      module: ssh:connect
      params:
        host: 127.0.0.1
        port: {port}
        user: {user}
        private_key: '{{{{ secret "GXO_TEST_SSH_KEY" }}}}'
        known_hosts: '{known_hosts}'
    register: c
"""

COMMAND = """\
  - name: {name}
    lifecycle: {{policy: run_once}}
    process:
      module: ssh:command
      params: {{connection_id: "{{{{ .c.connection_id }}}}", command: '{command}'}}
"""


def _connect(sshd) -> str:
    return CONNECT.format(port=sshd.port, user=sshd.user, known_hosts=sshd.known_hosts.strip())


def _in_process(pb: Path, then) -> None:
    """Run ``pb`` on the kernel in this process; ``then(running)`` drives it to its end."""
    from acceptance.inproc import Running

    async def main() -> None:
        before = open_fds()
        running = Running(pb)
        try:
            running.start()
            await then(running)
        finally:
            running.close()
        assert running.kernel.react.conns is not None
        assert running.kernel.react.conns.conns == {}
        extra = {fd: t for fd, t in open_fds().items() if before.get(fd) != t}
        assert not extra, extra  # no socket left: the connections were closed, not dropped

    asyncio.run(main())


def _summary(running, name: str) -> dict:
    return running.of("ModuleExecutionEnd", name)[-1]["summary"]


def test_one_connection_serves_three_workloads_and_ends_with_the_run(sshd, work: Path,
                                                                      monkeypatch) -> None:
    monkeypatch.setenv("GXO_TEST_SSH_KEY", sshd.key)
    body = _connect(sshd) + "".join(
        COMMAND.format(name=f"cmd{i}", command="echo $SSH_CONNECTION") for i in range(3))
    pb = write_playbook(work, body)

    async def then(running) -> None:
        from acceptance.inproc import wait_for

        report = await running.wait_ended()
        assert report is not None
        statuses = {n: running.status(n) for n in ("connect", "cmd0", "cmd1", "cmd2")}
        assert set(statuses.values()) == {"Completed"}, running.events[-5:]
        local = _summary(running, "connect")["local_addr"].rpartition(":")[2]
        for i in range(3):  # the server saw one client port: one TCP connection
            assert _summary(running, f"cmd{i}")["stdout"].split()[1] == local
        assert running.kernel.react.conns.opened == 1
        await wait_for(lambda: not sshd.clients())  # nobody closed it but the run's end

    _in_process(pb, then)


def test_a_failed_run_closes_its_ssh_connection(sshd, work: Path, monkeypatch) -> None:
    monkeypatch.setenv("GXO_TEST_SSH_KEY", sshd.key)
    pb = write_playbook(work, _connect(sshd) + COMMAND.format(name="fails", command="exit 3"))

    async def then(running) -> None:
        from acceptance.inproc import wait_for

        await running.wait_ended()
        assert running.status("connect") == "Completed"
        assert running.status("fails") == "Failed"
        error = running.of("WorkloadEnd", "fails")[0]["error"]
        assert f"ssh {sshd.user}@127.0.0.1:{sshd.port}: command 'exit 3' exited with code 3" \
            in error
        await wait_for(lambda: not sshd.clients())

    _in_process(pb, then)


def test_sigterm_closes_the_ssh_connection(sshd, work: Path, monkeypatch) -> None:
    monkeypatch.setenv("GXO_TEST_SSH_KEY", sshd.key)
    pb = write_playbook(work, _connect(sshd) + """\
  - name: server
    lifecycle: {policy: supervise, restart: always}
    process: {module: exec, params: {command: sleep, args: ["60"]}}
""")

    async def then(running) -> None:
        from acceptance.inproc import wait_for

        await wait_for(lambda: running.status("connect") == "Completed" and sshd.clients())
        await running.stop("run interrupted by SIGTERM")
        assert running.kernel.react.conns.closed  # closed by the run's end, remembered why
        assert set(running.kernel.react.conns.closed.values()) == {"the run has ended"}
        await wait_for(lambda: not sshd.clients())

    _in_process(pb, then)


def test_sigterm_during_a_remote_command_closes_the_connection(sshd, work: Path,
                                                               monkeypatch) -> None:
    """SIGTERM while a run_once workload still runs: the run is cancelled (exit 143), and its
    shutdown closes the connection the command was using."""
    monkeypatch.setenv("GXO_TEST_SSH_KEY", sshd.key)
    started = work / "started"
    pb = write_playbook(work, _connect(sshd) + COMMAND.format(
        name="long", command=f"echo $$ > {started}.tmp; mv {started}.tmp {started}; exec sleep 60"))

    async def then(running) -> None:
        from acceptance.inproc import wait_for

        await wait_for(started.exists)  # the remote command runs (the server is this machine)
        running.task.cancel()  # what gxo does on SIGTERM when a run_once workload still runs
        try:
            await running.task
        except asyncio.CancelledError:
            pass
        assert running.kernel.react.conns.conns == {}
        await wait_for(lambda: not sshd.clients())

    try:
        _in_process(pb, then)
    finally:  # the remote sleep outlives its session (no terminal, no hangup): end it
        if started.exists():
            try:
                os.kill(int(started.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


# --------------------------------------------------------------------------- E28

E28 = EXAMPLES / "e28_etl_iac.yaml"

#: A Terraform CLI stand-in: `-chdir=DIR init|apply|output -json`, in the cloned folder.
TERRAFORM = """\
#!/bin/sh
set -e
dir=${1#-chdir=}
test -f "$dir/main.tf"
case "$2" in
  init) echo "Terraform has been successfully initialized!" ;;
  apply) echo "Apply complete! Resources: 1 added, 0 changed, 0 destroyed." ;;
  output) printf '{"web_ip": {"sensitive": false, "type": "string", "value": "127.0.0.1"}}\\n' ;;
  *) exit 2 ;;
esac
"""


def test_e28_iac_hand_off_over_ssh_connect(sshd, work: Path) -> None:
    """E28's IaC part as it is (the scheduled ETL part keeps a run going and has its own
    tests): the Terraform code is cloned from a local repository, a stub Terraform reports
    this server as web_ip, ssh:connect logs in with the key from ${DEPLOY_SSH_KEY}, ssh:command
    runs over its connection_id, and the health check reaches a local HTTP server."""
    repo = work / "infra-repo"
    repo.mkdir()
    (repo / "main.tf").write_text('output "web_ip" { value = "127.0.0.1" }\n')
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    subprocess.run([*git, "add", "main.tf"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "infra"], check=True)
    bin_dir = work / "bin"
    bin_dir.mkdir()
    (bin_dir / "terraform").write_text(TERRAFORM)
    (bin_dir / "terraform").chmod(0o755)

    doc = yaml.safe_load(E28.read_text())
    doc["workloads"] = [w for w in doc["workloads"] if w["name"] != "customers_ingest"]
    by_name = {w["name"]: w for w in doc["workloads"]}
    connect = by_name["connect_web_host"]["process"]["params"]
    assert connect == {"host": "{{ (.tf.stdout | fromJson).web_ip.value }}", "user": "deploy",
                       "private_key": "${DEPLOY_SSH_KEY}"}
    connect.update(port=sshd.port, user=sshd.user, known_hosts=sshd.known_hosts.strip())
    check = by_name["check_nginx"]["process"]["params"]
    check["command"] = "echo active"  # no nginx here: the remote command is the host's
    with HttpMock([200]) as web:
        health = by_name["health_check"]["process"]["params"]
        health["url"] = health["url"].replace("}}/healthz", "}}:" + web.url.rpartition(":")[2]
                                              + "/healthz")
        pb = work / "e28.yaml"
        pb.write_text(yaml.safe_dump(doc, sort_keys=False))
        plan = build(pb, work)
        run = gxo_exec(plan, env={"INFRA_REPO": str(repo), "DEPLOY_SSH_KEY": sshd.key,
                                  "PATH": f"{bin_dir}:{os.environ['PATH']}"})
        calls = [(method, path) for _, method, path, _ in web.calls]
    assert run.rc == 0, run.explain()
    assert "asyncssh" not in run.stderr and "Warning" not in run.stderr, run.stderr
    assert set(run.statuses.values()) == {"Completed"}, run.statuses
    opened = summary_of(run, "connect_web_host")
    assert opened["host"] == "127.0.0.1" and opened["port"] == sshd.port
    assert opened["connection_id"].startswith("conn-")
    assert summary_of(run, "check_nginx") == {"stdout": "active", "stderr": "", "exit_code": 0}
    assert calls == [("GET", "/healthz")]
    for line in sshd.key.splitlines()[1:-1]:
        assert line.encode() not in run.raw
    assert json.loads(summary_of(run, "terraform_outputs")["stdout"])["web_ip"]["value"] == \
        "127.0.0.1"
