"""E1, the SSH guard (the README's end-to-end example), on real sockets: ``examples/e01_ssh_guard.yaml``
under ``gxo exec`` with its listener on a free port, a 4-second window instead of 5 minutes and
the Slack webhook pointed at an HTTP server run by the test.

Twelve connections from 127.0.0.1 and three from 127.0.0.2 within one window give exactly one
alert, naming 127.0.0.1 with its 12 attempts; the listening socket destroyed from outside
(``ss -K``) ends the listener with a clear error and ``restart: always`` brings it back."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import yaml
from services import need_program

from acceptance.harness import ROOT, HttpMock, build, free_port, wait_until
from acceptance.test_connections import serving

E1 = ROOT / "examples" / "e01_ssh_guard.yaml"
WINDOW = 4.0


def e1_plan(work: Path, port: int) -> Path:
    doc = yaml.safe_load(E1.read_text())
    listener, pipeline = doc["workloads"]
    listener["process"]["params"]["address"] = f":{port}"
    steps = {st["id"]: st for st in pipeline["process"]["params"]["steps"]}
    assert steps["aggregate"]["with"]["window"] == "5m"
    steps["aggregate"]["with"]["window"] = f"{WINDOW:g}s"
    pb = work / "e01.yaml"
    pb.write_text(yaml.safe_dump(doc, sort_keys=False))
    return build(pb, work)


def knock(port: int, source: str, times: int) -> None:
    """``times`` connections to the guard from ``source``; each is hung up by the guard."""
    for _ in range(times):
        with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as c:
            assert c.recv(1) == b""  # the guard's hang_up step closed it


def alerts(mock: HttpMock) -> list[str]:
    return [json.loads(body)["text"] for _, method, _, body in list(mock.calls) if method == "POST"]


def test_e01_twelve_attempts_from_one_address_give_one_alert_and_the_listener_comes_back(work: Path) -> None:
    ss = need_program("ss", "iproute2")
    port = free_port()
    plan = e1_plan(work, port)
    with HttpMock([200]) as slack, serving(plan, "ssh_guardian_listener",
                                            env={"SLACK_WEBHOOK": slack.url + "/hook"}) as seen:
        knock(port, "127.0.0.1", 12)
        knock(port, "127.0.0.2", 3)
        assert wait_until(lambda: alerts(slack), timeout=3 * WINDOW), seen
        # the next window closes with nothing in it: still one alert
        assert not wait_until(lambda: len(alerts(slack)) > 1, timeout=WINDOW + 1)
        assert alerts(slack) == ["ALERT: SSH guard observed 12 attempts from 127.0.0.1 in 5 minutes."]
        assert not [e for e in seen if e.get("type") in ("InstanceFailed", "RecordErrorOccurred")], seen

        # the listening socket destroyed from outside: the listener fails and is restarted
        killed = subprocess.run([ss, "-K", "-t", "state", "listening", "sport", "=", f":{port}"],
                                capture_output=True, text=True, check=False)
        assert killed.returncode == 0, killed.stderr

        def restarts() -> list[int]:
            return [e["restarts"] for e in list(seen) if e.get("type") == "LifecycleUpdate"
                    and e.get("workload") == "ssh_guardian_listener" and "restarts" in e]

        assert wait_until(lambda: restarts() and restarts()[-1] >= 1, timeout=15), seen
        failed = [e for e in list(seen) if e.get("type") == "LifecycleUpdate"
                  and e.get("workload") == "ssh_guardian_listener" and e.get("last_exit")]
        assert any(f"listening socket on :{port} (tcp) failed" in e["last_exit"] for e in failed), failed
        # served again, by the same pipeline: its counts go on
        assert wait_until(lambda: _accepts(port), timeout=15)
        knock(port, "127.0.0.2", 2)
        assert not wait_until(lambda: len(alerts(slack)) > 1, timeout=WINDOW + 1)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2, source_address=("127.0.0.3", 0)) as c:
            return c.recv(1) == b""
    except OSError:
        return False
