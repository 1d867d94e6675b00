"""dns:query against a real DNS server: dnsmasq (Debian's package), started by these tests on
a free port of 127.0.0.1, authoritative for the zone gxo.test (and 127.0.0.0/24's reverse
zone), so every record type the module declares is served for real."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from pathlib import Path

import pytest
from gxo.runtime.module import Context, ModuleError, ValidationError, load_module_class

from acceptance.harness import build, gxo_exec, gxo_run, run_tool, summary_of
from module_log import Log
from services import need_program

ZONE = "gxo.test"


def _free_udp_port() -> int:
    # the port must be free for TCP too: dnsmasq listens on both
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free port on 127.0.0.1")


def _answers(port: int) -> bool:
    import dns.resolver

    r = dns.resolver.Resolver(configure=False)
    r.nameservers, r.port, r.lifetime = ["127.0.0.1"], port, 0.5
    try:
        r.resolve(f"host.{ZONE}", "A")
    except Exception:  # noqa: BLE001 - not up yet
        return False
    return True


@pytest.fixture(scope="module")
def dns_server():
    """``127.0.0.1:PORT`` of a dnsmasq that serves gxo.test; stopped at the end."""
    program = need_program("dnsmasq", "dnsmasq")
    for _attempt in range(3):
        port = _free_udp_port()
        proc = subprocess.Popen([
            program, "--no-daemon", "--no-resolv", "--no-hosts", f"--port={port}",
            "--listen-address=127.0.0.1", "--bind-interfaces", "--log-facility=/dev/null",
            "--pid-file",  # none: several instances may run at once
            f"--auth-server=ns.{ZONE},127.0.0.1", f"--auth-zone={ZONE},127.0.0.0/24,::/64",
            f"--host-record=host.{ZONE},127.0.0.5,::5",
            f"--cname=alias.{ZONE},host.{ZONE}",
            f"--mx-host={ZONE},mail.{ZONE},10",
            f"--srv-host=_http._tcp.{ZONE},host.{ZONE},8080,1,2",
            f"--txt-record={ZONE},v=spf1 -all",
            f"--caa-record={ZONE},0,issue,letsencrypt.org",
        ], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline and not _answers(port):
            time.sleep(0.05)
        if proc.poll() is None and _answers(port):
            break
        proc.kill()
        err = proc.communicate()[1].decode(errors="replace")
    else:
        pytest.fail(f"dnsmasq did not start: {err}")
    yield f"127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def query(params: dict, *, dry_run: bool = False, log: Log | None = None) -> dict:
    ctx = Context(workload="w", run_id="r", logger=log or Log(), workspace=None, state=dict,  # type: ignore[arg-type]
                  dry_run=dry_run)
    return asyncio.run(load_module_class("dns:query")().perform(ctx, params))


@pytest.mark.parametrize(("name", "rtype", "answers"), [
    (f"host.{ZONE}", "A", ["127.0.0.5"]),
    (f"host.{ZONE}", "AAAA", ["::5"]),
    (f"alias.{ZONE}", "CNAME", [f"host.{ZONE}."]),
    (f"alias.{ZONE}", "A", ["127.0.0.5"]),  # the alias is followed
    (ZONE, "MX", [f"10 mail.{ZONE}."]),
    (ZONE, "NS", [f"ns.{ZONE}."]),
    (f"_http._tcp.{ZONE}", "SRV", [f"1 2 8080 host.{ZONE}."]),
    (ZONE, "TXT", ['"v=spf1 -all"']),
    (ZONE, "CAA", ['0 issue "letsencrypt.org"']),
    ("127.0.0.5", "PTR", [f"host.{ZONE}."]),  # an address: the reverse name is built
    ("5.0.0.127.in-addr.arpa", "PTR", [f"host.{ZONE}."]),
    ("::5", "PTR", [f"host.{ZONE}."]),  # an IPv6 address: its ip6.arpa name
])
def test_record_types(dns_server, name, rtype, answers):
    out = query({"name": name, "type": rtype, "server": dns_server})
    assert out["answers"] == answers
    assert set(out) == {"answers", "name", "ttl"}
    assert isinstance(out["ttl"], int) and out["ttl"] > 0
    if rtype == "PTR" and name == "::5":
        assert out["name"] == "5.0." + "0." * 30 + "ip6.arpa."
    elif rtype == "PTR":
        assert out["name"] == "5.0.0.127.in-addr.arpa."
    else:
        assert out["name"] == name + "."


def test_soa(dns_server):
    out = query({"name": ZONE, "type": "SOA", "server": dns_server})
    (soa,) = out["answers"]
    assert soa.startswith(f"ns.{ZONE}. hostmaster.") and len(soa.split()) == 7


def test_nxdomain_fails(dns_server):
    with pytest.raises(ModuleError) as err:
        query({"name": f"nope.{ZONE}", "server": dns_server})
    assert str(err.value) == f"A nope.{ZONE}.: the name does not exist (NXDOMAIN from {dns_server})"


def test_no_record_of_the_type_fails(dns_server):
    with pytest.raises(ModuleError, match=rf"^MX host\.gxo\.test\.: the name has no MX record "
                                          rf"\(empty answer from {dns_server}\)$"):
        query({"name": f"host.{ZONE}", "type": "MX", "server": dns_server})


def test_refused_names_the_rcode(dns_server):
    # outside its zones dnsmasq (authoritative only, no upstream) refuses
    with pytest.raises(ModuleError, match=r"^A example\.org\.: .* could not answer \(REFUSED\)$"):
        query({"name": "example.org", "server": dns_server})


def test_silent_server_times_out():
    # a UDP socket that nobody reads: the queries are accepted and never answered
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        with pytest.raises(ModuleError) as err:
            query({"name": f"host.{ZONE}", "server": f"127.0.0.1:{port}", "timeout": "300ms"})
    assert str(err.value) == f"A host.{ZONE}.: no answer from 127.0.0.1:{port} within 0.3s (timeout)"


@pytest.mark.parametrize("server", ["dns.example.com", "127.0.0.1:0", "127.0.0.1:99999",
                                    "300.1.1.1", "[::1", "::1:53:x", "127.0.0.1:53:53"])
def test_bad_server_is_a_validation_error(server):
    with pytest.raises(ValidationError, match=r"^parameter 'server' must be an IP address"):
        query({"name": "x.test", "server": server})


@pytest.mark.parametrize(("params", "message"), [
    ({"name": "x.test", "type": "ANY"}, "parameter 'type' must be one of A, AAAA"),
    ({"name": "x.test", "type": "mx"}, "parameter 'type' must be one of A, AAAA"),
    ({"name": "x.test", "timeout": "soon"}, "parameter 'timeout' must be a duration"),
    ({"name": "x.test", "timeout": "0s"}, "parameter 'timeout' must be greater than 0"),
    ({"name": "a" * 64 + ".test"}, "parameter 'name' is not a valid DNS name"),
    ({"name": "x.test", "port": 53}, "dns:query: unknown parameter 'port'"),
])
def test_bad_params(params, message):
    with pytest.raises(ValidationError, match="^" + message):
        query(params)


def test_server_forms_parse():
    from gxo.stdlib.dns import _server

    assert _server("127.0.0.1") == ("127.0.0.1", 53)
    assert _server("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert _server("::1") == ("::1", 53)
    assert _server("[::1]:5353") == ("::1", 5353)
    assert _server("[::1]") == ("::1", 53)


def test_dry_run_asks_nothing():
    # the server would never answer: a dry run must not wait for it
    log = Log()
    out = query({"name": "127.0.0.5", "type": "PTR", "server": "127.0.0.1:9"}, dry_run=True, log=log)
    assert out == {"answers": [], "name": "5.0.0.127.in-addr.arpa.", "ttl": 0, "dry_run": True}
    assert log.records[0][1] == "dry run: would query DNS"


PLAYBOOK = """\
name: dns
schemaVersion: "1.0.0"
vars:
  dns_server: "127.0.0.1:53"
workloads:
  - name: lookup
    lifecycle: {policy: run_once}
    process:
      module: dns:query
      params:
        name: "alias.gxo.test"
        type: CNAME
        server: "{{ .dns_server }}"
        timeout: 2s
    register: alias

  - name: reverse
    lifecycle: {policy: run_once}
    process:
      module: dns:query
      params:
        name: "127.0.0.5"
        type: PTR
        server: "{{ .dns_server }}"
    register: ptr

  - name: check
    lifecycle: {policy: run_once}
    process:
      module: test:assert
      params:
        assertions:
          - {actual: "{{ .alias.answers | first }}", equal_to: "host.gxo.test."}
          - {actual: "{{ .ptr.answers | first }}", equal_to: "{{ .alias.answers | first }}"}
          - {actual: "{{ .ptr.name }}", equal_to: "5.0.0.127.in-addr.arpa."}

  - name: missing
    lifecycle: {policy: run_once}
    process:
      module: dns:query
      params:
        name: "nope.gxo.test"
        server: "{{ .dns_server }}"
    ignore_errors: true
"""


def test_playbook_run_and_exec(dns_server, tmp_path: Path):
    pb = _playbook(tmp_path, PLAYBOOK)
    res = run_tool("gxoc", "check", pb)
    assert res.rc == 0, res.explain()
    for run in (gxo_run(pb, "--var", f"dns_server={dns_server}"),
                gxo_exec(build(pb, tmp_path), "--var", f"dns_server={dns_server}")):
        assert run.statuses == {"lookup": "Completed", "reverse": "Completed", "check": "Completed",
                                "missing": "Failed"}, run.explain()
        assert summary_of(run, "lookup")["answers"] == ["host.gxo.test."]
        assert f"A nope.gxo.test.: the name does not exist (NXDOMAIN from {dns_server})" in run.stdout + run.stderr
        assert "Traceback" not in run.stdout + run.stderr


def test_bad_literal_server_is_a_check_error(tmp_path: Path):
    pb = _playbook(tmp_path, PLAYBOOK.replace('"{{ .dns_server }}"', "dns.example.com", 1))
    res = run_tool("gxoc", "check", pb)
    assert res.rc == 1
    assert "error[invalid-value]" in res.stdout and ":13:17:" in res.stdout, res.stdout


def test_bad_templated_server_fails_the_workload(tmp_path: Path):
    run = gxo_run(_playbook(tmp_path, PLAYBOOK), "--var", "dns_server=resolver.local")
    assert run.status("lookup") == "Failed"
    out = run.stdout + run.stderr
    assert "parameter 'server' must be an IP address" in out and "Traceback" not in out


def _playbook(work: Path, text: str) -> Path:
    path = work / "pb.yaml"
    path.write_text(text)
    return path


def test_e18_soar_webhook_example_end_to_end(dns_server, tmp_path: Path):
    """examples/e18_soar_webhook.yaml as it is, with its listener on a free port, the PTR lookup
    sent to the test's DNS server and the Slack webhook pointed at an HTTP server run by the
    test: a webhook POST is acknowledged 202, and the alert names the address and its PTR name."""
    import json

    import httpx
    import yaml

    from acceptance.harness import ROOT, HttpMock, free_port, gxo_serving

    doc = yaml.safe_load((ROOT / "examples" / "e18_soar_webhook.yaml").read_text())
    listener, pipeline = doc["workloads"]
    port = free_port()
    listener["process"]["params"]["address"] = f"127.0.0.1:{port}"
    steps = {st["id"]: st for st in pipeline["process"]["params"]["steps"]}
    steps["enrich_ip"]["with"].update(server=dns_server, timeout="2s")
    pb = tmp_path / "e18.yaml"
    pb.write_text(yaml.safe_dump(doc, sort_keys=False))
    with HttpMock([200]) as slack, gxo_serving(build(pb, tmp_path), port, "--no-state",
                                                env={"SLACK_WEBHOOK": slack.url + "/hook"}):
        r = httpx.post(f"http://127.0.0.1:{port}/alerts", timeout=10,
                       json={"source_ip": "127.0.0.5", "details": "brute force on sshd"})
        assert (r.status_code, r.text) == (202, "accepted\n")
        assert len(slack.calls) == 1  # posted before the acknowledgement
        _, method, path, body = slack.calls[0]
        assert (method, path) == ("POST", "/hook")
        assert json.loads(body) == {"text": f"ALERT from 127.0.0.5 (Host: host.{ZONE}.). "
                                            "Details: brute force on sshd"}


