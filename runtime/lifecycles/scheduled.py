"""``scheduled``: one ephemeral instance of the workload's process at each tick of its ``cron``.

* ``cron``: 5 fields, 6 fields (seconds first), the ``@hourly``-style aliases or
  ``@every DURATION`` (``gxo.runtime.lifecycles.cron``, on croniter); ``timezone`` (an IANA name,
  default the machine's zone) says in which zone the fields are read, daylight-saving changes
  included.  Nothing fires at start unless the schedule says so.
* ``overlap`` (a tick while an instance still runs): ``skip`` (the default: counted, no run),
  ``queue`` (the runs follow one another) or ``allow`` (they run side by side).
* ``misfire`` (ticks missed while no gxo ran, known from the durable store's last fire time):
  ``skip`` (the default) or ``run_once`` (one catch-up run at start).
* Each instance gets its own workspace; its failure is counted and logged (redacted) and never
  ends the schedule.  The workload runs until gxo is stopped.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gxo.runtime.lifecycles.base import COMPLETED, Manager, describe, stop_all
from gxo.runtime.lifecycles.cron import parse_schedule


def zone(name: str | None) -> Any:
    if not name:
        return None
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def iso(t: float, tz: Any) -> str:
    """``t`` as an ISO 8601 time with its offset, in ``tz`` (None: the machine's zone)."""
    import datetime as dt

    when = dt.datetime.fromtimestamp(t, tz) if tz is not None else dt.datetime.fromtimestamp(t).astimezone()
    return when.isoformat(timespec="seconds")


class Scheduler(Manager):
    policy = "scheduled"

    def __init__(self, host: Any, w: Any) -> None:
        super().__init__(host, w)
        self.schedule = parse_schedule(self.lc.cron)
        self.tz = zone(getattr(self.lc, "timezone", None))
        self.overlap = getattr(self.lc, "overlap", "skip") or "skip"
        self.misfire = getattr(self.lc, "misfire", "skip") or "skip"
        self.running: set[asyncio.Task[None]] = set()
        self.queued = 0
        self.fired = self.skipped = self.ok = self.failed = 0
        self.next_fire: float | None = None

    def info(self) -> dict[str, Any]:
        return {"next_fire": self.next_fire, "fired": self.fired, "skipped": self.skipped,
                "instances_ok": self.ok, "instances_failed": self.failed, "running": len(self.running)}

    def next_after(self, t: float) -> float:
        return self.schedule.next_after(t, self.tz)

    async def run(self) -> tuple[str, str | None]:
        host, clock = self.host, self.host.clock
        if host.dry_run:  # the next fire times, and nothing runs
            t, fires = clock.time(), []
            for _ in range(3):
                t = self.next_after(t)
                fires.append(t)
            self.next_fire = fires[0]
            text = [iso(f, self.tz) for f in fires]
            host.update(self.w, **self.info(), next_fires=text)
            return COMPLETED, "dry run: next fires at " + ", ".join(text)
        try:
            now = clock.time()
            last = host.last_fire(self.w)
            if self.misfire == "run_once" and last is not None and self.next_after(last) <= now:
                host.set_last_fire(self.w, now)
                self._fire()  # one catch-up run for the ticks missed while gxo was not running
            anchor = now
            while True:
                self.next_fire = self.next_after(anchor)
                host.update(self.w, **self.info())
                await clock.sleep_until(self.next_fire)
                anchor = self.next_fire
                host.set_last_fire(self.w, anchor)
                self._fire()
                now = clock.time()
                if self.next_after(anchor) < now:  # the loop was held up past further ticks: skip them
                    anchor = now
        except asyncio.CancelledError:
            self.queued = 0
            await stop_all(self.running)
            raise

    def _fire(self) -> None:
        self.fired += 1
        if self.running and self.overlap != "allow":
            if self.overlap == "queue":
                self.queued += 1
            else:
                self.skipped += 1
                self.host.update(self.w, **self.info())
            return
        self._start()

    def _start(self) -> None:
        task = asyncio.get_running_loop().create_task(self._instance())
        self.running.add(task)

    async def _instance(self) -> None:
        try:
            await self.host.run_instance(self.w, ephemeral=True)
            self.ok += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - an instance's failure is its own
            self.failed += 1
            self.host.instance_failed(self.w, describe(exc))
        finally:
            self.running.discard(asyncio.current_task())  # type: ignore[arg-type]
            if self.queued and not self.running:
                self.queued -= 1
                self._start()
            self.host.update(self.w, **self.info())
