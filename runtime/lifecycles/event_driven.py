"""``event_driven``: one ephemeral instance of the workload's process per record of its source.

The ``source`` is a long-running producer (a supervised ``exec`` with ``stdout_records: true``,
a listener, ``test:producer`` with ``interval``); its stream reaches this workload through a
normal channel.  Each record starts an instance with the record's fields at the top of its
template scope (the global state stays readable) and a workspace of its own.  At most
``lifecycle.concurrency`` instances (default 8) run at once: while all are busy the dispatcher
does not read the channel, so the channel fills and back-pressure reaches the source under the
channel's overflow policy.  An instance's failure is that instance's: counted, logged
(redacted), never the end of the workload.  When the source's stream ends, the running
instances finish and the workload ends ``Completed``; when the source fails, ``Failed``.

A ``stream:pipeline`` with a stateful step (``data:aggregate``, ``data:join``) is different:
its windows and build sides must span the events, so it runs as **one long-lived topology**
fed by the source's stream (design.md §3).  Its per-record steps still run once per record,
concurrently up to the pipeline's ``concurrency``; a record's failure is a record error
(counted, logged), never the end of the workload; a time window emits when it closes.  The
topology's operator state is the workload's own and outlives the topology: when the source
is restarted and the topology runs again, open windows carry on.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gxo.runtime.lifecycles.base import COMPLETED, DEFAULT_CONCURRENCY, FAILED, Manager, describe, stop_all

#: how many instance ends between two ``host.update`` calls (the live view's counters)
UPDATE_EVERY = 256
#: pipeline steps that keep state across records: with one of them, an event-driven pipeline
#: runs as one topology fed by its source, not as an instance per record
STATEFUL_STEPS = frozenset({"data:aggregate", "data:join"})


def runs_as_topology(w: Any) -> bool:
    """Whether event-driven ``w`` runs as one long-lived topology fed by its source."""
    if w.module != "stream:pipeline" or not isinstance(w.params, dict):
        return False
    steps = w.params.get("steps")
    return isinstance(steps, list) and any(
        isinstance(st, dict) and st.get("uses") in STATEFUL_STEPS for st in steps)


class Dispatcher(Manager):
    policy = "event_driven"

    def __init__(self, host: Any, w: Any) -> None:
        super().__init__(host, w)
        self.concurrency = max(1, int(getattr(self.lc, "concurrency", DEFAULT_CONCURRENCY) or DEFAULT_CONCURRENCY))
        self.running: set[asyncio.Task[None]] = set()
        self.started = self.ok = self.failed = 0

    def info(self) -> dict[str, Any]:
        return {"instances_started": self.started, "instances_ok": self.ok, "instances_failed": self.failed,
                "running": len(self.running)}

    async def run(self) -> tuple[str, str | None]:
        inputs = self.host.inputs(self.w)
        if inputs is None:
            return FAILED, f"its source '{self.lc.source}' has no stream to it"
        if runs_as_topology(self.w):
            return await self._topology()
        slots = asyncio.Semaphore(self.concurrency)
        loop = asyncio.get_running_loop()
        outcome: tuple[str, str | None] = (COMPLETED, None)
        inline = self.host.inline_instances(self.w)
        try:
            try:
                async for _producer, batch in inputs:
                    if inline is not None:  # each instance right here, in order
                        self._inline_batch(inline, batch)
                        continue
                    for record in batch:
                        await slots.acquire()  # all busy: the channel is not read, the source waits
                        task = loop.create_task(self._instance(record, slots))
                        self.running.add(task)
                        task.add_done_callback(self.running.discard)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the source failed: no more events come
                outcome = (FAILED, f"source '{self.lc.source}' failed: {describe(exc)}")
            if self.running:
                await asyncio.gather(*list(self.running), return_exceptions=True)
        except asyncio.CancelledError:
            await stop_all(self.running)
            raise
        finally:
            self.host.update(self.w, **self.info())
        return outcome

    async def _topology(self) -> tuple[str, str | None]:
        """The pipeline once, reading the source's stream itself until it ends."""
        self.started += 1
        self.host.update(self.w, **self.info())
        try:
            await self.host.run_instance(self.w)
            self.ok += 1
            return COMPLETED, None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the topology (or its source) failed
            self.failed += 1
            return FAILED, describe(exc)
        finally:
            self.host.update(self.w, **self.info())

    def _inline_batch(self, cls: Any, batch: list[Any]) -> None:
        host, w = self.host, self.w
        for record in batch:
            self.started += 1
            failed = False
            try:
                host.run_inline(w, cls, record if isinstance(record, dict) else {"value": record})
                self.ok += 1
            except Exception as exc:  # noqa: BLE001 - an instance's failure is its own
                self.failed += 1
                failed = True
                host.instance_failed(w, describe(exc))
            host.instance_ended(w, record, failed)
        host.update(w, **self.info())

    async def _instance(self, record: Any, slots: asyncio.Semaphore) -> None:
        self.started += 1
        failed = True
        try:
            await self.host.run_instance(self.w, record if isinstance(record, dict) else {"value": record},
                                         ephemeral=True)
            self.ok += 1
            failed = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - an instance's failure is its own
            self.failed += 1
            self.host.instance_failed(self.w, describe(exc))
        finally:
            self.host.instance_ended(self.w, record, failed)
            slots.release()
            if (self.ok + self.failed) % UPDATE_EVERY == 0:
                self.host.update(self.w, **self.info())
