"""E27 in one ``gxo exec`` process: a supervised web server, an event-driven log processor (a
``stream:pipeline`` per event) and a scheduled nightly backup, side by side.

The example's event source is a TCP intake (``connection:listen``, not in this release); here it
is a file followed by ``tail -F`` (``exec`` with ``stdout_records``), one record per line, and the
pipeline's first step parses ``.line`` instead of the connection's data.  Everything else is
the example's: the server restarts after a crash, ERROR lines reach the collector over HTTP, the
backup's next fire is 02:00 and it does not run at start.  SIGTERM stops it all, exit 0."""

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

from acceptance.harness import EXAMPLES, HttpMock, build, pid_alive, spawn, wait_until

E27 = EXAMPLES / "e27_lifecycle_mix.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serves(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def _playbook(work: Path, port: int, log: Path, backups: Path) -> Path:
    doc = yaml.safe_load(E27.read_text())
    by_name = {w["name"]: w for w in doc["workloads"]}
    by_name["web_server"]["process"]["params"]["args"][2] = str(port)
    by_name["log_intake"]["process"] = {"module": "exec", "params": {
        "command": "tail", "args": ["-n", "0", "-F", str(log)], "stdout_records": True}}
    steps = by_name["log_processor"]["process"]["params"]["steps"]
    steps[:] = [s for s in steps if not s["uses"].startswith("connection:")]
    parse = steps[0]
    parse.pop("needs", None)
    parse["with"]["template"] = parse["with"]["template"].replace(".data |", ".line |").replace(
        '"from" .remote_addr', '"from" "app.log"')
    stub = work / "backup_database.sh"
    stub.write_text(f"#!/bin/sh\necho backup >> {backups}\n")
    stub.chmod(0o755)
    by_name["nightly_db_backup"]["process"]["params"]["command"] = str(stub)
    pb = work / "e27.yaml"
    pb.write_text(yaml.safe_dump(doc, sort_keys=False))
    return pb


def test_the_lifecycle_mix_runs_in_one_process(work: Path) -> None:
    port = _free_port()
    log, backups = work / "app.log", work / "backups"
    log.write_text("")
    plan = build(_playbook(work, port, log, backups), work)
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
            # each appended line is one pipeline run; only the ERROR lines are forwarded
            time.sleep(1.0)  # tail is following
            with log.open("a") as fh:
                for line in ("error disk full", "info all good", "ERROR replica lag 30s"):
                    fh.write(line + "\n")
                    fh.flush()
                    time.sleep(0.05)
            assert wait_until(lambda: len(collector.calls) == 2, timeout=30), collector.calls
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            thread.join(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        bodies = sorted((json.loads(c[3]) for c in collector.calls), key=lambda b: b["message"])
    assert proc.returncode == 0, seen[-5:]
    assert bodies == [{"level": "ERROR", "message": "disk full", "from": "app.log"},
                      {"level": "ERROR", "message": "replica lag 30s", "from": "app.log"}]
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
