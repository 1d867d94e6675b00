"""E27 in one ``gxo exec`` process: a supervised web server, an event-driven log processor (a
``stream:pipeline`` per event) and a scheduled nightly backup, side by side.

The example as it is, on free ports: the server restarts after a crash, each log line sent to the
TCP intake (``connection:listen``, one pipeline run per connection) is parsed and the ERROR ones
reach the collector over HTTP, the backup's next fire is 02:00 and it does not run at start.
SIGTERM stops it all, exit 0."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path

import yaml

from acceptance.harness import EXAMPLES, HttpMock, build, close_proc, free_port, pid_alive, spawn, wait_until

E27 = EXAMPLES / "e27_lifecycle_mix.yaml"


def _serves(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def _playbook(work: Path, port: int, intake: int, backups: Path) -> Path:
    doc = yaml.safe_load(E27.read_text())
    by_name = {w["name"]: w for w in doc["workloads"]}
    by_name["web_server"]["process"]["params"]["args"][2] = str(port)
    by_name["log_intake"]["process"]["params"]["address"] = f"127.0.0.1:{intake}"
    stub = work / "backup_database.sh"
    stub.write_text(f"#!/bin/sh\necho backup >> {backups}\n")
    stub.chmod(0o755)
    by_name["nightly_db_backup"]["process"]["params"]["command"] = str(stub)
    pb = work / "e27.yaml"
    pb.write_text(yaml.safe_dump(doc, sort_keys=False))
    return pb


def test_the_lifecycle_mix_runs_in_one_process(work: Path) -> None:
    port, intake = free_port(), free_port()
    backups = work / "backups"
    plan = build(_playbook(work, port, intake, backups), work)
    seen: list[dict] = []
    with HttpMock([200]) as collector:
        proc = spawn("gxo", "exec", plan, "--json", env={"LOG_COLLECTOR_URL": collector.url + "/logs"})

        def reader() -> None:
            assert proc.stdout is not None
            for line in iter(proc.stdout.readline, b""):
                seen.append(json.loads(line))

        def server_pids() -> list[int]:
            return [e["pid"] for e in list(seen) if e.get("type") == "Log" and e.get("workload") == "web_server"
                    and e.get("message") == "started"]

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        try:
            # the supervised server serves; killed, it is restarted (restart: on_failure)
            assert wait_until(lambda: _serves(port), timeout=30), seen[-5:]
            first = server_pids()[0]
            os.kill(first, signal.SIGKILL)
            assert wait_until(lambda: len(server_pids()) == 2 and _serves(port), timeout=30), seen[-5:]
            # each connection's line is one pipeline run; only the ERROR lines are forwarded
            assert wait_until(lambda: any(e.get("type") == "Log" and e.get("workload") == "log_intake"
                                          and e.get("message") == "listening" for e in list(seen)), timeout=20)
            froms = []
            for line in ("error disk full", "info all good", "ERROR replica lag 30s"):
                with socket.create_connection(("127.0.0.1", intake), timeout=10) as client:
                    client.sendall(line.encode() + b"\n")
                    froms.append("127.0.0.1:%d" % client.getsockname()[1])
                    assert client.recv(10) == b""  # the pipeline closes the connection after reading
            assert wait_until(lambda: len(collector.calls) == 2, timeout=30), collector.calls
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            thread.join(10)
        finally:
            close_proc(proc)
        bodies = sorted((json.loads(c[3]) for c in collector.calls), key=lambda b: b["message"])
    assert proc.returncode == 0, seen[-5:]
    assert bodies == [{"level": "ERROR", "message": "disk full", "from": froms[0]},
                      {"level": "ERROR", "message": "replica lag 30s", "from": froms[2]}]
    assert all(c[1] == "POST" and c[2] == "/logs" for c in collector.calls)
    # the backup's next fire is the next 02:00 (local time), and it did not run at start
    fires = [e["next_fire"] for e in seen if e.get("type") == "LifecycleUpdate"
             and e.get("workload") == "nightly_db_backup" and e.get("next_fire")]
    nxt = dt.datetime.fromtimestamp(fires[0])
    assert (nxt.hour, nxt.minute, nxt.second) == (2, 0, 0) and 0 < fires[0] - time.time() <= 86400
    assert not backups.exists()
    ups = [e for e in seen if e.get("type") == "LifecycleUpdate" and e.get("workload") == "web_server"]
    assert max(e.get("restarts", 0) for e in ups) == 1
    assert "signal" in ups[-1]["last_exit"] or "killed" in ups[-1]["last_exit"] or "-9" in ups[-1]["last_exit"], ups[-1]
    ends = {e["workload"]: e["final_status"] for e in seen if e.get("type") == "WorkloadEnd"}
    assert ends == {n: "Completed" for n in ("web_server", "log_intake", "log_processor", "nightly_db_backup")}
    assert not any(pid_alive(p) for p in server_pids())
