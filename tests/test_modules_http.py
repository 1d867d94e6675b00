"""test:mock_http_server and http:request against each other, for real, on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from gxo.runtime.module import Context, ModuleError, ValidationError, load_module_class
from gxo.runtime.workspace import Workspace
from module_log import Log


@pytest.fixture
def ws(tmp_path):
    w = Workspace.create(str(tmp_path / "wsroot"))
    yield w
    w.remove()


HANDLERS = [
    {"request": {"path": "/json"},
     "response": {"body": {"ok": True, "items": [1, 2]}, "headers": {"X-Test": "yes"}}},
    {"request": {"method": "POST", "path": "/submit"},
     "response": {"status_code": 201, "body": "created"}},
    {"request": {"path": "/boom"}, "response": {"status_code": 500, "body": "kaput"}},
    {"request": {"path": "/xml"},
     "response": {"body": "<r a=\"1\"><i>x</i><i>y</i></r>",
                  "headers": {"Content-Type": "application/xml"}}},
    {"request": {"path": "/p1"},
     "response": {"body": [1], "headers": {"Link": "</p2>; rel=\"next\""}}},
    {"request": {"path": "/p2"},
     "response": {"body": [2], "headers": {"Link": "</p3>; rel=\"next\""}}},
    {"request": {"path": "/p3"}, "response": {"body": [3]}},
    {"request": {"path": "/n1"}, "response": {"body": {"items": ["a"], "next": "/n2"}}},
    {"request": {"path": "/n2"}, "response": {"body": {"items": ["b"], "next": None}}},
    {"request": {"method": "POST", "path": "/token"},
     "response": {"body": {"access_token": "tok-from-oauth", "token_type": "bearer"}}},
    {"request": {"path": "/redirect"},
     "response": {"status_code": 302, "headers": {"Location": "/json"}}},
]


def scenario(body, dry_run: bool = False, handlers: list | None = None) -> Any:
    """Start a mock server, run ``body(ctx, request, url, server, log)``, then end the run."""
    async def main() -> Any:
        cleanups: list = []
        log = Log()
        ctx = Context(workload="w", run_id="r", logger=log, workspace=WS[0], state=dict,
                      dry_run=dry_run, on_run_end=cleanups.append)
        mock = load_module_class("test:mock_http_server")()
        summary = await mock.perform(ctx, {"handlers": handlers or HANDLERS})
        url = summary["server_url"]
        assert url.startswith("http://127.0.0.1:") and not url.endswith("/")
        assert len(cleanups) == 1
        server = cleanups[0].__self__

        async def request(params: dict) -> dict:
            return await load_module_class("http:request")().perform(ctx, params)

        try:
            return await body(ctx, request, url, server, log)
        finally:
            for fn in cleanups:
                await fn()
            # the port is closed once the run has ended
            port = int(url.rsplit(":", 1)[1])
            with pytest.raises(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
    return asyncio.run(main())


WS: list[Workspace] = []


@pytest.fixture(autouse=True)
def _ws(ws):
    WS[:] = [ws]
    yield
    WS.clear()


def test_get_json_and_headers():
    async def body(ctx, request, url, server, log):
        out = await request({"url": url + "/json", "query_params": {"q": "a b", "n": 2,
                                                                    "f": True}})
        assert out["status_code"] == 200
        assert out["json_body"] == {"ok": True, "items": [1, 2]}
        assert json.loads(out["body"]) == out["json_body"]
        assert out["headers"]["x-test"] == "yes"
        assert out["headers"]["content-type"] == "application/json"
        assert isinstance(out["latency_ms"], int) and out["latency_ms"] >= 0
        assert set(out) == {"status_code", "headers", "body", "json_body", "latency_ms"}
        assert server.requests[-1]["query"] == "q=a+b&n=2&f=true"
    scenario(body)


def test_post_body_headers_and_basic_auth():
    async def body(ctx, request, url, server, log):
        out = await request({"url": url + "/submit", "method": "POST", "body": '{"a":1}',
                             "headers": {"Content-Type": "application/json"},
                             "auth": {"basic": {"user": "u", "pass": "p@ss"}}})
        assert out["status_code"] == 201 and out["body"] == "created"
        assert out["json_body"] is None
        got = server.requests[-1]
        assert got["method"] == "POST" and got["body"] == '{"a":1}'
        assert got["headers"]["content-type"] == "application/json"
        assert got["headers"]["authorization"] == "Basic " + base64.b64encode(b"u:p@ss").decode()
    scenario(body)


def test_bearer_and_oauth2():
    async def body(ctx, request, url, server, log):
        await request({"url": url + "/json", "auth": {"bearer": {"token": "t0k"}}})
        assert server.requests[-1]["headers"]["authorization"] == "Bearer t0k"
        await request({"url": url + "/json", "auth": {"oauth2": {
            "token_url": url + "/token", "client_id": "cid", "client_secret": "cs",
            "scopes": ["read", "write"]}}})
        token_req, api_req = server.requests[-2:]
        assert token_req["path"] == "/token"
        assert "grant_type=client_credentials" in token_req["body"]
        assert "scope=read+write" in token_req["body"]
        assert token_req["headers"]["authorization"] == "Basic " + base64.b64encode(
            b"cid:cs").decode()
        assert api_req["headers"]["authorization"] == "Bearer tok-from-oauth"
    scenario(body)


def test_error_status_fails_with_summary():
    async def body(ctx, request, url, server, log):
        with pytest.raises(ModuleError, match="status 500") as info:
            await request({"url": url + "/boom"})
        assert info.value.summary["status_code"] == 500
        assert info.value.summary["body"] == "kaput"
        with pytest.raises(ModuleError, match="status 404"):
            await request({"url": url + "/nowhere"})
        # success_when decides instead of the default
        out = await request({"url": url + "/boom", "success_when": True})
        assert out["status_code"] == 500
        with pytest.raises(ModuleError, match="success_when is false"):
            await request({"url": url + "/json", "success_when": False})
    scenario(body)


def test_per_response_conditions_as_callables():
    async def body(ctx, request, url, server, log):
        out = await request({"url": url + "/boom",
                             "success_when": lambda r: r["status_code"] in (200, 500)})
        assert out["body"] == "kaput"
        with pytest.raises(ModuleError, match="fail_when holds"):
            await request({"url": url + "/json", "fail_when": lambda r: r["json_body"]["ok"]})
        with pytest.raises(ValidationError, match="could not be evaluated"):
            await request({"url": url + "/json", "fail_when": lambda r: r["missing"]})
        with pytest.raises(ValidationError, match="kernel evaluates it"):
            await request({"url": url + "/json", "fail_when": "{{ .status_code }} == 500"})
    scenario(body)


def test_xml_redirect_and_head():
    async def body(ctx, request, url, server, log):
        out = await request({"url": url + "/xml"})
        assert out["xml_body"] == {"r": {"@a": "1", "i": ["x", "y"]}}
        out = await request({"url": url + "/redirect"})
        assert out["status_code"] == 200 and out["json_body"]["ok"] is True
        out = await request({"url": url + "/json", "method": "HEAD"})
        assert out["status_code"] == 200 and out["body"] == ""
    scenario(body)


def test_pagination():
    async def body(ctx, request, url, server, log):
        out = await request({"url": url + "/p1", "pagination": {"strategy": "link_header"}})
        assert out["pages"] == [[1], [2], [3]] and out["json_body"] == [3]
        out = await request({"url": url + "/p1",
                             "pagination": {"strategy": "link_header", "max_pages": 2}})
        assert out["pages"] == [[1], [2]]
        out = await request({"url": url + "/n1", "pagination": {"strategy": "next_field",
                                                                "next_field": "next"}})
        assert [p["items"] for p in out["pages"]] == [["a"], ["b"]]
        with pytest.raises(ValidationError, match="next_field is required"):
            await request({"url": url + "/n1", "pagination": {"strategy": "next_field"}})
    scenario(body)


def test_timeout_and_connection_refused():
    async def hang(reader, writer):
        try:
            await asyncio.sleep(30)
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(hang, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        ctx = Context(workload="w", run_id="r", logger=Log(), workspace=WS[0], state=dict)
        req = load_module_class("http:request")()
        try:
            with pytest.raises(ModuleError, match="no complete response within 200ms"):
                await req.perform(ctx, {"url": f"http://127.0.0.1:{port}/", "timeout": "200ms"})
        finally:
            server.close()
            await server.wait_closed()
        with pytest.raises(ModuleError, match=r"HTTP GET http://127\.0\.0\.1:\d+/: Connect"):
            await req.perform(ctx, {"url": f"http://127.0.0.1:{port}/"})
    asyncio.run(main())


def test_skip_tls_verify_warns():
    async def body(ctx, request, url, server, log):
        await request({"url": url + "/json", "skip_tls_verify": True})
        assert any(level == "warning" and "VERIFICATION IS DISABLED" in msg
                   for level, msg, _ in log.records)
    scenario(body)


def test_dry_run_sends_nothing():
    async def body(ctx, request, url, server, log):
        out = await request({"url": url + "/submit", "method": "POST", "body": "x"})
        assert out == {"status_code": 0, "headers": {}, "body": "", "json_body": None,
                       "latency_ms": 0, "dry_run": True}
        assert server.requests == []
    scenario(body, dry_run=True)


@pytest.mark.parametrize("params,message", [
    ({}, "missing required parameter 'url'"),
    ({"url": "ftp://x"}, "http:// or https://"),
    ({"url": "http://x", "method": "BREW"}, "'method' must be one of"),
    ({"url": "http://x", "timeout": "soon"}, "duration"),
    ({"url": "http://x", "headers": {"a": 1}}, "'headers'.a must be a string"),
    ({"url": "http://x", "auth": {"basic": {"user": "u"}}}, "auth'.basic.pass"),
    ({"url": "http://x", "auth": {"bearer": {"token": "t"}, "basic": {}}}, "exactly one"),
    ({"url": "http://x", "query_params": {"a": [1]}}, "'query_params'.a"),
])
def test_request_validation(params, message):
    ctx = Context(workload="w", run_id="r", logger=Log(), workspace=WS[0], state=dict)
    with pytest.raises(ValidationError, match=message):
        asyncio.run(load_module_class("http:request")().perform(ctx, params))


def test_mock_server_keep_alive_and_unmatched():
    async def body(ctx, request, url, server, log):
        import httpx

        async with httpx.AsyncClient() as client:
            for _ in range(3):  # one connection, several requests
                r = await client.get(url + "/json")
                assert r.status_code == 200 and r.json()["ok"] is True
            r = await client.post(url + "/json")
            assert r.status_code == 404 and "no handler for POST /json" in r.text
            r = await client.get(url + "/json?ignored=1")
            assert r.status_code == 200
    scenario(body)


@pytest.mark.parametrize("handlers,message", [
    ([], "non-empty list"),
    ([{"request": {"path": "no-slash"}, "response": {}}], "starting with '/'"),
    ([{"request": {"path": "/", "method": "BREW"}, "response": {}}], "method must be"),
    ([{"request": {"path": "/"}, "response": {"status_code": 99}}], "100-599"),
    ([{"request": {"path": "/"}, "response": {"body": 5}}], "body must be"),
])
def test_mock_server_validation(handlers, message):
    ctx = Context(workload="w", run_id="r", logger=Log(), workspace=WS[0], state=dict)
    with pytest.raises(ValidationError, match=message):
        asyncio.run(load_module_class("test:mock_http_server")().perform(
            ctx, {"handlers": handlers}))


def _raw_server(handler):
    """A raw TCP peer on loopback that answers with ``handler(reader, writer)``."""
    async def start():
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        return server, server.sockets[0].getsockname()[1]
    return start


def test_json_body_is_sent_as_json():
    seen: list[bytes] = []

    async def echo(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        seen.append(head + await reader.readexactly(length))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n"
                     b"Connection: close\r\n\r\n{\"ok\":true}")
        await writer.drain()
        writer.close()

    async def main():
        server, port = await _raw_server(echo)()
        ctx = Context(workload="w", run_id="r", logger=Log(), workspace=WS[0], state=dict)
        req = load_module_class("http:request")()
        try:
            out = await req.perform(ctx, {"url": f"http://127.0.0.1:{port}/", "method": "POST",
                                          "json": {"name": "é", "n": [1, 2]}})
            with pytest.raises(ValidationError, match="at most one of 'body' and 'json'"):
                await req.perform(ctx, {"url": f"http://127.0.0.1:{port}/", "json": {}, "body": "x"})
        finally:
            server.close()
            await server.wait_closed()
        return out

    out = asyncio.run(main())
    assert out["json_body"] == {"ok": True}
    head, _, body = seen[0].partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body) == {"name": "é", "n": [1, 2]}


def test_bad_peers_end_with_a_clear_error_in_bounded_time_and_memory():
    """A peer that closes mid-response, one that sends an endless body, one that never answers:
    each is one clear error; the endless body stops at max_response_bytes (memory stays bounded)."""
    sent = [0]

    async def truncated(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly part of it")
        await writer.drain()
        writer.close()

    async def endless(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 104857600\r\n\r\n")  # 100 MB announced
        chunk = b"x" * 65536
        try:
            for _ in range(1600):
                writer.write(chunk)
                await writer.drain()
                sent[0] += len(chunk)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def main():
        ctx = Context(workload="w", run_id="r", logger=Log(), workspace=WS[0], state=dict)
        req = load_module_class("http:request")()
        s1, p1 = await _raw_server(truncated)()
        s2, p2 = await _raw_server(endless)()
        try:
            with pytest.raises(ModuleError, match=r"HTTP GET http://127\.0\.0\.1:\d+/: RemoteProtocolError"):
                await req.perform(ctx, {"url": f"http://127.0.0.1:{p1}/", "timeout": "5s"})
            with pytest.raises(ModuleError, match="larger than 1048576 bytes \\(max_response_bytes\\)"):
                await req.perform(ctx, {"url": f"http://127.0.0.1:{p2}/", "timeout": "20s",
                                        "max_response_bytes": 1048576})
            with pytest.raises(ValidationError, match="max_response_bytes"):
                await req.perform(ctx, {"url": f"http://127.0.0.1:{p2}/", "max_response_bytes": 0})
        finally:
            for s in (s1, s2):
                s.close()
                await s.wait_closed()

    asyncio.run(main())
    assert sent[0] < 50 * 1024 * 1024  # the client stopped reading long before the 100 MB


def test_a_json_body_past_the_limits_is_left_as_text():
    """A response nested deeper than 64 levels (or 100,000, past the recursion limit) keeps its
    text in ``body``; ``json_body`` is null and a warning names the limit."""
    deep = "[" * 100_000 + "]" * 100_000
    handlers = [{"request": {"path": "/deep"},
                 "response": {"body": deep, "headers": {"Content-Type": "application/json"}}},
                {"request": {"path": "/ok"},
                 "response": {"body": "[" * 64 + "]" * 64, "headers": {"Content-Type": "application/json"}}}]

    async def body(ctx, request, url, server, log):
        out = await request({"url": url + "/deep"})
        assert out["status_code"] == 200 and out["body"] == deep and out["json_body"] is None
        assert any("past a limit" in msg and "nesting deeper than 64 levels" in msg
                   for level, msg, _ in log.records if level == "warning")
        ok = await request({"url": url + "/ok"})
        assert ok["json_body"] is not None
    scenario(body, handlers=handlers)
