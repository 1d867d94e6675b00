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

Killing sends SIGTERM, then SIGKILL to what is left after the grace period.

All this needs ``gxo`` alive.  For the moment it is not (SIGKILL, the OOM killer), the
``gxo`` command starts a *guardian* at its first ``exec`` (``gxo.runtime.guardian``; started
ahead when the plan has ``exec`` workloads), and where it can it makes a *cgroup per run*
(``gxo.runtime.cgroups``: v2, else v1 freezer, else v1 pids; ``GXO_RUN_CGROUP`` picks the
parent or turns it off) and moves itself into it, so every process the run starts is in it
whatever it does.  When ``gxo`` is gone the guardian kills everything in the cgroup and
removes it.  Without a cgroup ``gxo`` tells the guardian each exec child, and the guardian
kills those process groups and the descendants of their leaders: a process that had left both
(an orphaned daemon) survives a SIGKILL of ``gxo`` there.
"""

from __future__ import annotations

import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36

#: pids of the exec children this process started and has not reaped yet
_children: set[int] = set()
_subreaper = False
#: this process's own children that are not workloads' processes (the guardian)
_own: set[int] = set()


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


# -- the guardian and the run's cgroup ---------------------------------------------------------

#: what ``GXO_RUN_CGROUP`` may say: unset or ``auto`` (a cgroup under gxo's own), ``off``, or the
#: absolute path of a cgroup directory to make the run's cgroup under (a delegated sub-tree)
RUN_CGROUP_ENV = "GXO_RUN_CGROUP"
#: a stale run cgroup (its gxo is gone, nothing is in it) younger than this is left alone: the
#: pid in its name may be another pid namespace's live gxo that is still setting it up
STALE_CGROUP_AGE_S = 60.0


class _Guard:
    """The guardian of this ``gxo`` process and the run's cgroup, set up once (``prepare``)."""

    def __init__(self) -> None:
        self.enabled = False  # the gxo command only (``enable_guard``), never a caller's process
        self.future = None  # concurrent.futures.Future of the setup, once started
        self.fd = -1  # the write end of the guardian's input
        self.tell_pids = False  # without a cgroup the guardian is told each exec child
        self.cgroup = None  # the run's cgroup
        self.leaf = None  # the cgroup in it that holds gxo and what it starts
        self.note = ""  # how processes end with the run here (``gxo run -v``)

    def tell(self, line: str) -> None:
        if self.fd < 0:
            return
        try:
            os.write(self.fd, (line + "\n").encode())
        except (BlockingIOError, BrokenPipeError, OSError):
            pass  # a guardian that is gone or does not read cannot be helped from here


_guard = _Guard()


def enable_guard() -> None:
    """Let this process (the ``gxo`` command) start a guardian and a run cgroup at its first
    ``exec`` (Linux)."""
    _guard.enabled = sys.platform.startswith("linux")


def prepare() -> None:
    """Start setting up the guardian and the run's cgroup, in a thread (moving a process into
    a cgroup waits for an RCU grace period, about 15 ms), if not started yet."""
    if not _guard.enabled or _guard.future is not None:
        return
    import concurrent.futures
    import threading

    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_running_or_notify_cancel()  # an exec cancelled while it waits cannot cancel it
    _guard.future = future

    def work() -> None:
        try:
            _setup()
        except Exception as exc:  # noqa: BLE001 - never fails an exec: it runs unguarded
            _guard.note = f"processes: not guarded ({type(exc).__name__}: {exc})"
        future.set_result(None)

    threading.Thread(target=work, name="gxo-guard-setup", daemon=True).start()


def prepare_for(plan) -> None:
    """``prepare`` when ``plan`` has ``exec`` workloads: called as soon as a plan is accepted, so
    the setup overlaps what comes before the first workload (opening the run store, ...)."""
    if _guard.enabled and _guard.future is None and any(w.module == "exec" for w in plan.workloads):
        prepare()


def guard_ready() -> bool:
    """True when an exec may start its child at once (set up, or nothing to set up)."""
    return not _guard.enabled or (_guard.future is not None and _guard.future.done())


async def guarded() -> None:
    """Wait until the guardian and the run's cgroup are set up (starting it if need be)."""
    import asyncio

    prepare()
    if _guard.future is not None:
        await asyncio.wrap_future(_guard.future)


def guard_note() -> str:
    """How the processes of this run end when gxo is killed, for ``-v``; empty when no exec
    ran (nothing was set up)."""
    return _guard.note


def run_cgroup():
    """The run's cgroup (a ``gxo.runtime.cgroups.Cgroup``) once set up, else None.  It holds no
    process itself: ``gxo`` and what it starts are in its ``gxo`` cgroup, so cgroups with limits
    can be made beside that one (cgroup v2 allows controllers only where no process is)."""
    return _guard.cgroup


def _setup() -> None:
    from gxo.runtime import cgroups

    r, w = os.pipe()
    try:
        guardian = os.path.join(os.path.dirname(os.path.abspath(__file__)), "guardian.py")
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            pid = os.posix_spawn(sys.executable, [sys.executable, "-I", "-S", guardian, str(os.getpid())],
                                 {}, setsid=True,  # it needs no environment (nor the run's secrets)
                                 file_actions=[(os.POSIX_SPAWN_DUP2, r, 0), (os.POSIX_SPAWN_DUP2, devnull, 1),
                                               (os.POSIX_SPAWN_DUP2, devnull, 2)])
        finally:
            os.close(devnull)
    except (OSError, NotImplementedError) as exc:
        os.close(w)
        why = getattr(exc, "strerror", None) or exc
        _guard.note = (f"processes: no guardian (cannot start {sys.executable}: {why}): "
                       "a process the run started outlives a gxo that is killed (SIGKILL)")
        return
    finally:
        os.close(r)
    _own.add(pid)
    os.set_blocking(w, False)
    _guard.fd = w

    choice = os.environ.get(RUN_CGROUP_ENV, "").strip()
    parents: list[tuple[str, int, str]] = []
    problems: list[str] = []
    if choice == "off":
        problems.append(f"{RUN_CGROUP_ENV}=off")
    elif choice not in ("", "auto"):
        if not os.path.isabs(choice) or not os.path.exists(os.path.join(choice, "cgroup.procs")):
            problems.append(f"{RUN_CGROUP_ENV}={choice} is not a cgroup directory")
        else:
            version = cgroups.version_of(choice)
            parents.append((choice, version, f"cgroup v{version}"))
    else:
        parents = [(h.own, h.version, h.describe()) for h in cgroups.hierarchies()]
        if not parents:
            problems.append("no cgroup hierarchy is mounted")
    name = f"gxo-{os.getpid()}-{os.urandom(3).hex()}"
    for parent, version, label in parents:
        _remove_stale(parent)
        try:
            run = cgroups.Cgroup.create(parent, name, version)
        except cgroups.CgroupError as exc:
            problems.append(str(exc))
            continue
        try:
            leaf = run.child("gxo")
            _guard.tell(f"cgroup {version} {run.path}")
            leaf.add(os.getpid())
        except cgroups.CgroupError as exc:
            problems.append(str(exc))
            _guard.tell("nocgroup")
            try:
                run.remove(timeout=0)
            except cgroups.CgroupError:
                pass
            continue
        _guard.cgroup, _guard.leaf = run, leaf
        _guard.note = (f"processes: run cgroup {run.path} ({label}): every process the run starts ends "
                       "with it, also when gxo is killed (SIGKILL)")
        return
    _guard.tell_pids = True
    _guard.note = (f"processes: no run cgroup ({'; '.join(problems)}): when gxo is killed (SIGKILL), its "
                   "guardian kills the exec process groups and the descendants of their leaders; a process "
                   "that had left both (an orphaned daemon) lives on")


def _remove_stale(parent: str) -> None:
    """Remove the empty run cgroups under ``parent`` whose gxo is gone (it was killed before
    its guardian could know of them)."""
    import time

    from gxo.runtime import cgroups

    try:
        names = [n for n in os.listdir(parent) if n.startswith("gxo-")]
    except OSError:
        return
    for n in names:
        pid = n.split("-")[1]
        if not pid.isdigit() or os.path.exists(f"/proc/{pid}"):
            continue
        path = os.path.join(parent, n)
        try:
            if time.time() - os.stat(path).st_mtime < STALE_CGROUP_AGE_S:
                continue
            cgroups.Cgroup(path, 0).remove(timeout=0)
        except (OSError, cgroups.CgroupError):
            pass


def started(pid: int) -> None:
    _children.add(pid)
    if _guard.tell_pids:
        _guard.tell(f"+{pid}")


def reaped(pid: int) -> None:
    if pid in _children:
        _children.discard(pid)
        if _guard.tell_pids:
            _guard.tell(f"-{pid}")


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
    from gxo.runtime.cgroups import parents

    out = parents()
    _scan = (time.monotonic(), out)
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
        orphans = {p for p, pp in parents.items()
                   if pp == me and p not in _children and p not in _own and p != pid}
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
    members: set[int] = set()
    if _guard.leaf is not None:  # everything the run started is in its cgroup: nothing else is left
        members = _guard.leaf.pids() - {os.getpid()} - _own
        if not members:
            return
    _scan = (-1.0, {})  # a fresh scan: what was adopted a moment ago counts
    pids = leftovers(None, adopted=True) | members
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
    if _guard.leaf is not None:
        members = _guard.leaf.pids() - {os.getpid()} - _own
    signal_all(pids | members | leftovers(None, adopted=True), signal.SIGKILL)
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
