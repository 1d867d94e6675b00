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
        "matches_regex": s.string(
            "Passes when the regular expression (RE2 syntax, see "
            "docs/expressions.md#regular-expressions) matches somewhere in actual's text.",
            format="regex"),
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
    in_process="its server keeps serving after perform returns, until the run ends",
)

PRODUCER = ModuleSpec(
    name="test:producer",
    layer="X",
    description="Emit test records: a literal list, or records rendered from `template` "
    "(`count` of them, or timed by `interval`).",
    # A timed source (interval) can feed an event_driven workload.
    lifecycles=("run_once", "event_driven"),
    params_schema=s.params(
        {
            "records": s.array(
                s.open_object("One record."), "Records to emit, in order."
            ),
            "count": s.integer("Number of records to generate (optional with `interval`: "
                               "without it the producer runs until it is cancelled).",
                               minimum=0),
            "template": s.template_text(
                "With count (or interval): template rendering each record's JSON object; "
                "`.index` (the record's 0-based position) is laid over the state."
            ),
            "interval": s.duration(
                "Wait this long before each record after the first: a slow producer whose "
                "records are emitted one by one (default: no wait, whole batches). With "
                "`template` and no `count`, records are generated until the workload is "
                "cancelled: a timed event source."
            ),
        },
        rules=[
            {
                "if": {"required": ["interval"]},
                "then": {"allOf": [
                    s.exactly_one_of("records", "template"),
                    s.at_most_one_of("records", "count"),
                    {"dependentRequired": {"count": ["template"]}},
                ]},
                "else": {"allOf": [
                    s.exactly_one_of("records", "count"),
                    {"dependentRequired": {"count": ["template"], "template": ["count"]}},
                ]},
            },
        ],
    ),
    summary_schema=s.summary({"records_sent": s.integer("Records emitted.", minimum=0)}),
    record_schema=s.open_record(),
    per_record_params=("template",),
    per_record_scope=s.summary({"index": s.integer("The record's 0-based position.", minimum=0)}),
)

MODULES: tuple[ModuleSpec, ...] = (ASSERT, MOCK_HTTP_SERVER, PRODUCER)


# --------------------------------------------------------------------------- code
#
# Module code (design.md §8).  Heavy imports stay inside perform: the compiler imports this file.


def _shown(value) -> str:
    """A value quoted for an assertion message: strings JSON-quoted, others in text form."""
    import json

    from gxo.runtime.exprlib import text

    if isinstance(value, str):
        shown = json.dumps(value, ensure_ascii=False)
    else:
        try:
            shown = text(value)
        except Exception:  # noqa: BLE001 - only for the message
            shown = repr(value)
    return shown if len(shown) <= 300 else shown[:300] + "..."


def _check(index: int, assertion) -> None:
    """Raise ValidationError("assertion failed: ...") unless ``assertion`` holds."""
    from gxo.runtime.exprlib import _deep_eq, text, truthy
    from gxo.runtime.module import ValidationError

    where = f"assertions[{index}]"
    if not isinstance(assertion, dict):
        raise ValidationError(f"{where} must be a map with 'actual' and one operator")
    if "actual" not in assertion:
        raise ValidationError(f"{where}: missing 'actual'")
    ops = [k for k in assertion if k in ASSERT_OPERATORS]
    unknown = [k for k in assertion if k != "actual" and k not in ASSERT_OPERATORS]
    if unknown:
        raise ValidationError(f"{where}: unknown key {unknown[0]!r} (operators: "
                              f"{', '.join(ASSERT_OPERATORS)})")
    if len(ops) != 1:
        raise ValidationError(f"{where} needs exactly one operator of "
                              f"{', '.join(ASSERT_OPERATORS)}; got {len(ops)}")
    op = ops[0]
    actual, expected = assertion["actual"], assertion[op]
    fail = f"assertion failed: {where}: "
    if op == "equal_to":
        if not _deep_eq(actual, expected):
            raise ValidationError(f"{fail}expected {_shown(actual)} to equal {_shown(expected)}")
    elif op == "not_equal_to":
        if _deep_eq(actual, expected):
            raise ValidationError(f"{fail}expected {_shown(actual)} not to equal "
                                  f"{_shown(expected)}")
    elif op == "contains":
        if isinstance(actual, str):
            if not isinstance(expected, str):
                raise ValidationError(f"{where}: contains on a string needs a string, got "
                                      f"{_shown(expected)}")
            ok = expected in actual
        elif isinstance(actual, (list, tuple)):
            ok = any(_deep_eq(item, expected) for item in actual)
        elif isinstance(actual, dict):
            ok = isinstance(expected, str) and expected in actual
        else:
            raise ValidationError(f"{fail}contains needs a string, list or map as actual, got "
                                  f"{_shown(actual)}")
        if not ok:
            raise ValidationError(f"{fail}expected {_shown(actual)} to contain "
                                  f"{_shown(expected)}")
    elif op == "is_true":
        if not isinstance(expected, bool):
            raise ValidationError(f"{where}: is_true must be true or false")
        if truthy(actual) is not expected:
            want = "truthy" if expected else "falsy"
            raise ValidationError(f"{fail}expected {_shown(actual)} to be {want}")
    elif op == "is_nil":
        if not isinstance(expected, bool):
            raise ValidationError(f"{where}: is_nil must be true or false")
        if (actual is None) is not expected:
            want = "null" if expected else "not null"
            raise ValidationError(f"{fail}expected {_shown(actual)} to be {want}")
    else:  # matches_regex
        if not isinstance(expected, str):
            raise ValidationError(f"{where}: matches_regex must be a string")
        from gxo.runtime import regex

        try:
            pattern = regex.compile(expected)
        except regex.RegexError as exc:
            raise ValidationError(f"{where}: invalid regular expression {expected!r}: {exc}; "
                                  f"{regex.DIALECT}") from None
        subject = actual if isinstance(actual, str) else text(actual)
        if not pattern.test(subject):
            raise ValidationError(f"{fail}expected {_shown(actual)} to match /{expected}/")


class Assert:
    """``test:assert``: check assertions in order; the first failure fails the workload."""

    name = "test:assert"

    def perform(self, ctx, params):
        from gxo.runtime.module import ValidationError
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        assertions = params.get("assertions")
        if not isinstance(assertions, (list, tuple)) or not assertions:
            raise ValidationError("parameter 'assertions' must be a non-empty list")
        for i, assertion in enumerate(assertions):
            _check(i, assertion)
        return {"assertions_passed": len(assertions)}


def _mock_handlers(params) -> list:
    """The handlers checked: [(method, path, status, headers, body bytes)]."""
    import json

    from gxo.runtime.module import ValidationError
    from gxo.stdlib import _params as p

    params = p.check_map(params)
    handlers = params.get("handlers")
    if not isinstance(handlers, (list, tuple)) or not handlers:
        raise ValidationError("parameter 'handlers' must be a non-empty list")
    out = []
    for i, h in enumerate(handlers):
        where = f"handlers[{i}]"
        if not isinstance(h, dict) or not isinstance(h.get("request"), dict) \
                or not isinstance(h.get("response", {}), dict):
            raise ValidationError(f"{where} must be a map with 'request' and 'response' maps")
        req, resp = h["request"], h.get("response") or {}
        method = req.get("method", "GET")
        if not isinstance(method, str) or method.upper() not in s.HTTP_METHODS:
            raise ValidationError(f"{where}.request.method must be one of "
                                  f"{', '.join(s.HTTP_METHODS)}")
        path = req.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValidationError(f"{where}.request.path must be a string starting with '/'")
        status = resp.get("status_code", 200)
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValidationError(f"{where}.response.status_code must be an integer 100-599")
        headers = resp.get("headers") or {}
        if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise ValidationError(f"{where}.response.headers must be a map of strings")
        headers = dict(headers)
        body = resp.get("body", "")
        if body is None:
            body = ""
        if isinstance(body, (dict, list)):
            data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            if not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "application/json"
        elif isinstance(body, str):
            data = body.encode("utf-8")
        else:
            raise ValidationError(f"{where}.response.body must be a string, a map or a list")
        out.append((method.upper(), path, status, headers, data))
    return out


class MockHttpServer:
    """``test:mock_http_server``: a real HTTP/1.1 server on 127.0.0.1 and a random port.

    ``perform`` returns ``{server_url}`` as soon as the socket listens; the server keeps
    serving in the background (keep-alive connections included) until the run ends, when the
    kernel calls the cleanup registered through ``ctx.on_run_end``.  It starts in a dry run
    too: it is a local test fixture, and its URL must be real for the run to make sense.
    """

    name = "test:mock_http_server"

    async def perform(self, ctx, params):
        handlers = _mock_handlers(params)
        server = _MockServer(handlers, ctx.logger)
        await server.start()
        ctx.on_run_end(server.close)
        ctx.logger.info("mock HTTP server listening", url=server.url)
        return {"server_url": server.url}


_MAX_HEADER_BYTES = 64 * 1024
_MAX_BODY_BYTES = 16 * 1024 * 1024


class _MockServer:
    def __init__(self, handlers: list, logger) -> None:
        self.handlers = handlers
        self.logger = logger
        self.server = None
        self.url = ""
        self.tasks: set = set()
        #: every request received, in order (for debugging and for tests of clients)
        self.requests: list[dict] = []

    async def start(self) -> None:
        import asyncio

        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0,
                                                 limit=_MAX_HEADER_BYTES)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        import asyncio

        if self.server is None:
            return
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()
        self.server = None

    async def _client(self, reader, writer) -> None:
        import asyncio

        task = asyncio.current_task()
        self.tasks.add(task)
        try:
            while True:
                keep = await self._one(reader, writer)
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError,
                ValueError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self.tasks.discard(task)
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, asyncio.CancelledError):
                pass

    async def _one(self, reader, writer) -> bool:
        """Answer one request; whether the connection stays open."""
        from http import HTTPStatus

        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            await self._send(writer, 400, {}, b"bad request line\n", False)
            return False
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                if len(body) + size > _MAX_BODY_BYTES:
                    await self._send(writer, 413, {}, b"body too large\n", False)
                    return False
                body += (await reader.readexactly(size + 2))[:-2]
        else:
            length = int(headers.get("content-length", "0") or 0)
            if length > _MAX_BODY_BYTES:
                await self._send(writer, 413, {}, b"body too large\n", False)
                return False
            if length:
                body = await reader.readexactly(length)
        path, _, query = target.partition("?")
        self.requests.append({"method": method, "path": path, "query": query,
                              "headers": headers, "body": body.decode("utf-8", "replace")})
        conn = headers.get("connection", "").lower()
        keep = conn != "close" and (version == "HTTP/1.1" or conn == "keep-alive")
        for h_method, h_path, status, h_headers, body in self.handlers:
            if h_path == path and (h_method == method or (method == "HEAD" and h_method == "GET")):
                await self._send(writer, status, h_headers, body, keep, method == "HEAD")
                return keep
        await self._send(writer, int(HTTPStatus.NOT_FOUND), {"Content-Type": "text/plain"},
                         f"no handler for {method} {path}\n".encode(), keep, method == "HEAD")
        return keep

    @staticmethod
    async def _send(writer, status: int, headers: dict, body: bytes, keep: bool,
                    head_only: bool = False) -> None:
        from http import HTTPStatus

        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Status"
        out = [f"HTTP/1.1 {status} {reason}"]
        lowered = {k.lower() for k in headers}
        for k, v in headers.items():
            if k.lower() in ("content-length", "connection"):
                continue
            out.append(f"{k}: {v}")
        if "content-type" not in lowered and body:
            out.append("Content-Type: text/plain; charset=utf-8")
        out.append(f"Content-Length: {len(body)}")
        out.append("Connection: " + ("keep-alive" if keep else "close"))
        writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(body)
        await writer.drain()


class Producer:
    """``test:producer``: emit ``records``, or ``count`` records from ``template`` (lazily);
    with ``interval`` one record at a time, and without ``count`` until cancelled (the sleep
    between records is where a cancellation lands at once)."""

    name = "test:producer"

    async def perform(self, ctx, params):
        import asyncio
        import json

        from gxo.runtime._records_cy import RecordFn, copy_batch, map_batch
        from gxo.runtime.module import ValidationError
        from gxo.runtime.streams import errors_of, output_of
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        out = output_of(ctx)
        errors = errors_of(ctx)
        size = out.batch_size
        sent = 0
        records = params.get("records")
        count = params.get("count")
        interval = p.opt_duration(params, "interval", "0s") if params.get("interval") else 0.0
        if records is not None and count is not None:
            raise ValidationError("'records' and 'count' exclude each other")
        if records is None and count is None and not (interval > 0 and "template" in params):
            raise ValidationError("exactly one of 'records' and 'count' is required (or 'template' "
                                  "with 'interval')")
        if interval > 0:
            # a slow producer: one record at a time; the output's flush timer sends them on
            size = 1
        if records is not None:
            if not isinstance(records, (list, tuple)):
                raise ValidationError(f"parameter 'records' must be a list, got "
                                      f"{p.kind(records)}")
            batch: list = []
            for i, record in enumerate(records):
                if not isinstance(record, dict) or not all(isinstance(k, str) for k in record):
                    errors.report(i, ctx.workload, f"record {i} is a {p.kind(record)}, not a "
                                  "map with string keys")
                    continue
                if interval > 0:
                    if sent:
                        await asyncio.sleep(interval)
                    sent += 1
                    await out.emit_one(record)
                    continue
                batch.append(record)
                if len(batch) >= size:
                    sent += len(batch)
                    await out.send_batch(batch)
                    batch = []
            if batch:
                sent += len(batch)
                await out.send_batch(batch)
            return {"records_sent": sent}
        # no count (with an interval): unbounded, until the workload is cancelled
        count = p.opt_int(params, "count", minimum=0) if count is not None else None
        if "template" not in params:
            raise ValidationError("missing required parameter 'template' (with 'count')")
        template = params["template"]

        def as_record(value):
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError:
                    raise ValueError("the template must render a JSON object") from None
            if not isinstance(value, dict):
                # ValueError marks a record error (caught per record below)
                raise ValueError(  # noqa: TRY004
                    f"the template must render a JSON object, got {p.kind(value)}")
            return value

        if callable(template):
            # called with the record's position: {"index": i}
            fn = RecordFn.plain(template)
        else:
            try:
                constant = as_record(template)
            except ValueError as exc:
                raise ValidationError(f"parameter 'template': {exc}") from None

        i = 0
        while count is None or i < count:  # one batch at a time: never all records in memory
            n = size if count is None else min(size, count - i)
            if interval > 0 and i > 0:
                # every tick waits, a record that fails to render too: an unbounded producer
                # always yields to the loop (and to a cancellation)
                await asyncio.sleep(interval)
            if callable(template):
                batch = map_batch(fn, [{"index": j} for j in range(i, i + n)], i, ctx.workload,
                                  errors, as_record)
            else:
                batch = copy_batch(constant, n)
            i += n
            if not batch:
                continue
            if interval > 0:
                sent += 1
                await out.emit_one(batch[0])
                continue
            sent += len(batch)
            await out.send_batch(batch)
        return {"records_sent": sent}


CODE = {"test:assert": Assert, "test:mock_http_server": MockHttpServer, "test:producer": Producer}
