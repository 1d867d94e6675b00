"""``data:aggregate``: grouped aggregates over count or time windows, or the whole stream."""

from __future__ import annotations

from gxo.stdlib.data._common import _one_input


class Aggregate:
    """``data:aggregate``: group records and aggregate them over count or time windows, or
    over the whole stream."""

    name = "data:aggregate"

    async def perform(self, ctx, params):
        import asyncio

        from gxo.runtime._records_cy import aggregate_batch, field_records, sum_values
        from gxo.runtime.exprlib import text
        from gxo.runtime.module import ValidationError
        from gxo.runtime.opstate import operator_state_of
        from gxo.runtime.streams import errors_of, output_of
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        group_by = p.opt_str_list(params, "group_by_fields")
        specs = params.get("aggregate_fields")
        if not isinstance(specs, list) or not specs:
            raise ValidationError("parameter 'aggregate_fields' must be a non-empty list")
        aggs: list = []
        for i, spec in enumerate(specs):
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                raise ValidationError(f"aggregate_fields[{i}] needs a name")
            op = spec.get("op")
            if op not in ("count", "sum", "avg", "min", "max"):
                raise ValidationError(f"aggregate_fields[{i}].op must be one of count, sum, avg, "
                                      f"min, max")
            source = spec.get("source_field")
            if op != "count" and not isinstance(source, str):
                raise ValidationError(f"aggregate_fields[{i}] ({op}) needs a source_field")
            aggs.append((spec["name"], op, source))
        has_window = params.get("window") is not None
        count = p.opt_int(params, "count", minimum=1)
        if has_window and count is not None:
            raise ValidationError("give at most one of 'window' and 'count' (neither: the "
                                  "whole stream is one window)")
        window = p.opt_duration(params, "window", "1s") if has_window else None
        if window is not None and window <= 0:
            raise ValidationError("parameter 'window' must be positive")
        numeric_fields = [src for _, op, src in aggs if op != "count"]
        inputs = _one_input(ctx, "data:aggregate")
        out = output_of(ctx)
        errors = errors_of(ctx)

        # group key -> [group values, records counted, sums, mins, maxs] (one entry per source
        # field); the open windows live in the kernel's operator state of this workload
        state = operator_state_of(ctx)
        groups: dict = state.region("groups")
        stats = state.region("counts")
        stats.setdefault("records_in", 0)
        stats.setdefault("groups_emitted", 0)
        fields = tuple(group_by)
        sources = tuple(dict.fromkeys(numeric_fields))
        column = {src: j for j, src in enumerate(sources)}
        outputs = [(name, op, column.get(src, 0)) for name, op, src in aggs]
        minmax = any(op in ("min", "max") for _, op, _ in aggs)  # else mins/maxs are not kept

        def bad_number(record, src) -> str:
            from gxo.stdlib._params import kind

            v = record.get(src) if isinstance(record, dict) else None
            what = "missing" if not isinstance(record, dict) or src not in record \
                else f"not a number ({kind(v)})"
            return f"source_field {src!r} is {what}"

        def result(g) -> dict:
            values, n, sums, mins, maxs = g
            rec = dict(zip(fields, values))
            for name, op, j in outputs:
                if op == "count":
                    rec[name] = n
                elif op == "sum":
                    rec[name] = sums[j]
                elif op == "avg":
                    rec[name] = sums[j] / n
                elif op == "min":
                    rec[name] = mins[j]
                else:
                    rec[name] = maxs[j]
            return rec

        async def flush_all() -> None:
            if not groups:
                return
            batch = [result(g) for g in groups.values()]
            groups.clear()
            stats["groups_emitted"] += len(batch)
            await out.send_batch(batch)

        positions: dict = state.region("positions")
        limit = count or 0

        async def process(producer, batch) -> None:
            base = positions.get(producer, 0)
            positions[producer] = base + len(batch)
            stats["records_in"] += len(batch)
            ready: list = []
            aggregate_batch(batch, base, producer, errors, fields, sources, groups, limit,
                            ready, text, bad_number, minmax)
            if ready:
                stats["groups_emitted"] += len(ready)
                await out.send_batch([result(g) for g in ready])

        # the records {field: value} handed over as their values (a data:map of one field):
        # a whole-stream sum of that field reads the values; anything else gets the records
        one_sum = not fields and len(sources) == 1 and limit == 0 and not minmax

        async def process_fields(producer, field, values) -> None:
            if not (one_sum and field == sources[0]):
                await process(producer, field_records(field, values))
                return
            base = positions.get(producer, 0)
            positions[producer] = base + len(values)
            stats["records_in"] += len(values)
            sum_values(values, base, producer, errors, field, groups, bad_number)

        async def read() -> None:
            await inputs.each(process, process_fields)

        if window is None:
            await read()
            await flush_all()
            return dict(stats)

        # Time windows: a ticker flushes every group at each tick; only it emits, and it does
        # the final flush once reading is over, so no aggregate is lost or emitted twice.
        stop = asyncio.Event()

        async def tick() -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + window
            while True:
                try:
                    await asyncio.wait_for(stop.wait(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    pass
                await flush_all()
                if stop.is_set():
                    return
                deadline += window

        ticker = asyncio.ensure_future(tick())
        try:
            await read()
            stop.set()
            await ticker
        finally:
            if not ticker.done():
                ticker.cancel()
        return dict(stats)
