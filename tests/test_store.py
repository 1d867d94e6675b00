"""The run-history store (``gxo.runtime.store``): one suite over the in-memory backend, the SQLite
backend and the sealed SQLite backend, then what only the durable one does (layout, schema,
sealing, rekey, corrupt files)."""

from __future__ import annotations

import base64
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gxo.runtime.secrets import Tracker
from gxo.runtime.store import (
    INTERRUPTED,
    RESUMED,
    RUNNING,
    MemoryStore,
    SqliteStore,
    StoreError,
    StoreRefused,
    UnknownRun,
    database_path,
    default_state_dir,
    list_databases,
    new_run_id,
    open_store,
)
from gxo.runtime.store.memory import MemoryData
from gxo.runtime.store.sealing import load_key_file, parse_key, resolve_key
from gxo.runtime.store.sqlite import SCHEMA_VERSION, rekey

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
PLAN = "deploy"
DIGEST = "sha256:" + "ab" * 32
VALUE = {"stdout": "hello", "exit_code": 0, "nested": {"list": [1, 2.5, None, True, "é"]}, "failed": False}

Opener = Callable[[], Any]


@pytest.fixture(params=["memory", "sqlite", "sealed"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """A function that opens a store over one history: each call acts out a new process."""
    opened: list[Any] = []
    data = MemoryData()

    def open_one() -> Any:
        if request.param == "memory":
            s: Any = MemoryStore(data)
        else:
            s = open_store(PLAN, str(tmp_path / "state"), KEY if request.param == "sealed" else None)
        opened.append(s)
        return s

    yield open_one
    for s in opened:
        s.close()


# -- the interface, on every backend ----------------------------------------------------------------


def test_commit_and_load(opener: Opener) -> None:
    s = opener()
    s.begin_run("r1", PLAN, DIGEST, 100.0)
    s.commit_workload("r1", "fetch", "Completed", None, "fetched", VALUE, 100.5, 101.0)
    s.commit_workload("r1", "check", "Failed", "condition false", "checked", {"failed": True, "error": "x"}, 101, 102)
    s.commit_workload("r1", "late", "Skipped", "dependency failed", None, "ignored without a key", None, 102.0)
    run = s.load_run("r1")
    assert (run.run_id, run.plan_name, run.plan_digest, run.started, run.ended) == ("r1", PLAN, DIGEST, 100.0, None)
    assert run.statuses == {"fetch": "Completed", "check": "Failed", "late": "Skipped"}
    assert run.reasons == {"fetch": None, "check": "condition false", "late": "dependency failed"}
    assert run.registers == {"fetched": VALUE, "checked": {"failed": True, "error": "x"}}
    assert run.workloads["late"].register_value is None and run.workloads["late"].started is None
    assert run.workloads["fetch"].duration == 0.5
    assert run.status == RUNNING and run.failures == 1 and not run.finished
    run.registers["fetched"]["stdout"] = "changed"  # handed-out values are copies
    assert s.load_run("r1").registers["fetched"] == VALUE


def test_recommit_replaces(opener: Opener) -> None:
    s = opener()
    s.begin_run("r1", PLAN, DIGEST, 1.0)
    s.commit_workload("r1", "a", "Failed", "first", "ra", {"n": 1}, 1.0, 2.0)
    s.commit_workload("r1", "b", "Completed", None, "rb", {"n": 2}, 1.0, 2.0)
    s.commit_workload("r1", "a", "Completed", None, "ra", {"n": 3}, 3.0, 4.0)
    run = s.load_run("r1")
    assert list(run.workloads) == ["b", "a"]
    assert run.registers == {"rb": {"n": 2}, "ra": {"n": 3}} and run.reasons["a"] is None


def test_commit_many_in_one_transaction(opener: Opener) -> None:
    s = opener()
    s.begin_run("r1", PLAN, DIGEST, 1.0)
    s.commit_workload("r1", "a", "Failed", "first", "ra", 0, 1.0, 2.0)
    s.commit_workloads("r1", [("b", "Completed", None, "rb", {"n": 1}, 2.0, 2.0),
                              ("a", "Completed", None, "ra", {"n": 2}, 2.0, 2.0),
                              ("c", "Skipped", "when is false", None, "dropped", None, 2.0)])
    s.commit_workloads("r1", [])
    run = s.load_run("r1")
    assert list(run.workloads) == ["b", "a", "c"]
    assert run.registers == {"rb": {"n": 1}, "ra": {"n": 2}} and run.reasons["c"] == "when is false"
    with pytest.raises(UnknownRun):
        s.commit_workloads("nope", [("a", "Completed", None, None, None, 1.0, 2.0)])


def test_end_run_and_listing(opener: Opener) -> None:
    s = opener()
    s.begin_run("old", PLAN, DIGEST, 10.0)
    s.end_run("old", "COMPLETED", 12.5, 0)
    s.begin_run("new", PLAN, DIGEST, 20.0)
    s.commit_workload("new", "a", "Failed", "boom", None, None, 20.0, 21.0)
    s.end_run("new", "FAILED", 21.0, 1)
    runs = s.list_runs()
    assert [(r.run_id, r.status, r.failures, r.duration) for r in runs] == [
        ("new", "FAILED", 1, 1.0), ("old", "COMPLETED", 0, 2.5)]
    assert runs[0].as_json()["plan"] == PLAN and s.load_run("old").finished
    assert s.latest_run(PLAN) == "new" and s.latest_run("other") is None
    assert s.interrupted_run(PLAN) is None


def test_unknown_run(opener: Opener) -> None:
    s = opener()
    with pytest.raises(UnknownRun):
        s.load_run("nope")
    with pytest.raises(UnknownRun):
        s.commit_workload("nope", "a", "Completed", None, None, None, 1.0, 2.0)
    with pytest.raises(UnknownRun):
        s.end_run("nope", "COMPLETED", 1.0, 0)
    s.begin_run("r1", PLAN, DIGEST, 1.0)
    with pytest.raises(StoreRefused, match="exists already"):
        s.begin_run("r1", PLAN, DIGEST, 1.0)


def test_interrupted_and_resumed(opener: Opener) -> None:
    first = opener()
    first.begin_run("r1", PLAN, DIGEST, 1.0)
    first.commit_workload("r1", "a", "Completed", None, "ra", {"v": 1}, 1.0, 2.0)
    first.save_operator_state("r1", "join", {"regions": {"build": {"k": [1]}}, "cells": {}})
    first.set_restarts("r1", "svc", 2, 1.5)
    assert first.interrupted_run(PLAN) is None  # its store is open: running
    assert first.list_runs()[0].status == RUNNING
    first.close()  # closed without an end: a stopped run

    second = opener()
    assert second.interrupted_run(PLAN) == "r1" and second.latest_run(PLAN) == "r1"
    assert second.list_runs()[0].status == INTERRUPTED
    with pytest.raises(StoreRefused, match="different plan"):
        second.begin_run("r2", PLAN, "sha256:other", 5.0, resumed_from="r1")
    with pytest.raises(UnknownRun):
        second.begin_run("r2", PLAN, DIGEST, 5.0, resumed_from="r0")
    second.begin_run("r2", PLAN, DIGEST, 5.0, resumed_from="r1")
    run = second.load_run("r2")
    assert run.resumed_from == "r1" and run.registers == {"ra": {"v": 1}} and run.statuses == {"a": "Completed"}
    assert second.load_operator_state("r2", "join") == {"regions": {"build": {"k": [1]}}, "cells": {}}
    assert second.restarts("r2", "svc") == (2, 1.5)
    old = second.load_run("r1")
    assert (old.status, old.ended) == (RESUMED, 2.0)
    assert second.interrupted_run(PLAN) is None
    with pytest.raises(StoreRefused, match="not interrupted"):
        second.begin_run("r3", PLAN, DIGEST, 6.0, resumed_from="r1")
    second.commit_workload("r2", "b", "Completed", None, "rb", 2, 5.0, 6.0)
    second.end_run("r2", "COMPLETED", 6.0, 0)
    assert second.interrupted_run(PLAN) is None


def test_an_ended_run_hides_older_interrupted_ones(opener: Opener) -> None:
    s = opener()
    s.begin_run("r1", PLAN, DIGEST, 1.0)
    s.close()
    s = opener()
    s.begin_run("r2", PLAN, DIGEST, 2.0)
    s.end_run("r2", "COMPLETED", 3.0, 0)
    assert s.interrupted_run(PLAN) is None
    assert [r.status for r in s.list_runs()] == ["COMPLETED", INTERRUPTED]


def test_operator_state_schedule_restarts(opener: Opener) -> None:
    s = opener()
    s.begin_run("r1", PLAN, DIGEST, 1.0)
    assert s.load_operator_state("r1", "agg") is None
    snap = {"regions": {"w": {"k": {"sum": 3}}}, "cells": {"held": 2}, "children": {}}
    s.save_operator_state("r1", "agg", snap)
    s.save_operator_state("r1", "agg", {**snap, "cells": {"held": 3}})
    assert s.load_operator_state("r1", "agg")["cells"] == {"held": 3}
    assert s.last_fire(PLAN, "backup") is None
    s.set_last_fire(PLAN, "backup", 1700000000.25)
    assert s.last_fire(PLAN, "backup") == 1700000000.25
    assert s.restarts("r1", "svc") is None
    s.set_restarts("r1", "svc", 4, 99.5)
    assert s.restarts("r1", "svc") == (4, 99.5)
    s.close()
    s = opener()
    assert s.last_fire(PLAN, "backup") == 1700000000.25  # last fires outlive runs


def test_prune_keeps_the_newest_ended_runs_and_every_unended_one(opener: Opener) -> None:
    s = opener()
    for i in range(1, 6):  # r1..r5 end, oldest first
        run = f"r{i}"
        s.begin_run(run, PLAN, DIGEST, float(i * 10))
        s.commit_workload(run, "w", "Completed", None, "out", {"i": i}, float(i * 10), float(i * 10 + 1))
        s.save_operator_state(run, "agg", {"cells": {"held": i}})
        s.set_restarts(run, "svc", i, 1.0)
        s.end_run(run, "COMPLETED", float(i * 10 + 2), 0)
    s.begin_run("other", "another plan", DIGEST, 1.0)
    s.end_run("other", "COMPLETED", 2.0, 0)
    s.set_last_fire(PLAN, "backup", 5.0)
    s.close()
    s = opener()
    s.begin_run("r0", PLAN, DIGEST, 0.5)  # the oldest run never ended: interrupted once closed
    s.close()
    s = opener()
    assert s.prune_runs(PLAN, keep=2, dry_run=True) == ["r1", "r2", "r3"]
    assert [r.run_id for r in s.list_runs() if r.plan_name == PLAN] == ["r5", "r4", "r3", "r2", "r1", "r0"]
    assert s.prune_runs(PLAN, keep=2) == ["r1", "r2", "r3"]
    runs = [r.run_id for r in s.list_runs()]
    assert [r for r in runs if r != "other"] == ["r5", "r4", "r0"]  # r0 has no end: never removed
    if "other" not in runs:  # the SQLite backend keeps one plan per database: the other plan is its own file
        assert isinstance(s, SqliteStore)
    for gone in ("r1", "r2", "r3"):
        with pytest.raises(UnknownRun):
            s.load_run(gone)
        assert s.load_operator_state(gone, "agg") is None
        assert s.restarts(gone, "svc") is None
    assert s.load_run("r4").registers == {"out": {"i": 4}}
    assert s.load_operator_state("r5", "agg") == {"cells": {"held": 5}}
    assert s.restarts("r5", "svc") == (5, 1.0)
    assert s.last_fire(PLAN, "backup") == 5.0  # the schedule belongs to the plan, not to a run
    assert s.prune_runs(PLAN, keep=2) == []
    assert s.prune_runs(PLAN, ended_before=52.0) == ["r4"]  # r4 ended at 42, r5 at 52
    assert s.prune_runs(PLAN, keep=0) == ["r5"]
    assert [r.run_id for r in s.list_runs() if r.plan_name == PLAN] == ["r0"]


def test_prune_then_vacuum_gives_the_space_back(tmp_path: Path) -> None:
    s = open_store(PLAN, str(tmp_path / "state"), None)
    big = "x" * 2_000_000
    for i in range(3):
        s.begin_run(f"r{i}", PLAN, DIGEST, float(i))
        s.commit_workload(f"r{i}", "w", "Completed", None, "out", {"stdout": big}, float(i), float(i))
        s.end_run(f"r{i}", "COMPLETED", float(i), 0)
    s.close()
    s = open_store(PLAN, str(tmp_path / "state"), None)
    path = s.path
    assert os.path.getsize(path) > 5_000_000
    assert s.prune_runs(PLAN, keep=1) == ["r0", "r1"]
    s.vacuum()
    assert os.path.getsize(path) < 3_000_000
    assert s.integrity_check() == "ok"
    assert s.load_run("r2").registers["out"]["stdout"] == big
    s.close()


def test_store_holds_only_what_the_tracker_redacted(opener: Opener, tmp_path: Path) -> None:
    """The contract of ``base``: the kernel passes redacted values, so a secret never reaches the
    store (nor the disk, sealed or not)."""
    secret = "hunter2-Sup3r-s3cret"
    tracker = Tracker()
    tracker.add(secret)
    register = {"stdout": f"token={secret}\n", "headers": {"authorization": f"Bearer {secret}"}}
    s = opener()
    s.begin_run("r1", PLAN, DIGEST, 1.0)
    s.commit_workload("r1", "login", "Failed", tracker.redact(f"401 for {secret}"), "login",
                      tracker.redact_value(register), 1.0, 2.0)
    s.save_operator_state("r1", "login", tracker.redact_value({"cells": {"last": secret}, "regions": {}}))
    run = s.load_run("r1")
    assert secret not in repr(run.registers) + str(run.reasons) + repr(s.load_operator_state("r1", "login"))
    assert "[REDACTED]" in run.registers["login"]["stdout"]
    for f in (tmp_path / "state").glob("*"):  # none for the memory store
        assert secret.encode() not in f.read_bytes()


# -- the durable store --------------------------------------------------------------------------------


def test_layout(tmp_path: Path) -> None:
    state = tmp_path / "a" / "state"
    s = open_store("my plan/../x", str(state))
    s.begin_run("r", "my plan/../x", DIGEST, 1.0)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    db = Path(s.path)
    assert db.parent == state and db.name.startswith("my_plan_.._x-") and db.suffix == ".db"
    for f in state.iterdir():  # the database and its -wal/-shm files
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert database_path(str(state), "a/b") != database_path(str(state), "a_b")
    assert database_path(str(state), "..").startswith(str(state) + "/plan-")
    assert list_databases(str(state)) == [s.path] and list_databases(str(tmp_path / "none")) == []
    assert default_state_dir({"XDG_STATE_HOME": "/x/y"}) == "/x/y/gxo"
    assert default_state_dir({"XDG_STATE_HOME": "rel"}).endswith("/.local/state/gxo")
    con = sqlite3.connect(s.path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == SCHEMA_VERSION
    con.close()
    s.close()
    with pytest.raises(StoreRefused, match="runs of plan"):  # a file renamed to another plan's name
        os.replace(s.path, database_path(str(state), "other"))
        open_store("other", str(state))


def test_newer_schema_refused(tmp_path: Path) -> None:
    s = open_store(PLAN, str(tmp_path))
    s.close()
    con = sqlite3.connect(s.path)
    con.execute("UPDATE meta SET value=? WHERE key='schema_version'", (SCHEMA_VERSION + 1,))
    con.commit()
    con.close()
    with pytest.raises(StoreRefused, match="newer gxo"):
        open_store(PLAN, str(tmp_path))


@pytest.mark.parametrize("content", [b"this is not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 4000])
def test_corrupt_database_is_one_clear_error(tmp_path: Path, content: bytes) -> None:
    path = database_path(str(tmp_path), PLAN)
    Path(path).write_bytes(content)
    with pytest.raises(StoreError) as info:
        open_store(PLAN, str(tmp_path))
    assert path in str(info.value) and "\n" not in str(info.value)


def test_foreign_sqlite_file_refused(tmp_path: Path) -> None:
    path = database_path(str(tmp_path), PLAN)
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="not a gxo state database"):
        open_store(PLAN, str(tmp_path))


def test_commit_many_is_all_or_nothing(tmp_path: Path) -> None:
    s = open_store(PLAN, str(tmp_path))
    s.begin_run("r", PLAN, DIGEST, 1.0)
    with pytest.raises(StoreError, match="register of y"):
        s.commit_workloads("r", [("x", "Completed", None, "rx", 1, 1.0, 2.0),
                                 ("y", "Completed", None, "ry", {1, 2}, 1.0, 2.0)])
    assert s.load_run("r").workloads == {}
    s.close()


def test_value_json_cannot_hold(tmp_path: Path) -> None:
    s = open_store(PLAN, str(tmp_path))
    s.begin_run("r", PLAN, DIGEST, 1.0)
    with pytest.raises(StoreError, match="register of a"):
        s.commit_workload("r", "a", "Completed", None, "ra", {"b": b"bytes"}, 1.0, 2.0)
    assert s.load_run("r").workloads == {}
    s.commit_workload("r", "a", "Completed", None, "ra", {"t": (1, 2)}, 1.0, 2.0)
    assert s.load_run("r").registers == {"ra": {"t": [1, 2]}}
    s.close()


# -- sealing --------------------------------------------------------------------------------------------


def _sealed_run(tmp_path: Path) -> str:
    s = open_store(PLAN, str(tmp_path), KEY)
    s.begin_run("r1", PLAN, DIGEST, 1.0)
    s.commit_workload("r1", "a", "Completed", "reason a", "ra", {"who": "alice"}, 1.0, 2.0)
    s.commit_workload("r1", "b", "Completed", "reason b", "rb", {"who": "bob"}, 1.0, 2.0)
    s.save_operator_state("r1", "a", {"cells": {"x": "carol"}, "regions": {}})
    s.close()
    return s.path


def test_sealed_values_are_not_in_clear(tmp_path: Path) -> None:
    path = _sealed_run(tmp_path)
    con = sqlite3.connect(path)
    rows = con.execute("SELECT reason, register_value FROM workloads").fetchall()
    con.close()
    assert all(isinstance(v, bytes) for row in rows for v in row)
    raw = b"".join(f.read_bytes() for f in tmp_path.iterdir())
    for word in (b"alice", b"bob", b"carol", b"reason a"):
        assert word not in raw
    s = open_store(PLAN, str(tmp_path), KEY)
    assert s.load_run("r1").registers == {"ra": {"who": "alice"}, "rb": {"who": "bob"}}
    s.close()


def test_wrong_or_missing_key_refused(tmp_path: Path) -> None:
    _sealed_run(tmp_path)
    with pytest.raises(StoreRefused, match="another key"):
        open_store(PLAN, str(tmp_path), OTHER_KEY)
    s = open_store(PLAN, str(tmp_path))  # no key: the run list only
    assert [r.run_id for r in s.list_runs()] == ["r1"]
    with pytest.raises(StoreRefused, match="sealed: set GXO_STATE_KEY"):
        s.load_run("r1")
    with pytest.raises(StoreRefused, match="sealed"):
        s.begin_run("r2", PLAN, DIGEST, 2.0)
    s.close()


def test_swapped_rows_detected(tmp_path: Path) -> None:
    path = _sealed_run(tmp_path)
    con = sqlite3.connect(path)
    a, b = (con.execute("SELECT register_value FROM workloads WHERE name=?", (n,)).fetchone()[0] for n in "ab")
    con.execute("UPDATE workloads SET register_value=? WHERE name='a'", (b,))
    con.execute("UPDATE workloads SET register_value=? WHERE name='b'", (a,))
    con.commit()
    con.close()
    s = open_store(PLAN, str(tmp_path), KEY)
    with pytest.raises(StoreRefused, match="register_value of a in run r1 does not authenticate"):
        s.load_run("r1")
    s.close()
    con = sqlite3.connect(path)  # a reason moved into a register's column of the same row
    con.execute("UPDATE workloads SET register_value=reason")
    con.execute("UPDATE workloads SET register_value=? WHERE name='a'", (a,))
    con.commit()
    con.close()
    s = open_store(PLAN, str(tmp_path), KEY)
    with pytest.raises(StoreRefused, match="of b in run r1 does not authenticate"):
        s.load_run("r1")
    s.close()

    s = open_store(PLAN, str(tmp_path), KEY)  # the same workload's value moved to another run
    s.begin_run("r2", PLAN, DIGEST, 2.0)
    s.commit_workload("r2", "a", "Completed", None, "ra", {"who": "dave"}, 2.0, 3.0)
    s.close()
    con = sqlite3.connect(path)
    con.execute("UPDATE workloads SET register_value=? WHERE run_id='r2' AND name='a'", (a,))
    con.commit()
    con.close()
    s = open_store(PLAN, str(tmp_path), KEY)
    with pytest.raises(StoreRefused, match="register_value of a in run r2 does not authenticate"):
        s.load_run("r2")
    s.close()


def test_clear_database_with_data_is_not_sealed_silently(tmp_path: Path) -> None:
    s = open_store(PLAN, str(tmp_path))
    s.begin_run("r1", PLAN, DIGEST, 1.0)
    s.commit_workload("r1", "a", "Completed", None, "ra", 1, 1.0, 2.0)
    s.close()
    s = open_store(PLAN, str(tmp_path), KEY)
    assert s.load_run("r1").registers == {"ra": 1}  # readable as it is
    with pytest.raises(StoreRefused, match="gxo state rekey"):
        s.begin_run("r2", PLAN, DIGEST, 2.0)
    s.close()


def test_rekey(tmp_path: Path) -> None:
    path = _sealed_run(tmp_path)
    with pytest.raises(StoreRefused, match="another key"):
        rekey(path, OTHER_KEY, KEY)
    with pytest.raises(StoreRefused, match="sealed"):
        rekey(path, None, KEY)
    assert rekey(path, KEY, OTHER_KEY) == 5
    with pytest.raises(StoreRefused, match="another key"):
        open_store(PLAN, str(tmp_path), KEY)
    s = open_store(PLAN, str(tmp_path), OTHER_KEY)
    assert s.load_run("r1").registers == {"ra": {"who": "alice"}, "rb": {"who": "bob"}}
    assert s.load_operator_state("r1", "a") == {"cells": {"x": "carol"}, "regions": {}}
    s.close()
    assert rekey(path, OTHER_KEY, None) == 5  # back to clear
    s = open_store(PLAN, str(tmp_path))
    assert not s.sealed and s.load_run("r1").reasons == {"a": "reason a", "b": "reason b"}
    s.close()
    assert rekey(path, None, KEY) == 5  # from clear to sealed
    s = open_store(PLAN, str(tmp_path), KEY)
    assert s.sealed and s.load_run("r1").registers["ra"] == {"who": "alice"}
    s.close()


def test_rekey_is_one_transaction(tmp_path: Path) -> None:
    """A value that fails to open stops the rekey before anything changed."""
    path = _sealed_run(tmp_path)
    con = sqlite3.connect(path)
    con.execute("UPDATE operator_state SET snapshot=x'00112233445566778899aabbccddeeff00112233445566778899'")
    con.commit()
    con.close()
    with pytest.raises(StoreRefused, match="does not authenticate"):
        rekey(path, KEY, OTHER_KEY)
    s = open_store(PLAN, str(tmp_path), KEY)  # still the old key, every row as it was
    assert s.load_run("r1").registers["rb"] == {"who": "bob"}
    s.close()


def test_key_parsing(tmp_path: Path) -> None:
    good = base64.b64encode(KEY).decode()
    assert parse_key(good, "x") == KEY and parse_key(f"  {good}\n", "x") == KEY
    with pytest.raises(StoreRefused, match="GXO_STATE_KEY is not a state key: not base64"):
        resolve_key(environ={"GXO_STATE_KEY": "not base64!"})
    with pytest.raises(StoreRefused, match="decodes to 16 bytes"):
        resolve_key(environ={"GXO_STATE_KEY": base64.b64encode(b"x" * 16).decode()})
    assert resolve_key(environ={}) is None and resolve_key(environ={"GXO_STATE_KEY": " "}) is None
    f = tmp_path / "key"
    f.write_text(base64.b64encode(OTHER_KEY).decode() + "\n")
    assert resolve_key(str(f), environ={"GXO_STATE_KEY": good}) == OTHER_KEY  # the file wins
    assert load_key_file(str(f)) == OTHER_KEY
    with pytest.raises(StoreRefused, match="cannot read the key file"):
        load_key_file(str(tmp_path / "missing"))


def test_new_run_id_sorts_by_start() -> None:
    a, b = new_run_id(1_700_000_000), new_run_id(1_700_000_001)
    assert a < b and len(a) == len("20231114-221320-a3f9c1")


def test_import_cost_stays_low() -> None:
    """``gxo.runtime.store`` loads neither sqlite3 nor cryptography until a backend is named, and a
    store without a key never loads cryptography."""
    code = ("import sys; import gxo.runtime.store as s; a = {'sqlite3', 'cryptography', 'dataclasses'} & set(sys.modules)\n"
            "import tempfile; st = s.open_store('p', tempfile.mkdtemp()); st.begin_run('r', 'p', 'd', 1.0)\n"
            "st.commit_workload('r', 'a', 'Completed', None, 'ra', 1, 1.0, 2.0); st.close()\n"
            "print(sorted(a), 'cryptography' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]", "False"]


def test_public_api_and_docs() -> None:
    """Every name of ``__all__`` resolves (the backends lazily), and docs/state.md names the API
    and the commands that exist."""
    import gxo.runtime.store as store

    for name in store.__all__:
        assert getattr(store, name) is not None, name
    doc = (Path(__file__).resolve().parents[1] / "docs" / "state.md").read_text("utf-8")
    for name in ("begin_run", "commit_workload", "end_run", "load_run", "latest_run", "interrupted_run",
                 "list_runs", "prune_runs", "vacuum", "save_operator_state", "set_last_fire", "set_restarts",
                 "gxo runs show", "gxo runs prune", "--keep-runs", "GXO_KEEP_RUNS",
                 "gxo state rekey --new-key-file", "GXO_STATE_KEY", "--state-key-file", "--state-dir"):
        assert name in doc, name
    with pytest.raises(AttributeError):
        store.nothing  # noqa: B018


def test_odd_text_round_trips(opener: Opener) -> None:
    """Text a child may produce (undecodable bytes kept as lone surrogates, NUL, non-ASCII) and
    floats JSON writes specially come back as they went in."""
    odd = "caf\u00e9 \udcff\x00 \U0001f600"
    s = opener()
    s.begin_run("r1", PLAN, DIGEST, 1.0)
    s.commit_workload("r1", "w", "Failed", odd, "rw", {"stdout": odd, odd: [1e308, -0.0, 2**70]}, 1.0, 2.0)
    run = s.load_run("r1")
    assert run.reasons["w"] == odd and run.registers["rw"] == {"stdout": odd, odd: [1e308, -0.0, 2**70]}


def test_non_finite_floats_and_large_text_round_trip(opener: Opener) -> None:
    """NaN and the infinities come back as they went in (msgspec, which writes a large text
    faster, would write them as null: such a value is written by json), and so does a register
    of a million lines."""
    import math

    s = opener()
    s.begin_run("r1", PLAN, DIGEST, 1.0)
    big = "\n".join(str(i) for i in range(1_000_000))
    s.commit_workloads("r1", [("w", "Completed", None, "rw", {"v": [float("nan"), float("inf"), -float("inf")]},
                               1.0, 2.0),
                              ("x", "Completed", None, "rx", {"stdout": big, "exit_code": 0, "error": None}, 1.0, 2.0)])
    run = s.load_run("r1")
    nan, inf, ninf = run.registers["rw"]["v"]
    assert math.isnan(nan) and inf == float("inf") and ninf == -float("inf")
    assert run.registers["rx"] == {"stdout": big, "exit_code": 0, "error": None}


def test_large_texts_of_a_register_round_trip(opener: Opener) -> None:
    """A register's large texts are set into its JSON by SQLite (``json_set``, where the
    store is not sealed): every character comes back, as it does through the other paths (a
    non-ASCII text, a key that is no plain name)."""
    odd = "".join(chr(c) for c in range(128)) * 600  # every ASCII character: quotes, \\, controls
    wide = "caf\u00e9 \U0001f600\n" * 8000  # not ASCII
    s = opener()
    s.begin_run("r1", PLAN, DIGEST, 1.0)
    values = {
        "w1": {"stdout": odd, "stderr": "", "n": 1.5, "items": [1, None, True]},
        "w2": {"stdout": wide, "exit_code": 0},
        "w3": {"a.b": odd, "c": odd},
        "w4": odd,
        # the rest of a register with a large text: a child's undecodable bytes, a big integer
        "w6": {"stdout": odd, "stderr": "caf\udcff", "n": 2**70},
    }
    s.commit_workloads("r1", [(k, "Completed", None, f"r{k}", v, 1.0, 2.0) for k, v in values.items()])
    s.commit_workload("r1", "w5", "Completed", None, "rw5", {"stdout": odd}, 1.0, 2.0)
    run = s.load_run("r1")
    for k, v in values.items():
        assert run.registers[f"r{k}"] == v, k
    assert run.registers["rw5"] == {"stdout": odd}
    assert list(run.registers["rw1"]) == ["stdout", "stderr", "n", "items"]  # the order of the keys


def test_sqlite_sets_a_large_text_into_the_json_itself(tmp_path: Path) -> None:
    """Where the store is clear, SQLite escapes a large text (``json_set``), not Python, whose
    lock a commit on the writer thread would hold meanwhile; a small register is not touched."""
    s = SqliteStore(str(tmp_path / "x.db"))
    statements: list[str] = []
    s._conn.set_trace_callback(statements.append)
    s.begin_run("r1", PLAN, DIGEST, 1.0)
    s.commit_workloads("r1", [("big", "Completed", None, "rb", {"stdout": "7\n" * 40_000, "exit_code": 0}, 1.0, 2.0),
                              ("small", "Completed", None, "rs", {"stdout": "7"}, 1.0, 2.0)])
    assert [q for q in statements if "json_set" in q and "'big'" in q]
    assert not [q for q in statements if "json_set" in q and "'small'" in q]
    assert s.load_run("r1").registers["rb"] == {"stdout": "7\n" * 40_000, "exit_code": 0}
    s.close()
