"""``security_context.resources``: cgroup limits of an exec child (memory, CPU, processes).

Each limit goes into a cgroup made for the child, which the launcher joins before it execs the
program (``gxo-sandbox-exec --cgroup DIR``, once per directory of :attr:`Limits.join`):

- ``memory_bytes`` (memory): v2 ``memory.max``, ``memory.swap.max`` = 0 and
  ``memory.oom.group`` = 1 (an OOM kill ends every process of the child); v1
  ``memory.limit_in_bytes`` and ``memory.memsw.limit_in_bytes`` (each where it exists);
- ``pids_max`` (pids): ``pids.max`` on both;
- ``cpu_quota_us``, ``cpu_period_us`` (cpu; the period defaults to 100000 with a quota): v2
  ``cpu.max`` = "quota period"; v1 ``cpu.cfs_quota_us`` and ``cpu.cfs_period_us``;
- ``cpu_weight`` (cpu): v2 ``cpu.weight``; v1 ``cpu.shares`` = weight * 1024 / 100 (as systemd).

A controller is taken from cgroup v2 where the v2 parent delegates it (it is in the parent's
``cgroup.subtree_control``, or the parent is the run's cgroup, which holds no process, and the
controller is in its ``cgroup.controllers``: it is then enabled there), else from a mounted
cgroup v1 hierarchy of that controller.  The v2 parent is the run's cgroup
(``gxo.runtime.proctrack.run_cgroup``: the limit cgroup goes beside its ``gxo`` leaf, so the run
still holds the child) or, without one, this process's own v2 cgroup; a v1 limit cgroup goes
under this process's own cgroup of that hierarchy.  A cgroup is named
``gxo-<gxo pid>-<label>-<random>``.

What a child ran into is read from the event counters: v2 ``memory.events`` ``oom_kill``, v1
``memory.oom_control`` ``oom_kill`` (``memory.failcnt`` on kernels without it: the limit was
reached, maybe without a kill), and ``pids.events`` ``max`` (a fork refused) on both.

Every directory made is told to the guardian (``limit <version> <path>``; ``-limit <path>``
once removed): when ``gxo`` is killed the guardian kills the members and removes them.
Standard library only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from gxo.runtime import cgroups

#: the keys of ``security_context.resources`` and the controller each needs
CONTROLLER_OF = {
    "memory_bytes": "memory",
    "pids_max": "pids",
    "cpu_quota_us": "cpu",
    "cpu_period_us": "cpu",
    "cpu_weight": "cpu",
}
#: controllers in the order they are described
CONTROLLERS = ("memory", "pids", "cpu")
DEFAULT_CPU_PERIOD_US = 100_000
#: systemd's conversion of a cgroup v2 cpu.weight to v1 cpu.shares, and the kernel's bounds
CPU_WEIGHT_DEFAULT, CPU_SHARES_DEFAULT, CPU_SHARES_MIN, CPU_SHARES_MAX = 100, 1024, 2, 262144


class LimitError(Exception):
    """A limit cannot be given: the message names what is missing and the fix."""


def shares_of(weight: int) -> int:
    """cgroup v1 ``cpu.shares`` for a v2 ``cpu.weight`` (systemd's conversion)."""
    return max(CPU_SHARES_MIN, min(CPU_SHARES_MAX, weight * CPU_SHARES_DEFAULT // CPU_WEIGHT_DEFAULT))


def size_text(n: int) -> str:
    """``67108864`` -> ``64 MiB``; a size that is no whole KiB stays in bytes."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


class _Place:
    """Where one controller's limits go: a cgroup made under ``parent`` of hierarchy ``mount``."""

    __slots__ = ("controller", "version", "mount", "parent", "enable")

    def __init__(self, controller: str, version: int, mount: str, parent: str, enable: bool = False) -> None:
        self.controller = controller
        self.version = version
        self.mount = mount
        self.parent = parent
        self.enable = enable  # v2: write +controller to the parent's cgroup.subtree_control first

    def label(self) -> str:
        return f"cgroup v{self.version} {self.controller}"


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _counter(text: str, name: str) -> int:
    """The value of ``name`` in a flat-keyed cgroup file (``oom_kill 3``)."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            try:
                return int(value.strip())
            except ValueError:
                return 0
    return 0


def _v2_parent(found: list[cgroups.Hierarchy]) -> tuple[str, bool] | None:
    """(the v2 directory limit cgroups are made under, whether it is the run's cgroup: one
    without process, where controllers may be enabled), or None without cgroup v2."""
    from gxo.runtime import proctrack

    run = proctrack.run_cgroup()
    if run is not None and run.version == 2:
        return run.path, True
    v2 = next((h for h in found if h.version == 2), None)
    return (v2.own, False) if v2 is not None else None


def _plan(controllers: set[str], *, cpu_quota: bool,
          cpu_weight: bool) -> tuple[dict[str, _Place], list[tuple[str, str]]]:
    """Where each controller's limits go, and (controller, why) for each this machine cannot give."""
    places: dict[str, _Place] = {}
    problems: list[tuple[str, str]] = []
    found = cgroups.hierarchies(v1=CONTROLLERS)
    v2 = _v2_parent(found)
    why_v2 = "no cgroup v2 is mounted"
    if v2 is not None:
        parent, is_run = v2
        enabled = set(_read(os.path.join(parent, "cgroup.subtree_control")).split())
        available = set(_read(os.path.join(parent, "cgroup.controllers")).split()) if is_run else set()
        if not os.access(parent, os.W_OK | os.X_OK):
            why_v2 = f"cgroup v2 {parent} is not writable"
        else:
            why_v2 = (f"cgroup v2 {parent} does not have it in cgroup.{'controllers' if is_run else 'subtree_control'}")
            for c in controllers:
                if c in enabled:
                    places[c] = _Place(c, 2, "v2", parent)
                elif c in available:
                    places[c] = _Place(c, 2, "v2", parent, enable=True)
    for c in sorted(controllers - set(places), key=CONTROLLERS.index):
        h = next((h for h in found if h.version == 1 and h.controller == c), None)
        if h is None:
            problems.append((c, f"{why_v2}, and no cgroup v1 {c} hierarchy is mounted"))
            continue
        missing = [f for f, needed in (("memory.limit_in_bytes", c == "memory"),
                                       ("cpu.cfs_quota_us", c == "cpu" and cpu_quota),
                                       ("cpu.shares", c == "cpu" and cpu_weight))
                   if needed and not os.path.exists(os.path.join(h.own, f))]
        if not os.access(h.own, os.W_OK | os.X_OK):
            problems.append((c, f"{why_v2}, and cgroup v1 {c} {h.own} is not writable (not root?)"))
        elif missing:
            problems.append((c, f"{why_v2}, and cgroup v1 {c} {h.own} has no {', '.join(missing)} (kernel support)"))
        else:
            places[c] = _Place(c, 1, h.mount, h.own)
    return places, problems


def _check(resources: Mapping[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for k, v in resources.items():
        if v is None:
            continue
        if k not in CONTROLLER_OF:
            raise LimitError(f"security_context.resources.{k} is not a limit gxo knows "
                             f"(known: {', '.join(CONTROLLER_OF)})")
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise LimitError(f"security_context.resources.{k} must be a positive integer, got {v!r}")
        out[k] = v
    return out


def _plan_for(res: Mapping[str, int]) -> tuple[dict[str, _Place], list[tuple[str, str]]]:
    """``_plan`` for the checked limits ``res``."""
    return _plan({CONTROLLER_OF[k] for k in res}, cpu_quota="cpu_quota_us" in res or "cpu_period_us" in res,
                 cpu_weight="cpu_weight" in res)


def refusals(resources: Mapping[str, int]) -> list[str]:
    """What this machine cannot give of ``resources``, one phrase per controller (naming the
    keys that need it); ``[]`` when all can be given."""
    try:
        res = _check(resources)
    except LimitError as exc:
        return [str(exc)]
    if not res:
        return []
    _places, problems = _plan_for(res)
    return [_phrase(res, c, why) for c, why in problems]


def _phrase(res: Mapping[str, int], controller: str, why: str) -> str:
    keys = " and ".join(k for k in CONTROLLER_OF if k in res and CONTROLLER_OF[k] == controller)
    return f"resources.{keys} needs the {controller} controller: {why}"


def _safe_label(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", label).strip("_.")[:40] or "workload"


class Limits:
    """The limit cgroups of one child (see the module's docstring); :meth:`close` on every path."""

    def __init__(self, resources: dict[str, int]) -> None:
        self.resources = resources
        self.join: tuple[str, ...] = ()
        self._made: list[cgroups.Cgroup] = []  # directories made, told to the guardian
        self._by: dict[str, tuple[cgroups.Cgroup, _Place]] = {}  # controller -> its cgroup
        self._hit: str | None = None  # the first limit reached, kept past close()

    # -- making ----------------------------------------------------------------------------

    @classmethod
    def make(cls, resources: Mapping[str, int], label: str) -> "Limits":
        """Make the cgroup(s) and write the limits; raises :class:`LimitError` (after removing
        whatever it made)."""
        res = _check(resources)
        if "cpu_quota_us" in res and "cpu_period_us" not in res:
            res["cpu_period_us"] = DEFAULT_CPU_PERIOD_US
        self = cls(res)
        if not res:
            return self
        places, problems = _plan_for(res)
        if problems:
            raise LimitError(
                f"cannot apply security_context.resources here: {'; '.join(_phrase(res, c, w) for c, w in problems)}. "
                "Fix: run gxo where "
                "the controller can be used (root with the cgroup v1 hierarchy mounted, or a cgroup v2 parent "
                "that delegates it in cgroup.subtree_control), or remove those keys")
        name = f"gxo-{os.getpid()}-{_safe_label(label)}-{os.urandom(3).hex()}"
        groups: dict[tuple[int, str, str], list[_Place]] = {}
        for c in CONTROLLERS:
            if c in places:
                p = places[c]
                groups.setdefault((p.version, p.mount, p.parent), []).append(p)
        try:
            for (version, _mount, parent), ps in groups.items():
                self._make_one(version, parent, name, ps)
        except BaseException as exc:
            left = self.close()
            if isinstance(exc, LimitError):
                if left:
                    raise LimitError(f"{exc} (and: {left})") from None
                raise
            raise
        self.join = tuple(cg.path for cg in self._made)
        return self

    def _make_one(self, version: int, parent: str, name: str, places: list[_Place]) -> None:
        from gxo.runtime import proctrack

        if "\n" in parent:
            raise LimitError(f"cannot use the cgroup {parent!r}: its path holds a newline")
        for p in places:
            if p.enable:  # the run's cgroup holds no process: it may enable controllers
                try:
                    cgroups._write(os.path.join(parent, "cgroup.subtree_control"), f"+{p.controller}")
                except OSError as exc:
                    raise LimitError(f"cannot enable the {p.controller} controller in {parent}/cgroup.subtree_control: "
                                     f"{exc.strerror or exc}") from None
        proctrack._remove_stale(parent)
        try:
            cg = cgroups.Cgroup.create(parent, name, version)
        except cgroups.CgroupError as exc:
            raise LimitError(f"{exc} (security_context.resources needs a cgroup it may create: run gxo as root, "
                             "or in a delegated cgroup v2 sub-tree)") from None
        self._made.append(cg)
        proctrack._guard.tell(f"limit {version} {cg.path}")
        for p in places:
            self._by[p.controller] = (cg, p)
            for file, value in self._files(p):
                path = os.path.join(cg.path, file)
                if file in ("memory.swap.max", "memory.memsw.limit_in_bytes", "memory.oom.group") \
                        and not os.path.exists(path):
                    continue  # no swap accounting: nothing to limit; memory.oom.group is Linux >= 4.19
                try:
                    cgroups._write(path, value)
                except OSError as exc:
                    raise LimitError(f"cannot set {path} to {value}: {exc.strerror or exc}") from None

    def _files(self, p: _Place) -> list[tuple[str, str]]:
        r = self.resources
        out: list[tuple[str, str]] = []
        if p.controller == "memory":
            n = str(r["memory_bytes"])
            # v2: an OOM kill takes the whole cgroup (memory.oom.group), as systemd's
            # OOMPolicy=stop: no half of a workload left running without the process it lost
            out = ([("memory.max", n), ("memory.swap.max", "0"), ("memory.oom.group", "1")] if p.version == 2
                   else [("memory.limit_in_bytes", n), ("memory.memsw.limit_in_bytes", n)])
        elif p.controller == "pids":
            out = [("pids.max", str(r["pids_max"]))]
        elif p.controller == "cpu":
            quota, period = r.get("cpu_quota_us"), r.get("cpu_period_us")
            if p.version == 2:
                if period is not None:
                    out.append(("cpu.max", f"{quota if quota is not None else 'max'} {period}"))
                if "cpu_weight" in r:
                    out.append(("cpu.weight", str(r["cpu_weight"])))
            else:
                if period is not None:
                    out.append(("cpu.cfs_period_us", str(period)))
                if quota is not None:
                    out.append(("cpu.cfs_quota_us", str(quota)))
                if "cpu_weight" in r:
                    out.append(("cpu.shares", str(shares_of(r["cpu_weight"]))))
        return out

    # -- what was made ---------------------------------------------------------------------

    def _where(self, controller: str) -> str:
        p = self._by[controller][1]
        return p.label()

    def describe(self) -> str:
        """``memory 64 MiB (cgroup v1 memory), pids 20 (cgroup v1 pids), cpu 50000/100000 us (cgroup v1 cpu)``."""
        r = self.resources
        parts: list[str] = []
        if "memory_bytes" in r:
            parts.append(f"memory {size_text(r['memory_bytes'])} ({self._where('memory')})")
        if "pids_max" in r:
            parts.append(f"pids {r['pids_max']} ({self._where('pids')})")
        if "cpu_period_us" in r:
            parts.append(f"cpu {r.get('cpu_quota_us', 'max')}/{r['cpu_period_us']} us ({self._where('cpu')})")
        if "cpu_weight" in r:
            w = r["cpu_weight"]
            shares = f", cpu.shares {shares_of(w)}" if self._by["cpu"][1].version == 1 else ""
            parts.append(f"cpu weight {w} ({self._where('cpu')}{shares})")
        return ", ".join(parts)

    def applied(self) -> dict:
        """The limits as data: the keys of ``resources`` given (``cpu_period_us`` with its
        default when a quota is), and ``cgroups``: controller -> ``"v1"`` / ``"v2"``."""
        out: dict = {k: self.resources[k] for k in CONTROLLER_OF if k in self.resources}
        out["cgroups"] = {c: f"v{self._by[c][1].version}" for c in CONTROLLERS if c in self._by}
        return out

    def hit(self) -> str | None:
        """A limit reached so far, in words (``memory limit 64 MiB exceeded (OOM kill)``,
        ``pids limit 20 reached``), or None.  Kept once seen: valid after :meth:`close`
        (which reads the counters one last time)."""
        if self._hit is None:
            self._hit = self._read_hit()
        return self._hit

    def _read_hit(self) -> str | None:
        if "memory" in self._by:
            cg, p = self._by["memory"]
            limit = size_text(self.resources["memory_bytes"])
            if p.version == 2:
                if _counter(_read(os.path.join(cg.path, "memory.events")), "oom_kill") > 0:
                    return f"memory limit {limit} exceeded (OOM kill)"
            else:
                control = _read(os.path.join(cg.path, "memory.oom_control"))
                if "oom_kill " in control:
                    if _counter(control, "oom_kill") > 0:
                        return f"memory limit {limit} exceeded (OOM kill)"
                elif _read(os.path.join(cg.path, "memory.failcnt")).strip() not in ("", "0"):
                    return f"memory limit {limit} reached"
        if "pids" in self._by:
            cg, _p = self._by["pids"]
            if _counter(_read(os.path.join(cg.path, "pids.events")), "max") > 0:
                return f"pids limit {self.resources['pids_max']} reached"
        return None

    async def watch(self, interval: float = 0.1) -> str:
        """The reason, as soon as the pids limit is reached or an OOM kill happens (the event
        counters polled every ``interval`` s); never returns otherwise: cancel it."""
        import asyncio

        if "memory" not in self._by and "pids" not in self._by:
            await asyncio.get_running_loop().create_future()  # nothing to watch (cpu limits only)
        while True:
            reason = self.hit()
            if reason is not None:
                return reason
            await asyncio.sleep(interval)

    # -- ending ----------------------------------------------------------------------------

    def pids(self) -> set[int]:
        out: set[int] = set()
        for cg in self._made:
            out |= cg.pids()
        return out

    def kill(self) -> None:
        """SIGKILL every process in the limit cgroups (until none is left, 5 s at most each)."""
        for cg in self._made:
            cg.kill()

    def close(self) -> str:
        """Kill what is left in the limit cgroups and remove every directory made; idempotent,
        never raises.  Returns what could not be done ("" when all went well); a directory that
        could not be removed stays with the guardian, which retries when gxo ends."""
        from gxo.runtime import proctrack

        problems: list[str] = []
        left: list[cgroups.Cgroup] = []
        if self._made:
            self.hit()  # the counters go with the directories
        for cg in self._made:
            try:
                if not cg.kill():
                    problems.append(f"processes are left in {cg.path}: {sorted(cg.pids())}")
                cg.remove()
            except (OSError, cgroups.CgroupError) as exc:
                problems.append(str(exc))
                left.append(cg)
                continue
            proctrack._guard.tell(f"-limit {cg.path}")
        self._made = left
        return "; ".join(problems)
