"""``http:*``: the HTTP/1.1 server primitives (L3) and the HTTP client (L5)."""

from __future__ import annotations

from gxo.stdlib import _schemas as s
from gxo.stdlib._spec import ModuleSpec

LISTEN = ModuleSpec(
    name="http:listen",
    layer="L3",
    description="HTTP/1.1 server: parse requests and emit one record per request, until "
    "cancelled.",
    lifecycles=("run_once", "supervise", "event_driven"),
    params_schema=s.params(
        {
            "address": s.address(
                "Local address to listen on, e.g. \":9090\"; omit it to read connections from a "
                "connection:listen stream input instead (design.md §3)."
            ),
            "network": s.enum("Transport of `address`.", ("tcp",), default="tcp"),
        }
    ),
    summary_schema=s.summary(
        {
            "address": s.string("The bound local address (empty when fed by a stream input)."),
            "requests_received": s.integer("Requests parsed and emitted.", minimum=0),
        },
        dry_run=True,
    ),
    record_schema=s.record(
        {
            "request_id": s.string("Id for http:respond; the request waits in the kernel's "
                                   "request manager."),
            "method": s.string("Request method, upper case."),
            "path": s.string("Request path, without the query string."),
            "headers": s.string_map("Request headers (names lower case; repeated headers "
                                    "joined with \", \")."),
            "body": s.string("Request body as text."),
            "query_params": s.string_map("Query parameters (the first value of each)."),
        }
    ),
    # Either `address` or one connection:listen stream input (the compiler checks the pair).
    stream_input="optional",
    logged_params=("address",),
)

RESPOND = ModuleSpec(
    name="http:respond",
    layer="L3",
    description="Reply to a request received by http:listen, on its original connection.",
    params_schema=s.params(
        {
            "request_id": s.nonempty("The request_id of an http:listen record."),
            "status_code": s.integer("HTTP status code.", minimum=100, maximum=599, default=200),
            "headers": s.string_map("Response headers."),
            "body": s.string("Response body.", default=""),
        },
        required=("request_id",),
    ),
    summary_schema=s.summary(
        {
            "request_id": s.string("The request answered."),
            "bytes_written": s.integer("Bytes written to the connection.", minimum=0),
        },
        dry_run=True,
    ),
    # The body goes to the client, not into the summary or logs.
    logged_params=("request_id",),
)

_AUTH = s.obj(
    {
        "basic": s.obj(
            {"user": s.string("User name."), "pass": s.string("Password (use a secret).")},
            "HTTP Basic authentication.",
            required=("user", "pass"),
        ),
        "bearer": s.obj(
            {"token": s.nonempty("Bearer token (use a secret).")},
            "Authorization: Bearer <token>.",
            required=("token",),
        ),
        "oauth2": s.obj(
            {
                "token_url": s.nonempty("Token endpoint URL."),
                "client_id": s.nonempty("Client id."),
                "client_secret": s.string("Client secret (use a secret)."),
                "scopes": s.string_list("Scopes requested.", "One scope.", default=[]),
            },
            "OAuth 2.0 client-credentials grant; the token is fetched before the request.",
            required=("token_url", "client_id", "client_secret"),
        ),
    },
    "Authentication helper: exactly one of basic, bearer, oauth2.",
    minProperties=1,
    maxProperties=1,
)

_PAGINATION = s.obj(
    {
        "strategy": s.enum(
            "How the next page is found: the Link header's rel=\"next\", or a field of the "
            "JSON body holding the next URL.",
            ("link_header", "next_field"),
        ),
        "next_field": s.nonempty(
            "With next_field: dotted path into json_body of the next page's URL (absent or "
            "null ends)."
        ),
        "max_pages": s.integer("Upper bound on pages fetched.", minimum=1, default=100),
    },
    "Follow pagination; every page's JSON body is collected in the summary's `pages`.",
    required=("strategy",),
    rules=[s.when_equals("strategy", "next_field", {"required": ["next_field"]})],
)

REQUEST = ModuleSpec(
    name="http:request",
    layer="L5",
    description="HTTP client: send one request (optionally following pagination) and return "
    "the response.",
    params_schema=s.params(
        {
            "url": s.string("Absolute http:// or https:// URL.", pattern=r"^https?://\S+$"),
            "method": s.enum("Request method.", s.HTTP_METHODS, default="GET"),
            "headers": s.string_map("Request headers."),
            "query_params": {
                "type": "object",
                "additionalProperties": {"type": ["string", "number", "boolean"]},
                "description": "Query parameters appended to the URL (URL-encoded).",
            },
            "body": s.string("Request body (build JSON with a template or toJson)."),
            "timeout": s.duration("Time limit for the whole request.", default="30s"),
            "skip_tls_verify": s.boolean(
                "Do not verify the server's TLS certificate (logs a prominent warning).",
                default=False,
            ),
            "auth": _AUTH,
            "cookie_jar": s.boolean(
                "Keep cookies across redirects and pages of this request.", default=False
            ),
            "pagination": _PAGINATION,
            "success_when": s.condition(
                "Condition over the response (status_code, headers, body, json_body at the top "
                "of the scope, over the state); default: status below 400."
            ),
            "fail_when": s.condition(
                "Condition over the response that fails the workload when true (checked after "
                "success_when)."
            ),
        },
        required=("url",),
    ),
    summary_schema=s.summary(
        {
            "status_code": s.integer("Response status code."),
            "headers": s.string_map("Response headers (names lower case)."),
            "body": s.string("Response body as text."),
            "json_body": s.any_value(
                "The body decoded when the Content-Type is JSON, else null."
            ),
            "xml_body": s.any_value("The body decoded to maps when the Content-Type is XML."),
            "latency_ms": s.integer("Time to the complete response, in ms.", minimum=0),
            "pages": s.array(
                s.any_value("One page's json_body."),
                "With pagination: every page's json_body, in order (the other keys describe "
                "the last page).",
            ),
        },
        optional=("xml_body", "pages"),
        dry_run=True,
    ),
    # success_when/fail_when are evaluated once per *response*: the response (this summary) is
    # their record, at the top of the scope over the state, as for join templates (design.md
    # §4). The compiler types that scope from summary_schema for this module.
    per_record_params=("success_when", "fail_when"),
    condition_params=("success_when", "fail_when"),
    # url and method are logged and sent to events; headers/body/auth never are.
    logged_params=("url", "method"),
)

MODULES: tuple[ModuleSpec, ...] = (LISTEN, RESPOND, REQUEST)
