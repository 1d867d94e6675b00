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

    types = frozenset({"WorkloadEnd", "WorkloadRetry", "Log"})

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._flush_pending = False

    def __call__(self, event: dict[str, Any]) -> None:
        t = event["type"]
        if t == "WorkloadEnd":
            status = event["final_status"]
            label = "ignored" if event.get("ignored") else _LABEL.get(status, status.lower())
            line = f"{label:<8} {event['workload']} ({event['duration_ms'] / 1000:.2f}s)"
            if event.get("error"):
                line += f": {event['error']}"
            self.stream.write(line + "\n")
        elif t == "WorkloadRetry":
            self.stream.write(f"retry    {event['workload']} attempt {event['attempt']}/{event['attempts']} "
                              f"failed, next in {event['wait_s']}s: {event['error']}\n")
        elif t == "Log" and event.get("level") in ("WARN", "ERROR"):
            self.stream.write(f"{event['level'].lower():<8} {event['workload']}: {event['message']}\n")
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
    """On a terminal: a table of workloads and their states, refreshed as events arrive."""

    def __init__(self, names: list[str], stream: IO[str]) -> None:
        from rich.console import Console
        from rich.live import Live

        self.status = {n: PENDING for n in names}
        self.started: dict[str, float] = {}
        self.notes: dict[str, str] = {}
        self.links: dict[str, tuple[float, int, float, int]] = {}  # link -> (time, records out, rate, dropped)
        self.held: dict[str, int] = {}  # workload -> operator state entries (join tables, windows)
        self.console = Console(file=stream)
        self.live = Live(self._table(), console=self.console, refresh_per_second=8, transient=False)

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
        else:
            return
        self.live.update(self._table())

    def _table(self) -> Any:
        from rich.table import Table

        style = {COMPLETED: "green", FAILED: "red", SKIPPED: "yellow", "Running": "cyan", PENDING: "dim"}
        table = Table(show_header=True, header_style="bold", box=None)
        table.add_column("workload")
        table.add_column("status")
        table.add_column("time", justify="right")
        table.add_column("")
        now = time.time()
        for name, st in self.status.items():
            running = st == "Running"
            secs = f"{now - self.started[name]:.1f}s" if name in self.started and running else ""
            note = self.notes.get(name, "")
            if running and not note and self.held.get(name):
                note = f"holding {self.held[name]:,} state entries"
            table.add_row(name, f"[{style.get(st, '')}]{st}[/]", secs, note)
        for key, (_, out, rate, dropped) in self.links.items():
            extra = f", {dropped:,} dropped" if dropped else ""
            table.add_row(f"[dim]{key}[/]", f"{out:,} records", f"{rate:,.0f}/s" if rate else "", extra)
        return table


def recap(report: Report, redact: Any) -> str:
    """The final summary: problems first, then counts and the duration."""
    counts = {"ok": 0, "changed": 0, "failed": 0, "ignored": 0, "skipped": 0, "not run": 0}
    lines: list[str] = []
    for res in report.results.values():
        if res.status == COMPLETED:
            counts["ok"] += 1
            counts["changed"] += res.changed
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
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(out) + "\n")


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
