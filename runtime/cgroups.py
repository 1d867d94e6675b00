"""Linux control groups: make one, put processes in it, kill everything in it, remove it.

A cgroup holds a process and, from then on, every process it forks, whatever they do
(``setsid``, a daemon's double fork): membership is inherited and only a privileged process
can leave.  So killing the members of a cgroup kills a whole process tree that no parent link
or process group would still reach.

Both versions are handled:

- *cgroup v2* (the unified hierarchy: ``/sys/fs/cgroup`` itself, or ``/sys/fs/cgroup/unified``
  beside v1 controllers).  Tracking processes needs no controller, so a cgroup that enables
  none works wherever a directory can be made; ``cgroup.kill`` (Linux 5.14) kills the members
  at once, else they are frozen (``cgroup.freeze``, 5.2), killed and thawed.
- *cgroup v1*: the ``freezer`` hierarchy (frozen, killed, thawed: nothing forks in between),
  else ``pids`` (the members are killed until none is left).  Other v1 controllers are never
  used: moving a process in or out of them changes what it is accounted against.

Standard library only: the guardian (``gxo.runtime.guardian``) loads this file by path, in an
interpreter started without site packages.
"""

from __future__ import annotations

import os
import signal
import time

#: v1 hierarchies that can hold processes without changing their accounting, best first
V1_CONTROLLERS = ("freezer", "pids")


class CgroupError(Exception):
    """A cgroup could not be made, joined or removed; the message names the path and why."""


class Hierarchy:
    """One mounted hierarchy and this process's place in it."""

    __slots__ = ("version", "controller", "mount", "own")

    def __init__(self, version: int, controller: str | None, mount: str, own: str) -> None:
        self.version = version
        self.controller = controller  # v1: "freezer" or "pids"
        self.mount = mount  # where it is mounted
        self.own = own  # the directory of this process's cgroup in it

    def describe(self) -> str:
        return "cgroup v2" if self.version == 2 else f"cgroup v1 {self.controller}"


def hierarchies(pid: int | str = "self", v1: tuple[str, ...] = V1_CONTROLLERS) -> list[Hierarchy]:
    """The usable hierarchies, best first: v2, then v1 freezer, then v1 pids.  Empty when
    none is mounted or ``/proc`` is missing (not Linux).  ``v1`` names the v1 controllers to
    look for instead, in that order (``gxo.runtime.sandbox.limits``: memory, pids, cpu)."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
        with open(f"/proc/{pid}/mountinfo") as f:
            mounts = f.read().splitlines()
    except OSError:
        return []
    own_v2: str | None = None
    own_v1: dict[str, str] = {}
    for line in lines:
        num, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if num == "0" and controllers == "":
            own_v2 = path
        else:
            for c in controllers.split(","):
                own_v1[c] = path
    found: dict[str, Hierarchy] = {}
    for line in mounts:
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        root, mount = _unescape(fields[3]), _unescape(fields[4])
        fstype, options = tail[0], tail[2].split(",")
        if fstype == "cgroup2" and own_v2 is not None and "v2" not in found:
            own = _inside(mount, root, own_v2)
            if own is not None:
                found["v2"] = Hierarchy(2, None, mount, own)
        elif fstype == "cgroup":
            for c in v1:
                if c in options and c in own_v1 and c not in found:
                    own = _inside(mount, root, own_v1[c])
                    if own is not None:
                        found[c] = Hierarchy(1, c, mount, own)
    return [found[k] for k in ("v2", *v1) if k in found]


def _unescape(text: str) -> str:
    """mountinfo writes a space, tab, newline and backslash as an octal escape (``\\040``)."""
    if "\\" not in text:
        return text
    import re

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _inside(mount: str, root: str, path: str) -> str | None:
    """The directory of cgroup ``path`` under a hierarchy mounted at ``mount`` whose root is
    ``root`` (not ``/`` when a sub-tree is bind-mounted); None when the mount cannot reach it."""
    root = root.rstrip("/")
    if path != root and not path.startswith(root + "/"):
        return None
    rel = path[len(root):].lstrip("/")
    return os.path.join(mount, rel) if rel else mount


class Cgroup:
    """A cgroup directory of a given hierarchy version."""

    __slots__ = ("path", "version")

    def __init__(self, path: str, version: int) -> None:
        self.path = path
        self.version = version

    def __repr__(self) -> str:
        return f"Cgroup({self.path!r}, v{self.version})"

    @classmethod
    def create(cls, parent: str, name: str, version: int) -> "Cgroup":
        """Make the cgroup ``name`` under the directory ``parent``."""
        path = os.path.join(parent, name)
        try:
            os.mkdir(path)
        except OSError as exc:
            raise CgroupError(f"cannot create {path}: {exc.strerror or exc}") from None
        return cls(path, version)

    def child(self, name: str) -> "Cgroup":
        return Cgroup.create(self.path, name, self.version)

    def add(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into this cgroup."""
        try:
            _write(os.path.join(self.path, "cgroup.procs"), str(pid))
        except OSError as exc:
            raise CgroupError(f"cannot move process {pid} into {self.path}: {exc.strerror or exc}") from None

    def pids(self) -> set[int]:
        """The processes in this cgroup and the cgroups under it."""
        out: set[int] = set()
        for d in self._dirs():
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    out.update(int(x) for x in f.read().split())
            except (OSError, ValueError):
                pass
        return out

    def kill(self, timeout: float = 5.0, *, spare: int | None = None) -> bool:
        """SIGKILL every process in this cgroup and under it (but ``spare``), until none is
        left or ``timeout`` passes; True when it is empty (of all but ``spare``).

        v2 kills with ``cgroup.kill`` when there is no process to spare; otherwise the
        cgroup is frozen first (v2 ``cgroup.freeze``, v1 ``freezer.state``) when it can be, so
        no member forks between the listing and the signals; without a freezer the listing is
        signalled again until it is empty."""
        deadline = time.monotonic() + timeout
        if self.version == 2 and spare is None and os.path.exists(os.path.join(self.path, "cgroup.kill")):
            try:
                _write(os.path.join(self.path, "cgroup.kill"), "1")
            except OSError:
                pass
        while True:
            members = self.pids() - {spare}
            if not members:
                return True
            frozen = spare is None and self._freeze(True, deadline)
            for p in self.pids() - {spare}:
                try:
                    os.kill(p, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            if frozen:
                self._freeze(False, deadline)
            if time.monotonic() >= deadline:
                return not (self.pids() - {spare})
            time.sleep(0.01)

    def remove(self, timeout: float = 2.0) -> None:
        """Remove this cgroup and those under it (deepest first); they must hold no process.
        A cgroup whose last members are still exiting is busy for a moment: retried until
        ``timeout``."""
        deadline = time.monotonic() + timeout
        for d in reversed(self._dirs()):
            while True:
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if time.monotonic() >= deadline:
                        raise CgroupError(f"cannot remove {d}: {exc.strerror or exc}") from None
                    time.sleep(0.01)

    def _dirs(self) -> list[str]:
        """This cgroup's directory and those under it, parents first."""
        out = []
        for root, _dirs, _files in os.walk(self.path):
            out.append(root)
        return out

    def _freeze(self, on: bool, deadline: float) -> bool:
        """Freeze (or thaw) the cgroup and wait until it is; False when it cannot."""
        if self.version == 2:
            control, value, state = "cgroup.freeze", "1" if on else "0", None
        else:
            control, value, state = "freezer.state", "FROZEN" if on else "THAWED", "FROZEN" if on else "THAWED"
        path = os.path.join(self.path, control)
        try:
            _write(path, value)
        except OSError:
            return False
        while time.monotonic() < deadline:
            try:
                if self.version == 2:
                    with open(os.path.join(self.path, "cgroup.events")) as f:
                        done = f"frozen {value}" in f.read()
                else:
                    with open(path) as f:
                        done = f.read().strip() == state
            except OSError:
                return False
            if done:
                return True
            time.sleep(0.002)
        return not on  # frozen or not, a thaw was asked: the caller carries on


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def make_in(parent: Hierarchy | str, name: str) -> Cgroup:
    """Make cgroup ``name`` in this process's cgroup of hierarchy ``parent``, or under the
    directory ``parent`` (of a mounted hierarchy)."""
    if isinstance(parent, Hierarchy):
        return Cgroup.create(parent.own, name, parent.version)
    return Cgroup.create(parent, name, version_of(parent))


def version_of(path: str) -> int:
    """2 for a cgroup v2 directory, 1 for v1 (v2 directories have ``cgroup.controllers``)."""
    return 2 if os.path.exists(os.path.join(path, "cgroup.controllers")) else 1


def own_cgroup(version: int, pid: int | str = "self") -> Cgroup | None:
    """The cgroup ``pid`` is in, in the first usable hierarchy of ``version``."""
    for h in hierarchies(pid):
        if h.version == version:
            return Cgroup(h.own, version)
    return None


def parents() -> dict[int, int]:
    """pid -> parent pid of every process this process can see in ``/proc`` (empty without
    it): the process tree, for what no cgroup holds (``gxo.runtime.proctrack``, the guardian)."""
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
