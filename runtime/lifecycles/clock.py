"""Time for the lifecycle managers: the real clock, and a fake one that tests move by hand.

A manager never calls ``time`` or ``asyncio.sleep`` itself: it asks its ``Clock``.  ``time()``
is wall-clock time (epoch seconds: cron fires at wall times, in a time zone), ``monotonic()``
measures intervals (back-off, restart windows, ``healthy_after``), ``sleep(d)`` waits ``d``
seconds of the clock's time and ``sleep_until(t)`` waits until the wall time ``t``.

``FakeClock`` does not move on its own: ``await clock.advance(seconds)`` wakes every sleeper
whose deadline has come, in deadline order, letting the event loop run the woken tasks between
wake-ups, so that a test of a nightly schedule or of a 1-2-4-8 s back-off takes milliseconds.
``wait_for_sleepers(n)`` waits (in real time, bounded) until ``n`` tasks sleep on it, which is
how a test knows that a manager has done what it does between two ticks.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time as _time

#: the longest single wait of ``RealClock.sleep_until``: a wall-clock jump (NTP step, suspend)
#: is noticed within this time
WALL_RECHECK_S = 30.0


class Clock:
    """The real clock."""

    def time(self) -> float:
        return _time.time()

    def monotonic(self) -> float:
        return _time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def sleep_until(self, wall: float) -> None:
        """Wait until the wall clock reads ``wall``; re-reads it at least every 30 s so that a
        clock step does not make a scheduled job hours late or early."""
        while True:
            left = wall - _time.time()
            if left <= 0:
                return
            await asyncio.sleep(min(left, WALL_RECHECK_S))


class FakeClock(Clock):
    """A clock that moves only when ``advance`` is awaited (tests)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._wall = float(start)
        self._mono = 0.0
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        #: every sleep asked for, in seconds, in order (tests read the back-off from it)
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, float(seconds))
        self.sleeps.append(seconds)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (self._mono + seconds, next(self._seq), fut))
        await fut

    async def sleep_until(self, wall: float) -> None:
        await self.sleep(wall - self._wall)

    @property
    def sleepers(self) -> int:
        return sum(1 for _, _, f in self._heap if not f.done())

    async def wait_for_sleepers(self, n: int = 1, timeout: float = 10.0) -> None:
        """Wait in real time until at least ``n`` tasks sleep on this clock."""
        deadline = _time.monotonic() + timeout
        while self.sleepers < n:
            if _time.monotonic() > deadline:
                raise TimeoutError(f"{self.sleepers} task(s) sleep on the fake clock, waited for {n}")
            await asyncio.sleep(0.002)

    async def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` on, waking the sleepers whose time has come, in order."""
        target = self._mono + seconds
        while self._heap and self._heap[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._heap)
            if fut.done():  # its sleeper was cancelled
                continue
            self._step_to(deadline)
            fut.set_result(None)
            await _settle()
        self._step_to(target)
        await _settle()

    def _step_to(self, mono: float) -> None:
        if mono > self._mono:
            self._wall += mono - self._mono
            self._mono = mono


async def _settle(rounds: int = 20) -> None:
    """Let the loop run what became ready (several hops: a woken task may wake others)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
