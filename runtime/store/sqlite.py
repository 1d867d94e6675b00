"""The durable run store: one SQLite database per plan identity, in WAL mode with
``synchronous=FULL`` (a commit is on disk when it returns).

Layout (``docs/state.md``): the state directory is ``--state-dir DIR``, else
``$XDG_STATE_HOME/gxo``, else ``~/.local/state/gxo``; it is created 0700.  Each plan's
database is ``<name>-<hash>.db`` (mode 0600, its ``-wal``/``-shm`` files inherit it): the plan
name made safe for a file name (at most 64 characters of ``[A-Za-z0-9._-]``) and 12 hex digits
of the SHA-256 of the exact name, so two names never share a file.

Schema (``SCHEMA_VERSION``, in ``meta``): ``runs`` (id, plan, digest, start, end, status,
failures, the run it resumed, its owner: see ``_owner``), ``workloads`` (one row per committed
workload: status, reason, register key and value, times), ``operator_state``, ``restarts``
(per run and workload) and ``schedule`` (last fire per plan and workload).  Values (registers,
reasons, snapshots) are JSON text, or sealed blobs when the database is sealed
(``sealing.py``).  A database of a newer schema is refused, never rewritten.

One connection per store, used under a lock (the kernel may call from its loop and from
worker threads); writers in other processes wait up to ``BUSY_TIMEOUT`` seconds.  Every SQLite
error becomes a ``StoreError`` naming the file.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import quote

from gxo.runtime.store import _owner
from gxo.runtime.support import sha256_hex
from gxo.runtime.store.base import (
    INTERRUPTED,
    RESUMED,
    RUNNING,
    RunRecord,
    RunSummary,
    StoreError,
    StoreRefused,
    UnknownRun,
    WorkloadRecord,
    WorkloadRow,
)
from gxo.runtime.store.memory import _check_resumable

__all__ = ["SCHEMA_VERSION", "SqliteStore", "database_path", "default_state_dir", "list_databases",
           "open_store", "rekey"]

#: bump when the tables change, with a migration of older databases in ``_setup``.
#: 1: meta, runs, workloads, operator_state, restarts, schedule.
SCHEMA_VERSION = 1
#: seconds a writer waits for another process's write transaction
BUSY_TIMEOUT = 30.0
DB_SUFFIX = ".db"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE runs (
  run_id TEXT PRIMARY KEY, plan_name TEXT NOT NULL, plan_digest TEXT NOT NULL,
  started REAL NOT NULL, ended REAL, status TEXT, failures INTEGER,
  resumed_from TEXT, owner TEXT);
CREATE TABLE workloads (
  run_id TEXT NOT NULL REFERENCES runs(run_id), name TEXT NOT NULL, status TEXT NOT NULL,
  reason, register_key TEXT, register_value, started REAL, ended REAL,
  PRIMARY KEY (run_id, name));
CREATE TABLE operator_state (
  run_id TEXT NOT NULL REFERENCES runs(run_id), workload TEXT NOT NULL, snapshot,
  PRIMARY KEY (run_id, workload));
CREATE TABLE restarts (
  run_id TEXT NOT NULL REFERENCES runs(run_id), workload TEXT NOT NULL, count INTEGER NOT NULL,
  window_start REAL NOT NULL, PRIMARY KEY (run_id, workload));
CREATE TABLE schedule (
  plan_name TEXT NOT NULL, workload TEXT NOT NULL, last_fire REAL NOT NULL,
  PRIMARY KEY (plan_name, workload));
"""

#: every sealed column: (table, column, the identity columns of its rows)
_SEALED = (("workloads", "reason", ("run_id", "name")),
           ("workloads", "register_value", ("run_id", "name")),
           ("operator_state", "snapshot", ("run_id", "workload")))

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
T = TypeVar("T")


# -- where databases live --------------------------------------------------------------------------


def default_state_dir(environ: Mapping[str, str] | None = None) -> str:
    """``$XDG_STATE_HOME/gxo``, else ``~/.local/state/gxo``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or ""
    if not os.path.isabs(base):  # the XDG spec: a relative value is ignored
        base = os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "gxo")


def database_path(state_dir: str, plan_name: str) -> str:
    """The database of the plan named ``plan_name`` under ``state_dir``."""
    safe = _UNSAFE.sub("_", plan_name).strip("._")[:64] or "plan"
    digest = sha256_hex(plan_name.encode("utf-8", "surrogatepass"))[:12]
    return os.path.join(state_dir, f"{safe}-{digest}{DB_SUFFIX}")


def list_databases(state_dir: str) -> list[str]:
    """The databases under ``state_dir`` (none when it does not exist), sorted."""
    try:
        names = os.listdir(state_dir)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StoreError(f"cannot read the state directory {state_dir}: {exc.strerror}") from None
    return [os.path.join(state_dir, n) for n in sorted(names) if n.endswith(DB_SUFFIX)]


def open_store(plan_name: str, state_dir: str | None = None, key: bytes | None = None, *,
               create: bool = True) -> SqliteStore | None:
    """The durable store of ``plan_name`` (the directory and database are made when missing):
    what ``gxo exec`` opens.  ``key`` is ``sealing.resolve_key(...)``'s.  Without ``create``
    (a dry run, which writes nothing), None when the plan has no database yet."""
    directory = state_dir or default_state_dir()
    if not create:
        path = database_path(directory, plan_name)
        return SqliteStore(path, key, create=False, plan_name=plan_name) if os.path.isfile(path) else None
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot make the state directory {directory}: {exc.strerror}") from None
    return SqliteStore(database_path(directory, plan_name), key, plan_name=plan_name)


# -- the store -------------------------------------------------------------------------------------


def _msgspec_encode(value: Any) -> bytes:
    import msgspec

    return msgspec.json.encode(value)


def _finite(value: Any) -> bool:
    """Whether msgspec may write ``value``: plain JSON types only, no NaN or infinity (msgspec
    writes those as null, json as NaN and Infinity, which it reads back), at most a million
    items (beyond, json writes it and words any error)."""
    stack = [value]
    seen = 0
    while stack:
        v = stack.pop()
        t = type(v)
        if t is str or t is int or t is bool or v is None:
            continue
        if t is float:
            if v != v or v in (_INF, -_INF):
                return False
        elif t is dict:
            stack.extend(v.values())
        elif t is list or t is tuple:
            stack.extend(v)
        else:
            return False  # another type: json decides (and words the error)
        seen += 1
        if seen > 1_000_000:
            return False
    return True


_INF = float("inf")

#: a text of a register at least this long is set into its JSON by SQLite (``_Texts``)
LARGE_TEXT = 1 << 16
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


class _Texts:
    """A register's JSON with ``null`` where its large texts go, and those texts by key."""

    __slots__ = ("json", "texts")

    def __init__(self, json_text: str, texts: dict[str, str]) -> None:
        self.json = json_text
        self.texts = texts


def _large_texts(value: Any) -> dict[str, str] | None:
    """The large texts at the top level of a register map, by key, where SQLite can write them
    as they are (ASCII: nothing for a lone surrogate to trip on; a plain key for its JSON
    path); None when there is none or the rest holds what JSON cannot spell (NaN, infinity:
    ``_finite``; the rest is written by ``_dumps``, a lone surrogate included)."""
    if type(value) is not dict:
        return None
    texts = {k: v for k, v in value.items() if type(v) is str and len(v) >= LARGE_TEXT and v.isascii()
             and type(k) is str and _PLAIN_KEY.fullmatch(k)}
    if not texts or not _finite({k: v for k, v in value.items() if k not in texts}):
        return None
    return texts


class SqliteStore:
    """A ``RunStore`` in one SQLite database (see the module docstring)."""

    def __init__(self, path: str, key: bytes | None = None, *, create: bool = True,
                 plan_name: str | None = None) -> None:
        """Open (``create``: or make) the database at ``path``.  With ``key``, a sealed database
        must open with it (else ``StoreRefused``); a clear one is read as it is and is sealed by
        its first ``begin_run`` when it holds no run yet.  Without ``key``, a sealed database's
        run list is readable, its values are not (``StoreRefused``).  ``plan_name`` (what
        ``open_store`` passes) must be the plan the database belongs to."""
        self.path = path
        self._lock = threading.Lock()
        self._key = key
        self._sealer: Any = None
        self._db: sqlite3.Connection | None = None
        self._owner = ""
        self._began = False  # whether this store began a run (close() then lets go of it)
        if create:
            try:
                os.close(os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600))
            except OSError as exc:
                raise StoreError(f"cannot open the state database {path}: {exc.strerror}") from None
        elif not os.path.isfile(path):
            raise StoreError(f"no state database {path}")
        try:
            with self._guard("open"):
                self._db = sqlite3.connect(f"file:{quote(path)}?mode=rw", uri=True, timeout=BUSY_TIMEOUT,
                                           isolation_level=None, check_same_thread=False)
                self._setup(plan_name)
        except BaseException:
            if self._db is not None:
                self._db.close()
                self._db = None
            raise
        self._owner = _owner.new_owner()

    def _setup(self, plan_name: str | None) -> None:
        db = self._conn
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{self.path}: cannot switch the state database to WAL mode (got {mode})")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        meta = self._meta()
        if "schema_version" not in meta:
            with self._transaction():
                if not db.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone():
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.executemany("INSERT INTO meta VALUES (?, ?)",
                                   [("schema_version", SCHEMA_VERSION), ("sealed", 0),
                                    ("plan_name", plan_name)])
            meta = self._meta()
        version = meta.get("schema_version")
        if not isinstance(version, int):
            raise StoreError(f"{self.path}: not a gxo state database (no schema version)")
        if version > SCHEMA_VERSION:
            raise StoreRefused(f"{self.path} was written by a newer gxo (state schema {version}; this gxo "
                               f"reads up to {SCHEMA_VERSION}): upgrade gxo or use another --state-dir")
        if plan_name is not None and meta.get("plan_name") not in (None, plan_name):
            raise StoreRefused(f"{self.path} holds the runs of plan {meta['plan_name']!r}, not {plan_name!r}")
        self.plan_name: str | None = meta.get("plan_name")
        self.sealed = bool(meta.get("sealed"))
        if self.sealed and self._key is not None:
            self._sealer = self._make_sealer(self._key)
            check = meta.get("key_check")
            if not isinstance(check, bytes) or not self._sealer.opens(check):
                raise StoreRefused(f"{self.path} is sealed with another key: the state key does not open it")

    def _meta(self) -> dict[str, Any]:
        db = self._conn
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone():
            if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise StoreError(f"{self.path}: not a gxo state database")
            return {}
        return dict(db.execute("SELECT key, value FROM meta").fetchall())

    @staticmethod
    def _make_sealer(key: bytes) -> Any:
        from gxo.runtime.store.sealing import Sealer

        return Sealer(key)

    # -- plumbing ---------------------------------------------------------------------------------

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"{self.path}: the state database is closed")
        return self._db

    @contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        """Turn SQLite's errors into one-line ``StoreError``s naming the file."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            text = str(exc)
            if "not a database" in text or "malformed" in text:
                raise StoreError(f"{self.path}: the state database is unreadable ({text}): move it away "
                                 "to start a new history") from None
            raise StoreError(f"{self.path}: {doing}: {text}") from None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._conn
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _locked(self, doing: str, fn: Callable[[], T]) -> T:
        with self._lock, self._guard(doing):
            return fn()

    def _seal_text(self, text: str | None, aad: tuple[str, str, str, str]) -> str | bytes | None:
        if text is None:
            return None
        if not self.sealed:
            return text
        from gxo.runtime.store.sealing import row_aad

        return self._need_sealer().seal(text.encode("utf-8", "surrogatepass"), row_aad(*aad))  # type: ignore[no-any-return]

    def _open_text(self, value: Any, aad: tuple[str, str, str, str]) -> str | None:
        if value is None:
            return None
        if not self.sealed:
            if isinstance(value, str):
                return value
            raise StoreRefused(f"{self.path}: the {aad[3]} of {aad[2]} in run {aad[1]} is sealed, but the "
                               "database is not: it was changed outside gxo")
        from gxo.runtime.store.sealing import row_aad

        plain = self._need_sealer().open(value, row_aad(*aad)) if isinstance(value, bytes) else None
        if plain is None:
            raise StoreRefused(f"{self.path}: the {aad[3]} of {aad[2]} in run {aad[1]} does not authenticate "
                               "(changed or moved outside gxo)")
        return plain.decode("utf-8", "surrogatepass")  # type: ignore[no-any-return]

    def require_key(self) -> None:
        """``StoreRefused`` unless the store can read and write its values (a sealed database
        opened without its key cannot)."""
        if self.sealed:
            self._need_sealer()

    def _need_sealer(self) -> Any:
        if self._sealer is None:
            raise StoreRefused(f"{self.path} is sealed: set GXO_STATE_KEY or pass --state-key-file")
        return self._sealer

    def _dumps(self, value: Any, what: str) -> str:
        if _finite(value):
            try:
                # msgspec writes a large string about twice as fast as json; it refuses a lone
                # surrogate, which json below keeps (as \udcxx, in ASCII)
                return _msgspec_encode(value).decode("utf-8")
            except (TypeError, ValueError, OverflowError):
                pass
        try:
            return json.dumps(value, separators=(",", ":"))
        except (TypeError, ValueError, RecursionError) as exc:
            raise StoreError(f"{self.path}: cannot store {what}: {exc}") from None

    def _loads(self, text: str | None, what: str) -> Any:
        if text is None:
            return None
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise StoreError(f"{self.path}: {what} is not JSON ({exc})") from None

    # -- runs -------------------------------------------------------------------------------------

    def begin_run(self, run_id: str, plan_name: str, plan_digest: str, started: float,
                  resumed_from: str | None = None) -> None:
        def go() -> None:
            with self._transaction() as db:
                if self.sealed:
                    self._need_sealer()
                elif self._key is not None:  # a key and a clear database: seal it while it is empty
                    if db.execute("SELECT 1 FROM runs LIMIT 1").fetchone():
                        raise StoreRefused(f"{self.path} holds unsealed values: seal them first with "
                                           "gxo state rekey --new-key-file FILE (GXO_STATE_KEY unset)")
                    self._sealer = self._make_sealer(self._key)
                    db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                   [("sealed", 1), ("key_check", self._sealer.key_check())])
                    self.sealed = True
                if db.execute("SELECT 1 FROM runs WHERE run_id=?", (run_id,)).fetchone():
                    raise StoreRefused(f"{self.path}: run {run_id!r} exists already")
                if resumed_from is not None:
                    old = db.execute("SELECT plan_digest, ended, status, owner FROM runs WHERE run_id=?",
                                     (resumed_from,)).fetchone()
                    if old is None:
                        raise UnknownRun(resumed_from, self.path)
                    _check_resumable(resumed_from, old[0], old[1], old[2], old[3], plan_digest, self.path)
                db.execute("INSERT INTO runs (run_id, plan_name, plan_digest, started, resumed_from, owner) "
                           "VALUES (?, ?, ?, ?, ?, ?)",
                           (run_id, plan_name, plan_digest, started, resumed_from, self._owner))
                if resumed_from is not None:
                    self._copy_run(db, resumed_from, run_id, started)
            self._began = True

        # A new run's start record is committed without waiting for the disk (``_unsynced``);
        # a resumed run's copy of the old run's rows is synced at once.
        self._locked("begin a run", go if resumed_from is not None else lambda: self._unsynced(go))

    def _unsynced(self, fn: Callable[[], T]) -> T:
        """Run ``fn``'s transaction under ``synchronous=NORMAL``: the commit survives a crash of
        gxo (WAL pages are in the OS's page cache) and the next FULL commit syncs it with itself,
        so only a power loss before that commit can lose it.  One fsync less."""
        db = self._conn
        db.execute("PRAGMA synchronous=NORMAL")
        try:
            return fn()
        finally:
            db.execute("PRAGMA synchronous=FULL")

    def _copy_run(self, db: sqlite3.Connection, old: str, new: str, started: float) -> None:
        """What a resumed run starts from: the old run's rows, re-sealed for the new run's id."""
        rows = db.execute("SELECT name, status, reason, register_key, register_value, started, ended "
                          "FROM workloads WHERE run_id=? ORDER BY rowid", (old,)).fetchall()
        if self.sealed:
            rows = [(n, s, self._seal_text(self._open_text(r, ("workloads", old, n, "reason")),
                                           ("workloads", new, n, "reason")),
                     k, self._seal_text(self._open_text(v, ("workloads", old, n, "register_value")),
                                        ("workloads", new, n, "register_value")), t0, t1)
                    for n, s, r, k, v, t0, t1 in rows]
        db.executemany("INSERT INTO workloads (run_id, name, status, reason, register_key, register_value, "
                       "started, ended) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [(new, *row) for row in rows])
        snaps = db.execute("SELECT workload, snapshot FROM operator_state WHERE run_id=? ORDER BY rowid",
                           (old,)).fetchall()
        if self.sealed:
            snaps = [(w, self._seal_text(self._open_text(s, ("operator_state", old, w, "snapshot")),
                                         ("operator_state", new, w, "snapshot"))) for w, s in snaps]
        db.executemany("INSERT INTO operator_state VALUES (?, ?, ?)", [(new, w, s) for w, s in snaps])
        db.execute("INSERT INTO restarts SELECT ?, workload, count, window_start FROM restarts WHERE run_id=?",
                   (new, old))
        ends = [row[6] for row in rows if row[6] is not None]
        db.execute("UPDATE runs SET ended=?, status=?, failures=? WHERE run_id=?",
                   (max([db.execute("SELECT started FROM runs WHERE run_id=?", (old,)).fetchone()[0], *ends]),
                    RESUMED, sum(1 for row in rows if row[1] == "Failed"), old))

    def _workload_row(self, run_id: str, name: str, status: str, reason: str | None, register_key: str | None,
                      register_value: Any, started: float | None, ended: float | None) -> tuple[Any, ...]:
        # most rows (a workload that ended with no reason and no register) have nothing to encode
        why = value = None
        if reason is not None:
            why = self._seal_text(self._dumps(reason, f"the reason of {name}"), ("workloads", run_id, name, "reason"))
        if register_key is not None:
            texts = None if self.sealed else _large_texts(register_value)
            if texts:  # SQLite writes the large texts into the JSON itself (_Texts)
                rest = {k: None if k in texts else v for k, v in register_value.items()}
                value = _Texts(self._dumps(rest, f"the register of {name}"), texts)
            else:
                value = self._seal_text(self._dumps(register_value, f"the register of {name}"),
                                        ("workloads", run_id, name, "register_value"))
        return (run_id, name, status, why, register_key, value, started, ended)

    @staticmethod
    def _insert(db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        """Insert (or replace) encoded workload rows (``_workload_row``); a register with
        large texts has them set into its JSON by SQLite (``json_set``): escaping a million
        lines of output there takes no Python lock, while the run goes on in another thread."""
        plain = [row for row in rows if not isinstance(row[5], _Texts)]
        if plain:
            db.executemany(_COMMIT, plain)
        for row in rows:
            texts = row[5]
            if isinstance(texts, _Texts):
                args: list[Any] = []
                for key, text in texts.texts.items():
                    args += [f'$."{key}"', text]
                db.execute(_COMMIT_TEXTS.format(", ?" * len(args)), (*row[:5], texts.json, *args, *row[6:]))

    def commit_workload(self, run_id: str, name: str, status: str, reason: str | None,
                        register_key: str | None, register_value: Any, started: float | None,
                        ended: float | None) -> None:
        row = self._workload_row(run_id, name, status, reason, register_key, register_value, started, ended)

        def go() -> None:
            try:  # one statement: atomic and durable on its own (autocommit)
                self._insert(self._conn, [row])
            except sqlite3.IntegrityError:
                raise UnknownRun(run_id, self.path) from None

        self._locked(f"commit workload {name}", go)

    def commit_workloads(self, run_id: str, rows: Iterable[WorkloadRow]) -> None:
        encoded = [self._workload_row(run_id, *row) for row in rows]
        if not encoded:
            return

        def go() -> None:
            try:
                with self._transaction() as db:
                    self._insert(db, encoded)
            except sqlite3.IntegrityError:
                raise UnknownRun(run_id, self.path) from None

        self._locked(f"commit {len(encoded)} workloads", go)

    def end_run(self, run_id: str, status: str, ended: float, failures: int) -> None:
        def go() -> None:
            cur = self._conn.execute("UPDATE runs SET ended=?, status=?, failures=? WHERE run_id=?",
                                     (ended, status, failures, run_id))
            if cur.rowcount == 0:
                raise UnknownRun(run_id, self.path)

        self._locked("end a run", go)

    def load_run(self, run_id: str) -> RunRecord:
        def go() -> RunRecord:
            db = self._conn
            row = db.execute(_SUMMARY + " WHERE r.run_id=?", (run_id,)).fetchone()
            if row is None:
                raise UnknownRun(run_id, self.path)
            s = _summary(row)
            digest = db.execute("SELECT plan_digest FROM runs WHERE run_id=?", (run_id,)).fetchone()[0]
            workloads: dict[str, WorkloadRecord] = {}
            for name, status, reason, key, value, t0, t1 in db.execute(
                    "SELECT name, status, reason, register_key, register_value, started, ended "
                    "FROM workloads WHERE run_id=? ORDER BY rowid", (run_id,)):
                reason = self._loads(self._open_text(reason, ("workloads", run_id, name, "reason")),
                                     f"the reason of {name} in run {run_id}")
                text = self._open_text(value, ("workloads", run_id, name, "register_value"))
                workloads[name] = WorkloadRecord(name, status, reason, key,
                                                 self._loads(text, f"the register of {name} in run {run_id}"),
                                                 t0, t1)
            return RunRecord(run_id, s.plan_name, digest, s.status, s.started, s.ended, s.failures,
                             s.resumed_from, workloads)

        return self._locked("load a run", go)

    def latest_run(self, plan_name: str) -> str | None:
        def go() -> str | None:
            row = self._conn.execute("SELECT run_id FROM runs WHERE plan_name=? ORDER BY started DESC, rowid DESC "
                                     "LIMIT 1", (plan_name,)).fetchone()
            return None if row is None else str(row[0])

        return self._locked("find the latest run", go)

    def interrupted_run(self, plan_name: str) -> str | None:
        def go() -> str | None:
            for run_id, ended, owner in self._conn.execute(
                    "SELECT run_id, ended, owner FROM runs WHERE plan_name=? ORDER BY started DESC, rowid DESC",
                    (plan_name,)):
                if ended is not None:
                    return None
                if not _owner.alive(owner):
                    return str(run_id)
            return None

        return self._locked("find an interrupted run", go)

    def list_runs(self) -> list[RunSummary]:
        return self._locked("list runs", lambda: [
            _summary(row) for row in self._conn.execute(_SUMMARY + " ORDER BY r.started DESC, r.rowid DESC")])

    def prune_runs(self, plan_name: str, keep: int | None = None, ended_before: float | None = None,
                   *, dry_run: bool = False) -> list[str]:
        def go() -> list[str]:
            with self._transaction() as db:
                rows = db.execute("SELECT run_id, ended FROM runs WHERE plan_name=? AND ended IS NOT NULL "
                                  "ORDER BY started DESC, rowid DESC", (plan_name,)).fetchall()
                gone = [str(run_id) for n, (run_id, end) in enumerate(rows)
                        if (keep is not None and n >= keep) or (ended_before is not None and end < ended_before)]
                gone.reverse()
                if gone and not dry_run:
                    ids = [(run_id,) for run_id in gone]
                    for table in ("workloads", "operator_state", "restarts", "runs"):
                        db.executemany(f"DELETE FROM {table} WHERE run_id=?", ids)  # noqa: S608 - fixed names
            return gone

        return self._locked("prune runs", go)

    def vacuum(self) -> None:
        """Give the space of removed runs back to the file system (SQLite's ``VACUUM``: the
        database is rewritten, which needs as much free space as it takes)."""
        def go() -> None:
            self._conn.execute("VACUUM")

        self._locked("vacuum", go)

    # -- operator state, schedules, restarts ------------------------------------------------------

    def save_operator_state(self, run_id: str, workload: str, snapshot: Any) -> None:
        text = self._dumps(snapshot, f"the operator state of {workload}")
        blob = self._seal_text(text, ("operator_state", run_id, workload, "snapshot"))

        def go() -> None:
            try:
                self._conn.execute("INSERT OR REPLACE INTO operator_state VALUES (?, ?, ?)", (run_id, workload, blob))
            except sqlite3.IntegrityError:
                raise UnknownRun(run_id, self.path) from None

        self._locked(f"save the operator state of {workload}", go)

    def load_operator_state(self, run_id: str, workload: str) -> Any:
        def go() -> Any:
            row = self._conn.execute("SELECT snapshot FROM operator_state WHERE run_id=? AND workload=?",
                                     (run_id, workload)).fetchone()
            if row is None:
                return None
            text = self._open_text(row[0], ("operator_state", run_id, workload, "snapshot"))
            return self._loads(text, f"the operator state of {workload} in run {run_id}")

        return self._locked(f"load the operator state of {workload}", go)

    def set_last_fire(self, plan_name: str, workload: str, t: float) -> None:
        self._locked("record a fire time", lambda: self._conn.execute(
            "INSERT OR REPLACE INTO schedule VALUES (?, ?, ?)", (plan_name, workload, t)))

    def last_fire(self, plan_name: str, workload: str) -> float | None:
        row = self._locked("read a fire time", lambda: self._conn.execute(
            "SELECT last_fire FROM schedule WHERE plan_name=? AND workload=?", (plan_name, workload)).fetchone())
        return None if row is None else float(row[0])

    def set_restarts(self, run_id: str, workload: str, count: int, window_start: float) -> None:
        def go() -> None:
            try:
                self._conn.execute("INSERT OR REPLACE INTO restarts VALUES (?, ?, ?, ?)",
                                   (run_id, workload, count, window_start))
            except sqlite3.IntegrityError:
                raise UnknownRun(run_id, self.path) from None

        self._locked("record restarts", go)

    def restarts(self, run_id: str, workload: str) -> tuple[int, float] | None:
        row = self._locked("read restarts", lambda: self._conn.execute(
            "SELECT count, window_start FROM restarts WHERE run_id=? AND workload=?", (run_id, workload)).fetchone())
        return None if row is None else (int(row[0]), float(row[1]))

    # -- sealing ----------------------------------------------------------------------------------

    def rekey(self, new_key: bytes | None) -> int:
        """Re-seal every stored value with ``new_key`` (None: store them in clear) in one
        transaction; the store must have been opened with the current key (or none, for a clear
        database).  Returns the number of values re-sealed.  The store uses ``new_key`` from
        then on."""
        new_sealer = None if new_key is None else self._make_sealer(new_key)

        def go() -> int:
            count = 0
            with self._transaction() as db:
                if self.sealed:
                    self._need_sealer()
                for table, column, ident in _SEALED:
                    rows = db.execute(f"SELECT rowid, {', '.join(ident)}, {column} FROM {table} "  # noqa: S608
                                      f"WHERE {column} IS NOT NULL").fetchall()
                    updates = []
                    for rowid, run_id, name, value in rows:
                        aad = (table, run_id, name, column)
                        text = self._open_text(value, aad)
                        assert text is not None
                        if new_sealer is None:
                            updates.append((text, rowid))
                        else:
                            from gxo.runtime.store.sealing import row_aad

                            updates.append((new_sealer.seal(text.encode("utf-8", "surrogatepass"), row_aad(*aad)),
                                            rowid))
                    db.executemany(f"UPDATE {table} SET {column}=? WHERE rowid=?", updates)  # noqa: S608
                    count += len(updates)
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                               [("sealed", int(new_sealer is not None)),
                                ("key_check", None if new_sealer is None else new_sealer.key_check())])
            self.sealed, self._sealer, self._key = new_sealer is not None, new_sealer, new_key
            return count

        return self._locked("re-seal", go)

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: ``"ok"`` for a sound file."""
        return self._locked("check integrity", lambda: "; ".join(
            str(r[0]) for r in self._conn.execute("PRAGMA integrity_check")))

    def close(self) -> None:
        """Close the database.  A run begun here and not ended loses its owner, so that every
        process sees it interrupted (a SIGKILLed process writes nothing: its pid tells)."""
        _owner.release(self._owner)
        with self._lock:
            db, self._db = self._db, None
            if db is None:
                return
            try:
                if self._began:
                    db.execute("UPDATE runs SET owner=NULL WHERE owner=? AND ended IS NULL", (self._owner,))
            except sqlite3.Error:
                pass  # the pid check still tells once this process is gone
            finally:
                db.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def began(self) -> bool:
        """Whether a run was begun through this store."""
        return self._began

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r}{', sealed' if self.sealed else ''})"


_COMMIT = ("INSERT OR REPLACE INTO workloads (run_id, name, status, reason, register_key, register_value, started, "
           "ended) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
#: _COMMIT for a register whose large texts SQLite sets into its JSON: json_set(?, path, text, ...)
_COMMIT_TEXTS = ("INSERT OR REPLACE INTO workloads (run_id, name, status, reason, register_key, register_value, "
                 "started, ended) VALUES (?, ?, ?, ?, ?, json_set(?{}), ?, ?)")
_SUMMARY = ("SELECT r.run_id, r.plan_name, r.started, r.ended, r.status, r.failures, r.resumed_from, r.owner, "
            "(SELECT count(*) FROM workloads w WHERE w.run_id=r.run_id AND w.status='Failed') FROM runs r")


def _summary(row: tuple[Any, ...]) -> RunSummary:
    run_id, plan_name, started, ended, status, failures, resumed_from, owner, failed = row
    if ended is None:
        status = RUNNING if _owner.alive(owner) else INTERRUPTED
        failures = failed
    return RunSummary(run_id, plan_name, status, started, ended, int(failures or 0), resumed_from)


def rekey(path: str, old_key: bytes | None, new_key: bytes | None) -> int:
    """Re-seal the database at ``path`` from ``old_key`` (None: it is clear) to ``new_key`` in
    one transaction; the number of values re-sealed."""
    store = SqliteStore(path, old_key, create=False)
    try:
        store.require_key()
        return store.rekey(new_key)
    finally:
        store.close()
