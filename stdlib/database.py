"""``database:*`` (L5): SQL databases.

``database:query`` runs on SQLite (the standard library), PostgreSQL (psycopg 3) and MySQL or
MariaDB (PyMySQL). Each run opens one connection and closes it at the end.

- **Bound parameters only.** Values reach the SQL through ``params`` and the driver's
  placeholders; a ``{{ }}`` or ``${}`` inside ``query`` is the compile error
  ``sql-injection-risk``, unless the workload sets the literal ``unsafe_sql: true`` (for DDL
  that takes no placeholder). A string holds one statement (every driver here refuses a
  string with several, PostgreSQL's through a prepared statement); several statements are a
  list.
- **Transactions.** Each statement commits on its own; with ``transaction: true`` they run in
  one transaction, committed when all succeed and rolled back when one fails.
- **Values** become JSON: ``Decimal`` an integer when integral, a float when the float is exact,
  else its text (``"12345678901234567890.123"``); dates and times ISO 8601 text; intervals
  (``timedelta``) seconds; bytes their UTF-8 text, or ``"base64:..."`` when not UTF-8;
  NaN/Infinity, UUIDs, network addresses and other types their text; JSON columns and arrays as
  they are. A repeated column name gets ``_2``, ``_3``... (alias columns to choose names).
- **Errors** are one line naming the driver, host, port and database (``postgresql
  127.0.0.1:5432/app: statement failed: UndefinedTable: relation "nope" does not exist``);
  the DSN's password never appears in them. Pass the DSN itself as a secret (``dsn:
  "${APP_DSN}"``) so that every output of GXO redacts it.
- **Dry run:** nothing is executed, not even a SELECT; the summary is empty with
  ``dry_run: true``.
"""

from __future__ import annotations

from gxo.stdlib import _schemas as s
from gxo.stdlib._spec import ModuleSpec

QUERY = ModuleSpec(
    name="database:query",
    layer="L5",
    description="Run SQL with bound parameters; rows go to the summary and, one record each, to "
    "the stream.",
    params_schema=s.params(
        {
            "driver": s.enum(
                "Database driver used with `dsn`.",
                ("sqlite", "postgresql", "mysql"),
                default="sqlite",
            ),
            "dsn": s.nonempty(
                "Data source name: for sqlite a file path (relative: in the run's workspace, gone "
                "when the run ends; absolute: under an allowed path, as for every path param) or "
                "\":memory:\"; for postgresql a libpq URL or key=value string; for "
                "mysql a URL mysql://user:password@host:port/database?charset=... . It holds the "
                "password: pass it as a secret (`${DB_DSN}`); GXO's own messages never show it."
            ),
            "query": {
                "anyOf": [
                    s.nonempty("One SQL statement."),
                    s.array(s.nonempty("One SQL statement."), "Several statements, run in "
                            "order.", minItems=1),
                ],
                "description": "One SQL statement, or a list of statements run in order (one "
                "statement per string: text holding several is refused by the driver). "
                "Placeholders are the driver's own: `?` / `:name` for sqlite, `%s` / "
                "`%(name)s` for postgresql and mysql. A `{{ }}` or `${}` here is the compile "
                "error `sql-injection-risk` unless `unsafe_sql` is true.",
            },
            "params": {
                "type": ["array", "object"],
                "description": "Bound parameters (never interpolated into the SQL text): a list "
                "for positional placeholders, a map for named ones. With a list of statements, "
                "a list holding each statement's parameters (a list, a map or null).",
            },
            "transaction": s.boolean(
                "Run the statement(s) in one transaction: committed when all succeed, rolled "
                "back when one fails. Otherwise each statement commits on its own.",
                default=False,
            ),
            "timeout": s.duration(
                "Time limit for connecting and running every statement.", default="30s"
            ),
            "unsafe_sql": s.boolean(
                "Allow templates in `query` (SQL built from text: an injection risk). Must be a "
                "literal; use `params` instead wherever the database accepts a placeholder.",
                default=False,
            ),
        },
        required=("dsn", "query"),
    ),
    summary_schema=s.summary(
        {
            "rows": s.array(
                s.open_object("One row, column name to value (see Values)."),
                "Rows returned (of every statement, in order; empty when none returns rows).",
            ),
            "row_count": s.integer("Number of rows returned.", minimum=0),
            "rows_affected": s.integer(
                "Rows changed by INSERT/UPDATE/DELETE, summed over the statements (0 for a "
                "SELECT; -1 when the driver cannot tell, as for DDL).",
                minimum=-1,
            ),
        },
        dry_run=True,
    ),
    # One record per row; the column set depends on the query, so records are open maps.
    record_schema=s.open_record(),
    # A producer, not a per-record sink: inserting a stream of records is done by a
    # stream:pipeline step, which runs it once per record. So stream inputs are refused.
    stream_input="none",
    # The statement is logged (debug) and sent with events; `dsn` is not (it usually holds a
    # password), nor are the bound `params`.
    logged_params=("query",),
    # sqlite's database file lives in the workspace; a postgresql/mysql DSN is never a path
    # that starts with "/" or "..", so the compile-time path-escape check leaves it alone.
    path_params=("dsn",),
    literal_params=("unsafe_sql",),
)

MODULES: tuple[ModuleSpec, ...] = (QUERY,)


# --------------------------------------------------------------------------- code
# Nothing below runs at import: the drivers (sqlite3, psycopg, PyMySQL) are imported inside
# perform, so the compiler and `gxo exec` of other modules never load them.

#: what the drivers say about a string holding several statements
_SEVERAL_STATEMENTS = ("one statement at a time", "multiple commands into a prepared statement")

_DRIVER_NAMES = {"sqlite": "sqlite", "postgresql": "postgresql", "mysql": "mysql"}


def _json_value(value):
    """A database value as JSON: ``Decimal`` → int when integral, float when the float is
    exact, else its text; date/time → ISO 8601 text; ``timedelta`` → seconds (a number);
    bytes → UTF-8 text, or ``base64:<data>`` when not UTF-8; NaN/Infinity → their text; UUID,
    IP addresses and other types → their text; lists and maps element-wise."""
    import datetime
    import decimal
    import math

    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return str(value)
        if value == value.to_integral_value():
            return int(value)
        f = float(value)
        return f if decimal.Decimal(repr(f)) == value else str(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        secs = value.total_seconds()
        return int(secs) if secs == int(secs) else secs
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            import base64

            return "base64:" + base64.b64encode(raw).decode("ascii")
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return str(value)


def _row_maps(columns: list[str], rows) -> list[dict]:
    """Rows as maps; a repeated column name gets ``_2``, ``_3``... (alias them to choose)."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for c in columns:
        n = seen.get(c, 0) + 1
        seen[c] = n
        names.append(c if n == 1 else f"{c}_{n}")
    return [{k: _json_value(v) for k, v in zip(names, row)} for row in rows]


def _dsn_passwords(dsn: str) -> list[str]:
    """The password of a URL or ``key=value`` DSN, raw and decoded (best effort: no error)."""
    import re
    from urllib.parse import unquote

    out = []
    m = re.search(r"://[^/@\s:]*:([^@\s]*)@", dsn)
    if m:
        out += [m.group(1), unquote(m.group(1))]
    for m in re.finditer(r"(?i)\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", dsn):
        value = m.group(1)
        out += [value, value.strip("'")]
    return out


class _Target:
    """Where the statements go, for messages: driver, host and database, never the password."""

    def __init__(self, driver: str, where: str, secrets: list[str]) -> None:
        self.driver = driver
        self.where = where
        found = list(secrets)
        for s in secrets:  # the password as the DSN spells it, even when the DSN does not parse
            found += _dsn_passwords(s)
        self.secrets = [x for x in dict.fromkeys(found) if x]

    def scrub(self, text: str) -> str:
        import re

        text = re.sub(r"(://[^/@\s:]*:)[^@\s]*@", r"\1[REDACTED]@", text)
        text = re.sub(r"(?i)(password\s*=\s*)('[^']*'|\S+)", r"\1[REDACTED]", text)
        for secret in sorted(self.secrets, key=len, reverse=True):
            if len(secret) >= 4:  # as the kernel's taint: shorter ones would mangle the text
                text = text.replace(secret, "[REDACTED]")
        return text

    def error(self, what: str, exc: BaseException | str):
        from gxo.runtime.module import ModuleError

        detail = exc if isinstance(exc, str) else \
            " ".join((str(exc) or type(exc).__name__).split())  # one line
        if not isinstance(exc, str) and type(exc).__name__ not in detail:
            detail = f"{type(exc).__name__}: {detail}"
        return ModuleError(self.scrub(f"{self.driver} {self.where}: {what}: {detail}"))


def _pg_target(dsn: str) -> tuple[_Target, dict]:
    from gxo.runtime.module import ValidationError

    import psycopg.conninfo

    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ValidationError(_Target("postgresql", "", [dsn]).scrub(
            f"parameter 'dsn' is not a PostgreSQL connection string: "
            f"{' '.join(str(exc).split())}")) from None
    host = str(info.get("host") or info.get("hostaddr") or "localhost")
    port = str(info.get("port") or "5432")
    where = f"{host}:{port}/{info.get('dbname') or info.get('user') or ''}"
    return _Target("postgresql", where, [str(info.get("password") or ""), dsn]), info


def _mysql_target(dsn: str) -> tuple[_Target, dict]:
    from urllib.parse import parse_qsl, unquote, urlsplit

    from gxo.runtime.module import ValidationError

    bad = _Target("mysql", "", [dsn])
    try:
        u = urlsplit(dsn)
        port = u.port
    except ValueError as exc:
        raise ValidationError(bad.scrub(f"parameter 'dsn' is not a MySQL URL: {exc}")) from None
    if u.scheme not in ("mysql", "mariadb"):
        raise ValidationError(bad.scrub("parameter 'dsn' must be a URL "
                                        "mysql://user:password@host:port/database"))
    options = dict(parse_qsl(u.query))
    allowed = ("charset", "unix_socket", "ssl_ca", "ssl_disabled")
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValidationError(f"parameter 'dsn': unknown option(s) {', '.join(unknown)} (known: "
                              f"{', '.join(allowed)})")
    password = unquote(u.password) if u.password is not None else ""
    kwargs: dict = {"host": u.hostname or "localhost", "port": port or 3306,
                    "user": unquote(u.username) if u.username else None, "password": password,
                    "database": unquote(u.path.lstrip("/")) or None,
                    "charset": options.get("charset", "utf8mb4")}
    if "unix_socket" in options:
        kwargs["unix_socket"] = options["unix_socket"]
    if "ssl_ca" in options:
        kwargs["ssl_ca"] = options["ssl_ca"]
    if options.get("ssl_disabled", "").lower() in ("1", "true", "yes"):
        kwargs["ssl_disabled"] = True
    where = f"{kwargs['host']}:{kwargs['port']}/{kwargs['database'] or ''}"
    return _Target("mysql", where, [password, dsn]), kwargs


class _Session:
    """One connection, used from one worker thread; ``cancel`` may come from the loop's."""

    def __init__(self, driver: str, target: _Target, connect_args, timeout: float) -> None:
        self.driver = driver
        self.target = target
        self.connect_args = connect_args
        self.timeout = timeout
        self.conn = None
        self.cancelled = False

    # -- in the worker thread ------------------------------------------------------------

    def run(self, statements: list[tuple[str, object]], transaction: bool) -> tuple[list, int]:
        t = self.target
        try:
            self.conn = self._connect(transaction)
        except Exception as exc:  # noqa: BLE001 - every driver error becomes one line
            raise t.error("cannot connect", exc) from None
        rows: list[dict] = []
        affected: int | None = None
        try:
            if transaction and self.driver == "sqlite":
                self.conn.execute("BEGIN")
            elif transaction and self.driver == "mysql":
                self.conn.begin()
            for i, (sql, params) in enumerate(statements):
                try:
                    got, n = self._execute(sql, params)
                except Exception as exc:  # noqa: BLE001
                    what = "statement failed" if len(statements) == 1 else \
                        f"statement {i + 1} of {len(statements)} failed"
                    if transaction:
                        what += " (transaction rolled back)"
                    if self.cancelled:
                        exc = "cancelled (timeout or run halted)"
                    elif any(m in str(exc) for m in _SEVERAL_STATEMENTS):
                        exc = f"{type(exc).__name__}: {exc} (one statement per string: give " \
                              f"'query' a list of statements)"
                    raise t.error(what, exc) from None
                rows.extend(got)
                if n >= 0:
                    affected = n + (affected or 0)
            if transaction:
                try:
                    self.conn.commit() if self.driver != "sqlite" else self.conn.execute("COMMIT")
                except Exception as exc:  # noqa: BLE001
                    raise t.error("commit failed (transaction rolled back)", exc) from None
        except BaseException:
            if transaction:
                try:
                    self.conn.rollback() if self.driver != "sqlite" else \
                        self.conn.execute("ROLLBACK")
                except Exception:  # noqa: BLE001 - the connection may be gone; closing drops it
                    pass
            raise
        finally:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001
                pass
        return rows, (-1 if affected is None else affected)

    def _connect(self, transaction: bool):
        if self.driver == "sqlite":
            import sqlite3

            # isolation_level=None: no implicit transactions; BEGIN/COMMIT are explicit
            return sqlite3.connect(self.connect_args, timeout=self.timeout, isolation_level=None,
                                   check_same_thread=False)
        if self.driver == "postgresql":
            import psycopg

            args = dict(self.connect_args)
            args.setdefault("connect_timeout", max(1, int(self.timeout)))
            return psycopg.connect(autocommit=not transaction, **args)
        import pymysql

        return pymysql.connect(autocommit=not transaction, connect_timeout=self.timeout,
                               read_timeout=self.timeout, write_timeout=self.timeout,
                               **self.connect_args)

    def _execute(self, sql: str, params) -> tuple[list[dict], int]:
        """The rows of one statement, and the rows it changed (0 for a SELECT, -1 unknown)."""
        if self.driver == "sqlite":
            cur = self.conn.execute(sql, params if params is not None else ())
            if cur.description is None:
                return [], cur.rowcount
            got = _row_maps([d[0] for d in cur.description], cur.fetchall())
            # rowcount is -1 for a SELECT, the changed rows for INSERT ... RETURNING
            return got, max(cur.rowcount, 0)
        cur = self.conn.cursor()
        try:
            if self.driver == "postgresql":
                # a prepared statement: the extended protocol, which refuses several
                # statements in one string even without parameters
                cur.execute(sql, params, prepare=True)
                status = (cur.statusmessage or "").split()
                verb = status[0].upper() if status else ""
                if verb in ("INSERT", "UPDATE", "DELETE", "MERGE", "COPY") and status[-1].isdigit():
                    n = int(status[-1])
                elif verb in ("SELECT", "FETCH", "SHOW", "VALUES", "TABLE"):
                    n = 0
                else:
                    n = -1
            else:
                cur.execute(sql, params)
                n = 0 if cur.description is not None else cur.rowcount
            if cur.description is None:
                return [], n
            return _row_maps([d[0] for d in cur.description], cur.fetchall()), n
        finally:
            cur.close()

    # -- from the event loop -------------------------------------------------------------

    def cancel(self) -> None:
        """Stop the statement running now (timeout, run halted); never waits for the thread."""
        import threading

        self.cancelled = True
        conn = self.conn
        if conn is None:
            return
        if self.driver == "sqlite":
            try:
                conn.interrupt()
            except Exception:  # noqa: BLE001 - closed already
                pass
            return

        def stop() -> None:
            try:
                if self.driver == "postgresql":
                    (getattr(conn, "cancel_safe", None) or conn.cancel)()
                else:
                    import pymysql

                    args = dict(self.connect_args, connect_timeout=5)
                    with pymysql.connect(**args) as killer, killer.cursor() as cur:
                        cur.execute(f"KILL QUERY {int(conn.thread_id())}")
            except Exception:  # noqa: BLE001 - best effort: the timeouts end it anyway
                pass

        threading.Thread(target=stop, name="gxo-db-cancel", daemon=True).start()


class Query:
    """``database:query``: one statement (or a list of them) with bound parameters.

    Each statement commits on its own unless ``transaction`` is true (then all commit together
    or none does).  The driver runs in a worker thread (psycopg, PyMySQL and sqlite3 are
    blocking); ``timeout`` bounds connecting and every statement, and a timeout or a halted run
    cancels the statement on the server.  Rows are returned in the summary and sent, one record
    each, to the output stream.  Under ``--dry-run`` nothing is executed, not even a SELECT.
    """

    name = "database:query"

    @staticmethod
    def secrets_in(params: dict) -> list[str]:
        """The DSN's password (the kernel redacts it from every output, ``-vv`` params too);
        only from 4 characters on, as for values computed from a secret."""
        dsn = params.get("dsn")
        if not isinstance(dsn, str) or params.get("driver", "sqlite") == "sqlite":
            return []
        return [x for x in dict.fromkeys(_dsn_passwords(dsn)) if len(x) >= 4]

    async def perform(self, ctx, params):
        import asyncio

        from gxo.runtime.module import ValidationError
        from gxo.runtime.streams import output_of
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        driver = p.opt_enum(params, "driver", tuple(_DRIVER_NAMES)) or "sqlite"
        dsn = p.req_str(params, "dsn")
        statements = self._statements(params)
        transaction = p.opt_bool(params, "transaction", False)
        timeout = p.opt_duration(params, "timeout", "30s")
        if not isinstance(params.get("unsafe_sql", False), bool):
            raise ValidationError("parameter 'unsafe_sql' must be a boolean")

        if driver == "sqlite":
            path = dsn if dsn == ":memory:" else ctx.workspace.resolve(dsn)
            target, connect_args = _Target("sqlite", dsn, []), path
        elif driver == "postgresql":
            target, connect_args = _pg_target(dsn)
        else:
            target, connect_args = _mysql_target(dsn)

        if ctx.dry_run:
            ctx.logger.info("dry run: would run SQL", driver=driver, database=target.where,
                            statements=len(statements), transaction=transaction)
            return {"rows": [], "row_count": 0, "rows_affected": 0, "dry_run": True}

        ctx.logger.debug("running SQL", driver=driver, database=target.where,
                         statements=len(statements), transaction=transaction)
        session = _Session(driver, target, connect_args, timeout)
        try:
            async with asyncio.timeout(timeout):
                rows, affected = await asyncio.to_thread(session.run, statements, transaction)
        except TimeoutError:
            session.cancel()
            raise target.error("timed out", f"no result within {params.get('timeout') or '30s'}"
                               f"{' (transaction rolled back)' if transaction else ''}") from None
        except asyncio.CancelledError:
            session.cancel()
            raise
        out = output_of(ctx)
        size = out.batch_size
        for i in range(0, len(rows), size):
            await out.send_batch([dict(r) for r in rows[i:i + size]])
        return {"rows": rows, "row_count": len(rows), "rows_affected": affected}

    @staticmethod
    def _statements(params: dict) -> list[tuple[str, object]]:
        from gxo.runtime.module import ValidationError

        query = params.get("query")
        bound = params.get("params")

        def check_bound(value, where: str):
            if value is None or isinstance(value, (list, dict)):
                return value if not isinstance(value, list) else tuple(value)
            raise ValidationError(f"parameter {where} must be a list (positional placeholders) "
                                  f"or a map (named placeholders), got {type(value).__name__}")

        if isinstance(query, str):
            if not query.strip():
                raise ValidationError("parameter 'query' must not be empty")
            return [(query, check_bound(bound, "'params'"))]
        if not isinstance(query, list) or not query or \
                not all(isinstance(q, str) and q.strip() for q in query):
            raise ValidationError("parameter 'query' must be an SQL statement or a non-empty list "
                                  "of them")
        if bound is None:
            per = [None] * len(query)
        elif isinstance(bound, list) and len(bound) == len(query):
            per = bound
        else:
            raise ValidationError(f"parameter 'params': with {len(query)} statements it must be a "
                                  f"list of {len(query)} items, each a list, a map or null")
        return [(q, check_bound(b, f"'params'[{i}]")) for i, (q, b) in enumerate(zip(query, per))]


CODE = {"database:query": Query}
