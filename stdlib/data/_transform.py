"""``data:map`` and ``data:filter``: the one-in/one-out transforms."""

from __future__ import annotations

from gxo.stdlib.data._common import _is_record, _one_input


def _as_record(value):
    """data:map's result as a record: a map, or text that decodes to a JSON object."""
    from gxo.runtime.limits import LimitExceeded, load_json
    from gxo.stdlib._params import kind

    if isinstance(value, dict):
        if _is_record(value):
            return value
        raise ValueError("the template yields a map whose keys are not all strings")
    if isinstance(value, str):
        try:
            decoded = load_json(value, constants=True)
        except LimitExceeded as exc:
            raise ValueError(f"the template's JSON is past a limit: {exc} (docs/runtime.md#limits)") from None
        except ValueError:
            raise ValueError(f"the template must render a JSON object, got text "
                             f"{value[:80]!r}") from None
        if isinstance(decoded, dict):
            return decoded
        raise ValueError(f"the template must render a JSON object, got a JSON {kind(decoded)}")
    raise ValueError(f"the template must render a JSON object, got {kind(value)}")


class Map:
    """``data:map``: one output record per input record, from ``template``."""

    name = "data:map"

    async def perform(self, ctx, params):
        from gxo.runtime._records_cy import RecordFn, map_batch, map_values
        from gxo.runtime._state_cy import deep_copy
        from gxo.runtime.module import ValidationError
        from gxo.runtime.streams import errors_of, output_of

        if not isinstance(params, dict) or "template" not in params:
            raise ValidationError("missing required parameter 'template'")
        template = params["template"]
        inputs = _one_input(ctx, "data:map")
        out = output_of(ctx)
        errors = errors_of(ctx)
        if callable(template):
            fn = RecordFn.plain(template)
        else:  # a literal: every record is (a copy of) the same object
            try:
                constant = _as_record(template)
            except ValueError as exc:
                raise ValidationError(f"parameter 'template': {exc}") from None
            fn = RecordFn.plain(lambda _record: deep_copy(constant))

        positions: dict = {}
        counts = [0, 0]  # records in, out
        # a template of one field gives that field's values: the records {column: value} go on
        # as those values (StreamOutput.send_field: built only for a consumer that needs them)
        column = fn.column

        def position(producer, n) -> int:
            """Where a batch of ``n`` records of ``producer`` starts in its stream."""
            base = positions.get(producer, 0)
            positions[producer] = base + n
            return base

        async def send(n, result) -> None:
            counts[0] += n
            counts[1] += len(result)
            if result:
                if column:
                    await out.send_field(column, result)
                else:
                    await out.send_batch(result)

        async def process(producer, batch) -> None:
            base = position(producer, len(batch))
            await send(len(batch), map_batch(fn, batch, base, producer, errors, _as_record))

        async def process_fields(producer, field, values) -> None:
            # the records {field: value} of a producer that hands them over as their values
            base = position(producer, len(values))
            await send(len(values), map_values(fn, field, values, base, producer, errors, _as_record))

        await inputs.each(process, process_fields)
        return {"records_in": counts[0], "records_out": counts[1]}


class Filter:
    """``data:filter``: forward the records whose condition is truthy."""

    name = "data:filter"

    async def perform(self, ctx, params):
        from gxo.runtime._records_cy import RecordFn, filter_batch, filter_values
        from gxo.runtime.exprlib import truthy
        from gxo.runtime.module import ValidationError
        from gxo.runtime.streams import errors_of, output_of

        if not isinstance(params, dict) or "condition" not in params:
            raise ValidationError("missing required parameter 'condition'")
        condition = params["condition"]
        inputs = _one_input(ctx, "data:filter")
        out = output_of(ctx)
        errors = errors_of(ctx)
        positions: dict = {}
        n_in = n_out = 0
        if not callable(condition):
            keep_all = truthy(condition)
            async for _producer, batch in inputs:
                n_in += len(batch)
                if keep_all:
                    n_out += len(batch)
                    await out.send_batch(batch)
            return {"records_in": n_in, "records_out": n_out}
        fn = RecordFn.plain(condition)
        counts = [0, 0]  # records in, out

        async def process(producer, batch) -> None:
            base = positions.get(producer, 0)
            positions[producer] = base + len(batch)
            kept = filter_batch(fn, batch, base, producer, errors)
            counts[0] += len(batch)
            counts[1] += len(kept)
            if kept:
                await out.send_batch(kept)

        async def process_fields(producer, field, values) -> None:
            # the records {field: value} of a producer that hands them over as their values:
            # the kept ones go on the same way
            base = positions.get(producer, 0)
            positions[producer] = base + len(values)
            kept = filter_values(fn, field, values, base, producer, errors)
            counts[0] += len(values)
            counts[1] += len(kept)
            if kept:
                await out.send_field(field, kept)

        await inputs.each(process, process_fields)
        return {"records_in": counts[0], "records_out": counts[1]}
