"""Redaction: a secret read from the environment (``${NAME}`` and ``secret "NAME"``) and
leaked by children in every encoding — raw, base64 (alone and inside a longer value), URL,
hex, JSON-escaped — through stdout, stderr, error messages and registered summaries, never
appears in a byte that GXO writes: ``gxo exec`` plain and ``--json``, ``gxo run``, the recap,
``gxo test``'s output and its JUnit XML. Every byte is scanned, decoding what can be decoded."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import sys
from pathlib import Path
from urllib.parse import quote, quote_plus, unquote, unquote_plus

import pytest

from acceptance.harness import PLAYBOOKS, build, gxo_exec, gxo_run, run_tool

SECRET = 'S3cr3t/Välue+with "quotes" & spaces=42'
ENV = {"GXO_ACC_SECRET": SECRET}
SCRIPT = PLAYBOOKS / "leak_secret.py"
VARS = ["--var", f"python={sys.executable}", "--var", f"script={SCRIPT}"]


def _forms(secret: str) -> set[str]:
    """The spellings a reader could recognise, computed here (not by GXO's tracker)."""
    data = secret.encode()
    out = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1], data.hex(),
           data.hex().upper(), quote(secret, safe=""), quote(secret), quote_plus(secret)}
    for enc in (base64.b64encode, base64.urlsafe_b64encode):
        out |= {enc(data).decode(), enc(data).decode().rstrip("=")}
    return out


def _b64_decodings(token: str) -> list[bytes]:
    out = []
    for shift in range(4):
        chunk = token[shift:].rstrip("=")
        chunk = chunk[: len(chunk) - len(chunk) % 4] if len(chunk) % 4 == 1 else chunk
        padded = chunk + "=" * (-len(chunk) % 4)
        for alt in (None, b"-_"):
            try:
                out.append(base64.b64decode(padded, altchars=alt))
            except (binascii.Error, ValueError):
                pass
    return out


def _json_unescape(text: str) -> str:
    return re.sub(r'\\(u[0-9a-fA-F]{4}|["\\/bfnrt])',
                  lambda m: chr(int(m.group(1)[1:], 16)) if m.group(1)[0] == "u" else
                  {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}.get(m.group(1), m.group(1)), text)


def assert_clean(blob: bytes, where: str, secret: str = SECRET) -> None:
    """No spelling of ``secret`` in ``blob``, and none after decoding any part of it."""
    text = blob.decode("utf-8", "replace")
    for form in _forms(secret):
        assert form not in text, f"{where}: holds a form of the secret: {form!r}"
    raw = secret.encode()
    views = [text, unquote(text), unquote_plus(text), _json_unescape(text)]
    for view in views:
        assert secret not in view, f"{where}: the secret after decoding"
    for token in re.findall(r"[A-Za-z0-9+/_=-]{12,}", text):
        for decoded in _b64_decodings(token):
            assert raw not in decoded, f"{where}: base64 run {token!r} decodes to the secret"
    for run in re.findall(r"[0-9a-fA-F]{16,}", text):
        for shift in (0, 1):
            chunk = run[shift:]
            chunk = chunk[: len(chunk) // 2 * 2]
            assert raw not in bytes.fromhex(chunk), f"{where}: hex run decodes to the secret"
    for line in text.splitlines():
        if line.startswith("{"):
            for s in _strings(json.loads(line)):
                assert secret not in s and secret not in unquote(s), f"{where}: JSON string holds the secret"


def _strings(value: object) -> list[str]:
    """Every string (keys included) inside a decoded JSON value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(k) + _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_scanner_sees_every_leak() -> None:
    """The scanner itself: it catches the leaks the child prints when nothing redacts them."""
    import os
    import subprocess

    out = subprocess.run([sys.executable, SCRIPT, "out"], env={**os.environ, "SECRET": SECRET}, capture_output=True,
                         check=True)
    for line in (out.stdout + out.stderr).splitlines():
        if b"sha256=" in line:
            continue
        with pytest.raises(AssertionError):
            assert_clean(line, "probe")


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(PLAYBOOKS / "redaction.yaml", tmp_path_factory.mktemp("redaction"))


def _check_behaviour(run) -> None:
    """The secret really flowed (the child saw it) and every failure happened as planned."""
    assert run.rc == 0, run.explain()
    assert run.statuses == {"leak_out": "Completed", "reuse_register": "Completed", "echo_register": "Completed",
                            "leak_fail_b64": "Failed", "leak_fail_text": "Failed", "leak_fail_hex": "Failed",
                            "secret_in_summary": "Completed", "secret_in_args": "Completed",
                            "failing_assert": "Failed"}


def test_exec_json_stream(plan: Path) -> None:
    run = gxo_exec(plan, *VARS, env=ENV)
    _check_behaviour(run)
    assert_clean(run.raw, "gxo exec --json")
    leaked = run.summary("leak_out")
    assert leaked["stdout_lines"][0] == "sha256=" + hashlib.sha256(SECRET.encode()).hexdigest()
    assert leaked["stdout_lines"][1] == "raw: [REDACTED]"
    # the register holds the redacted form; reading it is tainted (leak_out's params carried the
    # secret): its strings are tracked from then on, so the copy hides the secret's sha256
    # line too (the lines holding the marker already are kept as they are)
    copied = run.summary("reuse_register")["copied"]
    assert copied["stdout_lines"] == ["[REDACTED]", *leaked["stdout_lines"][1:]]
    assert copied["stderr"] == leaked["stderr"] and copied["exit_code"] == leaked["exit_code"]
    # what a function computed from the secret is redacted whole (toJson); the text around a
    # template's action stays
    assert run.summary("secret_in_summary") == {"token": "[REDACTED]", "header": "Bearer [REDACTED]",
                                                "as_json": "[REDACTED]"}
    assert run.summary("secret_in_args")["stdout"] == "arg=[REDACTED]"
    for name in ("leak_fail_b64", "leak_fail_text", "leak_fail_hex"):
        err = run.end(name)["error"]
        assert err.startswith("command ") and "[REDACTED]" in err, err
    assert run.end("failing_assert")["error"] == "token [REDACTED]"  # then the keyword rule


def test_exec_plain_and_recap(plan: Path) -> None:
    run = gxo_exec(plan, *VARS, env=ENV, json_events=False)
    assert run.rc == 0, run.explain()
    assert "PLAY RECAP redaction: COMPLETED" in run.stdout and "ignored: leak_fail_b64: command" in run.stdout
    assert_clean(run.raw, "gxo exec (plain)")


def test_run_and_dry_run(plan: Path) -> None:
    run = gxo_run(PLAYBOOKS / "redaction.yaml", *VARS, env=ENV)
    _check_behaviour(run)
    assert_clean(run.raw, "gxo run --json")
    dry = gxo_exec(plan, *VARS, "--dry-run", env=ENV)
    assert dry.rc == 0, dry.explain()
    assert dry.summary("secret_in_args")["args"] == ["arg=[REDACTED]"]  # the dry-run summary echoes args
    assert_clean(dry.raw, "gxo exec --dry-run --json")


def test_gxo_test_output_and_junit(work: Path) -> None:
    text = (PLAYBOOKS / "redaction.yaml").read_text()
    text = text.replace("  python: python3", f"  python: {sys.executable}").replace(
        "  script: leak_secret.py", f"  script: {SCRIPT}")
    text += """
  - name: final_check
    lifecycle: {policy: run_once}
    process:
      module: exec
      params:
        command: /bin/sh
        args: ["-c", "sleep 0.5; echo \\"rejected $T\\" >&2; exit 1"]
        environment: ["T=${GXO_ACC_SECRET}"]
"""
    pb = work / "redaction.test.yaml"
    pb.write_text(text)
    junit = work / "junit.xml"
    res = run_tool("gxo", "test", pb, "--junit", junit, env=ENV)
    assert res.rc == 1, res.explain()
    assert res.stdout.startswith("FAIL ")
    xml = junit.read_bytes()
    assert b"final_check: command /bin/sh exited with code 1: rejected [REDACTED]" in xml
    assert b"leak_fail_b64" in xml and b"dXNlcjp[REDACTED]" in xml
    assert_clean(res.raw, "gxo test output")
    assert_clean(xml, "JUnit XML")
    import xml.etree.ElementTree as ET

    ET.fromstring(xml)


def test_error_cut_inside_a_form_leaks_nothing(work: Path) -> None:
    pb = work / "cut.yaml"
    pb.write_text(f"""name: cut
schemaVersion: "1.0.0"
workloads:
  - name: cut
    lifecycle: {{policy: run_once}}
    process:
      module: exec
      params:
        command: {sys.executable}
        args: ["{SCRIPT}", "cut"]
        environment: ["SECRET=${{GXO_ACC_SECRET}}"]
""")
    run = gxo_exec(build(pb, work), env=ENV)
    assert run.rc == 1, run.explain()
    err = run.end("cut")["error"]
    assert err.endswith("[REDACTED]") or SECRET.encode().hex()[:16] not in err, err


def test_a_url_token_is_replaced_alone(work: Path) -> None:
    """An error quoting a URL: the token's value is replaced, the status and `&page=2` stay,
    for a tracked secret and for a plain value under a `token`-style query key alike."""
    from acceptance.harness import HttpMock

    with HttpMock([401]) as mock:
        pb = work / "url.yaml"
        pb.write_text(f"""name: url
schemaVersion: "1.0.0"
workloads:
  - name: with_secret
    lifecycle: {{policy: run_once}}
    ignore_errors: true
    process:
      module: http:request
      params: {{url: '{mock.url}/items?token={{{{ secret "GXO_URL_TOKEN" }}}}&page=2'}}
  - name: with_plain_key
    lifecycle: {{policy: run_once}}
    ignore_errors: true
    process:
      module: http:request
      params: {{url: '{mock.url}/items?page=1&access_token=plain-value-77&page=2'}}
""")
        run = gxo_run(pb, env={"GXO_URL_TOKEN": "urlTok3n-9981"})
    assert run.rc == 0, run.explain()
    assert run.end("with_secret")["error"] == (
        f"HTTP GET {mock.url}/items?token=[REDACTED]&page=2: status 401 (status >= 400)")
    assert run.end("with_plain_key")["error"] == (
        f"HTTP GET {mock.url}/items?page=1&access_token=[REDACTED]&page=2: status 401 (status >= 400)")
    assert b"urlTok3n-9981" not in run.raw
