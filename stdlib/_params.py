"""Run-time param checks shared by the module code (checklist §7.3, ``paramutil``).

The compiler validates literal params against each module's schema; values rendered from
templates arrive only at run time, so module code checks what it reads with these helpers,
which raise ``ValidationError`` with uniform messages ("missing required parameter 'k'",
"parameter 'k' must be a string, got int").

This file is imported by the stdlib namespaces, which the compiler imports: it stays light and
imports the runtime's error classes only when it raises one.
"""

from __future__ import annotations

import re
from typing import Any

_MISSING = object()


def _invalid(message: str) -> Exception:
    from gxo.runtime.module import ValidationError

    return ValidationError(message)


def kind(value: object) -> str:
    """A value's type name in the playbook's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, dict):
        return "map"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


def check_map(params: Any) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise _invalid(f"params must be a map, got {kind(params)}")
    return params


def check_allowed(params: dict[str, Any], allowed: tuple[str, ...], module: str) -> None:
    unknown = sorted(k for k in params if k not in allowed)
    if unknown:
        raise _invalid(
            f"{module}: unknown parameter {unknown[0]!r} (expected one of: {', '.join(allowed)})"
        )


def req_str(params: dict[str, Any], key: str, *, nonempty: bool = True) -> str:
    value = params.get(key, _MISSING)
    if value is _MISSING or value is None:
        raise _invalid(f"missing required parameter {key!r}")
    if not isinstance(value, str):
        raise _invalid(f"parameter {key!r} must be a string, got {kind(value)}")
    if nonempty and value == "":
        raise _invalid(f"parameter {key!r} must not be empty")
    return value


def opt_str(params: dict[str, Any], key: str, default: str | None = None) -> str | None:
    value = params.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _invalid(f"parameter {key!r} must be a string, got {kind(value)}")
    return value


def opt_bool(params: dict[str, Any], key: str, default: bool = False) -> bool:
    value = params.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _invalid(f"parameter {key!r} must be a boolean, got {kind(value)}")
    return value


def opt_int(params: dict[str, Any], key: str, default: int | None = None, *,
            minimum: int | None = None, maximum: int | None = None) -> int | None:
    value = params.get(key)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"parameter {key!r} must be an integer, got {kind(value)}")
    if minimum is not None and value < minimum:
        raise _invalid(f"parameter {key!r} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise _invalid(f"parameter {key!r} must be at most {maximum}, got {value}")
    return value


def scalar_text(value: object) -> str:
    """The text form of a scalar (design.md §4) for argv entries and query values."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return repr(value)
    raise TypeError(kind(value))


def opt_str_list(params: dict[str, Any], key: str, *, scalars: bool = False) -> list[str]:
    """A list of strings (``scalars``: numbers and booleans are taken in their text form)."""
    value = params.get(key)
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise _invalid(f"parameter {key!r} must be a list of strings, got {kind(value)}")
    out: list[str] = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            out.append(item)
        elif scalars and isinstance(item, (bool, int, float)):
            out.append(scalar_text(item))
        else:
            raise _invalid(f"parameter {key!r}[{i}] must be a string, got {kind(item)}")
    return out


def opt_str_map(params: dict[str, Any], key: str) -> dict[str, str]:
    value = params.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(f"parameter {key!r} must be a map of strings, got {kind(value)}")
    for k, v in value.items():
        if not isinstance(k, str):
            raise _invalid(f"parameter {key!r}: keys must be strings, got {kind(k)}")
        if not isinstance(v, str):
            raise _invalid(f"parameter {key!r}.{k} must be a string, got {kind(v)}")
    return dict(value)


def opt_map(params: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid(f"parameter {key!r} must be a map, got {kind(value)}")
    return value


def opt_enum(params: dict[str, Any], key: str, choices: tuple[str, ...],
             default: str | None = None) -> str | None:
    value = opt_str(params, key, default)
    if value is not None and value not in choices:
        raise _invalid(f"parameter {key!r} must be one of {', '.join(choices)}; got {value!r}")
    return value


_OCTAL = re.compile(r"^0?[0-7]{3,4}$")


def opt_mode(params: dict[str, Any], key: str, default: int | None = None) -> int | None:
    """Permission bits: an octal string (``"0644"``, ``"755"``) or an integer (YAML ``0o644``)."""
    value = params.get(key)
    if value is None:
        return default
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("0o", "0O")):
            text = text[2:]
        if not _OCTAL.match(text) and not re.fullmatch(r"[0-7]{1,4}", text):
            raise _invalid(f"parameter {key!r} must be an octal mode such as \"0644\"; got "
                           f"{value!r}")
        return int(text, 8)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"parameter {key!r} must be an octal string or an integer, got "
                       f"{kind(value)}")
    if not 0 <= value <= 0o7777:
        raise _invalid(f"parameter {key!r} must be between 0 and 0o7777, got {value}")
    return value


def opt_duration(params: dict[str, Any], key: str, default: str) -> float:
    """A Go duration string (``"30s"``, ``"1m30s"``, ``"250ms"``) in seconds."""
    from gxo.runtime.durations import parse_duration

    text = opt_str(params, key, default) or default
    try:
        return parse_duration(text)
    except ValueError:
        raise _invalid(f"parameter {key!r} must be a duration such as \"30s\" or \"1m30s\"; got "
                       f"{text!r}") from None
