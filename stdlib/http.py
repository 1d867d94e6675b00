"""``http:*``: the HTTP/1.1 server primitives (L3) and the HTTP client (L5)."""

from __future__ import annotations

from gxo.stdlib import _schemas as s
from gxo.stdlib._spec import ModuleSpec

#: http:listen's limits when the playbook gives none
LISTEN_MAX_HEADER_BYTES = 64 * 1024
LISTEN_MAX_BODY_BYTES = 1024 * 1024

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
            "max_header_bytes": s.integer(
                "The largest request head (request line and headers); a larger one is answered "
                "431 and its connection closed.", minimum=1024, default=LISTEN_MAX_HEADER_BYTES),
            "max_body_bytes": s.integer(
                "The largest request body; a larger one is answered 413 and its connection "
                "closed.", minimum=0, default=LISTEN_MAX_BODY_BYTES),
            "idle_timeout": s.duration(
                "How long a kept-alive connection may stay silent (or take to send a request) "
                "before it is closed.", default="15s"),
            "response_timeout": s.duration(
                "How long a request waits for its http:respond; then it is answered 504.",
                default="30s"),
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
            "remote_addr": s.string("The client's address, host:port."),
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
    # It writes the answer to the connection's buffer and returns: pure of waits, bounded.
    inline=True,
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

#: http:request's max_response_bytes when the playbook gives none (64 MiB)
MAX_RESPONSE_BYTES = 64 * 1024 * 1024

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
            "json": s.any_value(
                "A value sent as the JSON body (Content-Type: application/json unless the "
                "headers set one); not with body."
            ),
            "timeout": s.duration("Time limit for the whole request.", default="30s"),
            "max_response_bytes": s.integer(
                "The largest response body accepted (each page); a larger one fails the "
                "workload once that many bytes have arrived, so memory stays bounded.",
                minimum=1, default=MAX_RESPONSE_BYTES,
            ),
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


# --------------------------------------------------------------------------- code
#
# Module code (design.md §8).  httpx is imported inside perform: the compiler imports this file.


def _condition(params: dict, key: str):
    """``success_when``/``fail_when``: None (absent), a bool, or a callable of the response.

    They are per-response conditions (``per_record_params``): the kernel cannot evaluate them
    before the request, so it hands over either a literal boolean or a function taking the
    response summary (the record) and returning the condition's value.
    """
    from gxo.runtime.module import ValidationError

    value = params.get(key)
    if value is None or isinstance(value, bool) or callable(value):
        return value
    raise ValidationError(
        f"parameter {key!r} reached the module as {type(value).__name__}, not as a boolean or "
        f"a per-response condition: the kernel evaluates it for each response"
    )


def _holds(cond, summary: dict, key: str) -> bool:
    from gxo.runtime.exprlib import truthy
    from gxo.runtime.module import ValidationError

    if isinstance(cond, bool):
        return cond
    try:
        return truthy(cond(summary))
    except Exception as exc:  # noqa: BLE001 - a condition that cannot be evaluated fails
        raise ValidationError(f"{key} could not be evaluated: {exc}") from None


def _known_codec(name: str | None) -> bool:
    if not name:
        return False
    import codecs

    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _is_xml(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("application/xml", "text/xml") or media.endswith("+xml")


def _xml_to_value(text: str):
    """XML as maps: an element is ``{tag: {"@attr": ..., "child": ..., "#text": ...}}``;
    repeated children become lists; a leaf without attributes is its text."""
    import xml.etree.ElementTree as ET

    def convert(el):
        children = list(el)
        node: dict = {f"@{k}": v for k, v in el.attrib.items()}
        for child in children:
            value = convert(child)
            if child.tag in node:
                if not isinstance(node[child.tag], list):
                    node[child.tag] = [node[child.tag]]
                node[child.tag].append(value)
            else:
                node[child.tag] = value
        body = (el.text or "").strip()
        if not node:
            return body
        if body:
            node["#text"] = body
        return node

    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        return None  # no entity expansion, ever
    root = ET.fromstring(text)
    return {root.tag: convert(root)}


def _dig(value, dotted: str):
    """``a.b.0.c`` into JSON; None when any step is missing."""
    for part in dotted.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


class Request:
    """``http:request``: one request (or a paginated series) with httpx.

    Failure: a response is successful when ``success_when`` holds (default: status below 400);
    a successful one still fails when ``fail_when`` holds.  A failure carries the response
    summary.  Redirects are followed (at most 10); ``timeout`` bounds each request with its
    redirects (each page of a paginated series has its own).
    """

    name = "http:request"

    async def perform(self, ctx, params):
        import asyncio
        import time

        from gxo.runtime.module import ModuleError, ValidationError
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        url = p.req_str(params, "url")
        if not url.lower().startswith(("http://", "https://")) or any(c.isspace() for c in url):
            raise ValidationError(f"parameter 'url' must be an absolute http:// or https:// URL, "
                                  f"got {ctx.redact(url)!r}")
        method = (p.opt_str(params, "method", "GET") or "GET").upper()
        if method not in s.HTTP_METHODS:
            raise ValidationError(f"parameter 'method' must be one of "
                                  f"{', '.join(s.HTTP_METHODS)}; got {method!r}")
        headers = p.opt_str_map(params, "headers")
        query = p.opt_map(params, "query_params") or {}
        query_items = []
        for k, v in query.items():
            if isinstance(v, (dict, list, tuple)) or v is None:
                raise ValidationError(f"parameter 'query_params'.{k} must be a string, number "
                                      f"or boolean")
            query_items.append((str(k), p.scalar_text(v)))
        body = p.opt_str(params, "body")
        has_json = params.get("json") is not None
        if has_json and body is not None:
            raise ValidationError("give at most one of 'body' and 'json'")
        if has_json:
            import json as jsonlib

            try:
                body = jsonlib.dumps(params["json"], separators=(",", ":"), ensure_ascii=False)
            except (TypeError, ValueError) as exc:
                raise ValidationError(f"parameter 'json' cannot be sent as JSON: {exc}") from None
            if not any(k.lower() == "content-type" for k in headers):
                headers = {**headers, "Content-Type": "application/json"}
        limit = p.opt_int(params, "max_response_bytes", MAX_RESPONSE_BYTES, minimum=1)
        timeout = p.opt_duration(params, "timeout", "30s")
        skip_tls = p.opt_bool(params, "skip_tls_verify", False)
        cookie_jar = p.opt_bool(params, "cookie_jar", False)
        auth = self._auth_params(p.opt_map(params, "auth"))
        pagination = self._pagination_params(p.opt_map(params, "pagination"))
        success_when = _condition(params, "success_when")
        fail_when = _condition(params, "fail_when")

        if ctx.dry_run:
            ctx.logger.info("dry run: would send an HTTP request", method=method, url=url)
            return {"status_code": 0, "headers": {}, "body": "", "json_body": None,
                    "latency_ms": 0, "dry_run": True}
        if skip_tls:
            ctx.logger.warning(
                "TLS CERTIFICATE VERIFICATION IS DISABLED (skip_tls_verify: true): the "
                "connection can be intercepted; never use this in production", url=url)

        import httpx

        client_args: dict = {"verify": not skip_tls, "follow_redirects": True,
                             "max_redirects": 10, "timeout": timeout}
        if not cookie_jar:
            import http.cookiejar

            jar = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(
                allowed_domains=[]))  # keep no cookie
            client_args["cookies"] = jar
        async with httpx.AsyncClient(**client_args) as client:
            async def send(u: str, first: bool):
                req_headers = dict(headers)
                kwargs: dict = {"headers": req_headers}
                if first and query_items:
                    kwargs["params"] = query_items
                if body is not None:
                    kwargs["content"] = body.encode("utf-8")
                if auth is not None:
                    kind, value = auth
                    if kind == "basic":
                        kwargs["auth"] = httpx.BasicAuth(*value)
                    else:
                        req_headers["Authorization"] = f"Bearer {value}"
                started = time.perf_counter()
                try:
                    async with asyncio.timeout(timeout):
                        req_auth = kwargs.pop("auth", None)
                        response = await client.send(client.build_request(method, u, **kwargs),
                                                     auth=req_auth, stream=True)
                        try:
                            chunks: list[bytes] = []
                            size = 0
                            async for chunk in response.aiter_bytes():
                                size += len(chunk)
                                if size > limit:
                                    raise ModuleError(
                                        f"HTTP {method} {u}: the response body is larger than "
                                        f"{limit} bytes (max_response_bytes)")
                                chunks.append(chunk)
                        finally:
                            await response.aclose()
                        content = b"".join(chunks)
                except TimeoutError:
                    raise ModuleError(f"HTTP {method} {u}: no complete response within "
                                      f"{params.get('timeout') or '30s'}") from None
                except httpx.TooManyRedirects:
                    raise ModuleError(f"HTTP {method} {u}: more than 10 redirects") from None
                except httpx.HTTPError as exc:
                    raise ModuleError(f"HTTP {method} {u}: {type(exc).__name__}: {exc}") \
                        from None
                latency = int((time.perf_counter() - started) * 1000)
                return response, content, latency

            if auth is not None and auth[0] == "oauth2":
                auth = ("bearer", await self._oauth2_token(client, auth[1], timeout))

            pages: list = []
            next_url: str | None = url
            first = True
            while next_url is not None:
                response, content, latency = await send(next_url, first)
                summary = self._summary(response, content, latency, ctx)
                first = False
                if pagination is None:
                    break
                pages.append(summary["json_body"])
                if len(pages) >= pagination["max_pages"]:
                    break
                next_url = self._next_page(response, summary, pagination)
                if next_url is not None and not self._ok(summary, success_when, fail_when):
                    break
            if pagination is not None:
                summary["pages"] = pages

        ok = _holds(success_when, summary, "success_when") if success_when is not None \
            else summary["status_code"] < 400
        if not ok:
            why = "success_when is false" if success_when is not None else "status >= 400"
            raise ModuleError(f"HTTP {method} {url}: status {summary['status_code']} ({why})",
                              summary=summary)
        if fail_when is not None and _holds(fail_when, summary, "fail_when"):
            raise ModuleError(f"HTTP {method} {url}: fail_when holds (status "
                              f"{summary['status_code']})", summary=summary)
        return summary

    @staticmethod
    def _ok(summary, success_when, fail_when) -> bool:
        if success_when is not None:
            if not _holds(success_when, summary, "success_when"):
                return False
        elif summary["status_code"] >= 400:
            return False
        return not (fail_when is not None and _holds(fail_when, summary, "fail_when"))

    @staticmethod
    def _summary(response, content: bytes, latency: int, ctx) -> dict:
        from gxo.runtime.limits import LimitExceeded, load_json

        content_type = response.headers.get("content-type", "")
        headers: dict[str, str] = {}
        for k, v in response.headers.multi_items():
            k = k.lower()
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        text = content.decode(response.charset_encoding or "utf-8", "replace") \
            if _known_codec(response.charset_encoding) else content.decode("utf-8", "replace")
        summary = {"status_code": response.status_code, "headers": headers, "body": text,
                   "json_body": None, "latency_ms": latency}
        if _is_json(content_type) and text.strip():
            try:
                summary["json_body"] = load_json(text, constants=True)
            except LimitExceeded as exc:
                ctx.logger.warning(f"the response's JSON body is past a limit, json_body is null: {exc} "
                                   "(docs/runtime.md#limits)")
            except ValueError:
                ctx.logger.warning("the response says JSON but its body is not valid JSON")
        elif _is_xml(content_type) and text.strip():
            try:
                summary["xml_body"] = _xml_to_value(text)
            except Exception:  # noqa: BLE001 - ParseError and friends: report no value
                summary["xml_body"] = None
        return summary

    @staticmethod
    def _next_page(response, summary: dict, pagination: dict) -> str | None:
        from urllib.parse import urljoin

        if pagination["strategy"] == "link_header":
            link = response.links.get("next", {}).get("url")
        else:
            link = _dig(summary["json_body"], pagination["next_field"])
        if not isinstance(link, str) or not link:
            return None
        return urljoin(str(response.url), link)

    @staticmethod
    def _auth_params(auth):
        from gxo.runtime.module import ValidationError

        if auth is None:
            return None
        if len(auth) != 1:
            raise ValidationError("parameter 'auth' must hold exactly one of basic, bearer, "
                                  "oauth2")
        (kind, value), = auth.items()
        if not isinstance(value, dict):
            raise ValidationError(f"parameter 'auth'.{kind} must be a map")

        def need(key: str, nonempty: bool = True) -> str:
            v = value.get(key)
            if not isinstance(v, str) or (nonempty and not v):
                raise ValidationError(f"parameter 'auth'.{kind}.{key} must be a "
                                      f"{'non-empty ' if nonempty else ''}string")
            return v

        if kind == "basic":
            return ("basic", (need("user", False), need("pass", False)))
        if kind == "bearer":
            return ("bearer", need("token"))
        if kind == "oauth2":
            scopes = value.get("scopes") or []
            if not isinstance(scopes, list) or not all(isinstance(x, str) for x in scopes):
                raise ValidationError("parameter 'auth'.oauth2.scopes must be a list of strings")
            return ("oauth2", {"token_url": need("token_url"), "client_id": need("client_id"),
                               "client_secret": need("client_secret", False),
                               "scopes": scopes})
        raise ValidationError(f"parameter 'auth': unknown helper {kind!r} (basic, bearer, "
                              f"oauth2)")

    @staticmethod
    def _pagination_params(pag):
        from gxo.runtime.module import ValidationError

        if pag is None:
            return None
        strategy = pag.get("strategy")
        if strategy not in ("link_header", "next_field"):
            raise ValidationError("parameter 'pagination'.strategy must be link_header or "
                                  "next_field")
        next_field = pag.get("next_field")
        if strategy == "next_field" and (not isinstance(next_field, str) or not next_field):
            raise ValidationError("parameter 'pagination'.next_field is required with "
                                  "strategy next_field")
        max_pages = pag.get("max_pages", 100)
        if isinstance(max_pages, bool) or not isinstance(max_pages, int) or max_pages < 1:
            raise ValidationError("parameter 'pagination'.max_pages must be a positive integer")
        return {"strategy": strategy, "next_field": next_field, "max_pages": max_pages}

    @staticmethod
    async def _oauth2_token(client, conf: dict, timeout: float) -> str:
        """The client-credentials grant (RFC 6749 §4.4), credentials in Basic auth (§2.3.1)."""
        import asyncio

        import httpx
        from gxo.runtime.module import ModuleError

        data = {"grant_type": "client_credentials"}
        if conf["scopes"]:
            data["scope"] = " ".join(conf["scopes"])
        try:
            async with asyncio.timeout(timeout):
                response = await client.post(
                    conf["token_url"], data=data,
                    auth=httpx.BasicAuth(conf["client_id"], conf["client_secret"]),
                    headers={"Accept": "application/json"})
        except TimeoutError:
            raise ModuleError("OAuth2 token request timed out") from None
        except httpx.HTTPError as exc:
            raise ModuleError(f"OAuth2 token request failed: {type(exc).__name__}: {exc}") \
                from None
        if response.status_code >= 400:
            raise ModuleError(f"OAuth2 token request failed: status {response.status_code}")
        try:
            token = response.json().get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise ModuleError("OAuth2 token response holds no access_token")
        return token


class Listen:
    """``http:listen``: an HTTP/1.1 server (httptools' C parser) that sends one record per request and keeps
    the request waiting in the run's request manager until ``http:respond`` answers it.

    Each connection is one task: it reads a request (head and body within their limits),
    sends its record, waits for the answer (``response_timeout``, else 504), and goes on with
    the next request of a kept-alive connection (``idle_timeout`` between them).  A malformed
    request is answered 400, a head too large 431, a body too large 413; the connection is then
    closed and the server goes on serving the others.
    """

    name = "http:listen"

    async def perform(self, ctx, params):
        import asyncio

        from gxo.runtime.module import ValidationError
        from gxo.runtime.request_manager import RequestManager
        from gxo.runtime.streams import inputs_of, output_of
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        address = p.opt_str(params, "address")
        fed = len(inputs_of(ctx)) > 0
        if not address and not fed:
            raise ValidationError("parameter 'address' is required, or a connection:listen stream input")
        if address and fed:
            raise ValidationError("give 'address' or a connection:listen stream input, not both")
        limits = _Limits(
            header=p.opt_int(params, "max_header_bytes", LISTEN_MAX_HEADER_BYTES, minimum=1024),
            body=p.opt_int(params, "max_body_bytes", LISTEN_MAX_BODY_BYTES, minimum=0),
            idle=p.opt_duration(params, "idle_timeout", "15s"),
            response=p.opt_duration(params, "response_timeout", "30s"))
        if ctx.dry_run:
            ctx.logger.info("dry run: would serve HTTP requests", address=address or "(its stream input)")
            return {"address": address or "", "requests_received": 0, "dry_run": True}
        server = _Server(RequestManager.of(ctx), output_of(ctx), limits, ctx.logger)
        if fed:
            return await _serve_stream(ctx, server)
        host, sep, port_text = address.rpartition(":")
        if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ValidationError(f"parameter 'address' must be HOST:PORT or :PORT, got {address!r}")
        host = host.strip("[]") or None  # ":9090": every interface
        try:
            srv = await asyncio.start_server(server.client, host, int(port_text))
        except OSError as exc:
            from gxo.runtime.module import ModuleError

            raise ModuleError(f"cannot listen on {address}: {exc.strerror or exc}") from None
        bound = srv.sockets[0].getsockname()
        ctx.logger.info("listening for HTTP requests", address=f"{bound[0]}:{bound[1]}")
        try:
            await srv.serve_forever()
        finally:
            srv.close()
            await server.close()
        return {"address": f"{bound[0]}:{bound[1]}", "requests_received": server.received}


async def _serve_stream(ctx, server) -> dict:
    """http:listen fed by a connection:listen stream: each record's TCP connection is taken out
    of the connection manager (the HTTP server owns it from now on: keep-alive, its own idle
    timeout) and served like one it accepted itself."""
    import asyncio

    from gxo.runtime.streams import errors_of, inputs_of

    mgr = ctx.connections()
    errors = errors_of(ctx)
    loop = asyncio.get_running_loop()

    async def take(producer, batch) -> None:
        for i, record in enumerate(batch):
            cid = record.get("connection_id") if isinstance(record, dict) else None
            if not isinstance(cid, str):
                errors.report(i, producer, "the record holds no connection_id (http:listen reads the records "
                                           "of a connection:listen)")
                continue
            try:
                conn = mgr.detach(cid)
            except Exception as exc:  # noqa: BLE001 - closed meanwhile, or not a TCP connection
                errors.report(i, producer, str(exc))
                continue
            server.tasks.add(loop.create_task(server.client(conn.reader, conn.writer, bytes(conn.buf))))

    ctx.logger.info("serving HTTP on the connections of its stream input")
    try:
        await inputs_of(ctx).each(take)
        while server.tasks:  # the listener's stream ended: the connections it gave finish
            await asyncio.gather(*list(server.tasks), return_exceptions=True)
    finally:
        await server.close()
    return {"address": "", "requests_received": server.received}


class _Limits:
    __slots__ = ("header", "body", "idle", "response")

    def __init__(self, header: int, body: int, idle: float, response: float) -> None:
        self.header, self.body, self.idle, self.response = header, body, idle, response


class _Server:
    """The connections of one http:listen: each is a task that reads with a C HTTP/1.1 parser
    (httptools, llhttp), sends one record per request and waits for its answer."""

    def __init__(self, manager, out, limits: _Limits, logger) -> None:
        self.manager = manager
        self.out = out
        self.limits = limits
        self.logger = logger
        self.tasks: set = set()
        self.received = 0

    async def close(self) -> None:
        import asyncio

        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def client(self, reader, writer, first: bytes = b"") -> None:
        """Serve one connection; ``first``: bytes already read from it (handed over by the
        connection manager)."""
        import asyncio

        import httptools

        task = asyncio.current_task()
        self.tasks.add(task)
        peer = writer.get_extra_info("peername")
        remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
        msgs = _Messages(self.limits)
        parser = httptools.HttpRequestParser(msgs)
        msgs.parser = parser
        idle = self.limits.idle
        try:
            while True:
                if first:
                    data, first = first, b""
                else:
                    try:
                        async with asyncio.timeout(idle):
                            data = await reader.read(65536)
                    except TimeoutError:
                        break
                if not data:
                    break
                try:
                    parser.feed_data(data)
                except httptools.HttpParserUpgrade:
                    _reject(writer, 501, "protocol upgrades are not supported")
                    break
                except httptools.HttpParserError:
                    _reject(writer, *(msgs.too_big or (400, "bad request")))
                    break
                go_on = True
                while msgs.done and go_on:
                    go_on = await self._serve(msgs.done.pop(0), writer, remote)
                if not go_on:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
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

    async def _serve(self, req, writer, remote: str) -> bool:
        """Send one request's record and wait for its answer; whether the connection goes on."""
        import asyncio
        from urllib.parse import parse_qsl

        from gxo.runtime.request_manager import Pending

        method, target, headers, body, keep = req
        path, _, query = target.partition("?")
        query_params: dict[str, str] = {}
        if query:
            for k, v in parse_qsl(query, keep_blank_values=True):
                query_params.setdefault(k, v)
        done = asyncio.get_running_loop().create_future()
        rid = self.manager.add(Pending(keep, writer, done, method))
        if rid is None:
            _reject(writer, 503, "too many requests waiting for an answer")
            return False
        self.received += 1
        await self.out.emit_one({"request_id": rid, "method": method, "path": path, "headers": headers,
                                 "body": body.decode("utf-8", "replace"), "query_params": query_params,
                                 "remote_addr": remote})
        await self.out.flush()
        if not done.done():
            try:
                async with asyncio.timeout(self.limits.response):
                    await asyncio.shield(done)
            except TimeoutError:
                pass
            except asyncio.CancelledError:  # the server stops: the client hears it
                if self.manager.take(rid) is not None:
                    _reject(writer, 503, "the server is stopping")
                raise
        answered = done.result() if done.done() else None
        if answered is None:
            if not done.done():  # no http:respond within response_timeout
                self.manager.take(rid)
                _reject(writer, 504, "no response in time")
            else:  # the run is ending, or the answer could not be sent
                _reject(writer, 503, "the server is stopping")
            return False
        if writer.transport.get_write_buffer_size() > 65536:
            await writer.drain()
        return keep and answered > 0


class _Messages:
    """httptools' callbacks for one connection: complete requests in ``done``, as
    ``(method, target, headers, body, keep_alive)``; ``too_big`` when a limit was passed."""

    __slots__ = ("limits", "parser", "done", "too_big", "_url", "_headers", "_body", "_size")

    def __init__(self, limits: _Limits) -> None:
        self.limits = limits
        self.parser = None
        self.done: list = []
        self.too_big: tuple[int, str] | None = None
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body = bytearray()
        self._size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._grow(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow(len(name) + len(value) + 4)
        k = name.decode("latin-1").lower()
        v = value.decode("latin-1")
        h = self._headers
        h[k] = f"{h[k]}, {v}" if k in h else v

    def _grow(self, n: int) -> None:
        self._size += n
        if self._size > self.limits.header:
            self.too_big = (431, "request header fields too large")
            raise ValueError("head too large")  # httptools stops: HttpParserCallbackError

    def on_headers_complete(self) -> None:
        length = self._headers.get("content-length", "")
        if length.isdigit() and int(length) > self.limits.body:
            self.too_big = (413, "request body too large")
            raise ValueError("body too large")

    def on_body(self, body: bytes) -> None:
        self._body += body
        if len(self._body) > self.limits.body:
            self.too_big = (413, "request body too large")
            raise ValueError("body too large")

    def on_message_complete(self) -> None:
        p = self.parser
        self.done.append((p.get_method().decode("ascii", "replace").upper(), self._url.decode("latin-1"),
                          self._headers, bytes(self._body), p.should_keep_alive()))
        self._reset()


def _reject(writer, status: int, text: str) -> None:
    from gxo.runtime.request_manager import reject

    reject(writer, status, text)


import re as _re

_TOKEN = _re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class Respond:
    """``http:respond``: write the answer of a waiting request to its connection's buffer and
    release the request (its connection task sends it and goes on)."""

    name = "http:respond"

    def perform(self, ctx, params):
        from gxo.runtime.module import ModuleError, ValidationError
        from gxo.runtime.request_manager import RequestManager, response_bytes
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        rid = p.req_str(params, "request_id")
        if isinstance(params.get("status_code"), str) and params["status_code"].strip().isdigit():
            params = {**params, "status_code": int(params["status_code"])}  # a templated status
        status = p.opt_int(params, "status_code", 200, minimum=100, maximum=599)
        headers = p.opt_str_map(params, "headers")
        body = (p.opt_str(params, "body", "") or "").encode("utf-8")
        for k, v in headers.items():
            if not _TOKEN.fullmatch(k) or "\r" in v or "\n" in v:
                raise ValidationError(f"parameter 'headers': {k!r} is not a valid header (a name is a "
                                      "token, a value holds no line break)")
        if ctx.dry_run:
            return {"request_id": rid, "bytes_written": 0, "dry_run": True}
        pending = RequestManager.of(ctx).take(rid)
        if pending is None:
            raise ModuleError(f"no request {rid!r} is waiting for an answer (answered already, timed "
                              "out, or not received by http:listen in this run)")
        data = response_bytes(status, headers, body, pending.keep, head=pending.method == "HEAD")
        if pending.writer.is_closing():
            pending.done.set_result(None)
            raise ModuleError(f"request {rid}: the client closed its connection before the answer")
        pending.writer.write(data)
        if not pending.done.done():
            pending.done.set_result(len(data))
        return {"request_id": rid, "bytes_written": len(data)}


CODE = {"http:request": Request, "http:listen": Listen, "http:respond": Respond}
