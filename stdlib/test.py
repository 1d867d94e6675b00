"""``test:*``: fixtures and assertions for ``gxo test`` playbooks (``*.test.yaml``)."""

from __future__ import annotations

from gxo.stdlib import _schemas as s
from gxo.stdlib._spec import ModuleSpec

ASSERT_OPERATORS = ("equal_to", "not_equal_to", "contains", "is_true", "is_nil", "matches_regex")

_ASSERTION = s.obj(
    {
        "actual": s.any_value(
            "Value under test, usually a template such as \"{{ .read_result.content }}\"; with "
            "stream inputs it is evaluated once per record."
        ),
        "equal_to": s.any_value("Passes when actual deep-equals this value."),
        "not_equal_to": s.any_value("Passes when actual does not deep-equal this value."),
        "contains": s.any_value(
            "Passes when actual contains it: a substring, a list element or a map key."
        ),
        "is_true": s.boolean("true: passes when actual is truthy; false: when it is falsy."),
        "is_nil": s.boolean("true: passes when actual is null; false: when it is not."),
        "matches_regex": s.string("Passes when the regular expression matches actual's text."),
    },
    "One assertion: `actual` and exactly one operator.",
    required=("actual",),
    rules=[s.exactly_one_of(*ASSERT_OPERATORS)],
)

ASSERT = ModuleSpec(
    name="test:assert",
    layer="X",
    description="Check assertions; the first failing one fails the workload (\"assertion "
    "failed: ...\").",
    params_schema=s.params(
        {"assertions": s.array(_ASSERTION, "Assertions, checked in order.", minItems=1)},
        required=("assertions",),
    ),
    summary_schema=s.summary(
        {"assertions_passed": s.integer("Number of assertions that passed.", minimum=0)}
    ),
    # Like control:assert: per record when given stream inputs, else once against the state.
    stream_input="optional",
    per_record_params=("assertions.*.actual",),
    # The failure message quotes actual and the expected value of the failing assertion.
    logged_params=("assertions",),
    inline=True,
)

_HANDLER = s.obj(
    {
        "request": s.obj(
            {
                "method": s.enum("Request method matched.", s.HTTP_METHODS, default="GET"),
                "path": s.string("Request path matched exactly (no query string).",
                                 pattern=r"^/"),
            },
            "Which requests this handler answers.",
            required=("path",),
        ),
        "response": s.obj(
            {
                "status_code": s.integer("Status code.", minimum=100, maximum=599, default=200),
                "body": {
                    "type": ["string", "object", "array"],
                    "description": "Response body; a map or list is sent as JSON (with "
                    "Content-Type application/json unless headers set one).",
                },
                "headers": s.string_map("Response headers."),
            },
            "What it answers.",
        ),
    },
    "One canned response.",
    required=("request", "response"),
)

MOCK_HTTP_SERVER = ModuleSpec(
    name="test:mock_http_server",
    layer="X",
    description="Start an HTTP server on a random localhost port that serves canned responses "
    "until the run ends.",
    # It completes at once (so dependents can read server_url) and keeps serving in the
    # background until the run ends: a run_once module, like a listener that never blocks.
    lifecycles=("run_once",),
    params_schema=s.params(
        {
            "handlers": s.array(
                _HANDLER,
                "Handlers, first match wins; an unmatched request gets 404.",
                minItems=1,
            ),
        },
        required=("handlers",),
    ),
    summary_schema=s.summary(
        {"server_url": s.string("Base URL, e.g. \"http://127.0.0.1:41234\" (no trailing /).")}
    ),
)

PRODUCER = ModuleSpec(
    name="test:producer",
    layer="X",
    description="Emit test records: a literal list, or `count` records rendered from "
    "`template`, generated lazily.",
    params_schema=s.params(
        {
            "records": s.array(
                s.open_object("One record."), "Records to emit, in order."
            ),
            "count": s.integer("Number of records to generate.", minimum=0),
            "template": s.template_text(
                "With count: template (state in scope) rendering the JSON object emitted "
                "`count` times."
            ),
        },
        rules=[
            s.exactly_one_of("records", "count"),
            {"dependentRequired": {"count": ["template"], "template": ["count"]}},
        ],
    ),
    summary_schema=s.summary({"records_sent": s.integer("Records emitted.", minimum=0)}),
    record_schema=s.open_record(),
)

MODULES: tuple[ModuleSpec, ...] = (ASSERT, MOCK_HTTP_SERVER, PRODUCER)
