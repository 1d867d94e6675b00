"""database:query against real databases: SQLite files in a workspace, and the machine's
PostgreSQL and MariaDB on loopback (``GXO_TEST_POSTGRES`` / ``GXO_TEST_MYSQL``, default
127.0.0.1:5432 and 127.0.0.1:3306; a test skips without its server, and fails under
``GXO_TEST_SERVICES=require``).  Every test makes its own uniquely named table and drops it."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from gxo.runtime.module import Context, ModuleError, SecurityError, ValidationError, load_module_class
from gxo.runtime.streams import StreamOutput
from gxo.runtime.workspace import Workspace

from module_log import Log
from services import need_service

DRIVERS = ("sqlite", "postgresql", "mysql")


class Collect:
    """A channel stand-in that keeps every batch the module sends (the records it streams)."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []

    def offer(self, batch: list[Any]) -> bool:
        self.batches.append(list(batch))
        return True

    async def send(self, batch: list[Any]) -> None:  # pragma: no cover - offer always takes it
        self.batches.append(list(batch))


@pytest.fixture
def ws(tmp_path):
    w = Workspace.create(str(tmp_path / "wsroot"))
    yield w
    w.remove()


def dsn_of(driver: str) -> str:
    if driver == "sqlite":
        return "test.db"
    if driver == "postgresql":
        host, port = need_service("PostgreSQL", "GXO_TEST_POSTGRES", "127.0.0.1:5432")
        return f"postgresql://postgres@{host}:{port}/test"
    host, port = need_service("MariaDB/MySQL", "GXO_TEST_MYSQL", "127.0.0.1:3306")
    return f"mysql://root@{host}:{port}/test"


def ph(driver: str) -> str:
    return "?" if driver == "sqlite" else "%s"


def query(ws, params: dict, *, dry_run: bool = False, out: StreamOutput | None = None):
    ctx = Context(workload="w", run_id="r", logger=Log(), workspace=ws, state=dict, dry_run=dry_run)
    if out is not None:
        ctx.extras["output"] = out
    return asyncio.run(load_module_class("database:query")().perform(ctx, params))


@pytest.fixture(params=DRIVERS)
def db(request, ws):
    """(run, driver, table): ``run(query, params=None, **more)`` on a fresh table ``table``
    (id, name, amount, born, data), dropped afterwards."""
    driver = request.param
    dsn = dsn_of(driver)
    table = f"gxo_t_{uuid.uuid4().hex[:12]}"
    blob = {"sqlite": "BLOB", "postgresql": "BYTEA", "mysql": "BLOB"}[driver]

    def run(sql, params=None, **more):
        p = {"driver": driver, "dsn": dsn, "query": sql, **more}
        if params is not None:
            p["params"] = params
        return query(ws, p)

    run(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name VARCHAR(40), "
        f"amount DECIMAL(12,2), born DATE, data {blob})")
    try:
        yield run, driver, table
    finally:
        run(f"DROP TABLE {table}")


def test_select_with_positional_and_named_params(db) -> None:
    run, driver, table = db
    q = ph(driver)
    ins = run(f"INSERT INTO {table} (id, name, amount, born, data) VALUES ({q}, {q}, {q}, {q}, {q})",
              [1, "alice", "12.50", "1990-04-01", b"\x00\xff"])
    assert ins["rows_affected"] == 1 and ins["rows"] == [] and ins["row_count"] == 0
    run(f"INSERT INTO {table} (id, name, amount) VALUES ({q}, {q}, {q})", [2, "o'brien; DROP", 3])
    got = run(f"SELECT id, name, amount, born, data FROM {table} WHERE name = {q}", ["alice"])
    assert got["row_count"] == 1
    row = got["rows"][0]
    assert row["id"] == 1 and row["name"] == "alice"
    assert row["amount"] == 12.5  # Decimal (or sqlite's REAL) as a JSON number
    assert row["born"] == "1990-04-01"  # a date as ISO text (sqlite stores the text as given)
    assert row["data"] == "base64:AP8="  # bytes that are not UTF-8
    named = ":name" if driver == "sqlite" else "%(name)s"
    got = run(f"SELECT id FROM {table} WHERE name = {named}", {"name": "o'brien; DROP"})
    assert got["rows"] == [{"id": 2}]  # the quote and the `;` were data, not SQL
    assert run(f"SELECT COUNT(*) AS n FROM {table}")["rows"] == [{"n": 2}]


def test_insert_update_delete_count_rows_affected(db) -> None:
    run, driver, table = db
    q = ph(driver)
    assert run(f"INSERT INTO {table} (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c')")["rows_affected"] == 3
    upd = run(f"UPDATE {table} SET name = {q} WHERE id >= {q}", ["z", 2])
    assert upd["rows_affected"] == 2 and upd["rows"] == []
    assert run(f"SELECT name FROM {table} ORDER BY id")["rows"] == [{"name": "a"}, {"name": "z"}, {"name": "z"}]
    assert run(f"SELECT id FROM {table}")["rows_affected"] == 0
    assert run(f"DELETE FROM {table} WHERE id = {q}", [1])["rows_affected"] == 1


def test_transaction_rolls_back_on_failure(db) -> None:
    run, driver, table = db
    q = ph(driver)
    statements = [f"INSERT INTO {table} (id, name) VALUES ({q}, {q})",
                  f"INSERT INTO {table} (id, name) VALUES ({q}, {q})"]  # the same key twice
    with pytest.raises(ModuleError) as info:
        run(statements, [[7, "x"], [7, "y"]], transaction=True)
    msg = str(info.value)
    assert msg.startswith(f"{driver} ") and "statement 2 of 2 failed (transaction rolled back)" in msg
    assert "\n" not in msg
    assert run(f"SELECT id FROM {table}")["rows"] == []  # the first insert is gone too
    # without a transaction each statement commits on its own: the first row stays
    with pytest.raises(ModuleError):
        run(statements, [[7, "x"], [7, "y"]])
    assert run(f"SELECT id, name FROM {table}")["rows"] == [{"id": 7, "name": "x"}]
    # and a transaction that succeeds commits every statement
    ok = run(statements + [f"SELECT COUNT(*) AS n FROM {table}"], [[8, "a"], [9, "b"], None],
             transaction=True)
    assert ok["rows"] == [{"n": 3}] and ok["rows_affected"] == 2


def test_rows_are_streamed_one_record_each(db, ws) -> None:
    run, driver, table = db
    run(f"INSERT INTO {table} (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    sink = Collect()
    summary = query(ws, {"driver": driver, "dsn": dsn_of(driver),
                         "query": f"SELECT id, name FROM {table} ORDER BY id"},
                    out=StreamOutput(sink, batch_size=2))
    assert [r for b in sink.batches for r in b] == summary["rows"] == \
        [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]
    assert [len(b) for b in sink.batches] == [2, 1]
    assert sink.batches[0][0] is not summary["rows"][0]  # a consumer's record is its own copy


def test_several_statements_in_one_string_are_refused(db) -> None:
    run, driver, table = db
    with pytest.raises(ModuleError) as info:
        run(f"INSERT INTO {table} (id) VALUES (1); DROP TABLE {table}")
    assert driver in str(info.value)
    assert run(f"SELECT id FROM {table}")["rows"] == []  # neither statement ran


@pytest.mark.parametrize("driver", DRIVERS)
def test_errors_are_one_line_naming_driver_and_host(ws, driver: str) -> None:
    dsn = dsn_of(driver)
    with pytest.raises(ModuleError) as info:
        query(ws, {"driver": driver, "dsn": dsn, "query": "SELECT * FROM gxo_no_such_table"})
    msg = str(info.value)
    where = {"sqlite": "sqlite test.db:", "postgresql": "postgresql 127.0.0.1:",
             "mysql": "mysql 127.0.0.1:"}[driver]
    assert msg.startswith(where) and "gxo_no_such_table" in msg and "\n" not in msg


def test_connection_failure_redacts_the_dsn_password(ws) -> None:
    need_service("PostgreSQL", "GXO_TEST_POSTGRES", "127.0.0.1:5432")
    host, port = need_service("MariaDB/MySQL", "GXO_TEST_MYSQL", "127.0.0.1:3306")
    secret = "Hunter2-db-pass"
    cases = [
        # refused: nothing listens on port 1
        ("postgresql", f"postgresql://postgres:{secret}@127.0.0.1:1/test", "cannot connect"),
        # auth failure: root has no password, so one is wrong
        ("mysql", f"mysql://root:{secret}@{host}:{port}/test", "Access denied"),
        # a DSN that does not parse: psycopg's message quotes the DSN itself
        ("postgresql", f"host=127.0.0.1 password={secret} port=notaport", ""),
        ("postgresql", f"postgresql://postgres:{secret}@127.0.0.1:1/test?bogus_option=1", ""),
        # libpq quotes the token it cannot decode: the password itself
        ("postgresql", f"postgresql://postgres:{secret}%zz@127.0.0.1:1/test", "[REDACTED]"),
        ("postgresql", f"host=127.0.0.1 port=1 user=postgres password='{secret}' dbname=test",
         "cannot connect"),
    ]
    for driver, dsn, expect in cases:
        with pytest.raises(ModuleError) as info:
            query(ws, {"driver": driver, "dsn": dsn, "query": "SELECT 1", "timeout": "5s"})
        msg = str(info.value)
        assert secret not in msg, msg
        assert expect in msg and "\n" not in msg


@pytest.mark.parametrize("driver", ("postgresql", "mysql"))
def test_timeout_cancels_the_statement_on_the_server(ws, driver: str) -> None:
    dsn = dsn_of(driver)
    marker = f"gxo_sleep_{uuid.uuid4().hex[:8]}"
    sleep = "pg_sleep(30)" if driver == "postgresql" else "SLEEP(30)"
    # a loop of its own, closed only after the check: asyncio.run would wait for the worker
    # thread, so a statement left running would end (after 30 s) before anything is checked
    loop = asyncio.new_event_loop()
    ctx = Context(workload="w", run_id="r", logger=Log(), workspace=ws, state=dict)
    params = {"driver": driver, "dsn": dsn, "query": f"SELECT {sleep} AS {marker}", "timeout": "300ms"}
    try:
        with pytest.raises(ModuleError, match=rf"^{driver} 127\.0\.0\.1:\d+/test: timed out: "
                           "no result within 300ms"):
            loop.run_until_complete(load_module_class("database:query")().perform(ctx, params))
        _gone(ws, driver, dsn, marker)
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def _gone(ws, driver: str, dsn: str, marker: str) -> None:
    # the server stops the statement (cancel request / KILL QUERY), well before its 30 s
    activity = ("SELECT COUNT(*) AS n FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()"
                if driver == "postgresql" else
                "SELECT COUNT(*) AS n FROM information_schema.processlist WHERE info LIKE %s "
                "AND id <> CONNECTION_ID()")
    deadline = time.monotonic() + 10
    while query(ws, {"driver": driver, "dsn": dsn, "query": activity,
                     "params": [f"%{marker}%"]})["rows"] != [{"n": 0}]:
        assert time.monotonic() < deadline, "the statement still runs on the server"
        time.sleep(0.1)


def test_dry_run_executes_nothing(ws) -> None:
    summary = query(ws, {"dsn": "dry.db", "query": "CREATE TABLE t (x INTEGER)"}, dry_run=True)
    assert summary == {"rows": [], "row_count": 0, "rows_affected": 0, "dry_run": True}
    assert not (ws.resolve("dry.db") and __import__("os").path.exists(ws.resolve("dry.db")))


def test_sqlite_file_is_contained_in_the_workspace(ws) -> None:
    with pytest.raises(SecurityError):
        query(ws, {"dsn": "../escape.db", "query": "SELECT 1"})
    with pytest.raises(SecurityError):
        query(ws, {"dsn": "/tmp/gxo-escape.db", "query": "SELECT 1"})
    assert query(ws, {"dsn": ":memory:", "query": "SELECT 1 AS one, 1 AS one"})["rows"] == \
        [{"one": 1, "one_2": 1}]


def test_sqlite_file_outside_the_workspace_under_an_allowed_path(ws, tmp_path) -> None:
    keep = tmp_path / "keep"
    keep.mkdir()
    allowed = ws.allowing((str(keep),))
    query(allowed, {"dsn": str(keep / "app.db"), "query": ["CREATE TABLE t (x INTEGER)",
                                                          "INSERT INTO t VALUES (5)"]})
    assert (keep / "app.db").exists()  # it outlives the run's workspace
    assert query(allowed, {"dsn": str(keep / "app.db"), "query": "SELECT x FROM t"})["rows"] == [{"x": 5}]


SQL_PLAYBOOK = """\
name: q
schemaVersion: "1.0.0"
workloads:
  - name: src
    lifecycle: {policy: run_once}
    process:
      module: data:generate_from_list
      params: {items: [{id: 1}]}
  - name: pipe
    lifecycle: {policy: run_once}
    stream_inputs: [src]
    process:
      module: stream:pipeline
      params:
        steps:
          - id: spliced
            uses: database:query
            with: {dsn: a.db, query: "INSERT INTO t VALUES ({{ .id }})"}
          - id: bound
            uses: database:query
            with: {dsn: a.db, query: "INSERT INTO t VALUES (?)", params: ["{{ .id }}"]}
  - name: flag
    lifecycle: {policy: run_once}
    process:
      module: database:query
      params: {dsn: a.db, unsafe_sql: "{{ true }}", query: "SELECT '$${literal}'"}
"""


def test_sql_injection_risk_in_pipeline_steps_and_a_templated_flag(tmp_path) -> None:
    from golden_util import run_gxoc

    (tmp_path / "pb.yaml").write_text(SQL_PLAYBOOK)
    code, out, err = run_gxoc(["check", "pb.yaml"], tmp_path)
    assert code == 1
    assert "pb.yaml:18:61: error[sql-injection-risk]: params.steps[0].with.query builds SQL" in out
    assert out.count("sql-injection-risk") == 1  # bound params and `$${` (literal text) are fine
    assert "error[invalid-value]: unsafe_sql must be a literal true or false" in out


def test_bad_params_are_validation_errors(ws) -> None:
    with pytest.raises(ValidationError, match="list of 2 items"):
        query(ws, {"dsn": ":memory:", "query": ["SELECT 1", "SELECT 2"], "params": [1]})
    with pytest.raises(ValidationError, match="must be a list"):
        query(ws, {"dsn": ":memory:", "query": "SELECT ?", "params": "1"})
    with pytest.raises(ValidationError, match="mysql://"):
        query(ws, {"driver": "mysql", "dsn": "root@localhost", "query": "SELECT 1"})
