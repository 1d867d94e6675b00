"""http:listen and http:respond in a real `gxo exec`, answered over real sockets on loopback:
keep-alive, parallel clients, limits, bad peers, a handler that fails or never answers."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from acceptance.harness import build, close_proc, free_port, gxo_serving, port_open, spawn, wait_until


SERVER = """\
name: api
schemaVersion: "1.0.0"
workloads:
  - name: api
    lifecycle: {{policy: supervise, restart: always}}
    process:
      module: http:listen
      params: {{address: "127.0.0.1:{port}", max_body_bytes: 1000, idle_timeout: 500ms, response_timeout: 1s}}
  - name: answer
    lifecycle: {{policy: event_driven, source: api, concurrency: 16}}
    when: '{{{{ ne .path "/ignored" }}}}'
    process:
      module: http:respond
      params:
        request_id: "{{{{ .request_id }}}}"
        status_code: '{{{{ if eq .path "/created" }}}}201{{{{ else if eq .path "/boom" }}}}999{{{{ else }}}}200{{{{ end }}}}'
        headers: {{Content-Type: application/json}}
        body: '{{{{ dict "path" .path "method" .method "q" (.query_params | get "q") "body" .body "from" .remote_addr | toJson }}}}'
"""


@pytest.fixture
def server(work: Path):
    port = free_port()
    pb = work / "api.yaml"
    pb.write_text(SERVER.format(port=port))
    with gxo_serving(build(pb, work), port, "--no-state"):
        yield f"http://127.0.0.1:{port}", port


def _raw(port: int, data: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            out += chunk
        return out


def test_requests_are_answered_with_keep_alive_and_in_parallel(server) -> None:
    url, _ = server
    with httpx.Client(timeout=10) as client:  # one kept-alive connection for all three
        r1 = client.get(f"{url}/hello?q=1&q=2")
        r2 = client.post(f"{url}/created", content=b'{"a": 1}')
        r3 = client.head(f"{url}/hello")
    assert r1.status_code == 200 and r1.headers["content-type"] == "application/json"
    doc = r1.json()
    assert doc["path"] == "/hello" and doc["method"] == "GET" and doc["q"] == "1"
    assert doc["from"].startswith("127.0.0.1:")
    assert r2.status_code == 201 and r2.json()["body"] == '{"a": 1}'
    assert r3.status_code == 200 and r3.content == b""

    def one(i: int) -> tuple[int, str]:
        r = httpx.get(f"{url}/n{i}", timeout=10)
        return r.status_code, r.json()["path"]

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    assert results == [(200, f"/n{i}") for i in range(20)]


def test_a_handler_that_fails_or_never_answers_gets_its_client_an_error(server) -> None:
    url, _ = server
    started = time.monotonic()
    failed = httpx.get(f"{url}/boom", timeout=10)  # its handler fails (status_code 999)
    assert failed.status_code == 500 and "the request's handler failed" in failed.text
    ignored = httpx.get(f"{url}/ignored", timeout=10)  # its handler's when is false: no answer
    assert ignored.status_code == 500 and "gave no response" in ignored.text
    assert time.monotonic() - started < 5  # at once, not after the response timeout


def test_limits_and_bad_peers_end_one_connection_and_the_server_goes_on(server) -> None:
    url, port = server
    assert _raw(port, b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    big_head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n"
    assert _raw(port, big_head).startswith(b"HTTP/1.1 431 ")
    assert _raw(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n").startswith(b"HTTP/1.1 413 ")
    chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"a" * 1024 + b"\r\n"
    assert _raw(port, chunked).startswith(b"HTTP/1.1 413 ")
    # a half-open client that never finishes its request is closed after idle_timeout (500ms)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as silent:
        silent.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        assert httpx.get(f"{url}/meanwhile", timeout=5).json()["path"] == "/meanwhile"
        assert silent.recv(100) == b""  # closed by the server
        assert time.monotonic() - t0 < 4
    assert httpx.get(f"{url}/after", timeout=5).status_code == 200


def test_a_request_no_workload_answers_times_out_with_504(work: Path) -> None:
    port = free_port()
    pb = work / "lonely.yaml"
    pb.write_text(f"""\
name: lonely
schemaVersion: "1.0.0"
workloads:
  - name: api
    lifecycle: {{policy: supervise, restart: always}}
    process: {{module: http:listen, params: {{address: "127.0.0.1:{port}", response_timeout: 300ms}}}}
""")
    with gxo_serving(build(pb, work), port, "--no-state"):
        r = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert r.status_code == 504 and "no response in time" in r.text
    assert not port_open(port)  # the socket is closed with the run


def test_an_unknown_request_id_is_a_clear_failure(work: Path) -> None:
    from acceptance.harness import gxo_run

    pb = work / "respond.yaml"
    pb.write_text("""\
name: respond
schemaVersion: "1.0.0"
workloads:
  - name: answer
    lifecycle: {policy: run_once}
    process: {module: http:respond, params: {request_id: "0123456789abcdef", body: "x"}}
""")
    run = gxo_run(pb)
    assert run.rc == 1, run.explain()
    assert "no request '0123456789abcdef' is waiting for an answer" in run.end("answer")["error"]
    assert "Traceback" not in run.stderr
    json.dumps(run.events)


def test_a_request_waiting_when_the_server_stops_gets_503(work: Path) -> None:
    port = free_port()
    pb = work / "slow.yaml"
    pb.write_text(f"""\
name: slow
schemaVersion: "1.0.0"
workloads:
  - name: api
    lifecycle: {{policy: supervise, restart: always}}
    process: {{module: http:listen, params: {{address: "127.0.0.1:{port}"}}}}
  - name: slow
    lifecycle: {{policy: event_driven, source: api, stop_timeout: 200ms}}
    process: {{module: exec, params: {{command: sleep, args: ["30"]}}}}
""")
    plan = build(pb, work)
    proc = spawn("gxo", "exec", plan, "--no-state")
    try:
        assert wait_until(lambda: port_open(port), timeout=20)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(httpx.get, f"http://127.0.0.1:{port}/", timeout=20)
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            r = pending.result()
        assert r.status_code == 503 and "stopping" in r.text
        assert proc.wait(20) == 0
    finally:
        close_proc(proc)


FED = """\
name: fed
schemaVersion: "1.0.0"
workloads:
  - name: tcp
    lifecycle: {{policy: supervise, restart: always}}
    process: {{module: connection:listen, params: {{network: tcp, address: "127.0.0.1:{port}"}}}}
  - name: api
    lifecycle: {{policy: supervise, restart: always}}
    stream_inputs: [tcp]
    process: {{module: http:listen, params: {{idle_timeout: 2s, max_body_bytes: 100}}}}
  - name: answer
    lifecycle: {{policy: event_driven, source: api}}
    process:
      module: http:respond
      params: {{request_id: "{{{{ .request_id }}}}", body: '{{{{ dict "path" .path "from" .remote_addr | toJson }}}}'}}
"""


def test_http_listen_serves_the_connections_of_a_connection_listen_stream(work: Path) -> None:
    """design.md §3: http:listen without an address reads a connection:listen stream and serves
    each connection it carries (keep-alive, limits), the listener's socket being the only one."""
    port = free_port()
    pb = work / "fed.yaml"
    pb.write_text(FED.format(port=port))
    with gxo_serving(build(pb, work), port, "--no-state"):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            first = client.get("/one")
            second = client.get("/two")  # the same kept-alive connection
            assert [r.status_code for r in (first, second)] == [200, 200]
            assert first.json()["path"] == "/one" and second.json()["path"] == "/two"
            assert first.json()["from"] == second.json()["from"]
            assert client.post("/big", content=b"x" * 101).status_code == 413
        assert _raw(port, b"NOT HTTP\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        assert httpx.get(f"http://127.0.0.1:{port}/again", timeout=10).json()["path"] == "/again"


@pytest.mark.parametrize("params, inputs, producer, message", [
    ('{address: "127.0.0.1:1"}', "[tcp]", "connection:listen", "not both"),
    ("{}", None, None, "needs an 'address' or a connection:listen stream input"),
    ("{}", "[gen]", "data:generate_from_list", "'gen' is data:generate_from_list"),
])
def test_http_listen_source_is_checked(work: Path, params: str, inputs: str | None, producer: str | None,
                                       message: str) -> None:
    from acceptance.harness import run_tool

    head = 'name: c\nschemaVersion: "1.0.0"\nworkloads:\n'
    prod = {"connection:listen": "{module: connection:listen, params: {network: tcp, address: \":0\"}}",
            "data:generate_from_list": "{module: data:generate_from_list, params: {items: [1], stream: true}}"}
    body = ""
    if producer:
        name = "tcp" if producer == "connection:listen" else "gen"
        body += f"  - name: {name}\n    lifecycle: {{policy: supervise}}\n    process: {prod[producer]}\n"
    body += "  - name: api\n    lifecycle: {policy: supervise}\n"
    if inputs:
        body += f"    stream_inputs: {inputs}\n"
    body += f"    process: {{module: http:listen, params: {params}}}\n"
    pb = work / "c.yaml"
    pb.write_text(head + body)
    res = run_tool("gxoc", "check", pb)
    assert res.rc == 1, res.explain()
    assert message in res.stdout + res.stderr, res.explain()
