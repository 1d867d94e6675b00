"""Fuzzing: YAML documents, expression strings and CLI arguments never crash gxoc.

Every run must end with exit code 0, 1 or 2 and print no traceback ("bug in gxo" = exit 70
fails these tests).  2,000 examples per target, derandomised so CI is repeatable.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gxo.compiler.cli import main
from gxo.compiler.pipeline import check_source

FUZZ = settings(max_examples=2000, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

KEYS = ["name", "schemaVersion", "vars", "workloads", "lifecycle", "policy", "process", "module",
        "params", "register", "when", "loop", "loop_control", "loop_var", "parallel", "retry",
        "attempts", "delay", "timeout", "stream_inputs", "needs", "source", "cron", "restart",
        "ignore_errors", "state_policy", "channel_policy", "tasks", "command", "args", "items",
        "template", "condition", "steps", "id", "uses", "with", "path", "content", "on", "join_type"]
WORDS = ["run_once", "supervise", "event_driven", "scheduled", "exec", "passthrough", "data:map",
         "data:filter", "data:join", "control:assert", "control:identity", "stream:pipeline",
         "filesystem:write", "a", "b", "1.0.0", "v2.0.0", "echo", "*/5 * * * *", "yes"]
TEMPLATES = ["{{ .a }}", "{{ .a.b.0 }}", "{{ .x | upper }}", "{{ if .a }}x{{ end }}", "{{", "}}",
             "${SECRET}", "{{ eq .a 1 }} and {{ .b }}", "{{ range .l }}{{ . }}{{ end }}",
             "{{ ._gxo.workloads.a.status }}", "{{ nope 1 }}", "{{ .a == }}", "{{/* c */}}"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=False),
    st.sampled_from(WORDS), st.sampled_from(TEMPLATES), st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    ),
    max_leaves=30,
)


def _workload():
    return st.fixed_dictionaries(
        {"name": st.sampled_from(["a", "b", "c", "bad name"]),
         "lifecycle": st.fixed_dictionaries({"policy": st.sampled_from(WORDS[:4] + ["nope"])}),
         "process": st.fixed_dictionaries({"module": st.sampled_from(WORDS[4:14]),
                                           "params": st.dictionaries(st.sampled_from(KEYS), values, max_size=4)})},
        optional={"register": st.sampled_from(["a", "b", "_gxo_x", "r"]),
                  "when": st.sampled_from(TEMPLATES),
                  "stream_inputs": st.lists(st.sampled_from(["a", "b", "c", "z"]), max_size=3),
                  "needs": st.lists(st.sampled_from(["a", "b", "c"]), max_size=2),
                  "loop": st.one_of(st.sampled_from(TEMPLATES), st.lists(scalars, max_size=3))},
    )


playbooks = st.fixed_dictionaries(
    {"name": st.sampled_from(["p", ""]), "schemaVersion": st.sampled_from(["1.0.0", "2.0.0", "x"]),
     "workloads": st.lists(_workload(), max_size=4)},
    optional={"vars": st.dictionaries(st.sampled_from(["a", "b", "x", "l"]), values, max_size=3)},
)


def _assert_clean(data: bytes) -> None:
    res = check_source(data, "fuzz.yaml")
    from gxo.compiler.diagnostics import render_text

    render_text(res.diags.sorted(), {"fuzz.yaml": res.source})


@FUZZ
@given(playbooks)
def test_fuzz_structured_playbooks(doc) -> None:
    _assert_clean(yaml.safe_dump(doc, sort_keys=False).encode())


@FUZZ
@given(playbooks, st.integers(0, 400), st.binary(min_size=1, max_size=6))
def test_fuzz_mutated_yaml_bytes(doc, pos, junk) -> None:
    data = yaml.safe_dump(doc, sort_keys=False).encode()
    pos = min(pos, len(data))
    _assert_clean(data[:pos] + junk + data[pos:])


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(TEMPLATES), st.text(max_size=8)), min_size=1, max_size=6))
def test_fuzz_expression_strings_in_every_site(pieces) -> None:
    text = "".join(pieces)
    doc = {"name": "p", "schemaVersion": "1.0.0", "vars": {"a": 1, "l": [1]},
           "workloads": [
               {"name": "w", "lifecycle": {"policy": "run_once"}, "when": text,
                "process": {"module": "exec", "params": {"command": "echo", "args": [text]}}, "register": "r"},
               {"name": "m", "lifecycle": {"policy": "run_once"}, "stream_inputs": ["g"],
                "process": {"module": "data:map", "params": {"template": text}}},
               {"name": "g", "lifecycle": {"policy": "run_once"},
                "process": {"module": "data:generate_from_list", "params": {"items": [1, 2]}}},
           ]}
    _assert_clean(yaml.safe_dump(doc, sort_keys=False).encode())


OPTIONS = ["check", "--format", "json", "sarif", "text", "xml", "--color", "always", "never",
           "--warnings-as-errors", "--version", "--help", "-h", "build", "--nope", "pb.yaml",
           "missing.yaml", "dir", "", "-", "--format=json"]


@FUZZ
@given(st.lists(st.sampled_from(OPTIONS), max_size=6))
def test_fuzz_cli_arguments(args) -> None:
    base = Path(os.environ.get("GXO_FUZZ_DIR", "/tmp")) / f"gxo-fuzz-{os.getpid()}"
    (base / "dir").mkdir(parents=True, exist_ok=True)
    (base / "pb.yaml").write_text("name: p\nschemaVersion: '1.0.0'\nworkloads: []\n")
    (base / "dir" / "x.yaml").write_text("name: [\n")
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(base)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(old)
    assert code in (0, 1, 2), (args, code, err.getvalue())
    assert "Traceback" not in out.getvalue() + err.getvalue()
