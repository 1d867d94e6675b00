"""What a run shows: plain progress lines, a live view on a terminal, ``--json`` events, the
recap, and JUnit XML for ``gxo test``.  Every sink receives already-redacted events."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import IO, Any

from gxo.runtime.kernel import COMPLETED, FAILED, PENDING, SKIPPED, Report

_LABEL = {COMPLETED: "ok", FAILED: "failed", SKIPPED: "skipped"}


class JsonSink:
    """``--json``: one event object per line."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def __call__(self, event: dict[str, Any]) -> None:
        self.stream.write(json.dumps(event, ensure_ascii=False, default=str, sort_keys=True) + "\n")
        self.stream.flush()


class PlainSink:
    """One line per finished workload, retry and warning (for logs and CI).

    Lines are flushed once per turn of the event loop rather than one by one: a chain of
    inline workloads that ends within one scheduler step writes its lines in one go, and a
    line never waits longer than the step that wrote it.  Off the loop (a module's thread)
    a line is flushed at once."""

    types: frozenset[str] | None = frozenset({"WorkloadEnd", "WorkloadRetry", "Log", "LifecycleUpdate",
                                              "InstanceFailed"})

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._flush_pending = False

    def __call__(self, event: dict[str, Any]) -> None:
        t = event["type"]
        if t == "WorkloadEnd":
            status = event["final_status"]
            label = "cancelled" if event.get("cancelled") else "ignored" if event.get("ignored") \
                else _LABEL.get(status, status.lower())
            line = f"{label:<8} {event['workload']} ({event['duration_ms'] / 1000:.2f}s)"
            if event.get("error"):
                line += f": {event['error']}"
            self.stream.write(line + "\n")
        elif t == "WorkloadRetry":
            self.stream.write(f"retry    {event['workload']} attempt {event['attempt']}/{event['attempts']} "
                              f"failed, next in {event['wait_s']}s: {event['error']}\n")
        elif t == "Log" and event.get("level") in ("WARN", "ERROR"):
            self.stream.write(f"{event['level'].lower():<8} {event['workload']}: {event['message']}\n")
        elif t == "InstanceFailed":
            self.stream.write(f"failed   {event['workload']} instance: {event['error']}\n")
        elif t == "LifecycleUpdate" and event.get("next_fires"):
            self.stream.write(f"schedule {event['workload']}: next fires at {', '.join(event['next_fires'])}\n")
        elif t == "LifecycleUpdate" and event.get("policy") == "supervise" and event.get("next_attempt") \
                and event.get("last_exit"):
            line = lifecycle_note(event)
            self.stream.write(f"{'restart' if 'restart in' in line else 'running':<8} {event['workload']}: {line}\n")
        else:
            return
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on the loop's thread: nobody would flush later
            self.stream.flush()
            return
        self._flush_pending = True
        loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        self.stream.flush()


class LiveView:
    """On a terminal: a table of workloads and their states, refreshed as events arrive and
    eight times a second (the elapsed time of running workloads ticks)."""

    def __init__(self, names: list[str], stream: IO[str]) -> None:
        from rich.console import Console
        from rich.live import Live

        self.status = {n: PENDING for n in names}
        self.started: dict[str, float] = {}
        self.notes: dict[str, str] = {}
        self.links: dict[str, tuple[float, int, float, int]] = {}  # link -> (time, records out, rate, dropped)
        self.held: dict[str, int] = {}  # workload -> operator state entries (join tables, windows)
        self.console = Console(file=stream)
        # the table is rebuilt at each refresh (8 a second), so running workloads' timers tick
        self.live = Live(console=self.console, refresh_per_second=8, transient=False, get_renderable=self._table)

    def __enter__(self) -> "LiveView":
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.update(self._table())
        self.live.__exit__(*exc)

    def __call__(self, event: dict[str, Any]) -> None:
        t = event["type"]
        if t == "WorkloadStatusChanged":
            self.status[event["workload"]] = event["new_status"]
            if event["new_status"] == "Running":
                self.started[event["workload"]] = time.time()
        elif t == "WorkloadEnd":
            if event.get("ignored"):
                self.notes[event["workload"]] = "ignored"
            if event.get("error"):
                self.notes[event["workload"]] = str(event["error"])[:80]
        elif t == "WorkloadRetry":
            self.notes[event["workload"]] = f"retry {event['attempt']}/{event['attempts']}"
        elif t == "LifecycleUpdate":
            self.notes[event["workload"]] = lifecycle_note(event)[:80]
        elif t in ("StreamProgress", "PlaybookEnd") and event.get("streams"):
            now = event["timestamp"]
            for link in event["streams"]:
                key = f"{link['producer']} -> {link['consumer']}"
                last = self.links.get(key)
                rate = 0.0
                if last is not None and now > last[0]:
                    rate = (link["records_out"] - last[1]) / (now - last[0])
                self.links[key] = (now, link["records_out"], rate, link["records_dropped"])
            if t == "StreamProgress":
                self.held = dict(event.get("operator_state") or {})
        # the live display picks the change up at its next refresh (within 1/8 s)

    def _table(self) -> Any:
        from rich.table import Table

        style = {COMPLETED: "green", FAILED: "red", SKIPPED: "yellow", "Running": "cyan", PENDING: "dim"}
        table = Table(show_header=True, header_style="bold", box=None)
        table.add_column("workload")
        table.add_column("status")
        table.add_column("time", justify="right")
        table.add_column("")
        now = time.time()
        # copies: the refresh thread renders while events arrive on the run's thread
        for name, st in list(self.status.items()):
            running = st == "Running"
            secs = f"{now - self.started[name]:.1f}s" if name in self.started and running else ""
            note = self.notes.get(name, "")
            if running and not note and self.held.get(name):
                note = f"holding {self.held[name]:,} state entries"
            table.add_row(name, f"[{style.get(st, '')}]{st}[/]", secs, note)
        for key, (_, out, rate, dropped) in list(self.links.items()):
            extra = f", {dropped:,} dropped" if dropped else ""
            table.add_row(f"[dim]{key}[/]", f"{out:,} records", f"{rate:,.0f}/s" if rate else "", extra)
        return table


def lifecycle_note(event: dict[str, Any]) -> str:
    """What a ``LifecycleUpdate`` says of a long-running workload, in a few words."""
    parts: list[str] = []
    policy = event.get("policy")
    if policy == "supervise":
        nxt = event.get("next_attempt")
        if event.get("last_exit"):
            if nxt and "reconciled" not in event["last_exit"]:
                parts.append(f"restart in {max(0.0, nxt - event['timestamp']):.1f}s "
                             f"(restarts: {event.get('restarts', 0)}), last: {event['last_exit']}")
            elif nxt:
                parts.append(f"{event['last_exit']}, next pass in {max(0.0, nxt - event['timestamp']):.0f}s")
            else:
                parts.append(f"last: {event['last_exit']}")
    elif policy == "scheduled":
        if event.get("next_fire"):
            parts.append("next " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event["next_fire"])))
        parts.append(f"{event.get('instances_ok', 0)} ok, {event.get('instances_failed', 0)} failed"
                     + (f", {event['skipped']} skipped" if event.get("skipped") else ""))
    elif policy == "event_driven":
        parts.append(f"{event.get('instances_ok', 0):,} ok, {event.get('instances_failed', 0):,} failed, "
                     f"{event.get('running', 0)} running")
    return "; ".join(parts)


def recap(report: Report, redact: Any) -> str:
    """The final summary: problems first, then counts and the duration."""
    counts = {"ok": 0, "changed": 0, "failed": 0, "ignored": 0, "cancelled": 0, "skipped": 0, "not run": 0}
    lines: list[str] = []
    for res in report.results.values():
        if res.status == COMPLETED:
            counts["ok"] += 1
            counts["changed"] += res.changed
        elif res.status == FAILED and res.cancelled:  # stopped by the run, not failed itself
            counts["cancelled"] += 1
            lines.append(f"  cancelled: {res.name}: {(res.reason or '').removeprefix('cancelled: ')}")
        elif res.status == FAILED:
            counts["ignored" if res.ignored else "failed"] += 1
            lines.append(f"  {'ignored' if res.ignored else 'failed'}: {res.name}: {res.reason}")
        elif res.status == SKIPPED:
            counts["skipped"] += 1
            if res.reason and res.reason != "when evaluated false":
                lines.append(f"  skipped: {res.name}: {res.reason}")
        else:
            counts["not run"] += 1
            lines.append(f"  not run: {res.name}: {res.reason or 'run stopped'}")
    status = "FAILED" if report.failed else "COMPLETED"
    if report.interrupted:
        status = "INTERRUPTED"
    elif report.timed_out:
        status = "TIMED OUT"
    if report.halted_by is not None:  # the cause first
        cause = [ln for ln in lines if ln.startswith(f"  failed: {report.halted_by}: ")]
        lines = cause + [ln for ln in lines if ln not in cause]
    head = f"PLAY RECAP {report.name}: {status} in {report.ended - report.started:.2f}s"
    if getattr(report, "error", None):
        lines.insert(0, f"  error: {report.error}")
    resumed = getattr(report, "resumed", None)
    if resumed is not None:
        lines.insert(0, f"  resumed run {resumed[0]}: {resumed[1]} workload(s) it had finished were not run again")
    if report.interrupted and getattr(report, "durable", False):
        lines.append(f"  continue it with: gxo exec PLAN --resume {report.run_id}")
    tail = "  " + "  ".join(f"{k}={v}" for k, v in counts.items())
    streams = [f"  stream {s['producer']} -> {s['consumer']}: in={s['records_in']} out={s['records_out']} "
               f"dropped={s['records_dropped']}" for s in report.streams]
    errors = [f"  record errors: {r.name}: {r.record_errors}" for r in report.results.values() if r.record_errors]
    return redact("\n".join([head, *lines, *streams, *errors, tail]) + "\n")


def write_junit(path: str, cases: list[tuple[str, float, str | None, str | None]]) -> None:
    """JUnit XML: one testcase per test file (name, seconds, output of a failed run, cause);
    ``failure`` carries the cause as its message and the run's output as its text."""
    from xml.sax.saxutils import escape, quoteattr

    failures = sum(1 for c in cases if c[2])
    total = sum(c[1] for c in cases)
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<testsuites tests="{len(cases)}" failures="{failures}" time="{total:.3f}">',
           f'  <testsuite name="gxo test" tests="{len(cases)}" failures="{failures}" time="{total:.3f}">']
    for name, secs, err, cause in cases:
        out.append(f"    <testcase classname=\"gxo\" name={quoteattr(name)} time=\"{secs:.3f}\">")
        if err:
            message = _xml_text(cause or err.splitlines()[0])
            out.append(f"      <failure message={quoteattr(message)}>{escape(_xml_text(err))}</failure>")
        out.append("    </testcase>")
    out += ["  </testsuite>", "</testsuites>"]
    from gxo.runtime.files import write_output

    write_output(path, ("\n".join(out) + "\n").encode("utf-8"), option="--junit")


def _xml_text(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot hold (a child's output may have any)."""
    import re

    return re.sub("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]", "\ufffd", text)


def is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def stderr() -> IO[str]:
    return sys.stderr


# --------------------------------------------------------------------------- -v and -vv

#: What ``-v`` shows of one value: at most this many lines, and characters on the whole; the
#: rest is counted ("… (12 more lines)").
DETAIL_LINES = 20
DETAIL_CHARS = 2000
#: Details sit under the workload's name in its status line ("ok       build (0.12s)").
DETAIL_INDENT = " " * 9
_CONTROL = str.maketrans({c: "\ufffd" for c in [*range(0, 9), *range(11, 32), 127]})


#: how an exec child's baseline sandbox is described (gxo.runtime.sandbox.Sandbox.describe)
BASELINE_SANDBOX_TEXT = "seccomp default, no_new_privs on"


class Details:
    """What ``gxo run|exec -v`` shows under each workload's status line: the summary of each
    module execution (``exec``: its stdout and stderr), and with ``-vv`` the rendered params
    first.  It reads the events, which the event bus has already redacted; long values are
    cut with a count of what was left out."""

    def __init__(self, level: int, modules: dict[str, str]) -> None:
        self.level = level
        self.modules = modules  # workload -> module name
        self.runs: dict[str, dict[int | None, dict[str, Any]]] = {}

    def see(self, event: dict[str, Any]) -> bool:
        """Record a module execution's params or summary; False for any other event."""
        t = event["type"]
        if t == "ModuleExecutionStart":
            if "params" in event:
                self.runs.setdefault(event["workload"], {}).setdefault(event.get("loop_iteration"), {})[
                    "params"] = event["params"]
        elif t == "ModuleExecutionEnd":
            self.runs.setdefault(event["workload"], {}).setdefault(event.get("loop_iteration"), {})[
                "summary"] = event.get("summary")
        elif t == "Log" and "sandbox" in event and "workload" in event:
            # an exec child's sandbox, one per workload (every loop item gets the same): -v shows
            # one other than the baseline, -vv every one
            if self.level >= 2 or event["sandbox"] != BASELINE_SANDBOX_TEXT:
                self.runs.setdefault(event["workload"], {}).setdefault(None, {})["sandbox"] = event["sandbox"]
        else:
            return False
        return True

    def lines(self, workload: str) -> list[str]:
        """The detail lines of ``workload`` (indented), forgotten once given."""
        runs = self.runs.pop(workload, {})
        out: list[str] = []
        for index in sorted(runs, key=lambda i: -1 if i is None else i):
            run = runs[index]
            tag = "" if index is None else f"[{index}] "
            if "params" in run:
                out += _field(tag + "params", run["params"])
            if "sandbox" in run:
                out += _field(tag + "sandbox", run["sandbox"])
            if "summary" in run:
                out += self._summary(tag, workload, run["summary"])
        return [DETAIL_INDENT + ln for ln in out]

    def _summary(self, tag: str, workload: str, summary: Any) -> list[str]:
        if self.modules.get(workload) == "exec" and isinstance(summary, dict):
            out: list[str] = []
            for key in ("stdout", "stderr"):
                if summary.get(key):
                    out += _field(tag + key, summary[key])
            return out or [f"{tag}(no output)"]
        if isinstance(summary, dict) and summary:
            return [ln for k, v in summary.items() for ln in _field(f"{tag}{k}", v)]
        return _field(tag + "summary", summary)


def _field(key: str, value: Any) -> list[str]:
    """``key: value``; a value of several lines continues under its first line."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str,
                                                           separators=(",", ":"))
    body = cut(text).split("\n")
    pad = " " * (len(key) + 2)
    return [f"{key}: {body[0]}", *(pad + ln for ln in body[1:])]


def cut(text: str, max_lines: int = DETAIL_LINES, max_chars: int = DETAIL_CHARS) -> str:
    """``text`` without control characters, cut to ``max_lines`` lines and ``max_chars``
    characters, saying how much was cut."""
    text = text.replace("\r\n", "\n").translate(_CONTROL)
    lines = text.split("\n")
    more_lines = max(0, len(lines) - max_lines)
    shown = "\n".join(lines[:max_lines])
    if len(shown) > max_chars:
        shown = shown[:max_chars] + f"… ({len(shown) - max_chars:,} more characters)"
    if more_lines:
        shown += f"\n… ({more_lines:,} more lines)"
    return shown


class VerbosePlainSink(PlainSink):
    """``-v`` on plain output: each workload's details right under its status line."""

    types = None  # every event: the details come from the module's start and end events

    def __init__(self, stream: IO[str], details: Details) -> None:
        super().__init__(stream)
        self.details = details

    def __call__(self, event: dict[str, Any]) -> None:
        if self.details.see(event):
            return
        super().__call__(event)
        if event["type"] == "WorkloadEnd":
            lines = self.details.lines(event["workload"])
            if lines:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()


class VerboseLiveView(LiveView):
    """``-v`` on a terminal: the live table, then each workload's details once it is done."""

    def __init__(self, names: list[str], stream: IO[str], details: Details) -> None:
        super().__init__(names, stream)
        self.details = details

    def __call__(self, event: dict[str, Any]) -> None:
        if not self.details.see(event):
            super().__call__(event)

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        from rich.text import Text

        for name in self.status:
            lines = self.details.lines(name)
            if lines:
                self.console.print(Text(name, style="bold"))
                self.console.print(Text("\n".join(lines)), soft_wrap=True)
