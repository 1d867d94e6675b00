"""The guardian of a ``gxo`` run: when ``gxo`` is gone, however it ended (SIGKILL included),
kill what the run started and remove the run's cgroup.

``gxo`` starts it at its first ``exec`` (``gxo.runtime.proctrack``) as
``python -I -S guardian.py <gxo pid>``, in a session of its own, with the read end of a pipe as
standard input; ``gxo`` holds the write end and never passes it on.  The guardian learns of
``gxo``'s end by the end of that input: the kernel closes the pipe when the process is gone,
whichever of its threads started the guardian (``PR_SET_PDEATHSIG`` would fire when that
thread ends).  ``gxo`` writes one line per fact:

- ``cgroup <version> <path>``: the run's cgroup, which holds ``gxo`` and everything it starts;
- ``nocgroup``: that cgroup could not be joined after all (it is removed);
- ``+<pid>`` / ``-<pid>``: an ``exec`` child started / its process group is gone (told only
  without a cgroup);
- ``limit <version> <path>`` / ``-limit <path>``: a cgroup holding an exec child's resource
  limits (``gxo.runtime.sandbox.limits``) was made / was removed.

At the end of its input the guardian waits for ``gxo`` to be gone (it is re-parented), then
SIGKILLs the members of each limit cgroup left and removes it, then every process in the run's
cgroup, and removes that; without one, it SIGKILLs the process
groups it was told about and the live descendants of their leaders.  It prints nothing.
Standard library only: it runs without site packages, and loads ``cgroups.py`` beside it.
"""

from __future__ import annotations

import os
import signal
import sys
import time

#: how long the guardian waits for ``gxo`` to be gone after its input ends (normally at once)
PARENT_EXIT_WAIT_S = 10.0


def main(argv: list[str]) -> int:
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    cgroups = _load_cgroups()

    parent = int(argv[1])
    cgroup = None
    groups: set[int] = set()
    limits: dict[str, object] = {}  # path -> Cgroup
    buf = b""
    while True:
        try:
            data = os.read(0, 65536)
        except InterruptedError:
            continue
        except OSError:
            break
        if not data:
            break
        buf += data
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            if line.startswith("cgroup "):
                _, version, path = line.split(" ", 2)
                cgroup = cgroups.Cgroup(path, int(version))
            elif line.startswith("limit "):
                _, version, path = line.split(" ", 2)
                limits[path] = cgroups.Cgroup(path, int(version))
            elif line.startswith("-limit "):
                limits.pop(line[len("-limit "):], None)
            elif line == "nocgroup":
                cgroup = None
            elif line[:1] == "+" and line[1:].isdigit():
                groups.add(int(line[1:]))
            elif line[:1] == "-" and line[1:].isdigit():
                groups.discard(int(line[1:]))
    deadline = time.monotonic() + PARENT_EXIT_WAIT_S
    while os.getppid() == parent and time.monotonic() < deadline:
        time.sleep(0.005)
    spare = parent if os.getppid() == parent else None  # still there: never kill it
    if groups:
        _kill_groups(groups, spare, cgroups.parents)
    status = 0
    for limit in [*limits.values(), *([cgroup] if cgroup is not None else [])]:
        try:
            limit.kill(spare=spare)
            if spare is None:
                limit.remove()
        except (OSError, cgroups.CgroupError):
            status = 1
    return status


def _load_cgroups():
    """``cgroups.py`` beside this file, by path: there are no site packages here, and putting
    this folder on ``sys.path`` would let its modules shadow the standard library's."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "gxo_guardian_cgroups", os.path.join(os.path.dirname(os.path.abspath(__file__)), "cgroups.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _kill_groups(groups: set[int], spare: int | None, parents) -> None:
    """SIGKILL the process groups led by ``groups`` and the live descendants of their leaders
    (those that left the group: ``setsid``), twice (a fork between the scan and the signal)."""
    for _ in range(2):
        targets = _descendants(groups, parents()) - {spare, os.getpid()}
        for pgid in groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for pid in targets:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _descendants(roots: set[int], parents: dict[int, int]) -> set[int]:
    """``roots`` still alive and all their descendants, from the process tree ``parents``."""
    kids: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        kids.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [r for r in roots if os.path.exists(f"/proc/{r}")]
    found.update(todo)
    while todo:
        for kid in kids.get(todo.pop(), ()):
            if kid not in found:
                found.add(kid)
                todo.append(kid)
    return found


if __name__ == "__main__":
    sys.exit(main(sys.argv))
