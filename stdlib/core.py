"""Bare-named modules: ``exec`` (L1) and ``passthrough`` (L4)."""

from __future__ import annotations

from gxo.stdlib import _schemas as s
from gxo.stdlib._spec import ModuleSpec

EXEC = ModuleSpec(
    name="exec",
    layer="L1",
    description="Run a local program as a child process in the workspace and capture its output.",
    # design.md §10: exec declares supervise (supervised servers, E13).
    lifecycles=("run_once", "supervise"),
    params_schema=s.params(
        {
            "command": s.nonempty(
                "Program to run: an absolute path, a name found on PATH, or a path relative to "
                "the folder holding the .gxp. Not run through a shell."
            ),
            "args": s.string_list(
                "Arguments, one argv entry each (a templated entry is passed as its text form).",
                "One argument.",
                default=[],
            ),
            "environment": s.string_list(
                "KEY=VALUE entries; when given they replace the whole environment of the child.",
                "One KEY=VALUE entry.",
                item_pattern=s.ENV_ENTRY_PATTERN,
                default=[],
            ),
            "working_dir": s.string(
                "Working directory, inside the workspace (default: the workspace itself)."
            ),
        },
        required=("command",),
    ),
    summary_schema=s.summary(
        {
            **s.command_result_properties(lines=True),
            "command": s.string("Dry run only: the command that would have run."),
            "args": s.string_list("Dry run only: the arguments it would have been given."),
        },
        optional=("command", "args"),
        dry_run=True,
    ),
    # Drains any stream inputs it is given, so it may sit downstream of a producer.
    stream_input="optional",
    path_params=("working_dir",),
    # command and args are echoed by the dry-run summary and in logs. `environment` is not:
    # it is the documented way to hand a secret to a child (E15), so it must not warn.
    logged_params=("command", "args"),
)

PASSTHROUGH = ModuleSpec(
    name="passthrough",
    layer="L4",
    description="Forward every record from all stream inputs to all outputs unchanged.",
    params_schema=s.params(),
    summary_schema=s.summary(
        {
            "records_processed": s.integer("Number of records forwarded.", minimum=0),
            "message": s.string("Explanation when no record arrived."),
        },
        optional=("message",),
    ),
    # Record type: the union of its inputs' record types, inferred by the compiler.
    record_schema=s.open_record(),
    stream_input="required",
)

MODULES: tuple[ModuleSpec, ...] = (EXEC, PASSTHROUGH)
