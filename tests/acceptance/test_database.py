"""database:query end to end: ``gxoc build`` then ``gxo exec`` in their own processes, on a SQLite
file in the run's workspace and on the machine's PostgreSQL (``GXO_TEST_POSTGRES``, default
127.0.0.1:5432; skipped without it, a failure under ``GXO_TEST_SERVICES=require``)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from acceptance.harness import EXAMPLES, build, gxo_exec, run_tool, write_playbook
from services import need_service

STREAM = """\
  - name: create
    lifecycle: {policy: run_once}
    process:
      module: database:query
      params:
        dsn: app.db
        query:
          - "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, active INTEGER)"
          - "INSERT INTO users VALUES (?, ?, ?), (?, ?, ?), (?, ?, ?)"
        params: [null, [1, alice, 1, 2, "o'hara", 1, 3, carol, 0]]
        transaction: true
  - name: active_users
    lifecycle: {policy: run_once}
    needs: [create]
    process:
      module: database:query
      params:
        dsn: app.db
        query: "SELECT id, name FROM users WHERE active = :active ORDER BY id"
        params: {active: 1}
    register: active
  - name: as_json
    lifecycle: {policy: run_once}
    stream_inputs: [active_users]
    process:
      module: data:format
      params: {format: json}
    register: formatted
  - name: first_name
    lifecycle: {policy: run_once}
    process:
      module: control:identity
      params:
        name: "{{ (index .active.rows 1).name }}"
        count: "{{ .active.row_count }}"
"""


def test_rows_stream_into_a_consumer_and_the_register(work: Path) -> None:
    plan = build(write_playbook(work, STREAM), work)
    run = gxo_exec(plan)
    assert run.rc == 0, run.explain()
    assert run.summary("create")["rows_affected"] == 3
    assert run.summary("active_users") == {
        "rows": [{"id": 1, "name": "alice"}, {"id": 2, "name": "o'hara"}],
        "row_count": 2, "rows_affected": 0}
    formatted = run.summary("as_json")
    assert json.loads(formatted["formatted_content"]) == [{"id": 1, "name": "alice"}, {"id": 2, "name": "o'hara"}]
    assert run.summary("first_name") == {"name": "o'hara", "count": 2}


def test_dry_run_executes_no_statement(work: Path) -> None:
    # (first_name would index an empty list: a dry run's rows are empty)
    plan = build(write_playbook(work, STREAM.split("  - name: first_name")[0]), work)
    run = gxo_exec(plan, "--dry-run")
    assert run.rc == 0, run.explain()
    assert run.summary("active_users") == {"rows": [], "row_count": 0, "rows_affected": 0, "dry_run": True}


def test_a_failed_statement_fails_the_workload_in_one_line(work: Path) -> None:
    body = """\
  - name: broken
    lifecycle: {policy: run_once}
    process:
      module: database:query
      params: {dsn: app.db, query: "SELECT * FROM missing_table"}
"""
    run = gxo_exec(build(write_playbook(work, body), work))
    assert run.rc == 1
    reason = run.end("broken")["error"]
    assert reason.startswith("sqlite app.db: statement failed:") and "missing_table" in reason


def test_postgres_password_never_appears_in_output(work: Path) -> None:
    host, port = need_service("PostgreSQL", "GXO_TEST_POSTGRES", "127.0.0.1:5432")
    table = f"gxo_acc_{uuid.uuid4().hex[:12]}"
    literal, from_env = "Lit3ral-pw-9x", "Env-pw-from-secret-7q"
    body = f"""\
  - name: ok
    lifecycle: {{policy: run_once}}
    process:
      module: database:query
      params:
        driver: postgresql
        dsn: "postgresql://postgres@{host}:{port}/test"
        query: ["CREATE TABLE {table} (id int)", "INSERT INTO {table} VALUES (%s)",
                "SELECT id FROM {table}", "DROP TABLE {table}"]
        params: [null, [41], null, null]
        transaction: true
  - name: refused_literal
    lifecycle: {{policy: run_once}}
    needs: [ok]
    ignore_errors: true
    process:
      module: database:query
      params:
        driver: postgresql
        dsn: "postgresql://postgres:{literal}@127.0.0.1:1/test"
        query: "SELECT 1"
  - name: bad_secret_dsn
    lifecycle: {{policy: run_once}}
    needs: [ok]
    ignore_errors: true
    process:
      module: database:query
      params:
        driver: postgresql
        dsn: "${{GXO_ACC_PG_DSN}}"
        query: "SELECT 1"
"""
    plan = build(write_playbook(work, body), work)
    env = {"GXO_ACC_PG_DSN": f"postgresql://postgres:{from_env}%zz@127.0.0.1:1/test"}
    for args in ((), ("-vv",)):
        run = gxo_exec(plan, *args, env=env) if args == () else \
            run_tool("gxo", "exec", plan, *args, env=env)
        assert run.rc == 0, run.explain()
        out = run.raw.decode("utf-8", "replace")
        # -vv shows the rendered params: the literal DSN's password is redacted there too
        assert from_env not in out and literal not in out
        assert "postgres:[REDACTED]@127.0.0.1:1/test" in out or args == ()
        if args == ():
            assert run.summary("ok")["rows"] == [{"id": 41}]
            assert "cannot connect" in run.end("refused_literal")["error"]
            assert "[REDACTED]" in run.end("bad_secret_dsn")["error"]


def test_e10_runs(work: Path) -> None:
    plan = build(EXAMPLES / "e10_loop_over_rows.yaml", work)
    run = gxo_exec(plan)
    assert run.rc == 0, run.explain()
    assert run.summary("get_active_user_ids")["rows"] == [{"id": 1}, {"id": 2}, {"id": 3}]
    assert [s["status_code"] for s in run.summaries("refresh_user_cache")] == [204, 204, 204]
