"""``connection:*`` on real loopback sockets: a run_once client against a Python server, the E14
echo server under ``gxo exec`` with several clients at once, the connection limit, the idle
timeout, a silent client, a peer that closes mid-read, and no socket left after a run."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import signal
import socket
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml

from acceptance.harness import ROOT, build, close_proc, free_port, gxo_run, open_fds, spawn, summary_of, wait_until, write_playbook

E14 = ROOT / "examples" / "e14_tcp_server.yaml"


def port_is_free(port: int) -> bool:
    """Nothing listens on ``port`` any more (a listener still open makes this bind fail)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
    return True


class PeerServer:
    """A Python TCP server on 127.0.0.1: answers each line in upper case; records what it saw."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self.eofs = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    data = conn.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    self.eofs += 1
                    return
                self.received.append(data)
                conn.sendall(data.upper())

    def close(self) -> None:
        self.sock.close()


CLIENT = """\
  - name: open
    lifecycle: {{policy: run_once}}
    process: {{module: connection:open, params: {{network: tcp, address: "127.0.0.1:{port}", timeout: 2s}}}}
    register: c
  - name: write
    lifecycle: {{policy: run_once}}
    needs: [open]
    process: {{module: connection:write, params: {{connection_id: "{{{{ .c.connection_id }}}}", data: "aGVsbG8K", encoding: base64}}}}
  - name: read
    lifecycle: {{policy: run_once}}
    needs: [write]
    process: {{module: connection:read, params: {{connection_id: "{{{{ .c.connection_id }}}}", read_until: "\\n", timeout: 2s}}}}
    register: r
  - name: close
    lifecycle: {{policy: run_once}}
    needs: [read]
    process: {{module: connection:close, params: {{connection_id: "{{{{ .c.connection_id }}}}"}}}}
"""


def test_run_once_client_opens_writes_reads_and_closes(work: Path) -> None:
    server = PeerServer()
    try:
        run = gxo_run(write_playbook(work, CLIENT.format(port=server.port)))
        assert run.rc == 0, run.explain()
        opened = summary_of(run, "open")
        assert opened["connection_id"].startswith("conn-")
        assert opened["remote_addr"] == f"127.0.0.1:{server.port}"
        assert summary_of(run, "write") == {"bytes_written": 6}
        assert summary_of(run, "read") == {"data": "HELLO\n", "bytes_read": 6}
        assert summary_of(run, "close") == {"connection_id": opened["connection_id"], "closed": True}
        assert server.received == [b"hello\n"]
        assert wait_until(lambda: server.eofs == 1, timeout=5)
    finally:
        server.close()


def test_the_connection_limit_is_a_clear_error(work: Path) -> None:
    server = PeerServer()
    try:
        pb = write_playbook(work, f"""\
  - name: first
    lifecycle: {{policy: run_once}}
    process: {{module: connection:open, params: {{network: tcp, address: "127.0.0.1:{server.port}"}}}}
  - name: second
    lifecycle: {{policy: run_once}}
    needs: [first]
    process: {{module: connection:open, params: {{network: tcp, address: "127.0.0.1:{server.port}"}}}}
""")
        run = gxo_run(pb, env={"GXO_MAX_CONNECTIONS": "1"})
        assert run.rc == 1, run.explain()
        end = run.of("WorkloadEnd", "second")[0]
        assert "connection limit reached: 1 connections are open in this run" in end["error"]
        assert "GXO_MAX_CONNECTIONS" in end["error"]
        assert "Traceback" not in run.stderr
        assert wait_until(lambda: server.eofs == 2, timeout=5)  # both closed: the refused one and at the end
    finally:
        server.close()


def test_an_idle_connection_is_closed_and_its_id_says_why(work: Path) -> None:
    server = PeerServer()
    try:
        pb = write_playbook(work, f"""\
  - name: open
    lifecycle: {{policy: run_once}}
    process: {{module: connection:open, params: {{network: tcp, address: "127.0.0.1:{server.port}"}}}}
    register: c
  - name: pause
    lifecycle: {{policy: run_once}}
    needs: [open]
    process: {{module: exec, params: {{command: sleep, args: ["1.5"]}}}}
  - name: write
    lifecycle: {{policy: run_once}}
    needs: [pause]
    process: {{module: connection:write, params: {{connection_id: "{{{{ .c.connection_id }}}}", data: "late"}}}}
""")
        run = gxo_run(pb, env={"GXO_CONNECTION_IDLE_TIMEOUT": "300ms"})
        assert run.rc == 1, run.explain()
        error = run.of("WorkloadEnd", "write")[0]["error"]
        assert "is closed (idle for 0.3s" in error and "GXO_CONNECTION_IDLE_TIMEOUT" in error
        assert server.eofs == 1 and server.received == []  # closed by the timeout, nothing written
    finally:
        server.close()


def test_an_unknown_id_is_not_found(work: Path) -> None:
    pb = write_playbook(work, """\
  - name: close
    lifecycle: {policy: run_once}
    process: {module: connection:close, params: {connection_id: conn-nope}}
""")
    run = gxo_run(pb)
    assert run.rc == 1, run.explain()
    assert "connection 'conn-nope' not found" in run.of("WorkloadEnd", "close")[0]["error"]


# --------------------------------------------------------------------------- listeners


@contextmanager
def serving(plan: Path, listener: str, env: dict[str, str] | None = None) -> Iterator[list[dict[str, Any]]]:
    """``gxo exec plan`` until the block ends, then SIGTERM (exit 0 expected); the events so far."""
    proc = spawn("gxo", "exec", plan, "--json", env=env)
    seen: list[dict[str, Any]] = []

    def reader() -> None:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, b""):
            seen.append(json.loads(line))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: any(e.get("type") == "Log" and e.get("workload") == listener
                                      and e.get("message") == "listening" for e in list(seen)), timeout=20), seen
        yield seen
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
        thread.join(5)
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert rc == 0, err
        assert "Traceback" not in err
    finally:
        close_proc(proc)


def e14_plan(work: Path, port: int, timeout: str = "30s") -> Path:
    doc = yaml.safe_load(E14.read_text())
    for w in doc["workloads"]:
        if w["name"] == "tcp_listener":
            w["process"]["params"]["address"] = f"127.0.0.1:{port}"
        else:
            w["process"]["params"]["steps"][0]["with"]["timeout"] = timeout
    pb = work / "e14.yaml"
    pb.write_text(yaml.safe_dump(doc, sort_keys=False))
    return build(pb, work)


def ask(client: socket.socket, line: bytes) -> bytes:
    client.sendall(line)
    out = b""
    while True:
        chunk = client.recv(4096)
        if not chunk:  # the server closes after its reply
            return out
        out += chunk


def test_e14_echo_server_serves_clients_at_once_one_instance_each(work: Path) -> None:
    port = free_port()
    plan = e14_plan(work, port)
    with serving(plan, "tcp_listener") as seen:
        clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
        try:
            # all three are connected before any speaks, the last first: each has its own instance
            replies = [ask(c, f"hello {i}\n".encode()) for i, c in reversed(list(enumerate(clients)))]
        finally:
            for c in clients:
                c.close()
        assert replies == [b"HELLO 2\n", b"HELLO 1\n", b"HELLO 0\n"]
        assert wait_until(lambda: sum(1 for e in list(seen) if e.get("type") == "ModuleExecutionEnd"
                                      and e.get("workload") == "connection_handler") == 3, timeout=10)
    assert not [e for e in seen if e.get("type") == "InstanceFailed"]
    assert port_is_free(port)  # the listening socket is closed with the run


def test_a_silent_client_times_out_and_a_peer_that_closes_mid_read_fails_while_others_are_served(work: Path) -> None:
    port = free_port()
    plan = e14_plan(work, port, timeout="500ms")
    with serving(plan, "tcp_listener") as seen:
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)
        quitter = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            quitter.sendall(b"no newline")
            quitter.close()
            with socket.create_connection(("127.0.0.1", port), timeout=10) as good:
                assert ask(good, b"still here\n") == b"STILL HERE\n"

            def failures() -> list[str]:
                return [e["error"] for e in list(seen) if e.get("type") == "InstanceFailed"]

            assert wait_until(lambda: len(failures()) == 2, timeout=10), seen
            errors = failures()
            assert any("read timed out after 0.5s waiting for the delimiter '\\n'" in e for e in errors), errors
            assert any("closed the connection before the delimiter '\\n' arrived (10 byte(s) received)" in e
                       for e in errors), errors
            with socket.create_connection(("127.0.0.1", port), timeout=10) as again:
                assert ask(again, b"after\n") == b"AFTER\n"
        finally:
            silent.settimeout(10)
            # the silent client's connection stays registered until the run ends: then it is closed
            still_open = silent
    assert still_open.recv(10) == b""  # closed by the run's end
    still_open.close()
    assert port_is_free(port)


def test_udp_listener_one_record_per_datagram_answered_to_its_sender(work: Path) -> None:
    port = free_port()
    pb = write_playbook(work, f"""\
  - name: udp_listener
    lifecycle: {{policy: supervise, restart: always}}
    process: {{module: connection:listen, params: {{network: udp, address: "127.0.0.1:{port}"}}}}
  - name: handler
    lifecycle: {{policy: event_driven, source: udp_listener}}
    process:
      module: stream:pipeline
      params:
        steps:
          - id: read
            uses: connection:read
            with: {{connection_id: "{{{{ .connection_id }}}}", encoding: hex}}
          - id: reply
            uses: connection:write
            with: {{connection_id: "{{{{ .connection_id }}}}", data: "{{{{ .data }}}}", encoding: hex}}
          - id: close
            uses: connection:close
            with: {{connection_id: "{{{{ .connection_id }}}}"}}
""")
    plan = build(pb, work)
    with serving(plan, "udp_listener"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
            a.settimeout(10)
            b.settimeout(10)
            a.sendto(b"\x00\xffone", ("127.0.0.1", port))
            b.sendto(b"two", ("127.0.0.1", port))
            assert a.recvfrom(100)[0] == b"\x00\xffone"
            assert b.recvfrom(100)[0] == b"two"


def test_no_socket_is_left_open_after_a_run(work: Path) -> None:
    """In this process: a run that opens connections and never closes them, and a listener
    stopped by the run's end, leave the process with the file descriptors it had."""
    from acceptance.inproc import Running

    server = PeerServer()
    port = free_port()
    pb = write_playbook(work, f"""\
  - name: a
    lifecycle: {{policy: run_once}}
    process: {{module: connection:open, params: {{network: tcp, address: "127.0.0.1:{server.port}"}}}}
  - name: b
    lifecycle: {{policy: run_once}}
    process: {{module: connection:open, params: {{network: udp, address: "127.0.0.1:{server.port}"}}}}
  - name: listener
    lifecycle: {{policy: supervise, restart: always}}
    process: {{module: connection:listen, params: {{network: tcp, address: "127.0.0.1:{port}"}}}}
""")

    async def main() -> None:
        from acceptance.inproc import wait_for

        before = open_fds()
        running = Running(pb)
        try:
            running.start()
            await wait_for(lambda: running.status("a") == "Completed" and running.status("b") == "Completed"
                           and running.of("Log", "listener"), timeout=10)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await wait_for(lambda: running.kernel.react.conns is not None and len(running.kernel.react.conns.conns) == 3)
            await running.stop()
            assert await reader.read() == b""  # the accepted connection was closed by the run's end
            writer.close()
            await writer.wait_closed()
        finally:
            running.close()
        await wait_for(lambda: server.eofs == 1)  # the test's own server has closed its side too
        extra = {fd: target for fd, target in open_fds().items() if before.get(fd) != target}
        assert not extra, extra

    try:
        asyncio.run(main())
        assert port_is_free(port)
    finally:
        server.close()


# --------------------------------------------------------------------------- E2, E22


def test_e02_kv_server_answers_the_protocol(work: Path) -> None:
    """E2 as it is, on a free port: the protocol oracle of the checklist (GET of a missing key is
    ``ERR not_found``, the protocol definition's answer), two clients at once."""
    port = free_port()
    doc = yaml.safe_load((ROOT / "examples" / "e02_kv_server.yaml").read_text())
    doc["workloads"][0]["process"]["params"]["address"] = f"127.0.0.1:{port}"
    pb = work / "e02.yaml"
    pb.write_text(yaml.safe_dump(doc, sort_keys=False))
    plan = build(pb, work)
    with serving(plan, "kv_listener_service"):
        a = socket.create_connection(("127.0.0.1", port), timeout=10)
        b = socket.create_connection(("127.0.0.1", port), timeout=10)
        with a, b:
            assert ask(b, b"PING\n") == b"PONG\n"
            assert ask(a, b"GET initial_key\n") == b"OK hello world\n"
        oracle = {b"GET missing_key\n": b"ERR not_found\n", b"SET mykey some new value\n": b"OK\n",
                  b"DELETE mykey\n": b"ERR unknown_command\n", b"get another_key\n": b"OK gxo is powerful\n"}
        for line, answer in oracle.items():
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                assert ask(c, line) == answer, line
        # 20 clients at once, each connected before any speaks
        clients = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(20)]
        try:
            with concurrent.futures.ThreadPoolExecutor(20) as pool:
                replies = list(pool.map(lambda c: ask(c, b"GET initial_key\n" if clients.index(c) % 2
                                                      else b"PING\n"), clients))
        finally:
            for c in clients:
                c.close()
        assert replies == [b"PONG\n", b"OK hello world\n"] * 10


def test_e22_connection_open_snippet_against_a_local_server(work: Path) -> None:
    """E22's ``connection:open`` snippet (``example.com:80`` in the example), pointed at a
    server on 127.0.0.1: it returns the id and both addresses."""
    server = PeerServer()
    try:
        doc = yaml.safe_load((ROOT / "examples" / "e22_stdlib_snippets.yaml").read_text())
        snippet = next(w for w in doc["workloads"] if w["process"]["module"] == "connection:open")
        assert snippet["process"]["params"] == {"network": "tcp", "address": "example.com:80"}
        snippet["process"]["params"]["address"] = f"127.0.0.1:{server.port}"
        snippet.pop("needs", None)
        pb = work / "e22.yaml"
        pb.write_text(yaml.safe_dump({"name": doc["name"], "schemaVersion": doc["schemaVersion"],
                                      "workloads": [snippet]}, sort_keys=False))
        run = gxo_run(pb)
        assert run.rc == 0, run.explain()
        summary = summary_of(run, snippet["name"])
        assert summary["connection_id"].startswith("conn-")
        assert summary["remote_addr"] == f"127.0.0.1:{server.port}"
        assert summary["local_addr"].startswith("127.0.0.1:")
        assert wait_until(lambda: server.eofs == 1, timeout=5)  # closed with the run
    finally:
        server.close()



# --------------------------------------------------------------------------- bad peers


def _peak_rss_mb(argv: list[str], timeout: float = 60) -> tuple[int, str, float]:
    """Run ``argv``; its exit code, its stdout+stderr and its own peak RSS in MB (through the
    launcher of tests/rss.py, so that pytest's size is not counted)."""
    import subprocess
    import tempfile

    from rss import launched, peak_mb

    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "rss"
        proc = subprocess.run(launched(argv, report), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False)
        return proc.returncode, proc.stdout.decode("utf-8", "replace"), peak_mb(report)


def test_a_server_that_floods_100_mb_or_never_answers_ends_the_read_clearly_in_bounded_memory(work: Path) -> None:
    """connection:read against a server that sends 100 MB without the delimiter stops at the
    read limit (16 MiB) with a clear error, and against one that never answers at its timeout;
    gxo's peak RSS stays far below what the flood would take."""
    flood = socket.socket()
    flood.bind(("127.0.0.1", 0))
    flood.listen()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    sent = [0]

    def serve_flood() -> None:
        conn, _ = flood.accept()
        chunk = b"x" * (1 << 20)
        with conn:
            try:
                while sent[0] < 100 * (1 << 20):
                    conn.sendall(chunk)
                    sent[0] += len(chunk)
            except OSError:  # the client gave up
                pass

    threading.Thread(target=serve_flood, daemon=True).start()
    pb = write_playbook(work, f"""\
  - name: open_flood
    lifecycle: {{policy: run_once}}
    process: {{module: connection:open, params: {{network: tcp, address: "127.0.0.1:{flood.getsockname()[1]}"}}}}
    register: f
  - name: read_flood
    lifecycle: {{policy: run_once}}
    ignore_errors: true
    process: {{module: connection:read, params: {{connection_id: "{{{{ .f.connection_id }}}}", read_until: "\\n", timeout: 60s}}}}
  - name: open_silent
    lifecycle: {{policy: run_once}}
    process: {{module: connection:open, params: {{network: tcp, address: "127.0.0.1:{silent.getsockname()[1]}"}}}}
    register: s
  - name: read_silent
    lifecycle: {{policy: run_once}}
    ignore_errors: true
    process: {{module: connection:read, params: {{connection_id: "{{{{ .s.connection_id }}}}", read_bytes: 10, timeout: 1s}}}}
""")
    try:
        rc, out, peak = _peak_rss_mb([str(ROOT / ".venv" / "bin" / "gxo"), "run", str(pb)])
    finally:
        flood.close()
        silent.close()
    assert rc == 0, out
    assert "Traceback" not in out
    assert f"read stopped: more than {16 * 1024 * 1024} bytes from 127.0.0.1:" in out, out
    assert "read timed out after 1s waiting for 10 bytes" in out, out
    assert sent[0] < 100 * (1 << 20)  # gxo stopped reading long before the end of the flood
    assert peak < 150, f"peak RSS {peak:.0f} MB"


def test_a_client_that_floods_the_echo_server_fails_its_instance_and_others_are_served(work: Path) -> None:
    port = free_port()
    plan = e14_plan(work, port)
    with serving(plan, "tcp_listener") as seen:
        flooder = socket.create_connection(("127.0.0.1", port), timeout=10)
        chunk = b"y" * (1 << 20)
        try:
            for _ in range(40):  # 40 MB, no newline
                flooder.sendall(chunk)
        except OSError:  # closed by the server once the read limit was passed
            pass
        finally:
            flooder.close()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as good:
            assert ask(good, b"fine\n") == b"FINE\n"
        assert wait_until(lambda: any("read stopped: more than" in e.get("error", "") for e in list(seen)
                                      if e.get("type") == "InstanceFailed"), timeout=10), seen
