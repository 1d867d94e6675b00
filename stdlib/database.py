"""``database:*`` (L5): SQL databases."""

from __future__ import annotations

from gxo.stdlib import _schemas as s
from gxo.stdlib._spec import ModuleSpec

QUERY = ModuleSpec(
    name="database:query",
    layer="L5",
    description="Run one SQL statement; rows go to the summary and, one record each, to the "
    "stream.",
    params_schema=s.params(
        {
            "driver": s.enum(
                "Database driver used with `dsn`.",
                ("sqlite", "postgresql", "mysql"),
                default="sqlite",
            ),
            "dsn": s.nonempty(
                "Data source name: a file path (resolved in the workspace) or \":memory:\" for "
                "sqlite, a URL for postgresql/mysql. Exclusive with `connection`."
            ),
            "connection": s.nonempty(
                "Name of a connection configured in the runtime config (driver and DSN kept "
                "out of the playbook). Exclusive with `dsn`."
            ),
            "query": s.nonempty("The SQL statement, with placeholders for `params`."),
            "params": {
                "type": ["array", "object"],
                "description": "Bound parameters: a list for positional placeholders, a map "
                "for named ones (never interpolated into the SQL text).",
            },
        },
        required=("query",),
        rules=[s.exactly_one_of("dsn", "connection")],
    ),
    summary_schema=s.summary(
        {
            "rows": s.array(
                s.open_object("One row, column name to value (bytes decoded to text)."),
                "Rows returned (empty for a statement that returns none).",
            ),
            "row_count": s.integer("Number of rows returned.", minimum=0),
            "rows_affected": s.integer(
                "Rows changed by INSERT/UPDATE/DELETE (-1 when the driver cannot tell).",
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
)

MODULES: tuple[ModuleSpec, ...] = (QUERY,)
