"""Stopping a run whose event loop is busy: the run deadline, SIGINT/SIGTERM and workload
timeouts take effect within about a second even while the loop runs CPU-bound code.

The kernel runs workloads as tasks on one asyncio loop, and asyncio stops a task only where
it awaits: an expression over a large list, a ``data:parse`` of a big text or a
``data:format`` of many records hold the loop, and a deadline (``loop.call_later``) or a
signal handler (``loop.add_signal_handler``) queued behind them waits as long as they do.

``Guard`` keeps a *watchdog* thread that sleeps until a deadline passes or a signal arrives
(no work on the hot path: the loop itself is never polled while nothing is due).  Then:

1. the stop is queued on the loop as before (``call_soon_threadsafe``), so an idle or
   merely busy loop stops the ordinary way: tasks cancelled at their awaits;
2. the watchdog probes the loop (a callback that must run within ``GRACE`` seconds); a loop
   that does not answer is held by code that does not await, and the watchdog *pokes* it:
   a SIGURG sent to the main thread (the loop's) makes it run ``_on_poke`` between two
   bytecodes of that code (or when a blocking system call there returns EINTR), which
   applies the queued stop at once and raises there:
   ``asyncio.CancelledError`` for a stopped run (the task that held the loop ends cancelled,
   as it would have at its next await), ``Overrun`` for a timed workload whose deadline has
   passed (its ``_run_task`` fails it "timed out after Ns").  A poke raises only in the code
   it concerns: ``WORKLOAD`` (a context variable, inherited by the tasks a workload starts)
   names the timed workload that the interrupted code runs for.

Code inside one C call (``json.dumps`` of a huge list) is interrupted when the call returns;
regular expressions run on RE2 (gxo.runtime.regex), linear in the text.  The guard works
when the loop runs in the main thread (the ``gxo`` command); elsewhere the run keeps the
plain asyncio deadline and no signal handlers of its own.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import signal
import socket
import threading
import time
from typing import Any, Callable

#: seconds the loop may take to answer a probe before the watchdog pokes it
GRACE = 0.4

#: the signal of a poke, sent to the main thread only; SIGURG, which is ignored by default, so
#: its handler (installed for the run) changes nothing else
POKE = signal.SIGURG

#: the timed workload that the running code belongs to (set by the kernel's task)
WORKLOAD: contextvars.ContextVar[str | None] = contextvars.ContextVar("gxo_timed_workload", default=None)


class Overrun(BaseException):
    """A timed workload's deadline passed while its code held the loop.

    A BaseException, like CancelledError: module code that catches ``Exception`` (a record
    error) does not swallow it."""


class Guard:
    """Signals, the run deadline and workload deadlines for one run (see the module doc).

    ``stop(cause, reason)`` runs on the loop for each request, in order (a signal number or
    ``"timeout"``); it returns True when the run is being cancelled (a busy loop is then
    interrupted), False when the request stopped nothing or stops gracefully."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stop: Callable[[Any, str], bool],
                 timeout: float | None) -> None:
        self.loop = loop
        self.main: asyncio.Task | None = None  # the run's task: its cleanup is not interrupted
        self._stop = stop
        self._timeout = timeout
        self._requests: collections.deque[tuple[Any, str]] = collections.deque()
        self._cancelling = False  # a request cancelled the run
        self._draining = False
        self._poke_due = False
        self._timers: dict[str, float] = {}  # timed workload -> monotonic deadline
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._old: dict[int, Any] = {}
        self._fallback: list[Any] = []  # off the main thread: asyncio's handlers, as before
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        self._old_wakeup = -1
        self._main_thread = False  # the loop runs in the main thread: the watchdog can poke it
        self._next_wake = 0.0  # when the sleeping watchdog looks next (monotonic; inf: never)

    # -- life -----------------------------------------------------------------------------------

    def start(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            self._start_fallback()
            return
        # a signal that lands on another thread wakes the loop through this pair; its Python
        # handler then runs in the main thread
        rsock, wsock = socket.socketpair()
        rsock.setblocking(False)
        wsock.setblocking(False)
        self._wakeup = (rsock, wsock)
        self.loop.add_reader(rsock.fileno(), self._drain_wakeup)
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._on_signal)
        self._old[POKE] = signal.signal(POKE, self._on_poke)
        self._old_wakeup = signal.set_wakeup_fd(wsock.fileno(), warn_on_full_buffer=False)
        self._main_thread = True
        if self._timeout is not None:
            self._watchdog()

    def _watchdog(self) -> None:
        """Start the watchdog thread, once, when there is something to watch: a run without a
        deadline, a timed workload or a signal never starts it."""
        if self._thread is None and self._main_thread and not self._closed:
            self._thread = threading.Thread(target=self._watch, name="gxo-watchdog", daemon=True)
            self._thread.start()

    def _start_fallback(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.loop.add_signal_handler(sig, self._request, sig,
                                             f"run interrupted by {signal.Signals(sig).name}")
                self._fallback.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        if self._timeout is not None:
            self._fallback.append(self.loop.call_later(
                self._timeout, self._request, "timeout", f"run timed out after {self._timeout:g}s"))

    def close(self) -> None:
        self._closed = True
        self._poke_due = False  # a poke still in flight does nothing now
        self._wake.set()  # the watchdog ends on its own; past this point it does nothing
        for item in self._fallback:
            if isinstance(item, asyncio.TimerHandle):
                item.cancel()
            else:
                self.loop.remove_signal_handler(item)
        if self._wakeup is not None:
            signal.set_wakeup_fd(self._old_wakeup)
            for sig, old in self._old.items():
                signal.signal(sig, old)
            self.loop.remove_reader(self._wakeup[0].fileno())
            for sock in self._wakeup:
                sock.close()
            self._wakeup = None

    # -- workload deadlines (loop thread) -------------------------------------------------------

    def arm(self, name: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with self._lock:
            self._timers[name] = deadline
            sooner = deadline < self._next_wake  # than the sleeping watchdog means to look
        self._watchdog()
        if sooner:
            self._wake.set()

    def disarm(self, name: str) -> None:
        with self._lock:
            self._timers.pop(name, None)

    # -- requests -------------------------------------------------------------------------------

    def _request(self, cause: Any, reason: str) -> None:
        """Queue a stop (any thread, or a signal handler) and run it on the loop."""
        self._requests.append((cause, reason))
        self._watchdog()
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop has closed: the run is over
            pass
        self._wake.set()

    def _drain(self) -> None:
        if self._draining or self._closed:
            return
        self._draining = True
        try:
            while self._requests:
                cause, reason = self._requests.popleft()
                if self._stop(cause, reason):
                    self._cancelling = True
        finally:
            self._draining = False

    def _drain_wakeup(self) -> None:
        try:
            while self._wakeup is not None and self._wakeup[0].recv(512):
                pass
        except OSError:
            pass

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._request(signum, f"run interrupted by {signal.Signals(signum).name}")

    def _on_poke(self, signum: int, frame: Any) -> None:
        """In the main thread, between two bytecodes of the code that holds the loop."""
        if not self._poke_due or self._closed:
            return
        self._poke_due = False
        delivered = self._cancelling  # the stop reached the loop before: the run is ending
        self._drain()
        if self._cancelling:
            try:
                task = asyncio.current_task()
            except RuntimeError:  # no loop runs: the run is over
                return
            if delivered and (task is None or task is self.main):
                return  # the run's own cleanup (the main task's finally): let it finish
            # in a task: it ends cancelled, as at its next await; in a loop callback: out of
            # the loop (asyncio.run then cancels the tasks left)
            raise asyncio.CancelledError() if task is not None else KeyboardInterrupt()
        name = WORKLOAD.get()
        if name is not None:
            with self._lock:
                deadline = self._timers.get(name)
            if deadline is not None and time.monotonic() >= deadline:
                raise Overrun(name)

    # -- the watchdog thread --------------------------------------------------------------------

    def _watch(self) -> None:
        # signals are for the other threads: the main thread runs their handlers
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, POKE})
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while not self._closed:
            self._wake.clear()
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                deadline = None
                self._request("timeout", f"run timed out after {self._timeout:g}s")
            with self._lock:
                timers = list(self._timers.values())
                due = bool(self._requests) or self._cancelling or any(t <= now for t in timers)
                wait = None
                if not due:
                    waits = [t - now for t in timers]
                    if deadline is not None:
                        waits.append(deadline - now)
                    wait = min(waits) if waits else None
                    # arm() wakes the watchdog for a deadline sooner than this one
                    self._next_wake = float("inf") if wait is None else now + wait
            if due:
                if not self._answers():
                    self._poke()  # it lands at the next bytecode: look again after GRACE
                self._wake.wait(GRACE)  # busy or poked: look again later
                continue
            self._wake.wait(wait)
            with self._lock:
                self._next_wake = 0.0  # awake: the next pass reads the timers

    def _answers(self) -> bool:
        """Whether the loop runs a callback within GRACE seconds."""
        answered = threading.Event()
        try:
            self.loop.call_soon_threadsafe(answered.set)
        except RuntimeError:
            return True
        return answered.wait(GRACE)

    def _poke(self) -> None:
        if self._closed:
            return
        self._poke_due = True
        # a real signal to the main thread: it also ends a blocking system call there (EINTR),
        # after which Python runs the handler
        signal.pthread_kill(threading.main_thread().ident, POKE)


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """``asyncio.to_thread(fn, *args)`` whose call is interrupted when the awaiting task is
    cancelled (the run stopped, the workload timed out): ``Overrun`` is raised in the worker
    thread at its next bytecode, so the thread does not go on computing for a run that has
    ended (and the run's exit does not wait for it)."""
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    lock = threading.Lock()
    running: list[int | None] = [None]  # the worker thread's ident while fn runs

    def call() -> Any:
        with lock:
            running[0] = threading.get_ident()
        try:
            return ctx.run(fn, *args)
        finally:
            with lock:
                running[0] = None

    try:
        return await loop.run_in_executor(None, call)
    except asyncio.CancelledError:
        with lock:
            if running[0] is not None:
                _raise_in(running[0], Overrun)
        raise


def _raise_in(ident: int, exc: type[BaseException]) -> None:
    """Raise ``exc`` in thread ``ident`` at its next bytecode (CPython's
    PyThreadState_SetAsyncExc)."""
    import ctypes

    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc))
