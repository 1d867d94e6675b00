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
