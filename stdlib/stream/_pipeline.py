"""``stream:pipeline``'s code: a sub-DAG of steps run over the records of its inputs."""

from __future__ import annotations

# --------------------------------------------------------------------------- code
#
# Module code (design.md §3 "stream:pipeline", §10).  Heavy imports stay inside functions: the
# compiler imports this file for the declaration only.
#
# The kernel hands every expression under ``params.steps[...]`` (each step's ``with`` values and
# its ``when``) as a callable ``f(overlay)`` evaluated over ``{**state, **overlay}``; literal
# values arrive as they are.
#
# Model of one pipeline run (run_once): each batch of incoming records goes through the steps
# as it arrives (so the pipeline streams, in bounded memory).  In a chain of steps (no
# ``needs``), a step that needs the whole stream (``data:aggregate``, ``data:format``) runs once,
# fed batch by batch through a channel, and the steps after it run on its output batches as they
# come; with ``needs`` around such a step the input is read whole first.  With no stream input
# the steps run once, on one empty record.  The steps run in order
# (``needs`` only ever names earlier steps); a stream step run batch by batch reports the counts
# of the whole stream.  A stateful step keeps its state in the pipeline's operator state (one
# child per step).  Each step reads the items of its predecessors (the step before it
# without ``needs``; the pipeline's input for the first step or ``needs: []``) and produces
# items.  An item is one record plus its lineage: the pipeline input record it came from and the
# outputs of the per-record steps it went through.
#
# * A data-plane step (``data:*``, ``passthrough``) runs its module's code once over the stream,
#   through in-memory channels (one input channel per predecessor, so ``data:join`` works); a
#   producer (``data:generate_from_list``, ``data:parse``) runs once per incoming item; a sink
#   (``data:format``) passes one empty record on, so the steps after it run once.
# * Any other module runs once per item, up to ``concurrency`` at once; its scope is the record's
#   fields, then ``{step_id: output}`` of the earlier steps (this item's own for per-record
#   steps, else the step's last output) and the ``register`` names.  The record that goes on is
#   the incoming one with the output's fields laid over it (so a data step after
#   ``connection:read`` reads ``.data``).  A false ``when`` skips the step for that item (its
#   id is null downstream, the record goes on unchanged); a failure is a record error and drops
#   the item, unless the pipeline runs on its single implicit record, which fails the workload.


_SKIPPED = object()


class _Item:
    """A record flowing between steps, with its lineage."""

    __slots__ = ("key", "origin", "outputs", "pos", "producer", "record")

    def __init__(self, key, origin, record, outputs, pos, producer):
        self.key = key  # identity across parallel branches of per-record steps
        self.origin = origin  # the pipeline input record it came from ({} when unknown)
        self.record = record  # the current record
        self.outputs = outputs  # step id -> output of the per-record steps it went through
        self.pos = pos  # position on its producer, for record errors
        self.producer = producer


def _is_data_plane(uses: str) -> bool:
    return uses.startswith("data:") or uses == "passthrough"


#: data steps that need the whole stream at once (a hash join's build side, windows that close
#: at the end, a document of every record): a pipeline with one reads its input whole
_WHOLE_STREAM = frozenset({"data:join", "data:aggregate", "data:format"})


def _spec(uses: str):
    from gxo.stdlib._spec import spec_of

    return spec_of(uses)


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _matches(patterns, path) -> bool:
    for pattern in patterns:
        parts = pattern.split(".")
        if len(parts) == len(path) and all(
            a == b or (a == "*" and isinstance(b, int)) for a, b in zip(parts, path)
        ):
            return True
    return False


def _resolve(value, overlay, keep, path=()):
    """Step params with every callable evaluated against ``overlay``; the params at a path in
    ``keep`` stay callables (of a record, or of a result), laid over the overlay."""
    if callable(value):
        if keep and _matches(keep, path):
            return lambda rec, _f=value, _o=overlay: _f({**_o, **rec} if isinstance(rec, dict) else _o)
        return value(overlay)
    if isinstance(value, dict):
        return {k: _resolve(v, overlay, keep, path + (k,)) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, overlay, keep, path + (i,)) for i, v in enumerate(value)]
    return value


class StreamPipeline:
    """``stream:pipeline``: a sub-DAG of module steps over each incoming record."""

    name = "stream:pipeline"

    async def perform(self, ctx, params):
        from gxo.runtime.module import ValidationError
        from gxo.runtime.streams import errors_of

        if not isinstance(params, dict) or not isinstance(params.get("steps"), list) \
                or not params["steps"]:
            raise ValidationError("parameter 'steps' must be a non-empty list")
        steps = params["steps"]
        concurrency = params.get("concurrency", 1)
        if concurrency is None:
            concurrency = 1
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValidationError(f"parameter 'concurrency' must be an integer >= 1, "
                                  f"got {concurrency!r}")
        ids: list[str] = []
        for i, step in enumerate(steps):
            if not isinstance(step, dict) or not isinstance(step.get("id"), str) \
                    or not isinstance(step.get("uses"), str):
                raise ValidationError(f"steps[{i}] needs an 'id' and a 'uses'")
            if step["id"] in ids:
                raise ValidationError(f"step id '{step['id']}' is used twice")
            for need in step.get("needs") or ():
                if need not in ids:
                    raise ValidationError(f"step '{step['id']}' needs '{need}', which is not "
                                          "an earlier step")
            ids.append(step["id"])
        run = _Run(ctx, steps, concurrency, errors_of(ctx))
        return await run.go()


class _Run:
    """One run of a pipeline over its input."""

    def __init__(self, ctx, steps, concurrency, sink):
        self.ctx = ctx
        self.steps = steps
        self.concurrency = concurrency
        self.sink = sink
        self.last: dict = {s["id"]: None for s in steps}  # step id -> last output
        self.ran: set = set()  # steps that produced an output at least once
        self.registers = {s["id"]: s["register"] for s in steps if s.get("register")}
        self.single = False  # running on the one implicit record
        self.chunked = False  # running the steps on one input batch of a streamed input
        self._out_pos: dict = {}  # data step id -> records it has output so far
        last = steps[-1]["uses"]
        # a pipeline whose last step is a sink (data:format) emits no records: its output is the
        # step's summary
        self._emits = not (_is_data_plane(last) and getattr(_spec(last), "record_schema", {}) is None)
        self._keys = 0

    def _key(self) -> int:
        self._keys += 1
        return self._keys

    # -- the run ----------------------------------------------------------------------------------

    async def go(self):
        ctx = self.ctx
        inputs = ctx.extras.get("inputs")
        out = ctx.extras.get("output")
        if inputs is None or len(inputs) == 0:
            self.single = True
            await self._emit(out, await self._steps([_Item(self._key(), {}, {}, {}, 0, ctx.workload)]))
            return {"records_processed": 1, "steps": dict(self.last)}
        # Streaming: every input batch goes through the steps as it arrives, so memory stays
        # bounded and records flow on while the input is still being read.  In a chain of steps
        # (no `needs`), a step that needs the whole stream (data:aggregate, data:format) runs
        # once, fed batch by batch, and keeps only its own state; with `needs` around one, the
        # input is read whole first.
        counted = [0]

        async def chunks():
            positions: dict = {}
            async for producer, batch in inputs:
                base = positions.get(producer, 0)
                positions[producer] = base + len(batch)
                items = []
                for i, record in enumerate(batch):
                    rec = record if isinstance(record, dict) else {"item": record}
                    items.append(_Item(self._key(), rec, rec, {}, base + i, producer))
                counted[0] += len(batch)
                yield items

        # a chain: each step reads the one before it (no `needs`, or `needs` naming just that one)
        chain = all(st.get("needs") is None or (i > 0 and list(st["needs"]) == [self.steps[i - 1]["id"]])
                    for i, st in enumerate(self.steps))
        if chain or not any(st["uses"] in _WHOLE_STREAM for st in self.steps):
            self.chunked = True
            await self._stream(self.steps, chunks(), out)
            await self._settle()
        else:
            items = [it async for batch in chunks() for it in batch]
            await self._emit(out, await self._steps(items))
        return {"records_processed": counted[0], "steps": dict(self.last)}

    async def _stream(self, steps: list, chunks, out) -> None:
        """Run the chunks of items (an async iterator of lists) through ``steps`` (a chain, or
        steps without a whole-stream one) and emit what comes out of the last one."""
        cut = next((i for i, st in enumerate(steps) if st["uses"] in _WHOLE_STREAM), None)
        if cut is None:
            async for items in chunks:
                await self._emit(out, (await self._steps(items, steps)) if steps else items)
            return
        prefix, whole, rest = steps[:cut], steps[cut], steps[cut + 1:]
        if rest and rest[0].get("needs") is not None:
            # in a chain, `needs: [whole]` is the step before: the records ``whole`` emits
            rest = [{**rest[0], "needs": None}, *rest[1:]]

        async def fed():
            async for items in chunks:
                yield (await self._steps(items, prefix)) if prefix else items

        live = self._live(whole, fed())
        if _spec(whole["uses"]).record_schema is None:
            # a sink (data:format): the steps after it run once, on an empty record
            async for _batch in live:
                pass

            async def once():
                yield [_Item(self._key(), {}, {}, {}, 0, self.ctx.workload)]

            await self._stream(rest, once(), out)
            return

        async def produced():
            pos = 0  # the position of each record on the step's output, for record errors
            async for batch in live:
                yield [_Item(self._key(), {}, rec if isinstance(rec, dict) else {"item": rec}, {},
                             pos + i, self.ctx.workload) for i, rec in enumerate(batch)]
                pos += len(batch)

        await self._stream(rest, produced(), out)

    async def _live(self, step, chunks):
        """Run the whole-stream ``step`` once, fed with the records of ``chunks`` as they come
        (backpressure included); yield its output batches as it emits them."""
        import asyncio

        from gxo.runtime._state_cy import deep_copy
        from gxo.runtime.module import load_module_class
        from gxo.runtime.opstate import operator_state_of
        from gxo.runtime.streams import Channel, StreamInputs, StreamOutput

        cls = load_module_class(step["uses"])
        if cls is None:
            raise self._fail(step, f"module {step['uses']} is not implemented")
        spec = _spec(step["uses"])
        keep = spec.per_record_params if spec is not None else ()
        # the items of the records in flight, for per-record params that read their lineage
        lineage: dict | None = {} if keep and _uses_paths(step.get("with") or {}, keep) else None

        def overlay_of(record):
            entry = lineage.get(id(record)) if lineage is not None and isinstance(record, dict) else None
            if entry is not None:
                return self._overlay(entry[0], record)
            return self._overlay(None, record if isinstance(record, dict) else {})

        params = _resolve_data(step.get("with") or {}, self._overlay(None), keep, overlay_of)
        in_ch, out_ch = Channel(100), Channel(100)
        output = StreamOutput(out_ch)
        fed = _FedWindow()  # the items behind the latest positions of the step's input
        sub = self._sub_context({"inputs": StreamInputs([(self.ctx.workload, in_ch)]),
                                 "output": output,
                                 "record_errors": _StepErrors(self.sink, step["id"],
                                                              {self.ctx.workload: fed}),
                                 "operator_state": operator_state_of(self.ctx).child(step["id"])})
        mod = cls()

        async def feed():
            try:
                async for items in chunks:
                    items, skipped = self._when_split(step, items)
                    if skipped and not out_ch.closed:  # `when` is false: they go on unchanged
                        await out_ch.send([it.record for it in skipped])
                    records = []
                    for it in items:
                        rec = deep_copy(it.record)  # a record read from an input belongs to the module
                        if lineage is not None:
                            lineage[id(rec)] = (it, rec)  # (rec kept alive: its id stays its own)
                        records.append(rec)
                        fed.append(it)
                    if records:
                        await in_ch.send(records)
            finally:
                in_ch.close()

        feeder = asyncio.ensure_future(feed())
        runner = asyncio.ensure_future(_run_step_module(mod, sub, params, output, [in_ch], out_ch))
        try:
            async for batch in out_ch:
                yield batch
            summary = await runner
            await feeder
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the step's failure fails the pipeline
            if getattr(exc, "pipeline_step", None) is not None:  # a step before it failed
                raise
            raise self._fail(step, exc) from None
        finally:
            for t in (feeder, runner):
                if not t.done():
                    t.cancel()
                elif not t.cancelled():
                    t.exception()  # retrieved: the step's failure is the one reported
        self._record_output(step, summary)

    async def _steps(self, items: list, steps: list | None = None) -> list:
        """Run ``items`` through ``steps`` (every step by default); the last step's items."""
        steps = self.steps if steps is None else steps
        streams: dict = {}
        prev = None
        for step in steps:
            sid = step["id"]
            needs = step.get("needs")
            preds = list(needs) if needs is not None else ([prev] if prev is not None else [])
            sources = [streams[p] for p in preds] if preds else [items]
            if _is_data_plane(step["uses"]):
                streams[sid] = await self._data_step(step, preds, sources)
            else:
                streams[sid] = await self._record_step(step, _merge(sources))
            prev = sid
        return streams[steps[-1]["id"]]

    async def _emit(self, out, final: list) -> None:
        # sent at once: records never wait for the next chunk to fill a batch
        if out is not None and final and self._emits:
            records = [it.record for it in final]
            if len(records) <= out.batch_size:
                await out.send_batch(records)
            else:
                await out.emit(records)
                await out.flush()

    async def _settle(self) -> None:
        """After a streamed input: a stream step that no batch reached (a filter before it
        dropped every record) reports what it reports for an empty stream."""
        self.chunked = False
        for step in self.steps:
            if _is_data_plane(step["uses"]) and step["id"] not in self.ran:
                spec = _spec(step["uses"])
                if spec is not None and spec.stream_input != "none":
                    await self._data_step(step, [self.ctx.workload], [[]])

    # -- scopes -----------------------------------------------------------------------------------

    def _overlay(self, item, record=None) -> dict:
        """Record fields, then the steps' outputs (this item's own over the last ones), then the
        register names."""
        outputs = {**self.last, **item.outputs} if item is not None else dict(self.last)
        overlay = {}
        if item is not None:
            overlay.update(item.origin)
            overlay.update(item.record if record is None else record)
        elif record is not None:
            overlay.update(record)
        overlay.update(outputs)
        for sid, reg in self.registers.items():
            if sid in self.ran or (item is not None and sid in item.outputs):
                overlay[reg] = outputs.get(sid)
        return overlay

    def _sub_context(self, extras: dict):
        from msgspec.structs import replace

        return replace(self.ctx, extras=extras)

    def _fail(self, step, exc) -> Exception:
        from gxo.runtime.module import ModuleError

        err = ModuleError(f"step {step['id']} ({step['uses']}) failed: {_text(exc)}")
        err.pipeline_step = step["id"]  # type: ignore[attr-defined]
        return err

    # -- per-record steps -------------------------------------------------------------------------

    async def _record_step(self, step, items):
        import asyncio

        from gxo.runtime.exprlib import truthy
        from gxo.runtime.module import load_module_class
        from gxo.stdlib._spec import spec_of

        sid, uses = step["id"], step["uses"]
        cls = load_module_class(uses)
        if cls is None:
            raise self._fail(step, f"module {uses} is not implemented")
        spec = spec_of(uses)
        # per-result conditions of a module that reads no stream (http:request success_when)
        keep = spec.per_record_params if spec is not None and spec.stream_input == "none" else ()
        inline = spec is not None and spec.inline
        when = step.get("when")
        with_ = step.get("with") or {}
        limit = asyncio.Semaphore(self.concurrency)
        sink_errors = self.sink

        async def one(item):
            overlay = self._overlay(item)
            if when is not None:
                cond = when(overlay) if callable(when) else when
                if not truthy(cond):
                    return item, _SKIPPED
            params = _resolve(with_, overlay, keep)
            mod = cls()
            sub = self._sub_context({"record_errors": sink_errors})
            async with limit:
                result = await _perform(mod, sub, params, inline)
            return item, result

        async def guarded(item):
            try:
                return await one(item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a record error, or the run's failure
                if self.single:
                    raise self._fail(step, exc) from None
                sink_errors.report(item.pos, item.producer, f"step {sid}: {_text(exc)}")
                return item, None, exc

        if len(items) == 1 or self.concurrency == 1:
            results = [await guarded(it) for it in items]
        else:
            results = await asyncio.gather(*(guarded(it) for it in items))
        out = []
        for entry in results:
            if len(entry) == 3:  # failed: the record is dropped
                continue
            item, result = entry
            if result is _SKIPPED:  # skipped
                out.append(_Item(item.key, item.origin, item.record, {**item.outputs, sid: None},
                                 item.pos, item.producer))
                continue
            self.last[sid] = result
            self.ran.add(sid)
            record = {**item.record, **result} if isinstance(result, dict) else item.record
            out.append(_Item(item.key, item.origin, record, {**item.outputs, sid: result},
                             item.pos, item.producer))
        return out

    # -- data-plane steps -------------------------------------------------------------------------

    async def _data_step(self, step, preds, sources):
        from gxo.runtime.module import load_module_class
        from gxo.stdlib._spec import spec_of

        uses = step["uses"]
        cls = load_module_class(uses)
        if cls is None:
            raise self._fail(step, f"module {uses} is not implemented")
        spec = spec_of(uses)
        if spec is not None and spec.stream_input == "none":
            # a producer: once per incoming item, its records inherit that item's lineage
            out = []
            taken, skipped = self._when_split(step, _merge(sources))
            for item in taken:
                records, summary = await self._run_data(step, cls, spec, [], item)
                self._record_output(step, summary)
                out.extend(self._lineage(records, {}, item))
            return out + skipped
        if len(sources) > 1 and getattr(spec, "stream_input", "one") != "two_or_more":
            # branches of the same records (needs: [a, b]): one stream, each record once, with
            # the outputs of every branch it went through (as for a per-record step)
            sources = [_merge(sources)]
            preds = []
        names = preds or [self._input_name(sources[0])]
        skipped: list = []
        if step.get("when") is not None:  # the records it is false for go on unchanged
            split = [self._when_split(step, src) for src in sources]
            sources = [taken for taken, _ in split]
            skipped = _merge([sk for _, sk in split]) if len(split) > 1 else split[0][1]
        all_items = [it for src in sources for it in src]
        if self.chunked and not all_items:
            return skipped  # nothing of this batch reached the step (see _settle)
        single = all_items[0] if len(all_items) == 1 else None
        records, summary, by_id = await self._run_data(step, cls, spec, list(zip(names, sources)),
                                                       single)
        self._record_output(step, summary)
        if spec is not None and spec.record_schema is None:
            # a sink (data:format): the steps after it run once, on an empty record
            return [_Item(self._key(), {}, {}, {}, 0, self.ctx.workload)]
        return self._lineage(records, by_id, single, step["id"]) + skipped

    def _when_split(self, step, items) -> tuple[list, list]:
        """The items ``step`` runs on, and those its ``when`` is false for (they go on unchanged,
        the step's id null for them); an item whose ``when`` fails is a record error, dropped."""
        when = step.get("when")
        if when is None:
            return list(items), []
        from gxo.runtime.exprlib import truthy

        sid = step["id"]
        taken, skipped = [], []
        for item in items:
            try:
                cond = when(self._overlay(item)) if callable(when) else when
            except Exception as exc:  # noqa: BLE001 - a record error
                if self.single:
                    raise self._fail(step, exc) from None
                self.sink.report(item.pos, item.producer, f"step {sid}: when: {_text(exc)}")
                continue
            if truthy(cond):
                taken.append(item)
            else:
                skipped.append(_Item(item.key, item.origin, item.record, {**item.outputs, sid: None},
                                     item.pos, item.producer))
        return taken, skipped

    def _input_name(self, items) -> str:
        producers = {it.producer for it in items}
        return producers.pop() if len(producers) == 1 else self.ctx.workload

    def _record_output(self, step, summary) -> None:
        prev = self.last.get(step["id"])
        if step["id"] in self.ran and isinstance(prev, dict) and isinstance(summary, dict) \
                and _is_data_plane(step["uses"]):
            # a data step run batch by batch, or a producer step run once per record: its counts
            # are those of the whole stream
            summary = {**summary, **{k: prev[k] + v for k, v in summary.items()
                                     if _is_count(v) and _is_count(prev.get(k))}}
        self.last[step["id"]] = summary
        self.ran.add(step["id"])

    def _lineage(self, records, by_id, single, step_id=None):
        """Items for a data step's output records: each inherits the lineage of the input record
        it is (or of the one item the step ran on); a new record starts its own, placed by its
        position on the step's output (counted across the step's batches)."""
        out = []
        start = self._out_pos.get(step_id, 0)
        self._out_pos[step_id] = start + len(records)
        for i, record in enumerate(records, start):
            rec = record if isinstance(record, dict) else {"item": record}
            src = by_id.get(id(record)) if by_id else None
            if src is None:
                src = single
            if src is not None:
                out.append(_Item(src.key if src is not single or len(records) == 1 else self._key(),
                                 src.origin, rec, src.outputs, src.pos, src.producer))
            else:
                out.append(_Item(self._key(), {}, rec, {}, i, self.ctx.workload))
        return out

    async def _run_data(self, step, cls, spec, inputs, single):
        """Run a data-plane module over ``inputs`` ((name, items) pairs; none for a producer):
        its output records, its summary and the input items by record identity."""
        import asyncio

        from gxo.runtime._state_cy import deep_copy
        from gxo.runtime.opstate import operator_state_of
        from gxo.runtime.streams import Channel, StreamInputs, StreamOutput

        by_id: dict = {}
        feeds = []
        for _name, items in inputs:
            copies = []
            for it in items:
                rec = deep_copy(it.record)  # a record read from an input belongs to the module
                by_id[id(rec)] = it
                copies.append(rec)
            feeds.append(copies)

        def overlay_of(record):
            item = by_id.get(id(record)) if isinstance(record, dict) else None
            if item is not None:
                return self._overlay(item, record)
            if single is not None:
                return self._overlay(single, record if isinstance(record, dict) else {})
            return self._overlay(None, record if isinstance(record, dict) else {})

        base = self._overlay(single) if single is not None else self._overlay(None)
        keep = spec.per_record_params if spec is not None else ()
        params = _resolve_data(step.get("with") or {}, base, keep, overlay_of)

        channels = [Channel(100) for _ in feeds]
        out_ch = Channel(100)
        # a stateful step (data:join, data:aggregate) keeps its state in the pipeline's operator
        # state, one child per step: kept per workload, across the records it is fed
        extras = {"output": StreamOutput(out_ch),
                  "record_errors": _StepErrors(self.sink, step["id"], dict(inputs)),
                  "operator_state": operator_state_of(self.ctx).child(step["id"])}
        if inputs:
            extras["inputs"] = StreamInputs([(name, ch) for (name, _), ch in zip(inputs, channels)])
        output = extras["output"]
        mod = cls()
        sub = self._sub_context(extras)
        collected: list = []

        async def feed(ch, records):
            try:
                for i in range(0, len(records), 100):
                    await ch.send(records[i:i + 100])
            finally:
                ch.close()

        async def collect():
            async for batch in out_ch:
                collected.extend(batch)

        tasks = [asyncio.ensure_future(feed(ch, recs)) for ch, recs in zip(channels, feeds)]
        reader = asyncio.ensure_future(collect())
        try:
            summary = await _run_step_module(mod, sub, params, output, channels, out_ch)
            await reader
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a data step's failure fails the pipeline
            raise self._fail(step, exc) from None
        finally:
            for t in [*tasks, reader]:
                if not t.done():
                    t.cancel()
        if spec is not None and spec.stream_input == "none":
            return collected, summary
        return collected, summary, by_id


def _resolve_data(value, base, keep, overlay_of, path=()):
    """A data step's params: per-record ones stay functions of the record (with the record's
    lineage laid under it), the others are evaluated once against ``base``."""
    if callable(value):
        if keep and _matches(keep, path):
            return lambda record, _f=value: _f(overlay_of(record))
        return value(base)
    if isinstance(value, dict):
        return {k: _resolve_data(v, base, keep, overlay_of, path + (k,)) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_data(v, base, keep, overlay_of, path + (i,)) for i, v in enumerate(value)]
    return value


async def _perform(mod, ctx, params, inline: bool = False):
    """A module's ``perform``: awaited, called in place (inline modules) or in a thread."""
    import asyncio

    if asyncio.iscoroutinefunction(mod.perform):
        return await mod.perform(ctx, params)
    if inline:
        return mod.perform(ctx, params)
    return await asyncio.to_thread(mod.perform, ctx, params)


async def _run_step_module(mod, ctx, params, output, inputs, out_ch):
    """A data step's module to its end, its output flushed; whatever happens, its input
    channels are let go (no feeder stays blocked) and its output channel is ended."""
    try:
        summary = await _perform(mod, ctx, params)
        await output.flush()
        return summary
    finally:
        for ch in inputs:
            ch.discard()
        out_ch.close()


class _FedWindow:
    """The items fed to a whole-stream step, by position on its input: only the latest
    ``keep`` are held (a module reports a record error as it reads the record)."""

    def __init__(self, keep: int = 10_000):
        self._items: dict = {}
        self._next = 0
        self._keep = keep

    def append(self, item) -> None:
        self._items[self._next] = item
        self._items.pop(self._next - self._keep, None)
        self._next += 1

    def get(self, position):
        return self._items.get(position)


class _StepErrors:
    """The record-error sink of a data step: an error is reported at the place of the record on
    the pipeline's input (its lineage) when the step read it from an earlier step or the input,
    named after the step."""

    def __init__(self, sink, step_id: str, fed: dict):
        self._sink = sink
        self._step = step_id
        self._fed = fed  # input name -> the items fed on it, by position

    def report(self, position, producer, message) -> None:
        items = self._fed.get(producer)
        item = None
        if isinstance(items, list):
            item = items[position] if isinstance(position, int) and 0 <= position < len(items) else None
        elif items is not None:
            item = items.get(position)
        if item is not None:
            position, producer = item.pos, item.producer
        self._sink.report(position, producer, f"step {self._step}: {message}")


def _uses_paths(value, keep, path=()) -> bool:
    """Whether ``value`` holds an expression at one of the ``keep`` paths."""
    if callable(value):
        return _matches(keep, path)
    if isinstance(value, dict):
        return any(_uses_paths(v, keep, path + (k,)) for k, v in value.items())
    if isinstance(value, list):
        return any(_uses_paths(v, keep, path + (i,)) for i, v in enumerate(value))
    return False


def _merge(sources):
    """The items of several predecessors, one per key (outputs and records combined)."""
    if len(sources) == 1:
        return sources[0]
    merged: dict = {}
    for items in sources:
        for it in items:
            seen = merged.get(it.key)
            if seen is None:
                merged[it.key] = it
            else:
                merged[it.key] = _Item(it.key, seen.origin, {**seen.record, **it.record},
                                       {**seen.outputs, **it.outputs}, seen.pos, seen.producer)
    return list(merged.values())


def _text(exc) -> str:
    if isinstance(exc, BaseException):
        return str(exc) or type(exc).__name__
    return str(exc)


