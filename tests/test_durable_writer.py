"""Commits on the store's writer thread: a pure workload starts while the commit of what ended
before it is written, a workload with effects waits for it (gxo.runtime.durable).

The store is the real SQLite store; a subclass holds a chosen workload's commit at a gate, so
that the order of starts and commits can be observed.
"""

from __future__ import annotations

import asyncio
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from gxo.runtime.durable import Recorder
from gxo.runtime.store.sqlite import SqliteStore
from kernel_util import build, run


class GatedStore(SqliteStore):
    """A SQLite store whose commit of ``held`` waits for ``gate``; ``done`` records when each
    workload's commit returned."""

    def __init__(self, path: str, held: str = "") -> None:
        super().__init__(path)
        self.held = held
        self.gate = threading.Event()
        self.done: dict[str, float] = {}
        self.threads: set[str] = set()

    def commit_workloads(self, run_id: str, rows: Any) -> None:
        rows = list(rows)
        self.threads.add(threading.current_thread().name)
        if any(r[0] == self.held for r in rows):
            assert self.gate.wait(10), "the gate was never opened"
        super().commit_workloads(run_id, rows)
        for r in rows:
            self.done[r[0]] = time.time()


def test_flush_behind_returns_at_once_and_keeps_the_order(tmp_path: Path) -> None:
    store = GatedStore(str(tmp_path / "s.db"), held="a")
    store.begin_run("r1", "p", "digest", 1.0)
    errors: list[str] = []

    async def main() -> None:
        rec = Recorder(store, "r1", errors.append)
        rec.ended("a", "Completed", None, "a", {"stdout": "x" * 100_000}, 1.0, 2.0)
        rec.flush_behind()
        rec.ended("b", "Completed", None, None, None, 2.0, 3.0)
        rec.flush_behind()
        await asyncio.sleep(0.05)
        assert store.done == {}  # a's commit waits at the gate; b's waits behind it
        assert store.load_run("r1").workloads == {}
        store.gate.set()
        rec.flush()  # waits for both
        assert list(store.done) == ["a", "b"]
        rec.close()

    asyncio.run(main())
    run = store.load_run("r1")
    assert run.workloads["a"].register_value == {"stdout": "x" * 100_000}
    assert run.workloads["b"].status == "Completed"
    assert errors == [] and any(t.startswith("gxo-store") for t in store.threads)
    store.close()


def test_a_small_commit_is_made_at_once_without_a_thread(tmp_path: Path) -> None:
    store = GatedStore(str(tmp_path / "s.db"))
    store.begin_run("r1", "p", "digest", 1.0)

    async def main() -> None:
        rec = Recorder(store, "r1")
        rec.ended("a", "Completed", None, "a", {"stdout": "x" * 1000, "exit_code": 0}, 1.0, 2.0)
        rec.flush_behind()
        assert list(store.done) == ["a"] and rec._writer is None  # committed, here
        rec.close()

    asyncio.run(main())
    assert store.threads == {threading.main_thread().name}
    store.close()


def test_a_failed_commit_behind_is_reported_in_the_loop(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    store.begin_run("r1", "p", "digest", 1.0)
    seen: list[tuple[str, str]] = []

    async def main() -> None:
        rec = Recorder(store, "wrong-run", lambda msg: seen.append((threading.current_thread().name, msg)))
        rec.ended("a", "Completed", None, "a", "x" * 100_000, 1.0, 2.0)  # large: written behind
        rec.flush_behind()
        rec.wait()
        await asyncio.sleep(0)  # the report was handed to the loop's thread
        await asyncio.sleep(0)
        assert rec.error is not None and "could not be written" in rec.error
        rec.ended("b", "Completed", None, None, None, 2.0, 3.0)
        rec.flush_behind()  # after a failure nothing more is written
        rec.close()

    asyncio.run(main())
    assert len(seen) == 1 and seen[0][0] == threading.main_thread().name
    assert "could not be written" in seen[0][1]
    store.close()


PLAYBOOK = """\
name: order
schemaVersion: "1.0.0"
workloads:
  - name: make
    lifecycle: {policy: run_once}
    process: {module: exec, params: {command: seq, args: ["1", "20000"]}}
    register: made
  - name: count
    lifecycle: {policy: run_once}
    process: {module: data:parse, params: {content: "{{ .made.stdout }}", format: text_lines}}
  - name: sink
    lifecycle: {policy: run_once}
    stream_inputs: [count]
    process: {module: passthrough}
  - name: after
    lifecycle: {policy: run_once}
    needs: [sink]
    process: {module: exec, params: {command: "true"}}
"""


def test_a_pure_workload_starts_before_the_commit_an_effect_waits_for_it(tmp_path: Path) -> None:
    store = GatedStore(str(tmp_path / "s.db"), held="make")
    started: dict[str, float] = {}

    def note(event: dict[str, Any]) -> None:
        if event.get("new_status") == "Running":
            started[event["workload"]] = time.time()
            if event["workload"] == "count":  # the pure consumer runs: let make's commit go on
                threading.Timer(0.2, store.gate.set).start()

    note.types = frozenset({"WorkloadStatusChanged"})  # type: ignore[attr-defined]
    kernel, report = run(build(textwrap.dedent(PLAYBOOK)), note, store=store, plan_digest="digest")
    assert not report.failed, [(n, r.status, r.reason) for n, r in kernel.results.items()]
    # count (data:parse, pure) started while make's commit was held; after (exec) only after it
    assert started["count"] < store.done["make"]
    assert started["after"] >= store.done["make"] and started["after"] >= store.done["sink"]
    done = store.load_run(kernel.run_id)
    assert done.status == "Completed" and set(done.workloads) == {"make", "count", "sink", "after"}
    assert done.workloads["make"].register_value["stdout"].endswith("19999\n20000")
    store.close()
