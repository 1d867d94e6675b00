"""The per-record hot path of the stream transforms (compiled when available).

A stream module's per-record template (``data:map``'s ``template``, ``data:filter``'s
``condition``, ``test:producer``'s ``template``) reaches the module as a ``RecordFn``: the
plan's compiled expression function bound to the run's expression context, and, for templates
that also read the state (join keys), the state scope the record's fields are laid over.
Calling it with a record gives the template's value for that record.

The transforms do not call it record by record from Python: ``map_batch`` and ``filter_batch``
run one input batch through it in a compiled loop that calls the expression function directly
(no bound-method or lambda layer), and ``copy_batch`` makes a producer's batch of copies of a
literal record.  A record whose template raises is reported to the record-error sink with its
position and the loop goes on with the next record; the ``try`` is entered once per run of good
records, not once per record.

This file is also the pure-Python twin: uncompiled, it runs as ordinary Python with the same
results; ``tests/test_records_cy.py`` checks both.
"""

# START GENERATED CYTHON IMPORT
# This section is generated from the header that every runtime/_*_cy.py module carries.
try:
    # The Cython compiler needs this exact import in the file.
    import cython
except ModuleNotFoundError:
    from gxo.runtime import _cython_shim as cython  # type: ignore[no-redef]


def _is_compiled() -> bool:
    """True when this module is the compiled extension, not the pure-Python source."""
    return bool(cython.compiled)


# END GENERATED CYTHON IMPORT

from typing import Any

if cython.compiled:  # a reference count: the C macro compiled, sys's function in the pure twin
    from cython.cimports.cpython.ref import Py_REFCNT as _refs
else:
    from sys import getrefcount as _refs

from gxo.runtime._state_cy import deep_copy as _deep_copy

__all__ = ["RecordFn", "aggregate_batch", "copy_batch", "error_text", "field_records", "filter_batch",
           "filter_values", "fn_int", "line_values", "map_batch", "map_values", "sum_values"]

# how a RecordFn calls its function
_PLAIN = 0  # fn(record)
_BOUND = 1  # fn(record, ctx)
_OVER_SCOPE = 2  # fn({**scope, **record}, ctx)


@cython.cclass
class RecordFn:
    """A per-record template: ``RecordFn(fn, ctx)`` calls ``fn(record, ctx)``; with ``scope``,
    ``fn({**scope, **record}, ctx)``; ``RecordFn.plain(f)`` wraps a one-argument callable."""

    _fn: object
    _ctx: object
    _scope: object
    _mode: cython.int
    _column: str

    def __init__(self, fn: Any, ctx: Any, scope: Any = None, column: str = "") -> None:
        self._fn = fn
        self._ctx = ctx
        self._scope = scope
        self._mode = _BOUND if scope is None else _OVER_SCOPE
        self._column = column

    @property
    def column(self) -> str:
        """The field of the record ``{column: value}`` whose value alone ``fn`` returns (a
        data:map template of one field: ``Expression.column``), or ""."""
        return self._column

    @staticmethod
    def plain(fn: Any) -> "RecordFn":
        """A ``RecordFn`` over a callable that takes the record only."""
        if isinstance(fn, RecordFn):
            return fn
        r = RecordFn(fn, None)
        r._mode = _PLAIN
        return r

    def __call__(self, record: Any) -> Any:
        """The template's value for ``record``: with a column, the record ``{column: value}``."""
        value = _apply(self, record)
        return {self._column: value} if self._column else value

    # Params are deep-copied for workloads that read state; the function and the run's
    # expression context are shared, never copied.
    def __copy__(self) -> "RecordFn":
        return self

    def __deepcopy__(self, _memo: Any) -> "RecordFn":
        return self

    def __repr__(self) -> str:
        return f"RecordFn({self._fn!r})"


@cython.cfunc
@cython.inline
def _apply(f: RecordFn, record: Any) -> Any:
    if f._mode == _BOUND:
        return f._fn(record, f._ctx)
    if f._mode == _PLAIN:
        return f._fn(record)
    scope: dict = f._scope
    merged: dict = dict(scope)
    merged.update(record)
    return f._fn(merged, f._ctx)


def error_text(exc: BaseException) -> str:
    """What a record error says: the exception's message, else its type's name."""
    return str(exc) or type(exc).__name__


def map_batch(f: RecordFn, batch: list, base: cython.Py_ssize_t, producer: str, errors: Any,
              as_record: Any) -> list:
    """``f`` applied to every record of ``batch``: the values that are dicts as they are, any
    other value through ``as_record``; a record whose call raises is reported to ``errors``
    at position ``base + i`` and left out.  With ``f.column``, the values as ``f`` gives them
    (the records ``{column: value}``, not built)."""
    result: list = []
    n: cython.Py_ssize_t = len(batch)
    i: cython.Py_ssize_t = 0
    raw: cython.bint = len(f._column) != 0
    while i < n:
        try:
            while i < n:
                value = _apply(f, batch[i])
                if not raw and type(value) is not dict:
                    value = as_record(value)
                result.append(value)
                i += 1
        except Exception as exc:  # noqa: BLE001 - a record error, not a failure
            errors.report(base + i, producer, error_text(exc))
            i += 1
    return result


def map_values(f: RecordFn, field: str, values: list, base: cython.Py_ssize_t, producer: str,
               errors: Any, as_record: Any) -> list:
    """``map_batch`` over the records ``{field: value}`` of ``values``, without building them:
    ``f`` sees each value in a scope map ``{field: value}`` that is reused from one value to
    the next while nothing the call made or kept holds it (its reference count is back to what
    it was: the result does not contain it, nothing stored it).  A call that kept it, raised
    or changed it leaves it to its holder, and the next value gets a new map.  The values,
    the records out, the positions of the record errors are those of ``map_batch``."""
    return _over_values(f, field, values, base, producer, errors, as_record, False, len(f._column) != 0)


def filter_values(f: RecordFn, field: str, values: list, base: cython.Py_ssize_t, producer: str,
                  errors: Any) -> list:
    """``filter_batch`` over the records ``{field: value}`` of ``values``, without building
    them: the values of the records kept.  ``f`` sees each value in a scope map that is reused
    as ``map_values`` reuses it (a new one after a call that kept or changed it)."""
    return _over_values(f, field, values, base, producer, errors, None, True, False)


@cython.cfunc
def _over_values(f: RecordFn, field: str, values: list, base: cython.Py_ssize_t, producer: str,
                 errors: Any, as_record: Any, keep: cython.bint, raw: cython.bint) -> list:
    """``f`` over the records ``{field: value}`` of ``values`` in one reused scope map
    (``map_values``): with ``keep``, the values whose result is truthy; else the results, each
    through ``as_record`` unless it is a dict or ``raw``.  A call that raises is a record error
    at ``base + i``."""
    out: list = []
    n: cython.Py_ssize_t = len(values)
    i: cython.Py_ssize_t = 0
    scope: dict = {field: None}
    free: cython.Py_ssize_t = _refs(scope)  # held by this function alone
    while i < n:
        try:
            while i < n:
                v = values[i]
                scope[field] = v
                value = _apply(f, scope)
                if keep:
                    if value:
                        out.append(v)
                else:
                    if not raw and type(value) is not dict:
                        value = as_record(value)
                    out.append(value)
                value = None  # the result no longer holds the scope: its count is back
                i += 1
                if _refs(scope) != free or len(scope) != 1:
                    scope = {field: None}  # kept or changed by the call: a new one
                    free = _refs(scope)
        except Exception as exc:  # noqa: BLE001 - a record error: the record is left out
            errors.report(base + i, producer, error_text(exc))
            i += 1
            scope = {field: None}  # the exception's frames may hold the old one
            free = _refs(scope)
    return out


def field_records(field: str, values: list) -> list:
    """The records ``{field: value}`` of ``values``, in order."""
    out: list = []
    n: cython.Py_ssize_t = len(values)
    i: cython.Py_ssize_t
    for i in range(n):
        out.append({field: values[i]})
    return out


def filter_batch(f: RecordFn, batch: list, base: cython.Py_ssize_t, producer: str,
                 errors: Any) -> list:
    """The records of ``batch`` whose value under ``f`` is truthy; a record whose call raises is
    reported to ``errors`` at position ``base + i`` and dropped."""
    kept: list = []
    n: cython.Py_ssize_t = len(batch)
    i: cython.Py_ssize_t = 0
    while i < n:
        try:
            while i < n:
                record = batch[i]
                if _apply(f, record):
                    kept.append(record)
                i += 1
        except Exception as exc:  # noqa: BLE001 - a record error: the record is dropped
            errors.report(base + i, producer, error_text(exc))
            i += 1
    return kept


def copy_batch(record: Any, n: cython.Py_ssize_t) -> list:
    """``n`` independent deep copies of ``record``."""
    out: list = []
    i: cython.Py_ssize_t
    for i in range(n):
        out.append(_deep_copy(record))
    return out


_NO_FIELDS: dict = {}  # what a value that is not a map offers data:aggregate: no fields


@cython.cfunc
@cython.inline
def _fields_of(record: Any) -> dict:
    """data:aggregate's view of a record: itself; a map of another type read as a plain one;
    not a map: no fields."""
    if type(record) is dict:
        return record
    return dict(record) if isinstance(record, dict) else _NO_FIELDS


@cython.cfunc
@cython.inline
def _is_number(v: Any) -> cython.bint:
    """An int or a float (not a bool), the exact types first."""
    t = type(v)
    return t is int or t is float or (not isinstance(v, bool) and isinstance(v, (int, float)))


@cython.cfunc
def _numbers(record: Any, rec: dict, sources: tuple, nums: list, errors: Any, pos: cython.Py_ssize_t,
             producer: str, bad_number: Any) -> cython.bint:
    """The values of ``sources`` in ``rec`` into ``nums``; False (reported to ``errors`` at
    ``pos``) at the first that is not a number."""
    j: cython.Py_ssize_t
    for j in range(len(sources)):
        src = sources[j]
        v = rec.get(src)
        if not _is_number(v):
            errors.report(pos, producer, bad_number(record, src))
            return False
        nums[j] = v
    return True


@cython.cfunc
def _add(g: list, nums: list, minmax: cython.bint) -> cython.int:  # a C result: -1 on an exception
    """One more record's ``nums`` into the group ``g`` (its count is the caller's)."""
    sums: list = g[2]
    mins: list = g[3]
    maxs: list = g[4]
    j: cython.Py_ssize_t
    for j in range(len(nums)):
        v = nums[j]
        sums[j] = sums[j] + v
        if minmax:
            if v < mins[j]:
                mins[j] = v
            if v > maxs[j]:
                maxs[j] = v
    return 0


def aggregate_batch(batch: list, base: cython.Py_ssize_t, producer: str, errors: Any,
                    fields: tuple, sources: tuple, groups: dict, limit: cython.Py_ssize_t,
                    ready: list, as_text: Any, bad_number: Any, minmax: cython.bint = True) -> None:
    """``data:aggregate``'s per-record loop: add every record of ``batch`` to its group.

    ``groups`` maps a group key to the group's state ``[values, count, sums, mins, maxs]``
    (``values``: the record's values of ``fields``, a tuple; ``sums``/``mins``/``maxs``: one
    entry per field of ``sources``, in order).  The key keeps 1, 1.0 and true apart (each value
    with its type's name; a list or map by its text form, ``as_text``).  A record whose
    ``sources`` value is not a number is reported to ``errors`` at ``base + i`` with
    ``bad_number(record, field)``'s message and left out.  With ``limit`` > 0 (a count
    window) a group that reaches ``limit`` records moves from ``groups`` to ``ready``.  Without
    ``minmax`` (no aggregate asks for a min or a max) ``mins`` and ``maxs`` keep the group's
    first values and are not updated."""
    if len(fields) == 0:
        if len(sources) == 1 and limit == 0 and not minmax:
            _sum_ungrouped(batch, base, producer, errors, sources[0], groups, bad_number)
            return
        _aggregate_ungrouped(batch, base, producer, errors, sources, groups, limit, ready,
                             bad_number, minmax)
        return
    n: cython.Py_ssize_t = len(batch)
    nf: cython.Py_ssize_t = len(fields)
    i: cython.Py_ssize_t
    j: cython.Py_ssize_t
    nums: list = [None] * len(sources)  # the record's numbers, reused from record to record
    g: list
    rec: dict
    for i in range(n):
        record = batch[i]
        rec = _fields_of(record)
        if not _numbers(record, rec, sources, nums, errors, base + i, producer, bad_number):
            continue
        if nf == 1:
            v = rec.get(fields[0])
            values = (v,)
            t = type(v)
            if t is str:
                key = (("str", v),)
            elif isinstance(v, (dict, list)):
                key = (("json", as_text(v)),)
            else:
                key = ((t.__name__, v),)
        else:
            vals: list = []
            parts: list = []
            for j in range(nf):
                v = rec.get(fields[j])
                vals.append(v)
                if isinstance(v, (dict, list)):
                    parts.append(("json", as_text(v)))
                else:
                    parts.append((type(v).__name__, v))
            values = tuple(vals)
            key = tuple(parts)
        found = groups.get(key)
        if found is None:
            g = [values, 1, list(nums), list(nums), list(nums)]
            groups[key] = g
        else:
            g = found
            g[1] = g[1] + 1
            _add(g, nums, minmax)
        if limit > 0 and g[1] >= limit:
            del groups[key]
            ready.append(g)


@cython.cfunc
def _aggregate_ungrouped(batch: list, base: cython.Py_ssize_t, producer: str, errors: Any,
                         sources: tuple, groups: dict, limit: cython.Py_ssize_t, ready: list,
                         bad_number: Any, minmax: cython.bint):  # an object result: exceptions propagate
    """``aggregate_batch`` without group fields: one group, under the key ``()``, whose count
    is kept in a C integer through the batch (no key built or looked up per record)."""
    n: cython.Py_ssize_t = len(batch)
    i: cython.Py_ssize_t
    nums: list = [None] * len(sources)
    g: Any = groups.get(())
    count: cython.Py_ssize_t = 0 if g is None else g[1]
    for i in range(n):
        record = batch[i]
        if not _numbers(record, _fields_of(record), sources, nums, errors, base + i, producer, bad_number):
            continue
        if g is None:
            g = [(), 1, list(nums), list(nums), list(nums)]
            groups[()] = g
            count = 1
        else:
            count += 1
            _add(g, nums, minmax)
        if limit > 0 and count >= limit:
            g[1] = count
            del groups[()]
            ready.append(g)
            g = None
            count = 0
    if g is not None:
        g[1] = count


@cython.cfunc
def _sum_ungrouped(batch: list, base: cython.Py_ssize_t, producer: str, errors: Any, src: str,
                   groups: dict, bad_number: Any):  # an object result: exceptions propagate
    """``_aggregate_ungrouped`` with one source field, no count window and no min or max: the
    count and the sum are carried in local variables through the batch (no list per record)."""
    values: list = []
    n: cython.Py_ssize_t = len(batch)
    i: cython.Py_ssize_t
    for i in range(n):
        values.append(_fields_of(batch[i]).get(src))
    _sum_into(values, batch, base, producer, errors, src, groups, bad_number)


def sum_values(values: list, base: cython.Py_ssize_t, producer: str, errors: Any, field: str,
               groups: dict, bad_number: Any) -> None:
    """``aggregate_batch``'s ``_sum_ungrouped`` over the records ``{field: value}`` of
    ``values`` whose ``field`` is the one source field, without building them (a record is
    built only to word the error of a value that is not a number)."""
    _sum_into(values, None, base, producer, errors, field, groups, bad_number)


@cython.cfunc
def _sum_into(values: list, records: Any, base: cython.Py_ssize_t, producer: str, errors: Any, src: str,
              groups: dict, bad_number: Any):  # an object result: exceptions propagate
    """Count and add ``values`` (the ``src`` values of ``records``, or of the records
    ``{src: value}`` when None) into the one group ``()`` of ``groups``; a value that is not a
    number is reported at its position."""
    n: cython.Py_ssize_t = len(values)
    i: cython.Py_ssize_t
    g: Any = groups.get(())
    count: cython.Py_ssize_t = 0 if g is None else g[1]
    total: Any = None if g is None else g[2][0]
    for i in range(n):
        v = values[i]
        if not _is_number(v):
            errors.report(base + i, producer, bad_number({src: v} if records is None else records[i], src))
            continue
        if g is None:
            g = [(), 1, [v], [v], [v]]
            groups[()] = g
            count = 1
            total = v
        else:
            count += 1
            total = total + v
    if g is not None:
        g[1] = count
        g[2][0] = total


def line_values(text: str, skip_empty: cython.bint) -> list:
    """``data:parse`` text_lines: the lines of ``text`` (``str.splitlines``), the values of its
    records ``{"line": line}``; with ``skip_empty``, without the empty lines."""
    lines: list = text.splitlines()
    if not skip_empty:
        return lines
    out: list = []
    line: str
    for line in lines:
        if line:
            out.append(line)
    return out


@cython.binding(False)  # a plain builtin taking one argument (METH_O): the cheapest call
def fn_int(x: Any, /) -> Any:
    """The expression language's ``int`` (``gxo.runtime.exprlib``): an int as it is, a string
    of decimal digits parsed here (``int()`` takes the same surrounding whitespace and ``_``
    separators), every other case by ``exprlib.int_of``."""
    t = type(x)
    if t is int:
        return x
    if t is str:
        try:
            return int(x)  # base 10, as int(x, 10), without the general call
        except ValueError:
            pass
    from gxo.runtime.exprlib import int_of

    return int_of(x)
