"""Helpers shared by the ``data:*`` module code."""

from __future__ import annotations

def _is_record(value) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) for k in value)


def _error_text(exc: BaseException) -> str:
    from gxo.runtime._records_cy import error_text

    return error_text(exc)


def _one_input(ctx, module: str):
    from gxo.runtime.module import ValidationError
    from gxo.runtime.streams import inputs_of

    inputs = inputs_of(ctx)
    if len(inputs) > 1:
        raise ValidationError(f"{module} reads exactly one stream input, got {len(inputs)}")
    return inputs


class Tally:
    """The bookkeeping of a one-in/one-out transform (data:map, data:filter): where each
    producer's next batch starts in its stream (the positions of record errors), the records
    in and out, and the sending of a batch's result, as records or as one field's values."""

    __slots__ = ("out", "positions", "records_in", "records_out")

    def __init__(self, out) -> None:
        self.out = out
        self.positions: dict = {}
        self.records_in = 0
        self.records_out = 0

    def start(self, producer, n) -> int:
        """Where a batch of ``n`` records of ``producer`` starts in its stream."""
        base = self.positions.get(producer, 0)
        self.positions[producer] = base + n
        return base

    async def send(self, n, result, field: str = "") -> None:
        """A batch of ``n`` records in gave ``result``: the records, or with ``field`` the
        values of the records ``{field: value}``."""
        self.records_in += n
        self.records_out += len(result)
        if result:
            if field:
                await self.out.send_field(field, result)
            else:
                await self.out.send_batch(result)

    def summary(self) -> dict:
        return {"records_in": self.records_in, "records_out": self.records_out}
