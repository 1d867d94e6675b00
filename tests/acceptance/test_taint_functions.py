"""Secrets stay secret through functions: every function of docs/expressions.md applied to a
secret; each result is echoed by ``exec``, registered, and put in an error. Nothing GXO writes
(``gxo run`` plain, ``--json``, ``-v``, ``-vv``, the recap, ``gxo test``'s output and JUnit
XML) holds any of five encodings (raw, base64, URL-encoded, hex, JSON-escaped) of any result
that is text of 4 characters or more. Numbers and booleans (``len``, ``int``, ``eq``...) are
not text and are not hidden; ``now`` and ``uuid`` take no argument, so nothing of a secret can
reach them."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from acceptance.harness import ROOT, gxo_run, run_tool

SECRET = "Tok3n-Alpha/Beta.Gamma_Z9"
S = '(secret "GXO_FN_SECRET")'
J = '(fromJson (secret "GXO_FN_JSON"))'
ENV = {
    "GXO_FN_SECRET": SECRET,
    "GXO_FN_B64": base64.b64encode(b"decoded-Secret-77").decode(),
    "GXO_FN_JSON": '{"account":"adm1n-name","passwd":"pa55word-xyz"}',
    "GXO_FN_NUM": "424242",
    "GXO_FN_ENVNAME": "GXO_FN_TARGET",  # a secret naming an environment variable...
    "GXO_FN_TARGET": "value-From-Env-31",  # ...whose value, read through it, is tainted
}

#: function -> an expression applying it to a secret
APPLIED = {
    "and": f'and "x" {S}',
    "b64dec": 'b64dec (secret "GXO_FN_B64")',
    "b64enc": f"b64enc {S}",
    "bool": f"bool {S}",
    "coalesce": f'coalesce "fallback" {S}',
    "contains": f'contains "Alpha" {S}',
    "default": f'default "fallback" {S}',
    "dict": f'dict "k" {S}',
    "env": 'env (secret "GXO_FN_ENVNAME")',
    "eq": f'eq {S} "x"',
    "first": f'first (split "/" {S})',
    "float": 'float (secret "GXO_FN_NUM")',
    "fromJson": J,
    "ge": f'ge {S} "a"',
    "get": f"get (last (keys {J})) {J}",  # the key, too, comes from the secret
    "gt": f'gt {S} "a"',
    "hasPrefix": f'hasPrefix "Tok" {S}',
    "hasSuffix": f'hasSuffix "Z9" {S}',
    "index": f'index (split "/" {S}) 1',
    "int": 'int (secret "GXO_FN_NUM")',
    "join": f'join "+" (split "/" {S})',
    "keys": f"keys {J}",
    "last": f'last (split "/" {S})',
    "le": f'le {S} "a"',
    "len": f"len {S}",
    "list": f'list {S} "x"',
    "lower": f"lower {S}",
    "lt": f'lt {S} "a"',
    "ne": f'ne {S} "x"',
    "not": f"not {S}",
    "or": f'or "" {S}',
    "print": f'print "p:" {S}',
    "printf": f'printf "%s|%q" {S} {S}',
    "println": f"println {S}",
    "quote": f"quote {S}",
    "regex_match": f'regex_match "[0-9]" {S}',
    "regex_replace": f'regex_replace "[a-z]" "*" {S}',
    "replace": f'replace "-" "~" {S}',
    "secret": S,
    "sha256": f"sha256 {S}",
    "slice": f"slice 6 {S}",
    "split": f'split "/" {S}',
    "str": f"str {S}",
    "title": f"title {S}",
    "toJson": f"toJson {J}",
    "trim": f"trim {S}",
    "trimPrefix": f'trimPrefix "Tok3n-" {S}',
    "trimSuffix": f'trimSuffix "_Z9" {S}',
    "upper": f"upper {S}",
    "urlquery": f"urlquery {S}",
    "via_var": '.tok | lower | replace "a" "@"',  # through a var, then two functions
}
NO_ARGUMENT = {"now", "uuid"}


def _documented_functions() -> set[str]:
    text = (ROOT / "docs" / "expressions.md").read_text()
    table = text[text.index("<!-- BEGIN FUNCTIONS"):text.index("<!-- END FUNCTIONS")]
    return set(re.findall(r"^\| `([A-Za-z_0-9]+)` \|", table, re.M))


def test_every_documented_function_is_applied_to_a_secret() -> None:
    assert _documented_functions() - NO_ARGUMENT == set(APPLIED) - {"via_var"}


def _yaml_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _playbook(final_failure: bool = False) -> str:
    names = sorted(APPLIED)
    lines = ['name: taint_functions', 'schemaVersion: "1.0.0"', "vars:", "  tok: '{{ secret \"GXO_FN_SECRET\" }}'",
             "workloads:",
             "  - name: computed",
             "    lifecycle: {policy: run_once}",
             "    process:",
             "      module: control:identity",
             "      params:"]
    lines += [f"        f_{n}: {_yaml_str('{{ ' + APPLIED[n] + ' }}')}" for n in names]
    lines += ["    register: computed",
              "  - name: echoed",
              "    lifecycle: {policy: run_once}",
              "    process:",
              "      module: exec",
              "      params:",
              "        command: printf",
              "        args:",
              "          - '%s\\n'"]
    lines += [f"          - {_yaml_str('{{ ' + APPLIED[n] + ' }}')}" for n in names]
    lines += ["    register: echoed",
              "  - name: in_stderr",  # the results in an exec's error (its last stderr line)
              "    lifecycle: {policy: run_once}",
              "    ignore_errors: true",
              "    process:",
              "      module: exec",
              "      params:",
              "        command: /bin/sh",
              "        args:",
              "          - '-c'",
              "          - 'printf \"%s \" \"$@\" >&2; exit 3'",
              "          - sh"]
    lines += [f"          - {_yaml_str('{{ ' + APPLIED[n] + ' }}')}" for n in names]
    for n in names:  # each result in an error message of its own
        lines += [f"  - name: fail_{n}",
                  "    lifecycle: {policy: run_once}",
                  "    ignore_errors: true",
                  "    needs: [echoed]",
                  "    process:",
                  "      module: control:assert",
                  "      params:",
                  "        condition: false",
                  f"        fail_message: {_yaml_str('rejected {{ ' + APPLIED[n] + ' }}')}"]
    if final_failure:  # gxo test: a failure that fails the file, so the JUnit XML holds the run's output
        lines += ["  - name: final",
                  "    lifecycle: {policy: run_once}",
                  "    needs: [echoed]",
                  "    process:",
                  "      module: control:assert",
                  "      params:",
                  "        condition: false",
                  f"        fail_message: {_yaml_str('final {{ ' + APPLIED['upper'] + ' }} {{ .computed.f_sha256 }}')}"]
    return "\n".join(lines) + "\n"


def _results(path: Path) -> dict[str, Any]:
    """What each expression computes, evaluated here by the generated code itself (the values
    the outputs must not show)."""
    from gxo.compiler.inmemory import compile_in_memory
    from gxo.runtime.kernel import ExprContext
    from gxo.runtime.secrets import EnvProvider, Tracker

    with open(os.devnull, "w") as devnull:
        loaded = compile_in_memory(str(path), devnull)
    assert loaded is not None
    ctx = ExprContext(EnvProvider(ENV), Tracker())
    params = loaded.plan.workload("computed").params
    old = os.environ.get("GXO_FN_TARGET")
    os.environ["GXO_FN_TARGET"] = ENV["GXO_FN_TARGET"]  # `env` reads gxo's own environment
    try:
        return {k[2:]: loaded.functions[v["$expr"]]({"tok": SECRET}, ctx) for k, v in params.items()}
    finally:
        if old is None:
            del os.environ["GXO_FN_TARGET"]
        else:
            os.environ["GXO_FN_TARGET"] = old


def _texts(value: Any) -> set[str]:
    """The text (4 characters or more) a result holds: itself, its strings, its JSON form."""
    if isinstance(value, str):
        return {value} if len(value) >= 4 else set()
    if isinstance(value, dict):
        out = {s for v in value.values() for s in _texts(v)} | {k for k in value if len(k) >= 4}
    elif isinstance(value, list):
        out = {s for v in value for s in _texts(v)}
    else:
        return set()  # numbers, booleans, null: not text
    return out | {json.dumps(value, separators=(",", ":"), ensure_ascii=False)}


def _encodings(value: str) -> set[str]:
    data = value.encode()
    b64 = base64.b64encode(data).decode()
    return {value, b64, b64.rstrip("="), quote(value, safe=""), data.hex(), json.dumps(value)[1:-1]}


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, set[str]]]:
    d = tmp_path_factory.mktemp("taint_functions")
    pb = d / "taint_functions.yaml"
    pb.write_text(_playbook())
    test_pb = d / "taint_functions.test.yaml"
    test_pb.write_text(_playbook(final_failure=True))
    results = _results(pb)
    forbidden: dict[str, set[str]] = {}
    for name, value in results.items():
        for text in _texts(value):
            forbidden.setdefault(name, set()).update(_encodings(text))
    return pb, test_pb, forbidden


def test_the_expected_results_are_real(cases) -> None:
    """The values checked below are what the functions give (so the check is not vacuous)."""
    _, _, forbidden = cases
    assert SECRET.upper() in forbidden["upper"] and "pa55word-xyz" in forbidden["get"]
    assert "value-From-Env-31" in forbidden["env"] and "decoded-Secret-77" in forbidden["b64dec"]
    assert "tok3n-@lph@/bet@.g@mm@_z9" in forbidden["via_var"]
    assert {"len", "int", "float", "eq", "bool", "not", "contains"}.isdisjoint(forbidden)  # not text
    with_text = {n for n in APPLIED if n in forbidden}
    assert len(with_text) >= 35, sorted(set(APPLIED) - with_text)


def _assert_clean(blob: bytes, where: str, forbidden: dict[str, set[str]]) -> None:
    text = blob.decode("utf-8", "replace")
    leaks = sorted({(name, form) for name, forms in forbidden.items() for form in forms if form in text})
    assert not leaks, f"{where} shows results computed from a secret: {leaks[:10]}"


@pytest.mark.parametrize("flags", [[], ["--json"], ["-v"], ["-vv"], ["--json", "-vv"]],
                         ids=["plain+recap", "json", "v", "vv", "json-vv"])
def test_gxo_run_shows_no_result(cases, flags: list[str]) -> None:
    pb, _, forbidden = cases
    run = gxo_run(pb, *flags, json_events=False, env=ENV)
    assert run.rc == 0, run.explain()
    _assert_clean(run.raw, f"gxo run {' '.join(flags)}", forbidden)
    if "--json" in flags:
        ends = {e["workload"]: e for e in run.events if e["type"] == "WorkloadEnd"}
        assert ends["echoed"]["final_status"] == "Completed"
        assert ends["in_stderr"]["error"].startswith("command /bin/sh exited with code 3: ")
        assert ends["fail_upper"]["error"] == "rejected [REDACTED]"
        echoed = next(e for e in run.events if e["type"] == "ModuleExecutionEnd" and e["workload"] == "echoed")
        out = echoed["summary"]["stdout_lines"]
        assert out[0] == "[REDACTED]" and len(out) == len(APPLIED) + 1  # `and`: the secret; `println` adds a line
        assert str(len(SECRET)) in out  # `len`: a number, shown
    else:
        assert "PLAY RECAP taint_functions: COMPLETED" in run.stdout
        assert "ignored: fail_upper: rejected [REDACTED]" in run.stdout
        if "-v" in flags or "-vv" in flags:
            assert "         f_upper: [REDACTED]" in run.stdout and "         f_len: 25" in run.stdout


def test_gxo_test_output_and_junit_show_no_result(cases, tmp_path: Path) -> None:
    _, test_pb, forbidden = cases
    junit = tmp_path / "junit.xml"
    res = run_tool("gxo", "test", test_pb, "--junit", junit, env=ENV)
    assert res.rc == 1, res.explain()
    assert res.stdout.startswith("FAIL ")
    xml = junit.read_bytes()
    assert b"final: final [REDACTED] [REDACTED]" in xml and b"ignored: fail_sha256: rejected [REDACTED]" in xml
    _assert_clean(res.raw, "gxo test output", forbidden)
    _assert_clean(xml, "JUnit XML", forbidden)


def test_before_tracking_the_results_would_show(cases) -> None:
    """The scanner itself: a run where the secret is given as a plain var (not a secret, so
    nothing is tainted) shows the same results in clear."""
    pb, _, forbidden = cases
    text = pb.read_text().replace('(secret "GXO_FN_SECRET")', "(.plain)").replace(
        "vars:\n", f"vars:\n  plain: {json.dumps(SECRET)}\n", 1)
    clear = pb.with_name("clear.yaml")
    clear.write_text(text)
    run = gxo_run(clear, "-v", json_events=False, env=ENV)
    assert run.rc == 0, run.explain()
    with pytest.raises(AssertionError):
        _assert_clean(run.raw, "clear", {k: v for k, v in forbidden.items() if k == "upper"})
