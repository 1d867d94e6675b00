"""The module-facing side of the streaming data plane: stream inputs, outputs and record errors.

The contract between the kernel and a stream module (checklist §2.9, design.md §3 and §10):

* The kernel builds one bounded ``Channel`` (``gxo.runtime._channel_cy``) per (producer,
  consumer) link and hands a module:

  - ``ctx.extras["inputs"]``: a ``StreamInputs`` over its input channels, keyed by producer
    name, in ``stream_inputs`` order (absent when the module has no stream input);
  - ``ctx.extras["output"]``: a ``StreamOutput`` writing to its output channels (a ``FanOut``
    when it has several consumers; absent when nothing consumes its records);
  - ``ctx.extras["record_errors"]``: a ``RecordErrorSink`` for per-record errors (absent in
    unit tests; modules then count into a sink of their own).

* The kernel, never a module, sets the end marks: after ``perform`` returns it flushes the
  module's ``StreamOutput`` and closes its channels (end-of-stream); when ``perform`` fails, or
  the workload is cancelled, it closes them with ``close_error`` (error-end-of-stream), and the
  consumers' ``StreamInputs`` raise ``UpstreamFailed`` once they have read what was sent before.
  A producer that is skipped or never started gets a normal end-of-stream at once.

* A module must read every input until it ends.  A module that has no use for the records
  calls ``await inputs.drain()`` (``control:barrier``, ``exec``); otherwise its producers block
  on full channels.  After ``perform`` returns the kernel also ``discard()``s the inputs, so a
  module that stops early (a failure) never leaves a producer blocked.

* Records are maps.  A record handed to ``emit`` belongs to the stream from then on: the module
  must not change it afterwards.  A record read from an input belongs to the module (fan-out
  gives each consumer its own copy), which may change it and emit it again.

* Per-record errors (a record a template cannot handle, a record without a join key) are
  reported with ``record_errors.report(position, producer, message)`` and do not stop the
  stream.  ``position`` is the record's 0-based index on the input it came from (or in the
  module's own output order for a producer such as ``data:parse``); ``producer`` names that
  input (the module's own workload for a producer).

Reading is batched: ``async for name, batch in inputs`` yields lists of records (one await per
batch); ``inputs.records()`` yields records one by one for code that does not care.  A
transform whose work on a batch needs nothing but that batch (``data:map``, ``data:filter``,
``data:aggregate``) reads with ``await inputs.each(process)`` instead: on a link of a linear
stretch (``Handoff``) its producer then runs ``process`` on each batch directly, without a
channel queue or a task switch, and the counters, positions and record errors are the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gxo.runtime import _channel_cy, _records_cy
from gxo.runtime._channel_cy import (
    BLOCK,
    DROP_NEW,
    DROP_OLDEST,
    ERROR,
    OVERFLOW_STRATEGIES,
    Channel,
    ChannelClosed,
    FanOut,
    PolicyViolation,
    UpstreamFailed,
)
from gxo.runtime.state import require_compiled

__all__ = [
    "BLOCK",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CAPACITY",
    "DEFAULT_FLUSH_INTERVAL",
    "DROP_NEW",
    "DROP_OLDEST",
    "ERROR",
    "OVERFLOW_STRATEGIES",
    "Channel",
    "ChannelClosed",
    "FanOut",
    "Handoff",
    "PolicyViolation",
    "RecordError",
    "RecordErrorSink",
    "StreamInputs",
    "StreamOutput",
    "UpstreamFailed",
    "errors_of",
    "inputs_of",
    "output_of",
]

#: channel capacity when neither the workload, the playbook nor ``gxoc build`` sets one
DEFAULT_CAPACITY = 100
#: records a ``StreamOutput`` collects before it sends them as one batch
DEFAULT_BATCH_SIZE = 100
#: seconds a partial batch waits for more records before it is sent anyway
DEFAULT_FLUSH_INTERVAL = 0.05


require_compiled(_channel_cy)
require_compiled(_records_cy)


# --------------------------------------------------------------------------- inputs


class StreamInputs:
    """A consumer's input channels (fan-in), read concurrently until every one has ended."""

    def __init__(self, channels: Mapping[str, Channel] | Iterable[tuple[str, Channel]],
                 handoff: Handoff | None = None) -> None:
        items = list(channels.items()) if isinstance(channels, Mapping) else list(channels)
        #: (producer name, channel), in stream_inputs order
        self._items: list[tuple[str, Channel]] = items
        #: the direct hand-over of the single input's batches (``each``), when the kernel set one
        self._handoff = handoff if len(items) == 1 else None

    @property
    def names(self) -> list[str]:
        """The producers' names, in ``stream_inputs`` order."""
        return [name for name, _ in self._items]

    def channel(self, name: str) -> Channel:
        for n, ch in self._items:
            if n == name:
                return ch
        raise KeyError(name)

    def __len__(self) -> int:
        return len(self._items)

    def __aiter__(self) -> AsyncIterator[tuple[str, list[Any]]]:
        return self.batches()  # type: ignore[return-value]

    async def batches(self, *, ends: bool = False) -> AsyncIterator[tuple[str, list[Any] | None]]:
        """``(producer, batch)`` as batches arrive on any input, in order per input; with
        ``ends``, also ``(producer, None)`` once when that input has ended normally.  An
        input ended with an error mark raises ``UpstreamFailed`` (after its last batch)."""
        if len(self._items) == 1:  # the common case: no fan-in machinery
            name, ch = self._items[0]
            while True:
                batch = _poll(name, ch)
                if batch is None:
                    if ch.ended:
                        break
                    await ch.wait_readable()
                    continue
                yield name, batch
            if ends:
                yield name, None
            return
        live = list(self._items)
        while live:
            progressed = False
            for item in list(live):
                name, ch = item
                batch = _poll(name, ch)
                if batch is not None:
                    progressed = True
                    yield name, batch
                elif ch.ended:
                    progressed = True
                    live.remove(item)
                    if ends:
                        yield name, None
            if not progressed:
                await _wait_any([ch for _, ch in live])

    async def each(self, process: Callable[[str, list[Any]], Awaitable[None]],
                   fields: Callable[[str, str, list[Any]], Awaitable[None]] | None = None) -> None:
        """``await process(producer, batch)`` for every batch of every input, in order per
        input, like ``async for``; returns once every input has ended.

        ``fields``: the same for a batch of records ``{field: value}`` given as its field name and
        its values, ``await fields(producer, field, values)``, which a producer hands over that
        way (``StreamOutput.send_field``) on a ``Handoff``, so that the records need not be
        built; without it, or through the channel, the consumer gets the records built.

        With a ``Handoff`` on its input (a single producer whose only consumer this is), the
        batches the producer sends meanwhile are processed in the producer's task, one at a
        time and in order (``Handoff.deliver``): no channel queue, no task switch, the same
        counters, positions and record errors.  An exception of ``process`` there is raised
        here, in the consumer, as it would be otherwise."""
        h = self._handoff
        if h is None or h.attached:  # no hand-over (or a second reader): read the channels
            async for name, batch in self.batches():
                await process(name, batch)  # type: ignore[arg-type]
            return
        name, ch = self._items[0]
        h.attach(name, process, fields)
        try:
            while True:
                if h.busy:  # the producer is running a batch through ``process``: let it end
                    await h.idle()
                    continue
                if h.error is not None:
                    error, h.error = h.error, None
                    raise error
                batch = _poll(name, ch)
                if batch is not None:
                    h.busy = True
                    try:
                        await process(name, batch)
                    finally:
                        h.idle_now()
                    continue
                if ch.ended:
                    break
                await h.wait(ch)
        finally:
            h.detach()

    async def records(self) -> AsyncIterator[Any]:
        """Every record of every input, one by one (batches in arrival order)."""
        async for _name, batch in self.batches():
            for record in batch:  # type: ignore[union-attr]
                yield record

    async def drain(self) -> int:
        """Read and drop every record of every input until all have ended; the count read.
        Raises ``UpstreamFailed`` when an input ended with an error mark."""
        n = 0
        async for _name, batch in self.batches():
            n += len(batch)  # type: ignore[arg-type]
        return n

    def discard(self) -> None:
        """Leave every input (the kernel's, after ``perform``): producers are never blocked."""
        for _, ch in self._items:
            ch.discard()


def _poll(name: str, ch: Channel) -> list[Any] | None:
    try:
        return ch.poll()  # type: ignore[no-any-return]
    except UpstreamFailed as exc:
        detail = str(exc)
        failed = UpstreamFailed(f"input {name} failed" + (f": {detail}" if detail else ""))
        failed.producer = name  # type: ignore[attr-defined]
        raise failed from None


async def _wait_any(channels: list[Channel]) -> None:
    """Return once any of ``channels`` is readable or has ended."""
    waits = [asyncio.ensure_future(ch.wait_readable()) for ch in channels]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            if not w.done():
                w.cancel()


# --------------------------------------------------------------------------- direct hand-over


class Handoff:
    """The direct hand-over on one link whose producer has no other consumer and whose
    consumer has no other input (the kernel sets it up, ``StreamWiring``).

    While the consumer reads with ``StreamInputs.each``, the producer's ``StreamOutput``
    calls the consumer's per-batch function itself (``deliver``) instead of queueing the
    batch and switching tasks twice: a linear chain of transforms then runs one batch through
    every step in one go.  The channel still counts the batch as sent and taken
    (``Channel.hand_over``).  One batch at a time goes through the consumer's function: a
    producer that finds it busy waits until it is idle (it would have waited for room soon
    anyway), and runs the batches queued in the channel before its own first.  Batches
    queued while no delivery runs (the flush timer's) are processed by the consumer's own
    task.  So the order of the records and every count stay what they are without the
    hand-over."""

    __slots__ = ("_channel", "_fields", "_idle", "_name", "_process", "_waiter", "busy", "delivered",
                 "error")

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._name = ""
        self._process: Callable[[str, list[Any]], Awaitable[None]] | None = None
        #: the consumer's function for a batch given as one field's values (``StreamInputs.each``)
        self._fields: Callable[[str, str, list[Any]], Awaitable[None]] | None = None
        self._waiter: asyncio.Future[None] | None = None  # the idle consumer's wait
        self._idle: list[asyncio.Future[None]] = []  # waits for the end of the current batch
        #: a batch is going through the consumer's function (from either side)
        self.busy = False
        #: an exception of the consumer's function met during a delivery, not raised yet
        self.error: BaseException | None = None
        #: batches handed over directly so far
        self.delivered = 0

    @property
    def attached(self) -> bool:
        return self._process is not None

    @property
    def takes_fields(self) -> bool:
        """The attached consumer takes a batch as one field's values (``deliver``'s ``field``)."""
        return self._fields is not None

    def attach(self, name: str, process: Callable[[str, list[Any]], Awaitable[None]],
               fields: Callable[[str, str, list[Any]], Awaitable[None]] | None = None) -> None:
        self._name = name
        self._process = process
        self._fields = fields

    def detach(self) -> None:
        self._process = None
        self._fields = None
        self._wake_idle()  # a producer waiting for the consumer sends through the channel

    def idle_now(self) -> None:
        """The batch in the consumer's function is done: wake whoever waits for that."""
        self.busy = False
        if self._idle:
            self._wake_idle()

    def _wake_idle(self) -> None:
        waiters, self._idle = self._idle, []
        for w in waiters:
            _wake(w)

    async def idle(self) -> None:
        """Until the batch in the consumer's function is done (at once when there is none)."""
        if not self.busy:
            return
        w = asyncio.get_running_loop().create_future()
        self._idle.append(w)
        try:
            await w
        finally:
            if w in self._idle:
                self._idle.remove(w)

    async def deliver(self, batch: list[Any], field: str | None = None) -> bool:
        """Run the consumer's function on ``batch`` in the caller's task: after the batch it
        is busy with, if any, and after the batches queued in the channel before this one.
        False (``batch`` not taken) when the consumer is not attached, has failed, or the
        channel cannot take the batch that way.  With ``field``, ``batch`` holds the values of
        the records ``{field: value}``, for a consumer that ``takes_fields`` (False otherwise)."""
        while self.busy and self._process is not None and self.error is None:
            await self.idle()
        process = self._process
        if process is None or self.error is not None:
            return False
        fields = self._fields
        if field is not None and fields is None:
            return False
        ch = self._channel
        taken = False
        self.busy = True
        try:
            while ch.buffered and not ch.closed:  # queued before this batch: they go first
                await process(self._name, ch.poll())
            if not ch.hand_over(len(batch)):
                return False
            taken = True
            self.delivered += 1
            if field is None:
                await process(self._name, batch)
            else:
                await fields(self._name, field, batch)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - the consumer's failure, raised in the consumer
            self.error = exc
            _wake(self._waiter)
        finally:
            self.idle_now()
        return taken

    async def wait(self, ch: Channel) -> None:
        """The idle consumer's wait: until a batch is queued, the stream ends or a delivered
        batch failed."""
        self._waiter = w = asyncio.get_running_loop().create_future()
        readable = asyncio.ensure_future(ch.wait_readable())
        readable.add_done_callback(lambda _f: _wake(w))
        try:
            await w
        finally:
            self._waiter = None
            if not readable.done():
                readable.cancel()


def _wake(w: asyncio.Future[None] | None) -> None:
    if w is not None and not w.done():
        w.set_result(None)


# --------------------------------------------------------------------------- output


class StreamOutput:
    """A producer's output: records are collected into batches of ``batch_size`` and sent to
    ``target`` (a ``Channel`` or a ``FanOut``; None discards them, still counting).

    A partial batch does not wait for the batch to fill: ``flush_interval`` seconds after its
    first record it is sent anyway (``channel_policy.flush_interval``), so the records of a
    slow producer reach its consumers as they come.  The timer never waits for room: when the
    channel has none, the consumer is busy anyway and the timer tries again one interval later
    (the next full batch or the kernel's final ``flush`` also sends what is pending).
    """

    def __init__(self, target: Channel | FanOut | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE,
                 flush_interval: float = DEFAULT_FLUSH_INTERVAL,
                 handoff: Handoff | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if flush_interval < 0:
            raise ValueError(f"flush_interval must be >= 0, got {flush_interval}")
        self._target = target
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._pending: list[Any] = []
        self._timer: asyncio.TimerHandle | None = None
        self._handoff = handoff
        #: records handed to emit/send_batch so far
        self.records_emitted = 0

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def flush_interval(self) -> float:
        return self._flush_interval

    async def _send(self, batch: list[Any]) -> None:
        target = self._target
        if target is None or not batch:
            return
        h = self._handoff
        if h is not None and h.attached and await h.deliver(batch):
            return
        if not target.offer(batch):
            await target.send(batch)

    # -- the flush timer: armed while records are pending ---------------------------------------

    def _arm(self) -> None:
        if self._timer is not None or self._target is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): the next flush sends them
            return
        self._timer = loop.call_later(self._flush_interval, self._on_timer)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        pending = self._pending
        if not pending or self._target is None:
            return
        if self._handoff is not None and self._handoff.busy:
            self._arm()  # the consumer is working on a delivered batch: keep the order
            return
        try:
            sent = self._target.offer(pending)
        except ChannelClosed:  # the stream has ended: nothing may be sent any more
            return
        if sent:
            self._pending = []
        else:
            self._arm()  # no room now: the consumer has records to work on; try again later

    # -- sending ----------------------------------------------------------------------------------

    async def emit(self, records: Iterable[Any]) -> None:
        """Queue ``records``; every full batch of ``batch_size`` is sent (waiting for room); the
        rest is sent by the next call, the flush timer or ``flush``."""
        pending = self._pending
        before = len(pending)
        pending.extend(records)
        self.records_emitted += len(pending) - before
        size = self._batch_size
        if len(pending) < size:
            if pending:
                self._arm()
            return
        self._disarm()
        self._pending = []
        if len(pending) == size:
            await self._send(pending)
            return
        full = len(pending) - len(pending) % size
        for i in range(0, full, size):
            await self._send(pending[i:i + size])
        rest = pending[full:]
        # a timer may have sent records while this waited for room: keep the order
        self._pending = self._pending + rest if self._pending else rest
        if self._pending:
            self._arm()

    async def emit_one(self, record: Any) -> None:
        self._pending.append(record)
        self.records_emitted += 1
        if len(self._pending) >= self._batch_size:
            self._disarm()
            pending, self._pending = self._pending, []
            await self._send(pending)
        elif self._timer is None:
            self._arm()

    async def send_batch(self, batch: list[Any]) -> None:
        """Send what is pending, then ``batch`` as it is (a transform's output for one input
        batch: no re-chunking, one await).  The list belongs to the stream afterwards."""
        if self._pending:
            await self.flush()
        self.records_emitted += len(batch)
        target = self._target  # _send, inlined: this is once per batch on every link
        if target is None or not batch:
            return
        h = self._handoff
        if h is not None and h.attached and await h.deliver(batch):
            return
        if not target.offer(batch):
            await target.send(batch)

    async def emit_field(self, field: str, values: list[Any]) -> None:
        """``emit`` of the records ``{field: value}`` of ``values`` (``exec``'s
        ``stdout_records``): the records that complete the pending batch go as ``emit`` sends
        them, the full batches after them as ``send_field`` does (a consumer on the hand-over
        that takes fields never gets them built), the rest is left pending as ``emit`` leaves
        it.  The batches, their order and the counts are ``emit``'s."""
        size = self._batch_size
        need = size - len(self._pending) if self._pending else 0
        if len(values) - need < size:  # no full batch of values: as emit
            await self.emit(_records_cy.field_records(field, values))
            return
        if need:  # the pending batch is completed first, and sent (emit)
            await self.emit(_records_cy.field_records(field, values[:need]))
            values = values[need:]
        full = len(values) - len(values) % size
        for i in range(0, full, size):
            await self.send_field(field, values[i:i + size])
        if full < len(values):
            await self.emit(_records_cy.field_records(field, values[full:]))

    async def send_field(self, field: str, values: list[Any]) -> None:
        """``send_batch`` of the records ``{field: value}`` of ``values`` (``data:parse``'s
        lines): a consumer on the direct hand-over that takes them so gets the values
        (``StreamInputs.each``'s ``fields``) and the records are never built; otherwise they
        are built and sent as ``send_batch`` does.  ``values`` belongs to the stream afterwards."""
        if self._pending:
            await self.flush()
        self.records_emitted += len(values)
        target = self._target
        if target is None or not values:
            return
        h = self._handoff
        if h is not None and h.takes_fields and await h.deliver(values, field):
            return
        await self._send(_records_cy.field_records(field, values))

    async def flush(self) -> None:
        """Send the records collected so far (the kernel flushes after ``perform`` too)."""
        self._disarm()
        if self._pending:
            pending, self._pending = self._pending, []
            await self._send(pending)


# --------------------------------------------------------------------------- record errors


@dataclass(frozen=True)
class RecordError:
    """One non-fatal error on one record."""

    position: int  # 0-based index of the record on the input it came from
    producer: str  # the input's producer (or the module's own workload)
    message: str


class RecordErrorSink:
    """Where modules report per-record errors: counted, the first ``keep`` kept, each handed to
    ``on_error`` (the kernel's events) when given."""

    def __init__(self, on_error: Callable[[RecordError], Any] | None = None,
                 keep: int = 100) -> None:
        self._on_error = on_error
        self._keep = keep
        #: errors reported so far
        self.count = 0
        #: the first ``keep`` of them
        self.errors: list[RecordError] = []

    def report(self, position: int, producer: str, message: str) -> None:
        self.count += 1
        err = RecordError(position, producer, message)
        if len(self.errors) < self._keep:
            self.errors.append(err)
        if self._on_error is not None:
            self._on_error(err)


# --------------------------------------------------------------------------- for module code


_NO_INPUTS = StreamInputs([])


def inputs_of(ctx: Any) -> StreamInputs:
    """The module's ``StreamInputs`` (an empty one when it has none)."""
    inputs = ctx.extras.get("inputs")
    return inputs if inputs is not None else _NO_INPUTS


def output_of(ctx: Any) -> StreamOutput:
    """The module's ``StreamOutput`` (one that discards, when nothing consumes its records)."""
    out = ctx.extras.get("output")
    return out if out is not None else StreamOutput(None)


def errors_of(ctx: Any) -> RecordErrorSink:
    """The run's record-error sink (a private one when the kernel gave none)."""
    sink = ctx.extras.get("record_errors")
    if sink is None:
        sink = RecordErrorSink()
        ctx.extras["record_errors"] = sink
    return sink  # type: ignore[no-any-return]

