"""``data:*`` (L4): the streaming data plane.

Record types of ``data:map``, ``data:filter``, ``data:join`` and ``data:aggregate`` outputs are
inferred by the compiler (from the template's JSON shape, the input's record type, the join's
inputs and merge strategy, the group and aggregate fields); their ``record_schema`` is the open
``{"type": "object"}``.  Per-record params see the record's fields at the top of the scope.
Summaries count records as ``records_in`` / ``records_out`` for every one-in/one-out transform
(``data:map`` too: a record whose template fails is a record error and is not emitted).
"""

# The declarations are in ``_specs``; the code is one module per family: ``_source``
# (generate_from_list, parse), ``_transform`` (map, filter), ``_join``, ``_aggregate``,
# ``_format``.  Every module is an async ``perform`` on the kernel's loop (design.md §8); streams
# come from ctx.extras (gxo.runtime.streams documents the contract).  Heavy imports stay inside
# functions: the compiler imports this package.

from __future__ import annotations

from gxo.stdlib.data._aggregate import Aggregate
from gxo.stdlib.data._common import _error_text, _is_record, _one_input
from gxo.stdlib.data._format import Format, _cell
from gxo.stdlib.data._join import Join, _join_key
from gxo.stdlib.data._source import (
    _LINE_CHUNK,
    GenerateFromList,
    Parse,
    _document_records,
    _line_chunks,
    _logfmt_line,
    _parse_csv,
    _parse_regex,
    _walk_path,
)
from gxo.stdlib.data._specs import (
    AGGREGATE,
    FILTER,
    FORMAT,
    GENERATE_FROM_LIST,
    JOIN,
    MAP,
    MODULES,
    PARSE,
    PARSE_FORMATS,
)
from gxo.stdlib.data._transform import Filter, Map, _as_record

__all__ = [
    "AGGREGATE", "CODE", "FILTER", "FORMAT", "GENERATE_FROM_LIST", "JOIN", "MAP", "MODULES",
    "PARSE", "PARSE_FORMATS", "Aggregate", "Filter", "Format", "GenerateFromList", "Join", "Map",
    "Parse",
]

# private helpers kept importable from gxo.stdlib.data (tests and bench/ use some of them)
_HELPERS = (_as_record, _cell, _document_records, _error_text, _is_record, _join_key,
            _LINE_CHUNK, _line_chunks, _logfmt_line, _one_input, _parse_csv, _parse_regex,
            _walk_path)

CODE = {
    "data:generate_from_list": GenerateFromList,
    "data:parse": Parse,
    "data:map": Map,
    "data:filter": Filter,
    "data:join": Join,
    "data:aggregate": Aggregate,
    "data:format": Format,
}
