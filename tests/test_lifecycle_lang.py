"""The lifecycle keys in the language: schema, checker diagnostics (codes and positions),
lowering into the plan IR, the IR's decoding, event sources and their channels, `gxoc show`."""

from __future__ import annotations

import re
import textwrap
from datetime import datetime
from pathlib import Path

import msgspec
import pytest
from golden_util import run_gxoc
from gxo.compiler.cli_build import schedule_line
from gxo.compiler.emit import build_plan, emit_gxp
from gxo.compiler.pipeline import check_source
from gxo.runtime import plan as P

HEAD = 'name: lc\nschemaVersion: "1.0.0"\nworkloads:\n'


def check(workloads: str):
    text = HEAD + textwrap.dedent(workloads)
    return check_source(text.encode(), "pb.yaml"), text


def problems(workloads: str) -> list[tuple[str, int, int, str]]:
    """(code, line, col, message) of every diagnostic but the not-implemented refusals of the
    policies themselves (the runtime's managers lift them)."""
    result, _ = check(workloads)
    return [(d.code, d.span.line, d.span.col, d.message) for d in result.diags.sorted()
            if not (d.code == "not-implemented" and "lifecycle policy" in d.message)]


def helps(workloads: str) -> list[str]:
    result, _ = check(workloads)
    return [d.help or "" for d in result.diags.sorted() if d.code != "not-implemented"]


def lowered(workloads: str) -> P.Plan:
    result, _ = check(workloads)
    errors = [d.message for d in result.diags.items if d.severity == "error" and d.code != "not-implemented"]
    assert not errors, errors
    result.diags.items = [d for d in result.diags.items if d.code != "not-implemented"]
    return build_plan(result).plan


def col(workloads: str, line: int, needle: str) -> int:
    """The 1-based column of ``needle`` on ``line`` of the playbook that ``check`` builds."""
    text = HEAD + textwrap.dedent(workloads)
    return text.splitlines()[line - 1].index(needle) + 1


EXEC = "process: {module: exec, params: {command: date}}"
MANAGE = "process: {module: filesystem:manage, params: {path: app.conf, state: present, content: x}}"


# --------------------------------------------------------------------------- each key with its policy


@pytest.mark.parametrize(("key", "value", "owner", "policy"), [
    ("healthy_after", "5s", "supervise", "run_once"),
    ("interval", "1m", "supervise", "run_once"),
    ("concurrency", "2", "event_driven", "supervise"),
    ("timezone", "UTC", "scheduled", "supervise"),
    ("overlap", "queue", "scheduled", "run_once"),
    ("misfire", "run_once", "scheduled", "supervise"),
])
def test_key_only_with_its_policy(key: str, value: str, owner: str, policy: str) -> None:
    wl = f"""\
      - name: w
        lifecycle: {{policy: {policy}, {key}: {value}}}
        {EXEC}
    """
    assert problems(wl) == [("lifecycle-unsupported", 5, col(wl, 5, key + ":"),
                             f"'{key}' applies only to policy {owner}, not {policy.split(',')[0]}")]


def test_stop_timeout_belongs_to_every_long_running_policy() -> None:
    """Every long-running workload is stopped on SIGTERM: its program gets ``stop_timeout``
    before SIGKILL, whichever policy started it; a run_once workload is cancelled at once."""
    for policy in ("supervise, restart: always", "scheduled, cron: '@daily'", "event_driven, source: src"):
        wl = f"""\
      - name: src
        lifecycle: {{policy: supervise, restart: always}}
        process: {{module: exec, params: {{command: tail, args: ["-F", "x"], stdout_records: true}}}}
      - name: w
        lifecycle: {{policy: {policy}, stop_timeout: 5s}}
        {EXEC}
    """
        assert problems(wl) == [], policy
    wl = f"""\
      - name: w
        lifecycle: {{policy: run_once, stop_timeout: 5s}}
        {EXEC}
    """
    assert problems(wl) == [("lifecycle-unsupported", 5, col(wl, 5, "stop_timeout:"),
                             "'stop_timeout' applies only to the long-running policies (supervise, scheduled, "
                             "event_driven), not run_once")]


def test_every_key_accepted_with_its_policy() -> None:
    assert problems(f"""\
      - name: srv
        lifecycle: {{policy: supervise, restart: always, healthy_after: 30s, stop_timeout: 2s,
                     backoff: {{base: 100ms}}}}
        process: {{module: exec, params: {{command: tail, args: [-F, log], stdout_records: true}}}}
      - name: conf
        lifecycle: {{policy: supervise, interval: 15s}}
        {MANAGE}
      - name: on_line
        lifecycle: {{policy: event_driven, source: srv, concurrency: 2}}
        process: {{module: exec, params: {{command: echo, args: ["{{{{ .line }}}}"]}}}}
      - name: nightly
        lifecycle: {{policy: scheduled, cron: "0 30 2 * * *", timezone: Europe/Berlin, overlap: queue,
                     misfire: run_once}}
        {EXEC}
    """) == []


def test_interval_needs_a_reconciler() -> None:
    wl = f"""\
      - name: srv
        lifecycle: {{policy: supervise, interval: 1m}}
        {EXEC}
    """
    assert problems(wl) == [("lifecycle-unsupported", 5, col(wl, 5, "interval"),
                             "'interval' re-runs a reconciler; module 'exec' is supervised as a long-running "
                             "process, restarted per restart/backoff")]
    assert helps(wl) == ["remove 'interval'; modules that reconcile on an interval: filesystem:manage"]


def test_interval_must_be_positive() -> None:
    wl = f"""\
      - name: conf
        lifecycle: {{policy: supervise, interval: 0s}}
        {MANAGE}
    """
    assert problems(wl) == [("invalid-value", 5, col(wl, 5, "0s"), "lifecycle.interval must be longer than 0s")]


@pytest.mark.parametrize(("key", "value", "word"), [
    ("healthy_after", "10", "is not in the required form"),
    ("stop_timeout", "soon", "is not in the required form"),
])
def test_durations_are_checked_by_the_schema(key: str, value: str, word: str) -> None:
    got = problems(f"""\
      - name: srv
        lifecycle: {{policy: supervise, {key}: "{value}"}}
        {EXEC}
    """)
    assert [(c, ln) for c, ln, _, _ in got] == [("invalid-value", 5)]
    assert word in got[0][3]


def test_concurrency_at_least_one_and_enums() -> None:
    got = problems("""\
      - name: src
        lifecycle: {policy: run_once}
        process: {module: test:producer, params: {interval: 1s, template: '{"n": 1}'}}
      - name: handler
        lifecycle: {policy: event_driven, source: src, concurrency: 0}
        process: {module: exec, params: {command: date}}
      - name: tick
        lifecycle: {policy: scheduled, cron: "@hourly", overlap: wait, misfire: run_all}
        process: {module: exec, params: {command: date}}
    """)
    assert [(c, ln, m.split(",")[0]) for c, ln, _, m in got] == [
        ("invalid-value", 8, "workloads[1].lifecycle.concurrency must be at least 1"),
        ("invalid-value", 11, "workloads[2].lifecycle.overlap must be one of \"skip\""),
        ("invalid-value", 11, "workloads[2].lifecycle.misfire must be one of \"skip\""),
    ]


# --------------------------------------------------------------------------- cron and timezone


@pytest.mark.parametrize(("cron", "bad", "words"), [
    ("61 * * * *", "61", "minute field '61' is not valid"),
    ("0 61 * * *", "61", "hour field '61' is not valid"),
    ("0 0 * * * 8", "8", "day-of-week field '8' is not valid"),
    ("0 0 * JUNE *", "JUNE", "month field 'JUNE' is not valid"),
    ("* * * *", "* * * *", "got 4"),
    ("@reboot", "@reboot", "unknown schedule alias '@reboot'"),
    ("@every 90", "90", "'90' is not a duration"),
    ("@every 0s", "0s", "positive duration"),
    ("0 0 31 2 *", "0 0 31 2 *", "never fires"),
])
def test_invalid_cron_points_at_the_bad_part(cron: str, bad: str, words: str) -> None:
    wl = f"""\
      - name: tick
        lifecycle:
          policy: scheduled
          cron: "{cron}"
        {EXEC}
    """
    got = problems(wl)
    text = HEAD + textwrap.dedent(wl)
    line = 7
    start = text.splitlines()[line - 1].index('"') + 1 + cron.rindex(bad) + 1
    assert [(c, ln, cl) for c, ln, cl, _ in got] == [("invalid-value", line, start)]
    assert words in got[0][3] and got[0][3].startswith(f"cron '{cron}': ")


def test_cron_position_in_a_single_quoted_flow_value() -> None:
    got = problems("""\
      - name: tick
        lifecycle: {policy: scheduled, cron: '*/5 * 32 * *'}
        process: {module: exec, params: {command: date}}
    """)
    assert [(c, ln, cl) for c, ln, cl, _ in got] == [("invalid-value", 5, 47)]  # the '32'


def test_valid_crons() -> None:
    for cron in ("*/5 * * * *", "0 */10 * * * *", "@daily", "@midnight", "@annually", "@every 1h30m",
                 "0 9 * * MON-FRI"):
        assert problems(f"""\
          - name: tick
            lifecycle: {{policy: scheduled, cron: "{cron}"}}
            {EXEC}
        """) == [], cron


def test_missing_cron_help_names_every_form() -> None:
    wl = f"""\
      - name: tick
        lifecycle: {{policy: scheduled}}
        {EXEC}
    """
    assert [c for c, *_ in problems(wl)] == ["invalid-value"]
    assert "@every" in helps(wl)[0] and "seconds first" in helps(wl)[0]


def test_unknown_timezone_at_its_value_with_a_hint() -> None:
    wl = f"""\
      - name: tick
        lifecycle: {{policy: scheduled, cron: "@daily", timezone: Europe/Berln}}
        {EXEC}
    """
    assert problems(wl) == [("invalid-value", 5, col(wl, 5, "Europe"), "timezone: unknown time zone 'Europe/Berln'")]
    assert helps(wl) == ["did you mean 'Europe/Berlin'?"]


# --------------------------------------------------------------------------- event sources


def test_exec_is_an_event_source_with_stdout_records_only() -> None:
    wl = """\
      - name: watcher
        lifecycle: {policy: supervise}
        process: {module: exec, params: {command: tail, args: [-F, log]}}
      - name: on_line
        lifecycle: {policy: event_driven, source: watcher}
        process: {module: exec, params: {command: echo}}
    """
    assert problems(wl) == [("stream-input", 8, col(wl, 8, "watcher"), "source 'watcher' (exec) produces no "
                                                                     "records to start instances from")]
    assert helps(wl) == ["set stdout_records: true in the params of 'watcher' to make records of its output"]
    assert problems(wl.replace("[-F, log]}", "[-F, log], stdout_records: true}")) == []


def test_stdout_records_must_be_a_literal() -> None:
    wl = """\
      - name: watcher
        lifecycle: {policy: supervise}
        process: {module: exec, params: {command: tail, stdout_records: "{{ true }}"}}
    """
    assert problems(wl) == [("invalid-value", 6, col(wl, 6, '"{{'),
                             "'stdout_records' must be a literal true or false, not a template")]


def test_event_sources_by_module() -> None:
    ok = """\
      - name: src
        lifecycle: {policy: run_once}
        process: {module: test:producer, params: {interval: 10ms, template: '{"n": {{ .index }}}'}}
      - name: handler
        lifecycle: {policy: event_driven, source: src}
        process: {module: exec, params: {command: echo, args: ["{{ .n }}"]}}
    """
    assert problems(ok) == []
    not_a_source = ok.replace("module: test:producer, params: {interval: 10ms, template: '{\"n\": {{ .index }}}'}",
                              "module: data:generate_from_list, params: {items: [{n: 1}]}")
    assert [c for c, *_ in problems(not_a_source)] == ["lifecycle-unsupported"]


def test_event_record_fields_are_typed_from_the_source() -> None:
    got = problems("""\
      - name: watcher
        lifecycle: {policy: supervise}
        process: {module: exec, params: {command: tail, stdout_records: true}}
      - name: on_line
        lifecycle: {policy: event_driven, source: watcher}
        process: {module: exec, params: {command: echo, args: ["{{ .lin }}"]}}
    """)
    assert [(c, ln) for c, ln, _, _ in got] == [("undefined-name", 9)]


def test_stream_inputs_from_exec_need_stdout_records() -> None:
    wl = """\
      - name: src
        lifecycle: {policy: run_once}
        process: {module: exec, params: {command: ls}}
      - name: fmt
        lifecycle: {policy: run_once}
        stream_inputs: [src]
        process: {module: data:format, params: {format: json}}
    """
    assert [(c, ln) for c, ln, _, _ in problems(wl)] == [("stream-input", 9)]
    assert helps(wl) == ["set stdout_records: true in the params of 'src' to stream its output"]
    assert problems(wl.replace("command: ls}", "command: ls, stdout_records: true}")) == []


# --------------------------------------------------------------------------- lowering and the IR


ALL = f"""\
  - name: srv
    lifecycle: {{policy: supervise}}
    process: {{module: exec, params: {{command: tail, args: [-F, log], stdout_records: true}}}}
  - name: srv_tuned
    lifecycle: {{policy: supervise, restart: always, healthy_after: 1m, stop_timeout: 500ms}}
    {EXEC}
  - name: conf
    lifecycle: {{policy: supervise}}
    {MANAGE}
  - name: conf_tuned
    lifecycle: {{policy: supervise, interval: 5m}}
    {MANAGE}
  - name: on_line
    lifecycle: {{policy: event_driven, source: srv, concurrency: 3, stop_timeout: 2s}}
    process: {{module: exec, params: {{command: echo, args: ["{{{{ .line }}}}"]}}}}
  - name: nightly
    lifecycle: {{policy: scheduled, cron: "30 2 * * *", timezone: Europe/Berlin, overlap: allow, misfire: run_once,
                 stop_timeout: 1m}}
    {EXEC}
  - name: often
    lifecycle: {{policy: scheduled, cron: "@every 90s"}}
    {EXEC}
  - name: once
    lifecycle: {{policy: run_once}}
    {EXEC}
"""


def test_lowering_defaults_and_values() -> None:
    plan = lowered(ALL)
    lc = {w.name: w.lifecycle for w in plan.workloads}
    backoff = P.Backoff()
    assert lc["srv"] == P.Lifecycle(policy="supervise", restart="on_failure", backoff=backoff, healthy_after=10.0,
                                    interval=None, stop_timeout=10.0)
    assert lc["srv_tuned"] == P.Lifecycle(policy="supervise", restart="always", backoff=backoff, healthy_after=60.0,
                                          stop_timeout=0.5)
    assert lc["conf"].interval == 30.0 and lc["conf_tuned"].interval == 300.0
    assert lc["on_line"] == P.Lifecycle(policy="event_driven", source="srv", concurrency=3, stop_timeout=2.0)
    assert lc["nightly"] == P.Lifecycle(policy="scheduled", cron="30 2 * * *", timezone="Europe/Berlin",
                                        overlap="allow", misfire="run_once", stop_timeout=60.0)
    assert lc["often"] == P.Lifecycle(policy="scheduled", cron="@every 90s", timezone=None, overlap="skip",
                                      misfire="skip")
    assert lc["once"] == P.Lifecycle(policy="run_once")
    assert (lc["once"].concurrency, lc["once"].overlap, lc["once"].misfire) == (8, "skip", "skip")


def test_event_source_is_a_stream_channel() -> None:
    plan = lowered(ALL)
    assert [(c.producer, c.consumer, c.record_type) for c in plan.channels] == [("srv", "on_line", "map{line: str}")]
    assert [(e.source, e.target, e.kinds) for e in plan.edges] == [("srv", "on_line", ("stream",))]
    # a consumer starts with its producer: the stream edge is no dependency
    assert plan.workload("on_line").deps == ()
    assert plan.workload("srv").params["stdout_records"] is True


def test_ir_round_trip_and_older_manifests_decode() -> None:
    plan = lowered(ALL)
    assert P.decode_plan(P.encode_manifest(plan)) == plan
    # a key that holds its default is not written (format 3), and decodes to its default
    data = msgspec.json.decode(P.encode_manifest(plan))
    defaults = {f.name: f.default for f in msgspec.structs.fields(P.Lifecycle)}
    written = [(w["name"], key, value) for w in data["workloads"] for key, value in w["lifecycle"].items()]
    assert ("on_line", "concurrency", 3) in written and ("srv", "policy", "supervise") in written
    assert not [(name, key) for name, key, value in written if value == defaults[key]]
    for w in data["workloads"]:
        for key in ("healthy_after", "interval", "stop_timeout", "timezone", "overlap", "misfire", "concurrency"):
            w["lifecycle"].pop(key, None)
    old = P.decode_plan(msgspec.json.encode(data))
    srv = old.workload("srv_tuned").lifecycle
    assert (srv.healthy_after, srv.interval, srv.stop_timeout) == (10.0, None, 10.0)
    nightly = old.workload("nightly").lifecycle
    assert (nightly.timezone, nightly.overlap, nightly.misfire, nightly.cron) == (None, "skip", "skip", "30 2 * * *")
    assert old.workload("on_line").lifecycle.concurrency == 8


def test_ir_refuses_unknown_lifecycle_fields() -> None:
    data = msgspec.json.decode(P.encode_manifest(lowered(ALL)))
    data["workloads"][0]["lifecycle"]["jitter_seconds"] = 1
    with pytest.raises(P.PlanFormatError, match=r"lifecycle"):
        P.decode_plan(msgspec.json.encode(data))


# --------------------------------------------------------------------------- gxoc show


def test_schedule_line_lists_the_next_fires() -> None:
    now = datetime.fromisoformat("2026-12-06T09:00:00+01:00").timestamp()
    plan = lowered(ALL)
    assert schedule_line(plan.workload("nightly").lifecycle, now) == (
        "schedule '30 2 * * *' (Europe/Berlin; overlap allow, misfire run_once); next: "
        "2026-12-07T02:30:00+01:00, 2026-12-08T02:30:00+01:00, 2026-12-09T02:30:00+01:00")
    line = schedule_line(P.Lifecycle(policy="scheduled", cron="@every 90s", timezone="UTC"), now)
    assert line.endswith("next: 2026-12-06T08:01:30+00:00, 2026-12-06T08:03:00+00:00, 2026-12-06T08:04:30+00:00")


def test_gxoc_show_prints_next_fire_times(tmp_path: Path) -> None:
    text = HEAD + ALL
    result = check_source(text.encode(), "pb.yaml")
    result.diags.items = [d for d in result.diags.items if d.code != "not-implemented"]
    emit_gxp(str(tmp_path / "pb.gxp"), build_plan(result))
    code, out, err = run_gxoc(["show", "pb.gxp"], tmp_path)
    assert code == 0, err
    lines = out.splitlines()
    at = next(i for i, ln in enumerate(lines) if re.match(r"  \[\d+\] nightly: exec \(scheduled\)", ln))
    iso = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?[+-]\d\d:\d\d"
    assert re.fullmatch(rf"      schedule '30 2 \* \* \*' \(Europe/Berlin; overlap allow, misfire run_once\); "
                        rf"next: {iso}, {iso}, {iso}", lines[at + 1]), lines[at + 1]
    assert re.search(r"T02:30:00\+0[12]:00", lines[at + 1])
    assert "channel srv -> on_line" in out
    # only scheduled workloads get the line
    assert sum("schedule '" in ln for ln in lines) == 2
