"""HTTP server benchmark: GXO's ``http:listen -> http:respond`` answering a fixed JSON body,
measured with ``wrk`` on loopback, next to a plain aiohttp hello-world in the same run.

* GXO: ``gxo exec`` of a built plan: a supervised ``http:listen`` and an event-driven
  ``http:respond`` handler (inline: it runs in the dispatcher with no task of its own).
* Baseline: an aiohttp ``web.Application`` with one handler returning the same body (aiohttp's
  C HTTP parser when it is built with it), in its own process.

Each server gets a warm-up (1 s), then ``wrk -t1 -c{connections} -d{duration}`` (keep-alive
connections); both servers run on one core's worth of Python (one process, one event loop).
Prints requests/s of each and the ratio.  Goal: GXO >= 0.5x the plain server.

Needs ``wrk`` (Debian: ``apt-get install wrk``) and aiohttp (``pip install -e '.[bench]'``).

    python bench/http_server.py [--duration 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BODY = '{"message": "hello", "ok": true}'

PLAYBOOK = """\
name: bench-http
schemaVersion: "1.0.0"
workloads:
  - name: api
    lifecycle: {{policy: supervise, restart: always}}
    process: {{module: http:listen, params: {{address: "127.0.0.1:{port}"}}}}
  - name: answer
    lifecycle: {{policy: event_driven, source: api, concurrency: 64}}
    process:
      module: http:respond
      params:
        request_id: "{{{{ .request_id }}}}"
        headers: {{Content-Type: application/json}}
        body: '{body}'
"""

AIOHTTP = """\
import sys
from aiohttp import web

BODY = {body!r}.encode()

async def hello(request):
    return web.Response(body=BODY, content_type="application/json")

app = web.Application()
app.router.add_get("/", hello)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


def run_wrk(port: int, duration: int, connections: int) -> tuple[float, int]:
    """(requests/s, non-2xx responses) of one wrk run."""
    url = f"http://127.0.0.1:{port}/"
    subprocess.run(["wrk", "-t1", f"-c{connections}", "-d1s", url], capture_output=True, check=True)
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rps, int(bad.group(1)) if bad else 0


def serve(argv: list[str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_listening(port)
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk: not installed (apt-get install wrk)")
        return 0
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        print("aiohttp: not installed (pip install -e '.[bench]')")
        return 0
    bindir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        pb = Path(tmp) / "http.yaml"
        pb.write_text(PLAYBOOK.format(port=port, body=BODY))
        plan = Path(tmp) / "http.gxp"
        subprocess.run([str(bindir / "gxoc"), "build", str(pb), "-o", str(plan)], check=True,
                       capture_output=True)
        gxo = serve([str(bindir / "gxo"), "exec", "--no-state", str(plan)], port)
        try:
            gxo_rps, gxo_bad = run_wrk(port, args.duration, args.connections)
        finally:
            stop(gxo)
        port = free_port()
        script = Path(tmp) / "plain.py"
        script.write_text(AIOHTTP.format(body=BODY))
        plain = serve([sys.executable, str(script), str(port)], port)
        try:
            plain_rps, plain_bad = run_wrk(port, args.duration, args.connections)
        finally:
            stop(plain)
    print(f"HTTP server, fixed JSON body, wrk -t1 -c{args.connections} -d{args.duration}s on loopback:")
    print(f"  gxo exec (http:listen -> http:respond)  {gxo_rps:10,.0f} req/s   non-2xx {gxo_bad}")
    print(f"  aiohttp hello-world                     {plain_rps:10,.0f} req/s   non-2xx {plain_bad}")
    ratio = gxo_rps / plain_rps if plain_rps else 0.0
    print(f"  ratio {ratio:.2f}x   (goal >= 0.5x: {'ok' if ratio >= 0.5 else 'MISSED'})")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
