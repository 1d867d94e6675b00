"""The declarations of the ``data:*`` modules (names, schemas, per-record params): plain
data, read by the compiler and the runtime."""

from __future__ import annotations

from gxo.stdlib import _schemas as s
from gxo.stdlib._spec import ModuleSpec


def _count(what: str) -> dict:
    return s.integer(what, minimum=0)


GENERATE_FROM_LIST = ModuleSpec(
    name="data:generate_from_list",
    layer="L4",
    pure=True,
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
    pure=True,
    description="Producer: parse a text blob into records (json, yaml, csv, text_lines, regex, "
    "logfmt).",
    params_schema=s.params(
        {
            "content": s.string("The text to parse."),
            "format": s.enum(
                "Input format. json/yaml: each element of a top-level list (or the single "
                "map) is a record; csv: one record per row; text_lines: {line} per line; "
                "regex: one record of named groups per match; logfmt: one record per line. "
                "A json/yaml document is read within the playbook loader's limits (nesting, "
                "integer digits; yaml: size, nodes after alias expansion; see runtime.md#limits).",
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
                        "regex: the regular expression (RE2 syntax: no backreferences or "
                        "lookaround; see docs/expressions.md#regular-expressions), matched "
                        "repeatedly; `^` and `$` match at line ends.",
                        format="regex",
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
    pure=True,
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
    pure=True,
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
    pure=True,
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
    pure=True,
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
    pure=True,
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
