"""E9: a parallel loop of filesystem:manage. Five directories with mode 0700 in the workspace,
iterations concurrent but never more than ``parallel`` at once, the registered value a list of
five summaries in item order, and a second pass that changes nothing."""

from __future__ import annotations

import getpass
from pathlib import Path

from acceptance.harness import EXAMPLES, PLAYBOOKS, build, gxo_exec, run_tool

USERS = ["alice", "bob", "carol", "dave", "eve"]


def _max_overlap(run, name: str) -> int:
    """The most iterations of ``name`` between ModuleExecutionStart and End at one time."""
    live = peak = 0
    for e in run.events:
        if e.get("workload") != name:
            continue
        if e["type"] == "ModuleExecutionStart":
            live += 1
            peak = max(peak, live)
        elif e["type"] == "ModuleExecutionEnd":
            live -= 1
    return peak


def test_five_dirs_in_parallel_then_no_change(work: Path) -> None:
    me = getpass.getuser()
    run = gxo_exec(build(PLAYBOOKS / "e09_parallel_loop.yaml", work), "--var", f"owner={me}")
    assert run.rc == 0, run.explain()
    assert set(run.statuses.values()) == {"Completed"}, run.statuses

    first, again = run.summaries("create_user_dirs"), run.summaries("create_user_dirs_again")
    assert [s["changed"] for s in first] == [True] * 5
    assert [s["changed"] for s in again] == [False] * 5
    assert [Path(s["path"]).name for s in first] == USERS  # item order
    assert all(s["state"] == "directory" for s in first + again)

    listing = run.summary("list_dirs")["stdout_lines"]
    assert listing == [f"{u} 700 {me} directory" for u in USERS]

    assert _max_overlap(run, "create_user_dirs") <= 5
    peak = _max_overlap(run, "probe")
    assert 2 <= peak <= 5, peak
    assert len(run.of("ModuleExecutionStart", "probe")) == 10


def test_registered_loop_value_is_a_five_element_list(work: Path) -> None:
    pb = work / "reg.yaml"
    pb.write_text((PLAYBOOKS / "e09_parallel_loop.yaml").read_text().split("  - name: create_user_dirs_again")[0] + """
  - name: check_register
    lifecycle: {policy: run_once}
    process:
      module: test:assert
      params:
        assertions:
          - {actual: "{{ len .user_dirs }}", equal_to: 5}
          - {actual: "{{ (index .user_dirs 4).changed }}", equal_to: true}
          - {actual: "{{ (index .user_dirs 0).path }}", matches_regex: "/home/alice$"}
""")
    run = gxo_exec(build(pb, work), "--var", f"owner={getpass.getuser()}")
    assert run.rc == 0, run.explain()
    assert run.statuses == {"create_user_dirs": "Completed", "check_register": "Completed"}
    assert run.summary("check_register") == {"assertions_passed": 3}


def test_recap_counts_the_changed_pass(work: Path) -> None:
    run = gxo_exec(build(PLAYBOOKS / "e09_parallel_loop.yaml", work), "--var", f"owner={getpass.getuser()}",
                   json_events=False)
    assert run.rc == 0, run.explain()
    assert "ok=4  changed=1  failed=0" in run.stdout


def test_the_example_checks() -> None:
    res = run_tool("gxoc", "check", EXAMPLES / "e09_parallel_loop.yaml")
    assert res.rc == 0, res.explain()
