"""Go duration syntax (``1h30m``, ``1.5s``, ``250ms``, ``10us``), shared by the compiler,
the CLI and the modules."""

from __future__ import annotations

import re
from fractions import Fraction

_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {
    "ns": Fraction(1, 10**9), "us": Fraction(1, 10**6), "µs": Fraction(1, 10**6), "μs": Fraction(1, 10**6),
    "ms": Fraction(1, 1000), "s": Fraction(1), "m": Fraction(60), "h": Fraction(3600),
}


def parse_duration(text: object) -> float:
    """Seconds, summed exactly as fractions (``0.1s`` is the float ``0.1`` on every machine);
    ``ValueError`` when ``text`` is not a duration (``"0"`` alone is accepted, as in Go)."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"not a duration: {text!r}")
    if text == "0":
        return 0.0
    pos, total = 0, Fraction(0)
    for m in _PART.finditer(text):
        if m.start() != pos:
            break
        total += Fraction(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text):
        raise ValueError(f"not a duration: {text!r}")
    return float(total)
