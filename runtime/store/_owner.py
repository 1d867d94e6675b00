"""Who holds a run: an owner string per open store, and whether that owner is still alive.

A run that has no end is *running* while the store that began it is open in a live process and
*interrupted* otherwise.  The owner string is ``host:pid:start:token``: ``start`` is the
process's start time (``/proc/<pid>/stat``), so a recycled pid is not mistaken for the owner;
``token`` names one open store, so a store closed without ending its run (a stopped
``gxo exec``) leaves an interrupted run even while its process lives on.  A run owned by
another host counts as interrupted: a state directory is local to one machine.
"""

from __future__ import annotations

import os

#: the owner strings of the stores open in this process
_LIVE: set[str] = set()
_HOST = os.uname().nodename


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot, or "" where /proc is missing."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return ""
    fields = stat[stat.rfind(b")") + 2:].split()
    return fields[19].decode() if len(fields) > 19 else ""


_SELF = f"{_HOST}:{os.getpid()}:{_start_time(os.getpid())}"


def new_owner() -> str:
    """A fresh owner string for a store opened now; live until ``release``."""
    global _SELF
    pid = os.getpid()
    if f":{pid}:" not in _SELF:  # forked since import
        _SELF = f"{_HOST}:{pid}:{_start_time(pid)}"
    owner = f"{_SELF}:{os.urandom(6).hex()}"
    _LIVE.add(owner)
    return owner


def release(owner: str) -> None:
    _LIVE.discard(owner)


def alive(owner: str | None) -> bool:
    """Whether the store that wrote ``owner`` is open in a process that is still running."""
    if not owner:
        return False
    if owner in _LIVE:
        return True
    try:
        host, pid_text, start, _token = owner.rsplit(":", 3)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != _HOST or pid == os.getpid():  # this process: only the open stores in _LIVE
        return False
    if start:
        return _start_time(pid) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
