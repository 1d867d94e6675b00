"""CPU-bound work cannot outlast --timeout, a workload timeout, SIGTERM or SIGINT.

User-supplied regular expressions run on RE2 (linear time: no catastrophic backtracking), and
code that holds the event loop (a large expression, data:parse, data:format) or a worker
thread (a sync module) is interrupted by the run's guard (gxo.runtime.guard).

The bounds on elapsed time below are hang bounds, not performance assertions: each work load
would run for minutes (or hours) without the guard, and the bound (15 s after a 2 s deadline,
10 s after a signal) is generous enough for a loaded 2-core machine where ``gxo`` itself takes
a second or two to start.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest
from acceptance.harness import build, close_proc, read_events_until, run_tool, spawn

from gxo.runtime import exprlib
from gxo.runtime import regex as rx

#: seconds a stopped run may take to exit after its deadline or a signal (see the module doc)
HANG_BOUND = 15.0

#: ranges over a 1,000-character var three deep: 10^9 iterations, legal and far too long
HEAVY_TEMPLATE = ('{{ range $a := split "" $.big }}{{ range $b := split "" $.big }}'
                  '{{ range $c := split "" $.big }}{{ end }}{{ end }}{{ end }}')


def _playbook(tmp_path: Path, body: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def _heavy(tmp_path: Path, *, module: str = "control:assert", timeout: str | None = None) -> Path:
    if module == "control:assert":
        params = f"        condition: true\n        fail_message: '{HEAVY_TEMPLATE}'\n"
    else:
        params = f"        template: '{HEAVY_TEMPLATE}'\n"
    return _playbook(tmp_path, f"""name: heavy
schemaVersion: "1.0.0"
vars:
  big: "{'x' * 1000}"
workloads:
  - name: spin
    lifecycle: {{policy: run_once}}
{f'    timeout: {timeout}' + chr(10) if timeout else ''}    process:
      module: {module}
      params:
{params}""")


def _catastrophic(tmp_path: Path, n: int) -> Path:
    return _playbook(tmp_path, f"""name: p
schemaVersion: "1.0.0"
vars:
  s: "{'a' * n}!"
  t: "{'a' * n}"
workloads:
  - name: bang
    lifecycle: {{policy: run_once}}
    process:
      module: control:assert
      params:
        condition: '{{{{ not (regex_match "^(a+)+$" .s) }}}}'
  - name: plain
    lifecycle: {{policy: run_once}}
    process:
      module: control:assert
      params:
        condition: '{{{{ regex_match "^(a+)+$" .t }}}}'
""")


# -- RE2: the catastrophic pattern is linear --------------------------------------------------


@pytest.mark.parametrize("n", [29, 39])
def test_catastrophic_regex_answers_at_once(n: int) -> None:
    assert exprlib.fn_regex_match("^(a+)+$", "a" * n + "!") is False
    assert exprlib.fn_regex_match("^(a+)+$", "a" * n) is True
    assert exprlib.fn_regex_replace("^(a+)+$", "x", "a" * n + "!") == "a" * n + "!"


@pytest.mark.parametrize("n", [29, 39])
def test_catastrophic_regex_in_a_run(tmp_path: Path, n: int) -> None:
    # with a backtracking engine the first workload alone would run for minutes (n=29) or
    # years (n=39); run_tool's own timeout is the hang bound
    res = run_tool("gxo", "run", "--timeout", "30s", _catastrophic(tmp_path, n), timeout=60)
    assert res.rc == 0, res.explain()


def test_regex_dialect_matches_python_for_common_patterns() -> None:
    cases = [("^v[0-9]+", "v1.2.3"), ("[.]example[.]com$", "h.example.com"), ("a|b", "xxbxa"),
             ("x*", "axxb"), (r"(\w+)=(\d+)", "a=1 bb=22 c=x"), (r"(?P<k>\w+)=(?P<v>[^ ]*)", "k=é1 b=ü c="),
             ("é+", "aééb€é"), ("(a)|(b)", "ab"), ("(?i)HeLLo", "say hello"), ("", "ab"),
             ("x*", "éxxé€"), ("(é)(x)?", "éxé€é"), ("(?m)^é(.)$", "éa\nb\néc")]
    for pattern, text in cases:
        py, mine = re.compile(pattern), rx.compile(pattern)
        assert mine.test(text) == (py.search(text) is not None), pattern
        want = [[m.span(i) for i in range(py.groups + 1)] for m in py.finditer(text)]
        got = [[tuple(s) for s in spans] for _, spans in mine.finditer(text)]
        assert got == want, pattern
        for repl in ("<\\g<0>>", "é\\n", "\\\\", "\\.", "\\101", "[\\1]" if py.groups else "-"):
            assert mine.sub(repl, text) == py.sub(repl, text), (pattern, repl)


@pytest.mark.parametrize("pattern, words", [
    (r"(a)\1", "no backreferences"),
    (r"a(?=b)", "no lookahead"),
    (r"(?<!a)b", "no lookahead or lookbehind"),
    (r"a\Z", r"\z for the end"),
])
def test_unsupported_pattern_says_why(pattern: str, words: str) -> None:
    with pytest.raises(rx.RegexError, match=re.escape(words)):
        rx.compile(pattern)
    with pytest.raises(exprlib.EvalError, match="RE2 syntax"):
        exprlib.fn_regex_match(pattern, "ab")


def test_unsupported_literal_pattern_is_a_check_error(tmp_path: Path) -> None:
    pb = _playbook(tmp_path, """name: p
schemaVersion: "1.0.0"
vars:
  s: "aa"
workloads:
  - name: a
    lifecycle: {policy: run_once}
    process:
      module: control:assert
      params:
        condition: '{{ regex_match `(a)\\1` .s }}'
""")
    res = run_tool("gxoc", "check", pb, cwd=tmp_path)
    assert res.rc == 1
    assert "p.yaml:11:36: error[invalid-regex]: invalid regular expression for 'regex_match': " \
           "invalid escape sequence: \\1 (RE2 has no backreferences)" in res.stdout + res.stderr


def test_unsupported_pattern_at_run_time_fails_its_workload(tmp_path: Path) -> None:
    pb = _playbook(tmp_path, """name: p
schemaVersion: "1.0.0"
vars:
  pat: "(a)\\\\1"
workloads:
  - name: a
    lifecycle: {policy: run_once}
    process:
      module: control:assert
      params:
        condition: '{{ regex_match .pat "aa" }}'
""")
    res = run_tool("gxo", "run", pb, "--json", timeout=60)
    assert res.rc == 1, res.explain()
    (end,) = res.of("WorkloadEnd", "a")
    assert "invalid regular expression" in end["error"] and "RE2 syntax" in end["error"], end


# -- timeouts and signals during CPU-bound work ------------------------------------------------


def _timed(argv: list, **kw) -> tuple[object, float]:
    t0 = time.monotonic()
    res = run_tool(*argv, timeout=120, **kw)
    return res, time.monotonic() - t0


def test_run_timeout_stops_a_cpu_bound_expression(tmp_path: Path) -> None:
    plan = build(_heavy(tmp_path), tmp_path)
    res, took = _timed(["gxo", "exec", plan, "--timeout", "2s", "--json"])
    assert res.rc == 124, res.explain()
    assert took < 2 + HANG_BOUND, took
    (end,) = res.of("WorkloadEnd", "spin")
    assert "run timed out after 2s" in end["error"]


def test_run_timeout_stops_a_cpu_bound_sync_module_thread(tmp_path: Path) -> None:
    # template:render runs in a worker thread (the workload has a timeout of its own): the
    # thread is interrupted too, so the process does not wait for it to finish
    plan = build(_heavy(tmp_path, module="template:render", timeout="1h"), tmp_path)
    res, took = _timed(["gxo", "exec", plan, "--timeout", "2s"])
    assert res.rc == 124, res.explain()
    assert took < 2 + HANG_BOUND, took


def test_workload_timeout_stops_a_cpu_bound_sync_module(tmp_path: Path) -> None:
    plan = build(_heavy(tmp_path, module="template:render", timeout="2s"), tmp_path)
    res, took = _timed(["gxo", "exec", plan, "--json"])
    assert res.rc == 1, res.explain()
    assert took < 2 + HANG_BOUND, took
    (end,) = res.of("WorkloadEnd", "spin")
    assert end["final_status"] == "Failed" and end["error"] == "timed out after 2s", end


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_a_cpu_bound_expression(tmp_path: Path, sig: signal.Signals, code: int) -> None:
    plan = build(_heavy(tmp_path), tmp_path)
    proc = spawn("gxo", "exec", plan, "--json")
    try:
        read_events_until(proc, lambda e: e.get("type") == "WorkloadStatusChanged"
                          and e.get("workload") == "spin" and e.get("new_status") == "Running")
        time.sleep(0.5)  # well inside the expression
        t0 = time.monotonic()
        proc.send_signal(sig)
        assert proc.wait(HANG_BOUND) == code
        assert time.monotonic() - t0 < HANG_BOUND
    finally:
        close_proc(proc)


def _stream(tmp_path: Path, *, parse_timeout: str | None, format_timeout: str | None,
            size: int, fmt: str) -> Path:
    def timeout(t: str | None) -> str:
        return f"    timeout: {t}\n" if t else ""

    return _playbook(tmp_path, f"""name: stream
schemaVersion: "1.0.0"
vars:
  big: "{'x' * size}"
workloads:
  - name: parse
    lifecycle: {{policy: run_once}}
{timeout(parse_timeout)}    process:
      module: data:parse
      params:
        content: '{{{{ range $a := split "" $.big }}}}{{{{ range $b := split "" $.big }}}}id=1 {{{{ end }}}}{{{{ end }}}}'
        format: regex
        format_options:
          pattern: 'id=(?P<id>[0-9]+)'
  - name: fmt
    lifecycle: {{policy: run_once}}
{timeout(format_timeout)}    stream_inputs: [parse]
    process:
      module: data:format
      params:
        format: {fmt}
""")


def test_data_parse_regex_overrunning_its_timeout_is_stopped(tmp_path: Path) -> None:
    # 9 million matches in 45 MB of text: far more than 2 s of work in one step
    plan = build(_stream(tmp_path, parse_timeout="2s", format_timeout=None, size=3000, fmt="csv"), tmp_path)
    res, took = _timed(["gxo", "exec", plan, "--json"])
    assert res.rc == 1, res.explain()
    assert took < 2 + HANG_BOUND, took
    (end,) = res.of("WorkloadEnd", "parse")
    assert end["final_status"] == "Failed" and end["error"] == "timed out after 2s", end


def test_data_format_overrunning_its_timeout_is_stopped(tmp_path: Path) -> None:
    # half a million records serialised as YAML: about a minute of work after the input ends
    plan = build(_stream(tmp_path, parse_timeout=None, format_timeout="2s", size=700, fmt="yaml"), tmp_path)
    res, took = _timed(["gxo", "exec", plan, "--json"])
    assert res.rc == 1, res.explain()
    assert took < 2 + HANG_BOUND + 10, took  # the producer's own parse comes first (10 s at most)
    (end,) = res.of("WorkloadEnd", "fmt")
    assert end["final_status"] == "Failed" and end["error"] == "timed out after 2s", end


def test_data_parse_regex_on_re2_keeps_its_records() -> None:
    from gxo.stdlib.data import _parse_regex

    content = "é=1\nb=22\nnot a pair\nc=\n"
    assert _parse_regex(content, {"pattern": r"^(?P<k>\S+)=(?P<v>[0-9]*)(x)?$"}) == [
        {"k": "é", "v": "1", "group3": None}, {"k": "b", "v": "22", "group3": None},
        {"k": "c", "v": "", "group3": None}]
    assert _parse_regex("a1 b2", {"pattern": "[a-z][0-9]"}) == [{"match": "a1"}, {"match": "b2"}]


def test_guard_interrupts_a_blocking_call_and_spares_the_cleanup() -> None:
    """A loop held by a blocking call (no await, no bytecode) is poked out of it at the run
    deadline; the main task's own cleanup after the stop is not interrupted."""
    import asyncio

    from gxo.runtime.guard import Guard

    stopped: list = []
    cleaned: list = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()

        def stop(cause, reason) -> bool:
            stopped.append(cause)
            if asyncio.current_task() is not task:
                task.cancel()
            return True

        guard = Guard(loop, stop, 1.0)
        guard.main = task
        guard.start()
        try:
            async def blocker() -> None:
                time.sleep(600)  # holds the loop: only the poke's EINTR ends it

            await loop.create_task(blocker())
        finally:
            time.sleep(1.5)  # cleanup that holds the loop longer than a probe waits
            cleaned.append(True)
            guard.close()

    t0 = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
    assert stopped == ["timeout"] and cleaned == [True]
    assert time.monotonic() - t0 < HANG_BOUND
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the run's handlers are gone
