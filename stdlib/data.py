"""``data:*`` (L4): the streaming data plane.

Record types of ``data:map``, ``data:filter``, ``data:join`` and ``data:aggregate`` outputs are
inferred by the compiler (from the template's JSON shape, the input's record type, the join's
inputs and merge strategy, the group and aggregate fields); their ``record_schema`` is the open
``{"type": "object"}``.  Per-record params see the record's fields at the top of the scope.
Summaries count records as ``records_in`` / ``records_out`` for every one-in/one-out transform
(``data:map`` too: a record whose template fails is a record error and is not emitted).
"""

from __future__ import annotations

from gxo.stdlib import _schemas as s
from gxo.stdlib._spec import ModuleSpec


def _count(what: str) -> dict:
    return s.integer(what, minimum=0)


GENERATE_FROM_LIST = ModuleSpec(
    name="data:generate_from_list",
    layer="L4",
    description="Producer: emit one record per list item (maps as they are, other values as "
    "{item: value}).",
    params_schema=s.params(
        {
            "items": s.array(
                s.any_value("One item: a map is emitted as is, any other value as {item: v}."),
                "Items to emit, a list literal or a template yielding a list.",
            ),
        },
        required=("items",),
    ),
    summary_schema=s.summary({"records_generated": _count("Records emitted.")}),
    record_schema=s.open_record(),
)

PARSE_FORMATS = ("json", "yaml", "csv", "text_lines", "regex", "logfmt")

PARSE = ModuleSpec(
    name="data:parse",
    layer="L4",
    description="Producer: parse a text blob into records (json, yaml, csv, text_lines, regex, "
    "logfmt).",
    params_schema=s.params(
        {
            "content": s.string("The text to parse."),
            "format": s.enum(
                "Input format. json/yaml: each element of a top-level list (or the single "
                "map) is a record; csv: one record per row; text_lines: {line} per line; "
                "regex: one record of named groups per match; logfmt: one record per line.",
                PARSE_FORMATS,
            ),
            "format_options": s.obj(
                {
                    "json_path": s.string(
                        "json/yaml: dotted path to the list of records inside the document."
                    ),
                    "delimiter": s.string(
                        "csv: field delimiter.", minLength=1, maxLength=1, default=","
                    ),
                    "headers": s.string_list(
                        "csv: column names; without them the first row is the header.",
                        "One column name.",
                    ),
                    "pattern": s.nonempty(
                        "regex: the regular expression (Python syntax), matched repeatedly."
                    ),
                    "capture_groups": s.string_list(
                        "regex: field names for the unnamed groups, in order.",
                        "One field name.",
                    ),
                    "skip_empty": s.boolean(
                        "text_lines: drop empty lines.", default=False
                    ),
                },
                "Options of the chosen format.",
            ),
        },
        required=("content", "format"),
        rules=[
            s.when_equals(
                "format",
                "regex",
                {
                    "required": ["format_options"],
                    "properties": {"format_options": {"required": ["pattern"]}},
                },
            )
        ],
    ),
    summary_schema=s.summary(
        {
            "records_parsed": _count("Records emitted."),
        }
    ),
    record_schema=s.open_record(),
    # The format decides the record type the compiler can infer (text_lines: {line}).
    literal_params=("format",),
)

MAP = ModuleSpec(
    name="data:map",
    layer="L4",
    description="Transform each record with a template that renders a JSON object.",
    params_schema=s.params(
        {
            "template": s.template_text(
                "Template evaluated per record (its fields at the top of the scope); it must "
                "render a JSON object, which becomes the output record."
            ),
        },
        required=("template",),
    ),
    summary_schema=s.summary(
        {
            "records_in": _count("Records read."),
            "records_out": _count("Records emitted (records_in minus record errors)."),
        }
    ),
    record_schema=s.open_record(),
    stream_input="one",
    per_record_params=("template",),
)

FILTER = ModuleSpec(
    name="data:filter",
    layer="L4",
    description="Forward, unchanged, the records whose condition is truthy.",
    params_schema=s.params(
        {
            "condition": s.condition(
                "Condition evaluated per record (its fields at the top of the scope); an "
                "evaluation error is a record error and the record is dropped."
            ),
        },
        required=("condition",),
    ),
    summary_schema=s.summary(
        {"records_in": _count("Records read."), "records_out": _count("Records forwarded.")}
    ),
    record_schema=s.open_record(),
    stream_input="one",
    per_record_params=("condition",),
    condition_params=("condition",),
)

JOIN = ModuleSpec(
    name="data:join",
    layer="L4",
    description="Hash-join two or more streams on a key (inner, left, right, outer).",
    params_schema=s.params(
        {
            "join_type": s.enum(
                "Which unmatched records are kept: left keeps probe records, right keeps "
                "build keys, outer keeps both.",
                ("inner", "left", "right", "outer"),
            ),
            "on": s.array(
                s.obj(
                    {
                        "stream": s.nonempty("Name of a producer among the stream inputs."),
                        "role": s.enum(
                            "build: buffered into the hash table; probe: streamed against it.",
                            ("build", "probe"),
                        ),
                        "field": s.nonempty("Record field holding the join key."),
                        "template": s.template_text(
                            "Template computing the key per record (state and record fields "
                            "in scope)."
                        ),
                    },
                    "How one input takes part: its role and its key (field XOR template).",
                    required=("stream", "role"),
                    rules=[s.exactly_one_of("field", "template")],
                ),
                "One entry per stream input, exactly one of them the probe.",
                minItems=2,
                contains={"type": "object", "required": ["role"],
                          "properties": {"role": {"const": "probe"}}},
                minContains=1,
                maxContains=1,
            ),
            "output": s.obj(
                {
                    "merge_strategy": s.enum(
                        "flat: overlay the records in stream-name order; nested: each under "
                        "its nesting key.",
                        ("flat", "nested"),
                        default="flat",
                    ),
                    "nesting_keys": s.string_map(
                        "nested: output key of each stream (must cover every stream)."
                    ),
                },
                "Shape of the joined records.",
                rules=[s.when_equals("merge_strategy", "nested", {"required": ["nesting_keys"]})],
            ),
            "limits": s.obj(
                {
                    "max_build_records": s.integer(
                        "Fail when the build sides hold more records than this.", minimum=1
                    ),
                    "max_probe_buffer": s.integer(
                        "Probe records buffered while build sides are still open; beyond it "
                        "the workload fails.",
                        minimum=1,
                        default=100000,
                    ),
                },
                "Memory bounds.",
            ),
        },
        required=("join_type", "on"),
    ),
    summary_schema=s.summary(
        {
            "records_joined": _count("Records emitted."),
            "probe_stream_records": _count("Records read from the probe stream."),
            "build_stream_records": _count("Records read from the build streams."),
            "skipped_key_errors": _count("Records skipped for a missing or invalid key."),
        }
    ),
    record_schema=s.open_record(),
    stream_input="two_or_more",
    per_record_params=("on.*.template",),
    # The compiler wires the join from these: they must be known before run time.
    literal_params=("on.*.stream", "on.*.role", "output.merge_strategy"),
)

AGGREGATE = ModuleSpec(
    name="data:aggregate",
    layer="L4",
    description="Group records and aggregate them over tumbling windows (by time or count) or "
    "the whole stream.",
    params_schema=s.params(
        {
            "group_by_fields": s.string_list(
                "Fields that form the group key (a missing field groups under null).",
                "One field name.",
                default=[],
            ),
            "aggregate_fields": s.array(
                s.obj(
                    {
                        "name": s.nonempty("Output field."),
                        "op": s.enum(
                            "Aggregation; count counts records.",
                            ("count", "sum", "avg", "min", "max"),
                        ),
                        "source_field": s.nonempty(
                            "Input field aggregated (required except for count)."
                        ),
                    },
                    "One aggregate of the output records.",
                    required=("name", "op"),
                    rules=[
                        {
                            "if": {"properties": {"op": {"enum": ["sum", "avg", "min", "max"]}}},
                            "then": {"required": ["source_field"]},
                        }
                    ],
                ),
                "Aggregates computed per group.",
                minItems=1,
            ),
            "window": s.duration("Time window: every group is flushed at each tick."),
            "count": s.integer("Count window: a group is flushed when it holds this many "
                               "records.", minimum=1),
        },
        required=("aggregate_fields",),
        # neither: one window over the whole stream, flushed when the input ends
        rules=[s.at_most_one_of("window", "count")],
    ),
    # The checklist gives no summary; records read and aggregate records emitted.
    summary_schema=s.summary(
        {
            "records_in": _count("Records read."),
            "groups_emitted": _count("Aggregate records emitted (one per group and window)."),
        }
    ),
    record_schema=s.open_record(),
    stream_input="one",
    # The output record type is inferred from these.
    literal_params=("group_by_fields", "aggregate_fields"),
)

FORMAT = ModuleSpec(
    name="data:format",
    layer="L4",
    description="Sink: serialise a whole stream to one string (json, yaml, csv, text, "
    "html_table).",
    params_schema=s.params(
        {
            "format": s.enum(
                "Output format: json array, yaml list, RFC 4180 csv, text (one rendered line "
                "per record, joined with newlines), html_table.",
                ("json", "yaml", "csv", "text", "html_table"),
            ),
            "format_options": s.obj(
                {
                    "headers": s.string_list(
                        "csv/html_table: columns, in order (default: the first record's keys).",
                        "One column name.",
                    ),
                    "template": s.template_text(
                        "text: template rendered per record (default: its text form)."
                    ),
                },
                "Options of the chosen format.",
            ),
        },
        required=("format",),
    ),
    summary_schema=s.summary({"formatted_content": s.string("The serialised stream.")}),
    stream_input="one",
    per_record_params=("format_options.template",),
    # The formatted content (the summary) holds what the template renders.
    logged_params=("format_options.template",),
)

MODULES: tuple[ModuleSpec, ...] = (
    GENERATE_FROM_LIST, PARSE, MAP, FILTER, JOIN, AGGREGATE, FORMAT,
)


# --------------------------------------------------------------------------- code
#
# Module code (design.md §8).  Every module here is an async ``perform`` on the kernel's loop;
# streams come from ctx.extras (gxo.runtime.streams documents the contract).  Heavy imports stay
# inside functions: the compiler imports this file.


def _is_record(value) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) for k in value)


def _error_text(exc: BaseException) -> str:
    from gxo.runtime._records_cy import error_text

    return error_text(exc)


class GenerateFromList:
    """``data:generate_from_list``: one record per item (maps as they are, others wrapped)."""

    name = "data:generate_from_list"

    async def perform(self, ctx, params):
        from gxo.runtime.module import ValidationError
        from gxo.runtime.streams import errors_of, output_of
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        items = params.get("items")
        if items is None:
            raise ValidationError("missing required parameter 'items'")
        if not isinstance(items, (list, tuple)):
            raise ValidationError(f"parameter 'items' must be a list, got {p.kind(items)}")
        out = output_of(ctx)
        errors = errors_of(ctx)
        size = out.batch_size
        batch: list = []
        sent = 0
        for i, item in enumerate(items):
            if isinstance(item, dict):
                if not _is_record(item):
                    errors.report(i, ctx.workload, "item is a map whose keys are not all strings")
                    continue
                record = item
            else:
                record = {"item": item}
            batch.append(record)
            if len(batch) >= size:
                sent += len(batch)
                await out.send_batch(batch)
                batch = []
        if batch:
            sent += len(batch)
            await out.send_batch(batch)
        return {"records_generated": sent}


# -- data:parse -------------------------------------------------------------------------------


def _walk_path(doc, path: str):
    """``doc`` at the dotted ``path`` (numeric segments index lists)."""
    from gxo.runtime.module import ModuleError

    node = doc
    for seg in path.split("."):
        if seg == "":
            continue
        if isinstance(node, dict) and seg in node:
            node = node[seg]
        elif isinstance(node, list) and seg.lstrip("-").isdigit() and -len(node) <= int(seg) < len(node):
            node = node[int(seg)]
        else:
            raise ModuleError(f"json_path {path!r}: no element {seg!r} in the document")
    return node


def _document_records(doc, report) -> list:
    """json/yaml: each element of a top-level list is a record, a single map is one record."""
    if isinstance(doc, dict):
        items = [doc]
    elif isinstance(doc, list):
        items = doc
    else:
        from gxo.runtime.module import ModuleError
        from gxo.stdlib._params import kind

        raise ModuleError(f"the document is a {kind(doc)}: expected a list of maps or a map")
    records = []
    for i, item in enumerate(items):
        if _is_record(item):
            records.append(item)
        else:
            from gxo.stdlib._params import kind

            report(i, f"element {i} is a {kind(item)}, not a map with string keys")
    return records


def _parse_csv(content: str, options: dict, report) -> list:
    import csv
    import io

    delimiter = options.get("delimiter") or ","
    headers = options.get("headers")
    rows = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter, strict=True)
    records = []
    position = 0
    try:
        for row in rows:
            if not row:
                continue  # a blank line
            if headers is None:
                headers = row
                continue
            if len(row) != len(headers):
                report(position, f"row has {len(row)} fields, the header has {len(headers)}")
            else:
                records.append(dict(zip(headers, row)))
            position += 1
    except csv.Error as exc:
        from gxo.runtime.module import ModuleError

        raise ModuleError(f"invalid csv at line {rows.line_num}: {exc}") from None
    return records


def _parse_regex(content: str, options: dict) -> list:
    import re

    from gxo.runtime.module import ValidationError

    pattern = options.get("pattern")
    if not isinstance(pattern, str) or pattern == "":
        raise ValidationError("format regex needs format_options.pattern")
    try:
        rx = re.compile(pattern, re.MULTILINE)
    except re.error as exc:
        raise ValidationError(f"format_options.pattern is not a valid regular expression: "
                              f"{exc}") from None
    named = {index: name for name, index in rx.groupindex.items()}
    unnamed = [i for i in range(1, rx.groups + 1) if i not in named]
    names = options.get("capture_groups")
    if names is not None:
        if len(names) != len(unnamed):
            raise ValidationError(f"format_options.capture_groups names {len(names)} groups, "
                                  f"the pattern has {len(unnamed)} unnamed groups")
        named.update(zip(unnamed, names))
    else:
        named.update((i, f"group{i}") for i in unnamed)
    order = sorted(named)
    records = []
    for m in rx.finditer(content):
        if not order:
            records.append({"match": m.group(0)})
        else:
            records.append({named[i]: m.group(i) for i in order})
    return records


def _logfmt_line(line: str) -> dict:
    """One logfmt line: ``key=value``, ``key="quoted \\" value"``, a bare ``key`` is true."""
    out: dict = {}
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            break
        start = i
        while i < n and line[i] not in " \t=\"":
            i += 1
        key = line[start:i]
        if key == "":
            raise ValueError(f"expected a key at column {i + 1}")
        if i < n and line[i] == "=":
            i += 1
            if i < n and line[i] == '"':
                i += 1
                chars = []
                while True:
                    if i >= n:
                        raise ValueError(f"unterminated quoted value of {key!r}")
                    c = line[i]
                    if c == "\\" and i + 1 < n:
                        nxt = line[i + 1]
                        chars.append({"n": "\n", "t": "\t", "r": "\r"}.get(nxt, nxt))
                        i += 2
                        continue
                    if c == '"':
                        i += 1
                        break
                    chars.append(c)
                    i += 1
                value = "".join(chars)
                if i < n and line[i] not in " \t":
                    raise ValueError(f"garbage after the quoted value of {key!r}")
            else:
                start = i
                while i < n and line[i] not in " \t":
                    i += 1
                value = line[start:i]
                if '"' in value:
                    raise ValueError(f"stray quote in the value of {key!r}")
            out[key] = value
        elif i < n and line[i] == '"':
            raise ValueError(f"stray quote after key {key!r}")
        else:
            out[key] = True
    return out


#: characters of a line format parsed (and sent) at a time
_LINE_CHUNK = 1 << 16


def _line_chunks(content: str):
    """``content`` in pieces of about ``_LINE_CHUNK`` characters, each cut just after a
    ``\n``: the lines of the pieces (``str.splitlines``) are exactly those of ``content``."""
    n = len(content)
    start = 0
    while start < n:
        cut = content.find("\n", start + _LINE_CHUNK) if start + _LINE_CHUNK < n else -1
        end = n if cut < 0 else cut + 1
        yield content[start:end]
        start = end


async def _send_lines(content: str, fmt: str, options: dict, out, report) -> int:
    """text_lines / logfmt: parse ``content`` a piece at a time and send each piece's records
    in batches; the number of records sent."""
    from gxo.runtime._records_cy import line_records

    size = out.batch_size
    skip = bool(options.get("skip_empty", False))
    sent = 0
    position = 0
    for piece in _line_chunks(content):
        if fmt == "text_lines":
            records = line_records(piece, skip)
        else:
            records = []
            for line in piece.splitlines():
                if not line.strip():
                    continue
                try:
                    records.append(_logfmt_line(line))
                except ValueError as exc:
                    report(position, f"invalid logfmt: {exc}")
                position += 1
        sent += len(records)
        if len(records) <= size:
            await out.send_batch(records)
            continue
        for i in range(0, len(records), size):
            await out.send_batch(records[i:i + size])
    return sent


class Parse:
    """``data:parse``: a text blob into records."""

    name = "data:parse"

    async def perform(self, ctx, params):
        from gxo.runtime.module import ModuleError, ValidationError
        from gxo.runtime.streams import errors_of, output_of
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        content = p.req_str(params, "content", nonempty=False)
        fmt = p.opt_enum(params, "format", PARSE_FORMATS)
        if fmt is None:
            raise ValidationError("missing required parameter 'format'")
        options = p.opt_map(params, "format_options") or {}
        errors = errors_of(ctx)

        def report(position: int, message: str) -> None:
            errors.report(position, ctx.workload, message)

        if fmt in ("json", "yaml"):
            if fmt == "json":
                import json

                try:
                    doc = json.loads(content)
                except ValueError as exc:
                    raise ModuleError(f"invalid json: {exc}") from None
            else:
                import yaml  # lazily: only the yaml format needs PyYAML

                try:
                    doc = yaml.safe_load(content)
                except yaml.YAMLError as exc:
                    raise ModuleError(f"invalid yaml: {exc}") from None
            path = options.get("json_path")
            if path:
                doc = _walk_path(doc, path)
            records = _document_records(doc, report)
        elif fmt == "csv":
            records = _parse_csv(content, options, report)
        elif fmt in ("text_lines", "logfmt"):
            # line formats stream: a piece of the text at a time is parsed and sent, so only
            # the records the channels hold are ever in memory, never all of them
            out = output_of(ctx)
            return {"records_parsed": await _send_lines(content, fmt, options, out, report)}
        elif fmt == "regex":
            records = _parse_regex(content, options)
        out = output_of(ctx)
        size = out.batch_size
        for i in range(0, len(records), size):
            await out.send_batch(records[i:i + size])
        return {"records_parsed": len(records)}


# -- one-in/one-out transforms ----------------------------------------------------------------


def _as_record(value):
    """data:map's result as a record: a map, or text that decodes to a JSON object."""
    import json

    from gxo.stdlib._params import kind

    if isinstance(value, dict):
        if _is_record(value):
            return value
        raise ValueError("the template yields a map whose keys are not all strings")
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            raise ValueError(f"the template must render a JSON object, got text "
                             f"{value[:80]!r}") from None
        if isinstance(decoded, dict):
            return decoded
        raise ValueError(f"the template must render a JSON object, got a JSON {kind(decoded)}")
    raise ValueError(f"the template must render a JSON object, got {kind(value)}")


def _one_input(ctx, module: str):
    from gxo.runtime.module import ValidationError
    from gxo.runtime.streams import inputs_of

    inputs = inputs_of(ctx)
    if len(inputs) > 1:
        raise ValidationError(f"{module} reads exactly one stream input, got {len(inputs)}")
    return inputs


class Map:
    """``data:map``: one output record per input record, from ``template``."""

    name = "data:map"

    async def perform(self, ctx, params):
        from gxo.runtime._records_cy import RecordFn, map_batch
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

        async def process(producer, batch) -> None:
            base = positions.get(producer, 0)
            positions[producer] = base + len(batch)
            result = map_batch(fn, batch, base, producer, errors, _as_record)
            counts[0] += len(batch)
            counts[1] += len(result)
            if result:
                await out.send_batch(result)

        await inputs.each(process)
        return {"records_in": counts[0], "records_out": counts[1]}


class Filter:
    """``data:filter``: forward the records whose condition is truthy."""

    name = "data:filter"

    async def perform(self, ctx, params):
        from gxo.runtime._records_cy import RecordFn, filter_batch
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

        await inputs.each(process)
        return {"records_in": counts[0], "records_out": counts[1]}


# -- data:join --------------------------------------------------------------------------------


def _join_key(value):
    """A join key normalised (checklist §3.L4): ints, whole floats and integer strings become
    int; other strings stay as they are; anything else is a record error (ValueError)."""
    import re

    from gxo.stdlib._params import kind

    t = type(value)
    if t is int:
        return value
    if t is str:
        if re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
            return int(value)
        return value
    if t is float:
        if value.is_integer():
            return int(value)
        raise ValueError(f"join key {value!r} is not an integer")
    if isinstance(value, bool) or value is None or not isinstance(value, (int, str)):
        raise ValueError(f"join key of type {kind(value)} is not supported")
    return int(value) if isinstance(value, int) else str(value)


class Join:
    """``data:join``: a hash join of one probe stream against one or more build streams."""

    name = "data:join"

    async def perform(self, ctx, params):
        import itertools

        from gxo.runtime._state_cy import deep_copy
        from gxo.runtime.module import ModuleError, ValidationError
        from gxo.runtime.opstate import operator_state_of
        from gxo.runtime.streams import errors_of, inputs_of, output_of
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        join_type = p.opt_enum(params, "join_type", ("inner", "left", "right", "outer"))
        if join_type is None:
            raise ValidationError("missing required parameter 'join_type'")
        on = params.get("on")
        if not isinstance(on, list) or len(on) < 2:
            raise ValidationError("parameter 'on' must list at least two streams")
        inputs = inputs_of(ctx)
        names = inputs.names
        keys: dict = {}  # stream -> key function of a record
        roles: dict = {}
        for i, entry in enumerate(on):
            if not isinstance(entry, dict):
                raise ValidationError(f"on[{i}] must be a map")
            stream, role = entry.get("stream"), entry.get("role")
            if stream not in names:
                raise ValidationError(f"on[{i}].stream {stream!r} is not a stream input "
                                      f"(inputs: {', '.join(names) or 'none'})")
            if stream in roles:
                raise ValidationError(f"on[{i}]: stream {stream!r} is listed twice")
            if role not in ("build", "probe"):
                raise ValidationError(f"on[{i}].role must be build or probe")
            has_field, has_tpl = "field" in entry, "template" in entry
            if has_field == has_tpl:
                raise ValidationError(f"on[{i}] needs exactly one of field and template")
            roles[stream] = role
            if has_field:
                field = entry["field"]

                def key_of(record, _f=field):
                    if not isinstance(record, dict) or _f not in record:
                        raise ValueError(f"missing join field {_f!r}")
                    return _join_key(record[_f])
            else:
                tpl = entry["template"]

                def key_of(record, _t=tpl):
                    return _join_key(_t(record) if callable(_t) else _t)
            keys[stream] = key_of
        missing = [n for n in names if n not in roles]
        if missing:
            raise ValidationError(f"parameter 'on' has no entry for stream {missing[0]!r}")
        probes = [n for n in names if roles[n] == "probe"]
        if len(probes) != 1:
            raise ValidationError(f"parameter 'on' must name exactly one probe stream, got "
                                  f"{len(probes)}")
        probe = probes[0]
        builds = [n for n in names if roles[n] == "build"]
        output = p.opt_map(params, "output") or {}
        strategy = output.get("merge_strategy", "flat") or "flat"
        if strategy not in ("flat", "nested"):
            raise ValidationError("output.merge_strategy must be flat or nested")
        nesting = output.get("nesting_keys") or {}
        if strategy == "nested":
            absent = [n for n in names if n not in nesting]
            if absent:
                raise ValidationError(f"output.nesting_keys has no key for stream {absent[0]!r}")
        limits = p.opt_map(params, "limits") or {}
        max_build = p.opt_int(limits, "max_build_records", minimum=1)
        max_buffer = p.opt_int(limits, "max_probe_buffer", 100000, minimum=1)

        order = sorted(names)  # flat merge overlays in stream-name order

        def merge(parts: dict) -> dict:
            """One output record from {stream: record or None}; build records are copied (a
            build record may appear in many outputs)."""
            if strategy == "nested":
                return {nesting[n]: (parts.get(n) if n == probe else deep_copy(parts.get(n)))
                        for n in names}
            merged: dict = {}
            for n in order:
                rec = parts.get(n)
                if rec is not None:
                    merged.update(rec if n == probe else deep_copy(rec))
            return merged

        out = output_of(ctx)
        errors = errors_of(ctx)
        # the join's state lives in the kernel's operator state of this workload: the build
        # tables (key -> records), the keys matched so far, the probe records held until every
        # build side has ended, the records read per input and the summary counts
        state = operator_state_of(ctx)
        tables: dict = {b: state.region(f"build:{b}") for b in builds}
        matched: dict = state.region("matched")
        positions: dict = state.region("positions")
        for n in names:
            positions.setdefault(n, 0)
        counts = state.region("counts")
        for k in ("records_joined", "probe_stream_records", "build_stream_records",
                  "skipped_key_errors"):
            counts.setdefault(k, 0)
        held = sum(len(rows) for t in tables.values() for rows in t.values())
        pending: list = state.region("pending").setdefault("probe", [])
        open_builds = set(builds)
        keep_unmatched_probe = join_type in ("left", "outer")

        def keyed(stream: str, batch: list):
            key_of = keys[stream]
            base = positions[stream]
            positions[stream] = base + len(batch)
            for i, record in enumerate(batch):
                try:
                    yield key_of(record), record
                except Exception as exc:  # noqa: BLE001 - a record error: skipped
                    counts["skipped_key_errors"] += 1
                    errors.report(base + i, stream, _error_text(exc))

        def probe_batch(batch: list) -> list:
            result = []
            for key, record in batch:
                sides = [tables[b].get(key) for b in builds]
                if all(sides):
                    matched[key] = True
                    for combo in itertools.product(*sides):
                        parts = dict(zip(builds, combo))
                        parts[probe] = record
                        result.append(merge(parts))
                elif keep_unmatched_probe:
                    if any(sides):
                        matched[key] = True
                    present = [(b, s if s else [None]) for b, s in zip(builds, sides)]
                    for combo in itertools.product(*(s for _, s in present)):
                        parts = dict(zip(builds, combo))
                        parts[probe] = record
                        result.append(merge(parts))
                elif any(sides):
                    pass  # inner/right: a partial match is no match
            return result

        async for stream, batch in inputs.batches(ends=True):
            if batch is None:
                open_builds.discard(stream)
                if not open_builds and pending:
                    result = probe_batch(pending)
                    pending.clear()
                    if result:
                        counts["records_joined"] += len(result)
                        await out.send_batch(result)
                continue
            if stream == probe:
                counts["probe_stream_records"] += len(batch)
                rows = list(keyed(stream, batch))
                if open_builds:
                    pending.extend(rows)
                    if len(pending) > max_buffer:
                        raise ModuleError(f"max_probe_buffer of {max_buffer} reached: probe "
                                          f"records arrived before every build stream ended")
                    continue
                result = probe_batch(rows)
                if result:
                    counts["records_joined"] += len(result)
                    await out.send_batch(result)
            else:
                counts["build_stream_records"] += len(batch)
                table = tables[stream]
                for key, record in keyed(stream, batch):
                    held += 1
                    if max_build is not None and held > max_build:
                        raise ModuleError(f"max_build_records of {max_build} reached")
                    table.setdefault(key, []).append(record)
        if pending:  # only when there is no build stream left open (cannot happen) - be safe
            result = probe_batch(pending)
            pending.clear()
            if result:
                counts["records_joined"] += len(result)
                await out.send_batch(result)
        if join_type in ("right", "outer"):
            unmatched: set = set()
            for b in builds:
                unmatched.update(k for k in tables[b] if k not in matched)
            result = []
            for key in sorted(unmatched, key=lambda k: (isinstance(k, str), k)):
                sides = [tables[b].get(key) or [None] for b in builds]
                for combo in itertools.product(*sides):
                    parts = dict(zip(builds, combo))
                    parts[probe] = None
                    result.append(merge(parts))
            if result:
                counts["records_joined"] += len(result)
                await out.send_batch(result)
        return dict(counts)


# -- data:aggregate ---------------------------------------------------------------------------


class Aggregate:
    """``data:aggregate``: group records and aggregate them over count or time windows, or
    over the whole stream."""

    name = "data:aggregate"

    async def perform(self, ctx, params):
        import asyncio

        from gxo.runtime._records_cy import aggregate_batch
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
                            ready, text, bad_number)
            if ready:
                stats["groups_emitted"] += len(ready)
                await out.send_batch([result(g) for g in ready])

        async def read() -> None:
            await inputs.each(process)

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


# -- data:format ------------------------------------------------------------------------------


def _cell(record, header: str) -> str:
    from gxo.runtime.exprlib import text

    if not isinstance(record, dict):
        return ""
    v = record.get(header)
    return "" if v is None else text(v)


class Format:
    """``data:format``: serialise the whole input stream into one string."""

    name = "data:format"

    async def perform(self, ctx, params):
        import json

        from gxo.runtime.exprlib import _json_default, text
        from gxo.runtime.module import ModuleError, ValidationError
        from gxo.runtime.streams import errors_of
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        fmt = p.opt_enum(params, "format", ("json", "yaml", "csv", "text", "html_table"))
        if fmt is None:
            raise ValidationError("missing required parameter 'format'")
        options = p.opt_map(params, "format_options") or {}
        headers = p.opt_str_list(options, "headers") if options.get("headers") is not None \
            else None
        inputs = _one_input(ctx, "data:format")
        errors = errors_of(ctx)
        records: list = []
        lines: list = []
        template = options.get("template")
        positions: dict = {}
        async for producer, batch in inputs:
            if fmt != "text":
                records.extend(batch)
                continue
            base = positions.get(producer, 0)
            positions[producer] = base + len(batch)
            for i, record in enumerate(batch):
                try:
                    value = record if template is None else (
                        template(record) if callable(template) else template)
                    lines.append(text(value))
                except Exception as exc:  # noqa: BLE001 - a record error: the record is left out
                    errors.report(base + i, producer, _error_text(exc))
        if fmt == "text":
            return {"formatted_content": "\n".join(lines)}
        if fmt == "json":
            try:
                content = json.dumps(records, separators=(",", ":"), ensure_ascii=False,
                                     default=_json_default)
            except (TypeError, ValueError) as exc:
                raise ModuleError(f"cannot format the records as json: {exc}") from None
            return {"formatted_content": content}
        if fmt == "yaml":
            import yaml  # lazily: only the yaml format needs PyYAML

            try:
                content = yaml.safe_dump(records, sort_keys=False, allow_unicode=True,
                                         default_flow_style=False)
            except yaml.YAMLError as exc:
                raise ModuleError(f"cannot format the records as yaml: {exc}") from None
            return {"formatted_content": content}
        if headers is None:
            first = next((r for r in records if isinstance(r, dict)), None)
            headers = list(first) if first is not None else []
        if fmt == "csv":
            import csv
            import io

            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
            if headers:
                writer.writerow(headers)
            for record in records:
                writer.writerow([_cell(record, h) for h in headers])
            return {"formatted_content": buf.getvalue()}
        # html_table
        from html import escape

        parts = ["<table>", "<thead><tr>"]
        parts.extend(f"<th>{escape(h)}</th>" for h in headers)
        parts.append("</tr></thead>")
        parts.append("<tbody>")
        for record in records:
            parts.append("<tr>")
            parts.extend(f"<td>{escape(_cell(record, h))}</td>" for h in headers)
            parts.append("</tr>")
        parts.append("</tbody>")
        parts.append("</table>")
        return {"formatted_content": "".join(parts)}


CODE = {
    "data:generate_from_list": GenerateFromList,
    "data:parse": Parse,
    "data:map": Map,
    "data:filter": Filter,
    "data:join": Join,
    "data:aggregate": Aggregate,
    "data:format": Format,
}
