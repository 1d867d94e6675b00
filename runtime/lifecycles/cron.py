"""Schedules of ``scheduled`` workloads: parsing (croniter's syntax) and DST-correct next fires.

A schedule is one of:

* a 5-field cron expression ``minute hour day-of-month month day-of-week``;
* a 6-field one with a seconds field first ``second minute hour day-of-month month day-of-week``;
* an alias: ``@yearly`` (= ``@annually``), ``@monthly``, ``@weekly``, ``@daily`` (=
  ``@midnight``), ``@hourly``;
* ``@every DURATION`` (``@every 90s``, ``@every 1h30m``): a fixed period, anchored at the
  previous fire (the scheduler passes the previous fire time; the first fire is one period after
  the start).

The fields are parsed and iterated by croniter (no cron parser of our own); this module adds the
field-by-field diagnosis the compiler points at, and the mapping of local wall-clock matches to
instants through ``zoneinfo``, with Vixie cron's rules at daylight-saving changes:

* a *fixed-time* schedule (none of its seconds, minute and hour fields starts with ``*``, e.g.
  ``30 2 * * *``) fires once for each matching local time: a time that a change skips fires at
  the instant of the change (the end of the gap), a time that a change repeats fires only the
  first time;
* a *wildcard* schedule (``*/15 * * * *``, ``0 * * * *``, ``@hourly``) follows the clock: a
  skipped time does not happen, a repeated time fires on each pass.

Pure: no clock is read here; callers pass the time (epoch seconds) and the zone.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gxo.runtime.durations import parse_duration

#: the aliases and the 5-field expressions they stand for
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

#: field names and what each accepts, for 5 and 6 fields
_NAMES5 = ("minute", "hour", "day-of-month", "month", "day-of-week")
_NAMES6 = ("second", *_NAMES5)
_ALLOWED = {
    "second": "0-59",
    "minute": "0-59",
    "hour": "0-23",
    "day-of-month": "1-31, L, ?",
    "month": "1-12 or JAN-DEC",
    "day-of-week": "0-7 or SUN-SAT (0 and 7 are Sunday), ?, N#k",
}
_FIELD = re.compile(r"\S+")
#: a transition of the zone's UTC offset is looked for every this many seconds between two
#: instants (a zone changing its offset twice within 6 hours is not seen; no zone does)
_PROBE_S = 6 * 3600
_ONE_S = timedelta(seconds=1)
_EPOCH = datetime(1970, 1, 1)


class ScheduleError(ValueError):
    """A schedule that does not parse.  ``field`` is the 0-based index of the bad cron field
    (None when the schedule as a whole is wrong); ``start``/``end`` delimit the bad part in the
    text (character offsets, end exclusive), for the compiler's caret."""

    def __init__(self, message: str, *, field: int | None = None, start: int = 0, end: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.start = start
        self.end = end


@dataclass(frozen=True, slots=True)
class Schedule:
    """A parsed schedule: ``next_after`` gives its fire times."""

    text: str  # as written
    expr: str | None = None  # the cron expression (an alias expanded); None for @every
    every: float | None = None  # @every: the period in seconds
    seconds: bool = False  # 6 fields, seconds first
    fixed: bool = False  # fixed-time (the DST rules above): no '*' first in second/minute/hour
    _iter: Any = field(default=None, compare=False, repr=False)

    def next_after(self, t: float, tz: ZoneInfo | None = None) -> float:
        """The first fire time strictly after ``t`` (epoch seconds), in zone ``tz`` (None: the
        machine's local zone).  ``@every D``: ``t + D`` (``t`` is the previous fire)."""
        if self.every is not None:
            return t + self.every
        zone = tz if tz is not None else local_zone()
        return float(_next_cron(self, math.floor(t), zone))

    def next_times(self, t: float, n: int, tz: ZoneInfo | None = None) -> list[float]:
        """The next ``n`` fire times after ``t``."""
        out: list[float] = []
        for _ in range(n):
            t = self.next_after(t, tz)
            out.append(t)
        return out


def parse_schedule(text: str) -> Schedule:
    """Parse a schedule; ``ScheduleError`` (a ``ValueError``) says what is wrong and where."""
    if not isinstance(text, str):
        raise ScheduleError(f"a schedule is a string, got {type(text).__name__}")
    stripped = text.strip()
    lead = len(text) - len(text.lstrip())
    if not stripped:
        raise ScheduleError("the schedule is empty", end=len(text))
    if stripped.startswith("@"):
        word = stripped.split(None, 1)[0]
        if word == "@every":
            rest = stripped[len(word):].strip()
            rstart = text.find(rest, lead + len(word)) if rest else len(text)
            if not rest:
                raise ScheduleError("@every needs a duration, e.g. \"@every 90s\"", start=lead, end=lead + len(word))
            try:
                period = parse_duration(rest)
            except ValueError:
                raise ScheduleError(f"'{rest}' is not a duration (e.g. 90s, 5m, 1h30m)",
                                    start=rstart, end=rstart + len(rest)) from None
            if period <= 0:
                raise ScheduleError(f"@every needs a positive duration, got '{rest}'", start=rstart, end=rstart + len(rest))
            return Schedule(text=text, every=period)
        if word not in ALIASES or stripped != word:
            raise ScheduleError(f"unknown schedule alias '{stripped}' (known: {', '.join(ALIASES)}, @every DURATION)",
                                start=lead, end=lead + len(stripped))
        return _cron(text, ALIASES[word], None)
    fields = list(_FIELD.finditer(text))
    if len(fields) not in (5, 6):
        raise ScheduleError(f"a cron expression has 5 fields (minute hour day-of-month month day-of-week) "
                            f"or 6 with seconds first, got {len(fields)}", start=lead, end=len(text.rstrip()))
    return _cron(text, " ".join(m.group() for m in fields), fields)


def _croniter(expr: str, seconds: bool, start: datetime) -> Any:
    from croniter import croniter

    return croniter(expr, start, ret_type=datetime, second_at_beginning=seconds)


def _cron(text: str, expr: str, located: list[re.Match[str]] | None) -> Schedule:
    from croniter import CroniterError

    parts = expr.split()
    seconds = len(parts) == 6
    if located is not None:
        names = _NAMES6 if seconds else _NAMES5
        for i, part in enumerate(parts):
            probe = " ".join(p if j == i else "*" for j, p in enumerate(parts))
            try:
                _croniter(probe, seconds, datetime(2000, 1, 1))
            except (CroniterError, ValueError, KeyError, IndexError):
                m = located[i]
                raise ScheduleError(f"{names[i]} field '{part}' is not valid (allowed: {_ALLOWED[names[i]]}, "
                                    "*, lists a,b, ranges a-b, steps /n)", field=i, start=m.start(), end=m.end()) from None
    try:
        it = _croniter(expr, seconds, datetime(2000, 1, 1))
        it.get_next(datetime)  # an expression that never matches (`0 0 30 2 *`) fails here
    except (CroniterError, ValueError, KeyError, IndexError) as exc:
        if "find next date" in str(exc) or type(exc).__name__ == "CroniterBadDateError":
            raise ScheduleError(f"'{expr}' never fires (no date matches its day-of-month, month and day-of-week)",
                                start=len(text) - len(text.lstrip()), end=len(text.rstrip())) from None
        raise ScheduleError(f"'{expr}' is not a valid cron expression",
                            start=len(text) - len(text.lstrip()), end=len(text.rstrip())) from None
    timed = parts[:3] if seconds else parts[:2]
    fixed = not any(p.startswith("*") for p in timed)
    return Schedule(text=text, expr=expr, seconds=seconds, fixed=fixed, _iter=it)


# ---------------------------------------------------------------------------------------------
# Time zones


def zone_named(name: str) -> ZoneInfo:
    """The zone of an IANA name (``Europe/Berlin``); ``ValueError`` when there is none."""
    if not isinstance(name, str) or not name or name.startswith("/") or ".." in name:
        raise ValueError(f"'{name}' is not an IANA time zone name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone '{name}'") from None


_LOCAL: list[ZoneInfo] = []


def local_zone() -> ZoneInfo:
    """The machine's zone: ``$TZ`` when it names one, else /etc/localtime, else UTC."""
    if _LOCAL:
        return _LOCAL[0]
    zone: ZoneInfo | None = None
    tz_env = os.environ.get("TZ", "").removeprefix(":")
    if tz_env:
        try:
            zone = zone_named(tz_env)
        except ValueError:
            zone = None
    if zone is None:
        try:
            with open("/etc/localtime", "rb") as fh:
                zone = ZoneInfo.from_file(fh, key="localtime")
        except (OSError, ValueError):
            zone = ZoneInfo("UTC")
    _LOCAL.append(zone)
    return zone


def format_time(t: float, tz: ZoneInfo | None = None) -> str:
    """ISO 8601 with the zone's offset: ``2026-03-29T03:00:00+02:00``."""
    zone = tz if tz is not None else local_zone()
    dt = datetime.fromtimestamp(t, zone)
    return dt.isoformat(timespec="seconds" if dt.microsecond == 0 else "milliseconds")


def preview(cron: str, timezone_name: str | None, now: float, n: int = 3) -> list[str]:
    """The next ``n`` fire times after ``now`` of a scheduled lifecycle, ISO 8601 with the
    offset of its zone (``gxoc show``); for ``@every`` counted from ``now``."""
    zone = zone_named(timezone_name) if timezone_name else None
    return [format_time(t, zone) for t in parse_schedule(cron).next_times(now, n, zone)]


# ---------------------------------------------------------------------------------------------
# Wall-clock matches to instants


def _offset(t: int, zone: ZoneInfo) -> int:
    off = datetime.fromtimestamp(t, zone).utcoffset()
    return int(off.total_seconds()) if off is not None else 0


def _wall(t: int, off: int) -> datetime:
    """The naive local time of instant ``t`` under offset ``off``."""
    return _EPOCH + timedelta(seconds=t + off)


def _naive_epoch(w: datetime) -> int:
    return int((w - _EPOCH).total_seconds())


def _transition(a: int, b: int, zone: ZoneInfo) -> int | None:
    """The first instant in ``(a, b]`` whose UTC offset differs from ``a``'s, or None."""
    off = _offset(a, zone)
    lo = a
    while lo < b:
        hi = min(lo + _PROBE_S, b)
        if _offset(hi, zone) != off:
            # binary search in (lo, hi]: offsets change on whole seconds
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset(mid, zone) != off:
                    hi = mid
                else:
                    lo = mid
            return hi
        lo = hi
    return None


def _first_occurrence(w: datetime, zone: ZoneInfo) -> int:
    return int(w.replace(tzinfo=zone, fold=0).astimezone(timezone.utc).timestamp())


def _next_cron(s: Schedule, t: int, zone: ZoneInfo) -> int:
    """The first instant after ``t`` whose local time (in ``zone``) matches ``s``, walking the
    zone's constant-offset segments one by one (see the module docstring for the DST rules)."""
    it = s._iter
    cur = t
    off = _offset(cur, zone)
    after = _wall(cur, off)  # candidates are local times strictly after this one
    for _ in range(10_000):
        it.set_current(after, force=True)
        w = it.get_next(datetime)
        c = _naive_epoch(w) - off  # its instant, if the offset stays until then
        change = _transition(cur, c, zone)
        if change is None:
            if s.fixed and c != _first_occurrence(w, zone):
                after = w  # the second pass of a repeated time: it fired on the first
                continue
            return c
        new = _offset(change, zone)
        if new > off:  # local times [change+off, change+new) do not exist
            gap_end = _wall(change, new)
            if s.fixed:
                it.set_current(_wall(change, off) - _ONE_S, force=True)
                if it.get_next(datetime) < gap_end:
                    return change  # a skipped time fires when the gap ends
            after = gap_end - _ONE_S
        else:  # local times [change+new, change+off) repeat
            after = _wall(change, off) - _ONE_S if s.fixed else _wall(change, new) - _ONE_S
        cur, off = change, new
    raise ValueError(f"no fire time found for '{s.text}'")  # pragma: no cover - bounded by croniter
