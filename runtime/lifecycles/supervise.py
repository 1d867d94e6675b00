"""``supervise``: keep a workload's process running, as systemd's ``Restart=`` does.

* ``restart: on_failure`` (the default) restarts after a failure (an error or a non-zero exit)
  and ends the workload ``Completed`` after a clean exit; ``always`` restarts after every exit;
  ``never`` runs the process once and ends with its outcome.
* Back-off (``lifecycle.backoff``): the k-th consecutive restart waits
  ``min(cap, base * 2^(k-1))``, randomised by +/- ``jitter`` x wait.  A run that stayed up at
  least ``healthy_after`` resets k to 1.
* Start limit: a restart that would make more than ``max_restarts`` restarts within
  ``restart_window`` is not made: the workload ends ``Failed`` (systemd's StartLimitBurst /
  StartLimitIntervalSec), and the kernel halts the run unless ``ignore_errors``.
* A run-to-completion module that reconciles (``filesystem:manage``: its ``lifecycle.interval``
  is set) is re-run every ``interval`` after a successful pass, so drift is reverted within one
  interval; a failed pass is restarted with back-off like a failed program.
* Stopping (SIGTERM/SIGINT to gxo, or a halting run) cancels the running instance: ``exec``
  sends SIGTERM to the child's process group and SIGKILL after ``stop_timeout``.

What the live view and ``--json`` show comes through ``host.update``: ``restarts`` (total),
``next_attempt`` (wall time of the next start, or None), ``last_exit`` (the last run's end).
The restarts within the start-limit window are durable with the run (``host.set_restarts``):
a resumed run starts from them.
"""

from __future__ import annotations

import collections
import random
from typing import Any

from gxo.runtime.lifecycles.base import COMPLETED, DEFAULT_RESTART, FAILED, Manager, describe

#: the defaults of ``lifecycle.backoff`` (docs/playbook.md), for plans whose IR has none
BASE_S, CAP_S, JITTER, MAX_RESTARTS, RESTART_WINDOW_S = 1.0, 60.0, 0.1, 5, 600.0
HEALTHY_AFTER_S = 10.0


def backoff_delay(k: int, base: float, cap: float, jitter: float, rng: random.Random | None = None) -> float:
    """The wait before the k-th consecutive restart (k >= 1)."""
    delay = min(cap, base * (2.0 ** (k - 1)))
    if jitter:
        delay += delay * jitter * (2.0 * (rng or random).random() - 1.0)
    return max(0.0, delay)


class Supervisor(Manager):
    policy = "supervise"

    def __init__(self, host: Any, w: Any, rng: random.Random | None = None) -> None:
        super().__init__(host, w)
        self.rng = rng or random.Random()
        lc = self.lc
        b = lc.backoff
        self.base = b.base if b is not None else BASE_S
        self.cap = b.cap if b is not None else CAP_S
        self.jitter = b.jitter if b is not None else JITTER
        self.max_restarts = b.max_restarts if b is not None else MAX_RESTARTS
        self.window = b.restart_window if b is not None else RESTART_WINDOW_S
        self.restart = lc.restart or DEFAULT_RESTART
        self.healthy_after = getattr(lc, "healthy_after", HEALTHY_AFTER_S)
        self.interval = getattr(lc, "interval", None)  # set: a reconciler, re-run every interval
        self.restarts = 0

    async def run(self) -> tuple[str, str | None]:
        clock = self.host.clock
        recent: collections.deque[float] = collections.deque()  # monotonic times of recent restarts
        consecutive = 0
        if self.host.dry_run:  # one pass that reports what it would do; nothing is kept running
            try:
                await self.host.run_instance(self.w)
            except Exception as exc:  # noqa: BLE001
                return FAILED, describe(exc)
            return COMPLETED, f"dry run: would be supervised (restart: {self.restart})"
        saved = self.host.restarts(self.w)  # a resumed run: the restarts its first run made
        if saved is not None:
            count, window_start = saved
            age = clock.time() - window_start
            if 0 <= age < self.window:
                recent.extend([clock.monotonic() - age] * count)
            self.restarts = count
        while True:
            began = clock.monotonic()
            try:
                summary = await self.host.run_instance(self.w)
            except Exception as exc:  # noqa: BLE001 - the failure of one run decides the next step
                ok, last = False, describe(exc)
            else:
                ok = True
                last = _clean_exit(summary, self.interval is not None)
            if clock.monotonic() - began >= self.healthy_after:
                consecutive = 0  # it stayed up: the back-off starts over
            if ok and self.interval is not None:
                # a reconciler's pass succeeded: the next one comes after the interval
                consecutive = 0
                self.host.update(self.w, restarts=self.restarts, last_exit=last,
                                 next_attempt=clock.time() + self.interval)
                await clock.sleep(self.interval)
                continue
            if self.restart == "never" or (ok and self.restart == "on_failure"):
                self.host.update(self.w, restarts=self.restarts, last_exit=last, next_attempt=None)
                return (COMPLETED, None) if ok else (FAILED, last)
            now = clock.monotonic()
            while recent and now - recent[0] > self.window:
                recent.popleft()
            if len(recent) >= self.max_restarts:
                self.host.update(self.w, restarts=self.restarts, last_exit=last, next_attempt=None)
                return FAILED, (f"start limit reached: {self.max_restarts} restart(s) within "
                                f"{_secs(self.window)}; last exit: {last}")
            consecutive += 1
            delay = backoff_delay(consecutive, self.base, self.cap, self.jitter, self.rng)
            self.host.update(self.w, restarts=self.restarts, last_exit=last, next_attempt=clock.time() + delay)
            await clock.sleep(delay)
            now = clock.monotonic()
            recent.append(now)
            self.restarts += 1
            self.host.set_restarts(self.w, len(recent), clock.time() - (now - recent[0]))
            self.host.update(self.w, restarts=self.restarts, last_exit=last, next_attempt=None)


def _clean_exit(summary: Any, reconciler: bool) -> str:
    if reconciler:
        changed = isinstance(summary, dict) and summary.get("changed") is True
        return "reconciled (changed)" if changed else "reconciled (no change)"
    code = summary.get("exit_code") if isinstance(summary, dict) else None
    return f"exited with code {code}" if code is not None else "ended"


def _secs(s: float) -> str:
    if s >= 60 and s % 60 == 0:
        return f"{int(s // 60)}m"
    return f"{s:g}s"
