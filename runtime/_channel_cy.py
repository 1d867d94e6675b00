"""The data plane's hot path: bounded channels that move records in batches (compiled when available).

A ``Channel`` joins one producer to one consumer (one channel per link, checklist §2.9).  Records
travel in *batches* (plain ``list`` objects): ``await send(batch)`` hands a list over and the
consumer's ``async for batch in channel`` gets lists back, in order, so a link costs one await
per batch, never one per record, while the order of the records on the link is kept.  A read
takes everything queued at once (batches queued since the last read are joined into one list).

Capacity counts records, not batches.  The overflow strategy decides what happens when a batch
does not fit:

* ``block`` (default): ``send`` waits for room.  A batch larger than the free room is split, so
  the buffer never holds more than ``capacity`` records: a slow consumer throttles a fast
  producer, which is never more than ``capacity`` records ahead.  Capacity 0 is an unbuffered
  rendezvous: ``send`` returns once the consumer has taken the batch.  A waiting ``send`` honours
  cancellation (a cancelled rendezvous withdraws its batch unless it was already taken).
* ``drop_new``: the records that do not fit are discarded (the newest ones).
* ``drop_oldest``: all new records are queued, then the oldest ones are evicted until the buffer
  fits; a batch larger than the capacity keeps only its last ``capacity`` records.
* ``error``: the records that fit are queued, then ``send`` raises ``PolicyViolation`` for the
  rest (they are counted as dropped).

No strategy but ``block`` ever waits.  With capacity 0 they hand the batch over when the
consumer is already waiting for one (like a non-blocking send on an unbuffered Go channel) and
apply the strategy otherwise.  ``drop_new``/``drop_oldest`` report each lossy ``send`` to the
``on_violation`` callback (a ``PolicyViolation`` describing it) when one is given.

Counters (``records_in``, ``records_out``, ``records_dropped``, ``records_discarded``,
``buffered``): every record offered to ``send`` is counted in; it is then out (taken by the
consumer), dropped (overflow), discarded (the consumer had left, see ``discard``) or still
buffered, so ``in == out + dropped + discarded + buffered`` at every instant.

Ends: ``close()`` is the end-of-stream mark and ``close_error(message)`` the error-end-of-stream
mark; both are set by the kernel, never by modules.  The consumer first gets every buffered
batch, then iteration stops (``close``) or raises ``UpstreamFailed(message)`` (``close_error``).
A ``send`` after an end raises ``ChannelClosed``.  ``discard()`` is the consumer leaving early:
buffered records are discarded, blocked senders are released and later sends are accepted and
discarded without waiting, so a producer can never deadlock on a consumer that is gone.

``FanOut`` sends each batch to several channels (one producer, N consumers, each gets every
record).  Every consumer gets its own records: all but the last channel receive
``deep_copy(batch)`` (records that are immutable are shared as they are, see
``gxo.runtime._state_cy``), the last one receives the producer's list itself.

A batch handed to ``send`` belongs to the channel from then on: the producer must not change
the list afterwards (``gxo.runtime.streams.StreamOutput`` builds a fresh list per batch).  The
records are not copied on a single link.

This file is also the pure-Python twin: uncompiled, it runs as ordinary Python with the same
results; ``tests/test_channels.py`` checks both against each other.
"""

# START GENERATED CYTHON IMPORT
# This section is generated from the header that every runtime/_*_cy.py module carries.
try:
    # The Cython compiler needs this exact import in the file.
    import cython
except ModuleNotFoundError:
    from gxo.runtime import _cython_shim as cython  # type: ignore[no-redef]


def _is_compiled() -> bool:
    """True when this module is the compiled extension, not the pure-Python source."""
    return bool(cython.compiled)


# END GENERATED CYTHON IMPORT

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from gxo.runtime._state_cy import deep_copy
from gxo.runtime.module import ModuleError

__all__ = [
    "BLOCK",
    "DROP_NEW",
    "DROP_OLDEST",
    "ERROR",
    "OVERFLOW_STRATEGIES",
    "Channel",
    "ChannelClosed",
    "FanOut",
    "PolicyViolation",
    "UpstreamFailed",
]

BLOCK = "block"
DROP_NEW = "drop_new"
DROP_OLDEST = "drop_oldest"
ERROR = "error"
#: the values of ``channel_policy.overflow_strategy``
OVERFLOW_STRATEGIES = (BLOCK, DROP_NEW, DROP_OLDEST, ERROR)

_BLOCK = 0
_DROP_NEW = 1
_DROP_OLDEST = 2
_ERROR = 3


class PolicyViolation(ModuleError):
    """A channel's overflow strategy refused or dropped records (checklist ``PolicyViolationError``)."""

    def __init__(self, message: str, *, dropped: int = 0) -> None:
        super().__init__(message)
        self.dropped = dropped


class UpstreamFailed(ModuleError):
    """The producer of an input ended its stream with an error mark."""


class ChannelClosed(RuntimeError):
    """A send on a channel that already carries its end mark (a kernel bug, never a user error)."""


@cython.cclass
class Channel:
    """A bounded, batched, single-consumer channel (see the module doc)."""

    _capacity: cython.Py_ssize_t
    _mode: cython.int
    _overflow: str
    _buf: object  # deque[list]: the batches queued, oldest first
    _size: cython.Py_ssize_t  # records in _buf
    _in: cython.Py_ssize_t
    _out: cython.Py_ssize_t
    _dropped: cython.Py_ssize_t
    _discarded: cython.Py_ssize_t
    _taken: cython.Py_ssize_t  # batches taken by the consumer so far (rendezvous bookkeeping)
    _queued: cython.Py_ssize_t  # batches queued so far
    _closed: cython.bint
    _error: object  # the message of an error end, or None
    _gone: cython.bint  # the consumer left (discard)
    _recv_waiter: object  # the future the consumer waits on, or None
    _send_waiters: object  # deque of futures of blocked senders
    _on_violation: object

    def __init__(self, capacity: cython.Py_ssize_t = 100, overflow: str = BLOCK,
                 on_violation: Callable[[PolicyViolation], Any] | None = None) -> None:
        if capacity < 0:
            raise ValueError(f"channel capacity must be >= 0, got {capacity}")
        if overflow == BLOCK:
            self._mode = _BLOCK
        elif overflow == DROP_NEW:
            self._mode = _DROP_NEW
        elif overflow == DROP_OLDEST:
            self._mode = _DROP_OLDEST
        elif overflow == ERROR:
            self._mode = _ERROR
        else:
            raise ValueError(f"unknown overflow strategy {overflow!r} (expected one of "
                             f"{', '.join(OVERFLOW_STRATEGIES)})")
        self._capacity = capacity
        self._overflow = overflow
        self._buf = deque()
        self._size = 0
        self._in = 0
        self._out = 0
        self._dropped = 0
        self._discarded = 0
        self._taken = 0
        self._queued = 0
        self._closed = False
        self._error = None
        self._gone = False
        self._recv_waiter = None
        self._send_waiters = deque()
        self._on_violation = on_violation

    # -- read-only views ----------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def overflow(self) -> str:
        return self._overflow

    @property
    def records_in(self) -> int:
        """Records offered to ``send``."""
        return self._in

    @property
    def records_out(self) -> int:
        """Records taken by the consumer."""
        return self._out

    @property
    def records_dropped(self) -> int:
        """Records lost to the overflow strategy."""
        return self._dropped

    @property
    def records_discarded(self) -> int:
        """Records thrown away because the consumer had left (``discard``)."""
        return self._discarded

    @property
    def buffered(self) -> int:
        """Records queued, not yet taken."""
        return self._size

    @property
    def closed(self) -> bool:
        """An end mark is set (records may still be buffered)."""
        return self._closed

    @property
    def failed(self) -> bool:
        """The end mark is an error mark."""
        return self._error is not None

    @property
    def ended(self) -> bool:
        """The consumer has nothing more to read: closed and drained (or the consumer left)."""
        return (self._closed and self._size == 0) or self._gone

    def counters(self) -> dict[str, int]:
        return {"records_in": self._in, "records_out": self._out,
                "records_dropped": self._dropped, "records_discarded": self._discarded,
                "buffered": self._size}

    # -- internal ------------------------------------------------------------------------------

    @cython.cfunc
    def _wake_receiver(self) -> cython.void:
        w = self._recv_waiter
        if w is not None:
            self._recv_waiter = None
            if not w.done():
                w.set_result(None)

    @cython.cfunc
    def _wake_senders(self) -> cython.void:
        waiters = self._send_waiters
        while waiters:
            w = waiters.popleft()
            if not w.done():
                w.set_result(None)

    @cython.cfunc
    def _push(self, batch: list) -> cython.void:
        self._buf.append(batch)
        self._size += len(batch)
        self._queued += 1
        if self._recv_waiter is not None:
            self._wake_receiver()

    @cython.cfunc
    def _violation(self, dropped: cython.Py_ssize_t, what: str) -> object:
        return PolicyViolation(
            f"channel full (capacity {self._capacity}, overflow {self._overflow}): {dropped} "
            f"record{'s' if dropped != 1 else ''} {what}", dropped=dropped)

    @cython.cfunc
    def _evict_oldest(self, n: cython.Py_ssize_t) -> cython.void:
        """Drop the ``n`` oldest buffered records."""
        buf = self._buf
        first: list
        k: cython.Py_ssize_t
        while n > 0 and buf:
            first = buf[0]
            k = len(first)
            if k <= n:
                buf.popleft()
                self._size -= k
                self._dropped += k
                n -= k
            else:
                buf[0] = first[n:]  # a new list: the batch may still be someone else's
                self._size -= n
                self._dropped += n
                n = 0

    # -- producer side -------------------------------------------------------------------------

    def offer(self, batch: list) -> cython.bint:
        """Queue ``batch`` at once if it fits whole without waiting (any strategy); False
        otherwise (nothing queued).  The fast path of ``StreamOutput``: no coroutine."""
        n: cython.Py_ssize_t = len(batch)
        if self._closed:
            raise ChannelClosed("send on a channel whose stream has ended")
        if self._gone:
            self._in += n
            self._discarded += n
            return True
        if n == 0:
            return True
        if self._size + n <= self._capacity:
            self._in += n
            self._push(batch)
            return True
        return False

    async def send(self, batch: list) -> int:
        """Hand ``batch`` over (see the module doc); the number of records dropped is returned
        (0 under ``block``).  Raises ``PolicyViolation`` under ``error`` when records did not
        fit, ``ChannelClosed`` after an end mark."""
        n: cython.Py_ssize_t = len(batch)
        room: cython.Py_ssize_t
        if self._closed:
            raise ChannelClosed("send on a channel whose stream has ended")
        if self._gone:
            self._in += n
            self._discarded += n
            return 0
        if n == 0:
            return 0
        self._in += n
        if self._size + n <= self._capacity:  # the common case: it fits
            self._push(batch)
            return 0
        if self._mode == _BLOCK:
            if self._capacity == 0:
                await self._rendezvous(batch)
            else:
                await self._send_blocking(batch)
            return 0
        # non-blocking strategies
        room = self._capacity - self._size
        if self._capacity == 0 and self._recv_waiter is not None and self._size == 0:
            room = n  # a consumer is waiting: hand the batch over
        room = max(room, 0)
        if room >= n:  # an unbuffered hand-over to a waiting consumer: nothing is lost
            self._push(batch)
            return 0
        if self._mode == _DROP_NEW:
            if room > 0:
                self._push(batch[:room])
            self._dropped += n - room
            self._report(self._violation(n - room, "dropped (drop_new)"))
            return n - room
        if self._mode == _DROP_OLDEST:
            before: cython.Py_ssize_t = self._dropped
            if self._capacity == 0:
                self._dropped += n
            else:
                if n > self._capacity:
                    self._dropped += n - self._capacity
                    batch = batch[n - self._capacity:]
                self._evict_oldest(self._size + len(batch) - self._capacity)
                self._push(batch)
            lost: cython.Py_ssize_t = self._dropped - before
            if lost:
                self._report(self._violation(lost, "evicted (drop_oldest)"))
            return lost
        # _ERROR
        if room > 0:
            self._push(batch[:room])
        self._dropped += n - room
        raise self._violation(n - room, "refused (error)")

    def _report(self, violation: Any) -> None:
        cb = self._on_violation
        if cb is not None:
            cb(violation)

    async def _send_blocking(self, batch: list) -> None:
        """Queue ``batch`` in pieces as room frees up (capacity > 0)."""
        n: cython.Py_ssize_t = len(batch)
        i: cython.Py_ssize_t = 0
        room: cython.Py_ssize_t
        loop = asyncio.get_running_loop()
        while i < n:
            if self._gone:
                self._discarded += n - i
                return
            if self._closed:
                self._in -= n - i
                raise ChannelClosed("send on a channel whose stream has ended")
            room = self._capacity - self._size
            if room <= 0:
                w = loop.create_future()
                self._send_waiters.append(w)
                try:
                    await w
                except BaseException:
                    # cancelled: give the wake-up (if any) to the next sender; the records not
                    # yet queued are not sent (the send did not complete), so they are not in
                    w.cancel()
                    self._in -= n - i
                    self._wake_senders()
                    raise
                continue
            if i == 0 and room >= n:
                self._push(batch)
                return
            room = min(room, n - i)
            self._push(batch[i:i + room])
            i += room

    async def _rendezvous(self, batch: list) -> None:
        """Unbuffered: queue the batch and wait until the consumer took it."""
        self._push(batch)
        mine: cython.Py_ssize_t = self._queued  # the consumer has taken it once _taken >= mine
        loop = asyncio.get_running_loop()
        while self._taken < mine and not self._gone:
            w = loop.create_future()
            self._send_waiters.append(w)
            try:
                await w
            except BaseException:
                w.cancel()
                if self._taken < mine and not self._gone:
                    # withdraw the batch: the send did not happen
                    self._remove_untaken(batch)
                self._wake_senders()
                raise

    @cython.cfunc
    def _remove_untaken(self, batch: list) -> cython.void:
        buf = self._buf
        k: cython.Py_ssize_t
        for k in range(len(buf)):
            if buf[k] is batch:
                del buf[k]
                self._size -= len(batch)
                self._in -= len(batch)
                self._queued -= 1
                return

    def hand_over(self, n: cython.Py_ssize_t) -> cython.bint:
        """Count ``n`` records as sent and taken at once, for a batch the producer hands
        straight to its idle consumer (``streams.Handoff``): only on a ``block`` channel
        that is open, has a consumer, holds nothing and has no sender waiting for room (so
        the batch overtakes no record, as with ``offer``).  False, with nothing counted,
        otherwise."""
        if (self._mode != _BLOCK or self._size != 0 or self._closed or self._gone
                or self._send_waiters):
            return False
        self._in += n
        self._out += n
        return True

    # -- consumer side -------------------------------------------------------------------------

    def poll(self) -> Any:
        """The next batch if one is queued now; None if none is (``ended`` tells whether one
        may still come).  Raises ``UpstreamFailed`` once an error-ended channel is drained."""
        buf = self._buf
        if buf:
            # Everything queued goes at once (one list): the room freed is then the whole
            # capacity, so a blocked producer refills it in one piece and batches stay large
            # under steady backpressure instead of shrinking to the consumer's last take.
            batch: list = buf.popleft()
            if buf:
                batch = batch[:]
                while buf:
                    batch.extend(buf.popleft())
                    self._taken += 1
            k: cython.Py_ssize_t = len(batch)
            self._size -= k
            self._out += k
            self._taken += 1
            if self._send_waiters:
                self._wake_senders()
            return batch
        if self._closed and self._error is not None and not self._gone:
            raise UpstreamFailed(self._error)
        return None

    async def wait_readable(self) -> None:
        """Return once a batch is queued or the stream has ended."""
        while not self._buf and not self._closed and not self._gone:
            w = self._recv_waiter
            if w is None or w.done():
                w = asyncio.get_running_loop().create_future()
                self._recv_waiter = w
            await w

    async def receive(self) -> Any:
        """The next batch, waiting for it; None at the end of a normal stream."""
        while True:
            batch = self.poll()
            if batch is not None:
                return batch
            if self._closed or self._gone:
                return None
            await self.wait_readable()

    def __aiter__(self) -> "Channel":
        return self

    async def __anext__(self) -> list:
        batch = await self.receive()
        if batch is None:
            raise StopAsyncIteration
        return batch

    def discard(self) -> None:
        """The consumer leaves: buffered and later records are discarded, senders released."""
        self._gone = True
        self._discarded += self._size
        self._buf.clear()
        self._size = 0
        self._wake_senders()
        self._wake_receiver()

    # -- ends (the kernel's) ----------------------------------------------------------------------

    def close(self) -> None:
        """The end-of-stream mark: the consumer reads what is buffered, then stops."""
        if self._closed:
            return
        self._closed = True
        self._wake_receiver()
        self._wake_senders()

    def close_error(self, message: str) -> None:
        """The error-end-of-stream mark: after the buffered batches the consumer gets
        ``UpstreamFailed(message)``."""
        if self._closed:
            return
        self._closed = True
        self._error = str(message)
        self._wake_receiver()
        self._wake_senders()


@cython.cclass
class FanOut:
    """One producer, several channels: every channel gets every record (its own copy)."""

    _channels: list
    _n: cython.Py_ssize_t

    def __init__(self, channels: list) -> None:
        self._channels = list(channels)
        self._n = len(self._channels)

    @property
    def channels(self) -> list:
        return list(self._channels)

    def offer(self, batch: list) -> cython.bint:
        """Queue ``batch`` on every channel at once, only if every one has room for it now."""
        ch: Channel
        i: cython.Py_ssize_t
        for i in range(self._n):
            ch = self._channels[i]
            if ch._closed:
                raise ChannelClosed("send on a channel whose stream has ended")
            if not ch._gone and ch._size + len(batch) > ch._capacity:
                return False
        last: cython.Py_ssize_t = self._n - 1
        for i in range(self._n):
            ch = self._channels[i]
            ch.offer(batch if i == last else deep_copy(batch))
        return True

    async def send(self, batch: list) -> int:
        """Send ``batch`` to every channel in turn (a blocked channel holds the others back,
        which is the ``block`` strategy's backpressure); the records dropped in total."""
        ch: Channel
        i: cython.Py_ssize_t
        dropped: cython.Py_ssize_t = 0
        last: cython.Py_ssize_t = self._n - 1
        for i in range(self._n):
            ch = self._channels[i]
            dropped += await ch.send(batch if i == last else deep_copy(batch))
        return dropped

    def close(self) -> None:
        ch: Channel
        for ch in self._channels:
            ch.close()

    def close_error(self, message: str) -> None:
        ch: Channel
        for ch in self._channels:
            ch.close_error(message)
