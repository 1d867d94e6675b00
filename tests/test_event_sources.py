"""The event sources of the lifecycle release, against the real modules: ``exec`` with
``stdout_records`` (a program's stdout lines as records while it runs) and ``test:producer``
with ``interval`` (a timed source, unbounded without ``count``).  Records are read from a real
``Channel``; plans run through ``gxo run``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gxo.runtime._channel_cy import Channel
from gxo.runtime.module import Context, ModuleError, load_module_class
from gxo.runtime.streams import StreamOutput
from gxo.runtime.workspace import Workspace


class Log:
    def debug(self, msg, **a): pass  # noqa: E704
    def info(self, msg, **a): pass  # noqa: E704
    def warning(self, msg, **a): pass  # noqa: E704
    def error(self, msg, **a): pass  # noqa: E704


@pytest.fixture
def ws(tmp_path):
    w = Workspace.create(str(tmp_path / "wsroot"))
    yield w
    w.remove()


def make_ctx(ws: Workspace, tmp_path: Path, channel: Channel | None) -> Context:
    ctx = Context(workload="w", run_id="run1", logger=Log(), workspace=ws, state=dict, dry_run=False,
                  plan_dir=str(tmp_path), on_run_end=lambda _fn: None)
    if channel is not None:
        ctx.extras["output"] = StreamOutput(channel, batch_size=100, flush_interval=0.01)
    return ctx


async def _records_until(channel: Channel, n: int, limit_s: float = 20.0) -> list[dict]:
    """Read batches until ``n`` records have come (bounded in real time, no timing asserted)."""
    got: list[dict] = []
    deadline = time.monotonic() + limit_s
    while len(got) < n:
        assert time.monotonic() < deadline, f"only {len(got)} of {n} records came: {got}"
        batch = channel.poll()
        if batch is None:
            await asyncio.sleep(0.01)
            continue
        got.extend(batch)
    return got


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _gone(pids: list[int]) -> bool:
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not any(_alive(p) for p in pids)


# --------------------------------------------------------------------------- exec stdout_records


def test_exec_stdout_records_stream_while_the_program_runs(ws, tmp_path):
    """The first line arrives while the program still waits for the test's go; the summary keeps
    stderr and the exit code, not the stdout that went to the stream."""
    script = ("printf 'first\\n'; while [ ! -e go ]; do sleep 0.01; done; "
              "printf 'b\\r\\n\\nlast without newline'; echo oops >&2")
    channel = Channel(capacity=100)

    async def main():
        task = asyncio.ensure_future(load_module_class("exec")().perform(
            make_ctx(ws, tmp_path, channel), {"command": "sh", "args": ["-c", script], "stdout_records": True}))
        first = await _records_until(channel, 1)
        assert first == [{"line": "first"}] and not task.done()
        Path(ws.path, "go").touch()
        summary = await task
        rest = []
        while (batch := channel.poll()) is not None:
            rest.extend(batch)
        return summary, first + rest

    summary, records = asyncio.run(main())
    assert records == [{"line": "first"}, {"line": "b"}, {"line": ""}, {"line": "last without newline"}]
    assert summary == {"stdout": "", "stderr": "oops", "stdout_lines": [], "exit_code": 0}


def test_exec_stdout_records_failure_keeps_its_summary(ws, tmp_path):
    channel = Channel(capacity=100)

    async def main():
        with pytest.raises(ModuleError) as info:
            await load_module_class("exec")().perform(
                make_ctx(ws, tmp_path, channel),
                {"command": "sh", "args": ["-c", "echo one; echo bad >&2; exit 3"], "stdout_records": True})
        return info.value

    err = asyncio.run(main())
    assert "exited with code 3: bad" in str(err)
    assert err.summary["exit_code"] == 3 and err.summary["stdout"] == ""
    assert channel.poll() == [{"line": "one"}]


def test_exec_stdout_records_without_consumer_discards(ws, tmp_path):
    summary = asyncio.run(load_module_class("exec")().perform(
        make_ctx(ws, tmp_path, None), {"command": "sh", "args": ["-c", "seq 1 5000"], "stdout_records": True}))
    assert summary["exit_code"] == 0 and summary["stdout"] == ""


def test_exec_stdout_records_cancelled_kills_its_group(ws, tmp_path):
    """A cancelled source (a stop of the run) takes its whole process group down at once."""
    channel = Channel(capacity=100)
    script = "sleep 100 & echo $!; echo $$; sleep 100"

    async def main():
        task = asyncio.ensure_future(load_module_class("exec")().perform(
            make_ctx(ws, tmp_path, channel), {"command": "sh", "args": ["-c", script], "stdout_records": True}))
        pids = [int(r["line"]) for r in await _records_until(channel, 2)]
        assert all(_alive(p) for p in pids)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 20)
        return pids

    assert _gone(asyncio.run(main()))


def test_exec_stdout_records_back_pressure_does_not_lose_lines(ws, tmp_path):
    """A small channel read slowly: the program waits on its pipe, every line arrives in order."""
    channel = Channel(capacity=1)

    async def main():
        ctx = make_ctx(ws, tmp_path, channel)
        ctx.extras["output"] = StreamOutput(channel, batch_size=7, flush_interval=0.01)
        task = asyncio.ensure_future(load_module_class("exec")().perform(
            ctx, {"command": "sh", "args": ["-c", "seq 1 2000"], "stdout_records": True}))
        got = []
        while not (task.done() and channel.buffered == 0):
            batch = channel.poll()
            if batch is None:
                await asyncio.sleep(0.001)
            else:
                got.extend(batch)
        await task
        while (batch := channel.poll()) is not None:
            got.extend(batch)
        return got

    got = asyncio.run(main())
    assert [int(r["line"]) for r in got] == list(range(1, 2001))


# --------------------------------------------------------------------------- test:producer interval


def test_producer_interval_without_count_runs_until_cancelled(ws, tmp_path):
    channel = Channel(capacity=100)

    async def main():
        task = asyncio.ensure_future(load_module_class("test:producer")().perform(
            make_ctx(ws, tmp_path, channel), {"interval": "1ms", "template": {"constant": True}}))
        got = await _records_until(channel, 5)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 20)
        return got

    got = asyncio.run(main())
    assert got[:5] == [{"constant": True}] * 5


def test_producer_interval_with_count_stops_after_count(ws, tmp_path):
    channel = Channel(capacity=100)
    ctx = make_ctx(ws, tmp_path, channel)

    async def main():
        summary = await load_module_class("test:producer")().perform(
            ctx, {"interval": "1ms", "count": 3, "template": {"n": 1}})
        await ctx.extras["output"].flush()  # as the kernel does after perform
        return summary

    summary = asyncio.run(main())
    got = []
    while (batch := channel.poll()) is not None:
        got.extend(batch)
    assert summary == {"records_sent": 3} and got == [{"n": 1}] * 3


def test_producer_refuses_template_alone_and_records_with_count(ws, tmp_path):
    from gxo.runtime.module import ValidationError

    for params in ({"template": {"n": 1}}, {"records": [{"a": 1}], "count": 1, "template": {}}):
        with pytest.raises(ValidationError):
            asyncio.run(load_module_class("test:producer")().perform(make_ctx(ws, tmp_path, None), params))


# --------------------------------------------------------------------------- through gxo run


def _gxo(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("gxo")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NO_COLOR": "1"})


def test_gxo_run_streams_exec_lines_to_a_consumer(tmp_path):
    (tmp_path / "pb.yaml").write_text("""\
name: lines
schemaVersion: "1.0.0"
workloads:
  - name: src
    lifecycle: {policy: run_once}
    process:
      module: exec
      params: {command: sh, args: ["-c", "printf 'a\\\\nb\\\\r\\\\n\\\\nc'; echo err >&2"], stdout_records: true}
    register: src
  - name: fmt
    lifecycle: {policy: run_once}
    stream_inputs: [src]
    process: {module: data:format, params: {format: json}}
    register: out
  - name: check
    lifecycle: {policy: run_once}
    process:
      module: control:assert
      params:
        condition: >-
          {{ .out.formatted_content }} == "[{\\"line\\":\\"a\\"},{\\"line\\":\\"b\\"},{\\"line\\":\\"\\"},{\\"line\\":\\"c\\"}]"
          and {{ .src.stdout }} == "" and {{ .src.stderr }} == "err" and {{ len .src.stdout_lines }} == 0
""", encoding="utf-8")
    p = _gxo(["run", "pb.yaml"], tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "stream src -> fmt: in=4 out=4" in p.stdout


def test_gxo_run_timed_producer_is_cut_by_its_timeout(tmp_path):
    """An unbounded timed producer is cancelled by the workload timeout: the run ends, the
    consumer has the records sent before."""
    (tmp_path / "pb.yaml").write_text("""\
name: timed
schemaVersion: "1.0.0"
workloads:
  - name: tick
    lifecycle: {policy: run_once}
    timeout: 300ms
    ignore_errors: true
    process: {module: test:producer, params: {interval: 10ms, template: '{"n": {{ .index }}}'}}
""", encoding="utf-8")
    p = _gxo(["run", "pb.yaml"], tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "timed out" in (p.stdout + p.stderr).lower() or "timeout" in (p.stdout + p.stderr).lower()


def test_producer_unbounded_stays_cancellable_when_every_record_fails(ws, tmp_path):
    """A template that fails on every record still waits each tick: the loop is never starved."""
    channel = Channel(capacity=100)

    async def main():
        ctx = make_ctx(ws, tmp_path, channel)

        def render(_scope):
            raise ValueError("no record here")

        task = asyncio.ensure_future(load_module_class("test:producer")().perform(
            ctx, {"interval": "1ms", "template": render}))
        for _ in range(20):
            await asyncio.sleep(0.002)  # the loop gets its turns while the producer runs
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 20)
        return channel.poll()

    assert asyncio.run(main()) is None
