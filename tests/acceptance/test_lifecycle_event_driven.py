"""event_driven on the real kernel: one instance per source record, own workspaces, bounded
concurrency, failures counted and never fatal."""

from __future__ import annotations

import asyncio
from pathlib import Path

from acceptance.inproc import Running


def playbook(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "pb.yaml"
    p.write_text('name: ev\nschemaVersion: "1.0.0"\nworkloads:\n' + body)
    return p


def test_one_instance_per_record_with_its_own_workspace_and_bounded_concurrency(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    records = ", ".join(f'{{n: {i}}}' for i in range(1, 9))
    pb = playbook(tmp_path, f"""\
  - name: events
    lifecycle: {{policy: run_once}}
    process: {{module: test:producer, params: {{records: [{records}]}}}}
  - name: handler
    lifecycle: {{policy: event_driven, source: events, concurrency: 2}}
    process:
      module: exec
      params:
        command: sh
        args:
          - -c
          - |
            n={{{{ .n }}}}
            touch {out}/running-$n
            echo "$(ls {out} | grep -c running-) {{{{ ._gxo.workspace.path }}}} $PWD" > {out}/seen-$n
            sleep 0.1
            rm {out}/running-$n
            [ "$n" != 3 ] || exit 3
""")

    async def main():
        r = Running(pb)
        r.start()
        report = await r.wait_ended()
        r.close()
        return r, report

    r, report = asyncio.run(asyncio.wait_for(main(), 60))
    seen = {int(p.name.split("-")[1]): p.read_text().split() for p in out.glob("seen-*")}
    assert sorted(seen) == list(range(1, 9))  # one instance per record, the failed one included
    assert max(int(v[0]) for v in seen.values()) <= 2  # never more than `concurrency` at once
    workspaces = {v[1] for v in seen.values()}
    assert len(workspaces) == 8 and all(v[1] == v[2] for v in seen.values())  # its own, and its cwd
    assert not any(Path(w).exists() for w in workspaces)  # removed after each instance
    assert report.results["handler"].status == "Completed"  # one failed instance does not end it
    failed = r.of("InstanceFailed", "handler")
    assert len(failed) == 1 and "exited with code 3" in failed[0]["error"]
    info = r.kernel.react.lc.info["handler"]
    assert (info["instances_ok"], info["instances_failed"]) == (7, 1)
