"""``data:map`` and ``data:filter``: the one-in/one-out transforms."""

from __future__ import annotations

from gxo.stdlib.data._common import Tally, _is_record, _one_input


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

        tally = Tally(out)
        # a template of one field gives that field's values: the records {column: value} go on
        # as those values (StreamOutput.send_field: built only for a consumer that needs them)
        column = fn.column

        async def process(producer, batch) -> None:
            base = tally.start(producer, len(batch))
            await tally.send(len(batch), map_batch(fn, batch, base, producer, errors, _as_record), column)

        async def process_fields(producer, field, values) -> None:
            # the records {field: value} of a producer that hands them over as their values
            base = tally.start(producer, len(values))
            await tally.send(len(values), map_values(fn, field, values, base, producer, errors, _as_record), column)

        await inputs.each(process, process_fields)
        return tally.summary()


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
        tally = Tally(out)
        if not callable(condition):
            keep_all = truthy(condition)
            async for _producer, batch in inputs:
                await tally.send(len(batch), batch if keep_all else [])
            return tally.summary()
        fn = RecordFn.plain(condition)

        async def process(producer, batch) -> None:
            base = tally.start(producer, len(batch))
            await tally.send(len(batch), filter_batch(fn, batch, base, producer, errors))

        async def process_fields(producer, field, values) -> None:
            # the records {field: value} of a producer that hands them over as their values:
            # the kept ones go on the same way
            base = tally.start(producer, len(values))
            await tally.send(len(values), filter_values(fn, field, values, base, producer, errors), field)

        await inputs.each(process, process_fields)
        return tally.summary()
