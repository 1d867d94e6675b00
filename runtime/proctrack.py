"""Every process a workload starts dies with it, even one that left its process group.

``exec`` starts each child in a new session and kills that process group when the workload
ends or is cancelled.  A descendant can leave the group (``setsid``, a daemon's double fork) and
keep running, holding the child's output pipe.  Two mechanisms catch it (Linux; elsewhere this
module does nothing and only the group is killed):

- *Descendants*: while the child lives, its descendants are found by walking the parent links
  of ``/proc/<pid>/stat``; they are killed with the group.
- *Subreaper*: the ``gxo`` command marks itself a child subreaper
  (``prctl(PR_SET_CHILD_SUBREAPER)``), so a descendant whose parent exits is re-parented to
  ``gxo`` instead of init.  Such an adopted process belongs to the exec that was running when it
  was adopted: when that exec is cancelled while it runs alone, it is killed with it;
  otherwise (several execs at once, or an exec that ended normally: finding adopted processes
  costs a scan of /proc) it is killed when the run ends.  ``gxo`` reaps what it kills.

A per-exec cgroup would attribute processes exactly, but needs a delegated, writable cgroup v2
subtree, which an unprivileged ``gxo`` rarely has; the process tree needs no privilege.
Killing sends SIGTERM, then SIGKILL to what is left after the grace period.
"""

from __future__ import annotations

import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36

#: pids of the exec children this process started and has not reaped yet
_children: set[int] = set()
_subreaper = False


def become_subreaper() -> bool:
    """Mark this process a child subreaper (Linux); True when it is one."""
    global _subreaper
    if _subreaper:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        _subreaper = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        _subreaper = False
    return _subreaper


def started(pid: int) -> None:
    _children.add(pid)


def reaped(pid: int) -> None:
    _children.discard(pid)


#: exec children being started: forked, not yet in ``_children`` (asyncio connects their pipes
#: first); while one is, a child of gxo outside ``_children`` may be it, not an adopted orphan
_spawning = 0


def spawning(delta: int) -> None:
    global _spawning
    _spawning += delta


def running_count() -> int:
    return len(_children) + _spawning


#: how long one scan of /proc serves further lookups: stopping 200 supervised programs at once
#: would otherwise scan /proc 200 times (9 ms each here); a descendant born within this time is
#: still caught, by the sweep at the end of the run
SCAN_TTL_S = 0.05
_scan: tuple[float, dict[int, int]] = (-1.0, {})


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process we can see (empty without /proc); one scan serves
    the lookups of the next ``SCAN_TTL_S`` seconds."""
    global _scan
    import time

    now = time.monotonic()
    if now - _scan[0] < SCAN_TTL_S:
        return _scan[1]
    out = _scan_parents()
    _scan = (time.monotonic(), out)
    return out


def _scan_parents() -> dict[int, int]:
    out: dict[int, int] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue  # gone, or not ours to read
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        rest = data[data.rfind(b")") + 2:].split()
        if len(rest) > 1:
            out[int(name)] = int(rest[1])
    return out


def _tree(roots: set[int], parents: dict[int, int]) -> set[int]:
    kids: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        kids.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for kid in kids.get(todo.pop(), ()):
            if kid not in found:
                found.add(kid)
                todo.append(kid)
    return found


def leftovers(pid: int | None, *, adopted: bool) -> set[int]:
    """The live descendants of ``pid`` (an exec child), and with ``adopted`` the processes this
    subreaper adopted (its children that are not exec children) with their descendants."""
    adopted = adopted and _subreaper
    if pid is None and not adopted:
        return set()
    parents = _parents()
    if not parents:
        return set()
    roots: set[int] = set()
    if pid is not None and pid in parents:
        roots.add(pid)
    found = _tree(roots, parents)
    if adopted:
        me = os.getpid()
        orphans = {p for p, pp in parents.items() if pp == me and p not in _children and p != pid}
        found |= orphans | _tree(orphans, parents)
    found.discard(os.getpid())
    return found


def signal_all(pids: set[int], sig: int) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


def reap(pids: set[int]) -> None:
    """Collect the exit status of those of ``pids`` that are our children (adopted ones): a
    process we killed is not left a zombie.  Never touches the exec children asyncio waits for."""
    me = os.getpid()
    for p in pids - _children:
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                data = f.read()
            if int(data[data.rfind(b")") + 2:].split()[1]) != me:
                continue
            os.waitpid(p, os.WNOHANG)
        except (OSError, ValueError, IndexError, ChildProcessError):
            pass


def sweep(grace: float = 0.5) -> None:
    """At the end of a run: stop every process the run's workloads left behind (adopted by this
    subreaper), SIGTERM then SIGKILL, and reap them.  Blocking; cheap when nothing is left."""
    import time

    global _scan
    if not _subreaper:
        return
    _scan = (-1.0, {})  # a fresh scan: what was adopted a moment ago counts
    pids = leftovers(None, adopted=True)
    if not pids:
        return
    signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        reap(pids)
        if not any(os.path.exists(f"/proc/{p}") and not _zombie(p) for p in pids):
            break
        time.sleep(0.02)
    _scan = (-1.0, {})
    signal_all(pids | leftovers(None, adopted=True), signal.SIGKILL)
    for _ in range(50):
        reap(pids)
        if not any(os.path.exists(f"/proc/{p}") for p in pids if _is_child(p)):
            break
        time.sleep(0.01)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return True
    return data[data.rfind(b")") + 2:][:1] == b"Z"


def _is_child(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rfind(b")") + 2:].split()[1]) == os.getpid()
    except (OSError, ValueError, IndexError):
        return False
