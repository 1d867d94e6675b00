"""E17: idempotent configuration with filesystem:manage, under run_once. The first pass
creates the file (changed: true), the next changes nothing (changed: false), and every
external edit (content, mode, deletion) is reverted by the next pass."""

from __future__ import annotations

import getpass
from pathlib import Path

from acceptance.harness import EXAMPLES, PLAYBOOKS, build, gxo_exec, run_tool

CONTENT = "server time.google.com iburst\nserver time.cloudflare.com iburst\n"


def test_converges_and_reverts_external_edits(work: Path) -> None:
    me = getpass.getuser()
    run = gxo_exec(build(PLAYBOOKS / "e17_idempotent_run_once.yaml", work), "--var", f"owner={me}")
    assert run.rc == 0, run.explain()
    assert set(run.statuses.values()) == {"Completed"}, run.statuses
    changed = {n: run.summary(n)["changed"] for n in
               ("enforce_1", "enforce_2", "enforce_3", "enforce_4", "enforce_5", "enforce_6")}
    assert changed == {
        "enforce_1": True,   # created
        "enforce_2": False,  # already compliant
        "enforce_3": True,   # content edit reverted
        "enforce_4": True,   # chmod reverted
        "enforce_5": True,   # deletion reverted
        "enforce_6": False,
    }
    assert run.summary("enforce_1")["state"] == "present"
    assert run.summary("enforce_1")["path"].endswith("/etc/ntp.conf")
    assert run.summary("read_back")["content"] == CONTENT
    assert run.summary("final_state")["stdout"] == f"644 {me}\n{CONTENT.rstrip()}"
    # the workloads that changed something count as changed in the recap
    plain = gxo_exec(build(PLAYBOOKS / "e17_idempotent_run_once.yaml", work, name="p.gxp"), "--var", f"owner={me}",
                     json_events=False)
    assert plain.rc == 0 and "changed=4" in plain.stdout, plain.explain()
