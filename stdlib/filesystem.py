"""``filesystem:*`` (L1): files inside the workspace.

Every ``path`` is a workspace path: resolved inside the workspace at run time (symlinks
included, an escape fails the workload) and checked for certain escapes at compile time.
"""

from __future__ import annotations

from gxo.stdlib import _schemas as s
from gxo.stdlib._spec import ModuleSpec


def _path(what: str) -> dict:
    return s.nonempty(f"{what}, relative to the workspace (an escaping path is refused).")


READ = ModuleSpec(
    name="filesystem:read",
    layer="L1",
    description="Read a whole UTF-8 text file into the summary.",
    params_schema=s.params({"path": _path("File to read")}, required=("path",)),
    summary_schema=s.summary(
        {"content": s.string("The file's content (empty in a dry run).")}, dry_run=True
    ),
    path_params=("path",),
    # The path appears in logs and error messages; the content is the module's output, not a
    # param, so it is not listed.
    logged_params=("path",),
)

WRITE = ModuleSpec(
    name="filesystem:write",
    layer="L1",
    description="Create, overwrite or append to a file, creating parent directories.",
    params_schema=s.params(
        {
            "path": _path("File to write"),
            "content": s.string("Text to write (UTF-8)."),
            "mode": s.file_mode(
                "Permission bits of a newly created file: an octal string such as \"0644\" "
                "or an integer (YAML 0o644).",
                default="0644",
            ),
            "append": s.boolean("Append to the file instead of replacing it.", default=False),
        },
        required=("path", "content"),
    ),
    summary_schema=s.summary(
        {
            "path": s.string("Absolute path of the file written."),
            "bytes_written": s.integer("Number of bytes written.", minimum=0),
        },
        dry_run=True,
    ),
    path_params=("path",),
    # The summary echoes the path; the content is never echoed (a file may hold a secret).
    logged_params=("path",),
)

STAT = ModuleSpec(
    name="filesystem:stat",
    layer="L1",
    description="Report a path's metadata without reading it; fails when the path is missing.",
    params_schema=s.params({"path": _path("Path to inspect")}, required=("path",)),
    summary_schema=s.summary(s.stat_properties(), dry_run=True),
    path_params=("path",),
    logged_params=("path",),  # echoed by the summary
)

LIST = ModuleSpec(
    name="filesystem:list",
    layer="L1",
    description="Stream one record per directory entry, shaped like filesystem:stat's summary.",
    params_schema=s.params(
        {
            "path": _path("Directory to list"),
            "recursive": s.boolean("Descend into subdirectories.", default=False),
            "pattern": s.string(
                "Glob matched against entry names (empty: every entry).", default=""
            ),
        },
        required=("path",),
    ),
    # The checklist gives no summary; the listed directory and the number of records emitted.
    summary_schema=s.summary(
        {
            "path": s.string("Absolute path of the directory listed."),
            "entries": s.integer("Number of records emitted.", minimum=0),
        },
        dry_run=True,
    ),
    record_schema=s.record(s.stat_properties()),
    path_params=("path",),
    logged_params=("path",),  # echoed by the summary
)

MANAGE = ModuleSpec(
    name="filesystem:manage",
    layer="L1",
    description="Idempotently converge a path to a desired state (file, directory or absent).",
    # design.md §10: declares supervise (E17, configuration kept enforced).
    lifecycles=("run_once", "supervise"),
    params_schema=s.params(
        {
            "path": _path("Path to converge"),
            "state": s.enum(
                "Desired state: present (a file, created empty or with `content`), absent "
                "(removed), directory.",
                ("present", "absent", "directory"),
            ),
            "content": s.string(
                "Exact content of the file (state present only); rewritten when it differs."
            ),
            "owner": s.owner_ref("Owning user, a name or a UID (applied when it differs)."),
            "group": s.owner_ref("Owning group, a name or a GID (applied when it differs)."),
            "mode": s.file_mode(
                "Permission bits, an octal string such as \"0700\" or an integer (applied when "
                "they differ)."
            ),
            "recursive": s.boolean(
                "With state absent, remove a directory with everything in it.", default=False
            ),
        },
        required=("path", "state"),
        rules=[
            s.when_present(
                "content", {"properties": {"state": {"const": "present"}}}
            ),
        ],
    ),
    summary_schema=s.summary(
        {
            "path": s.string("Absolute path converged."),
            "state": s.enum("The state enforced.", ("present", "absent", "directory")),
            "changed": s.boolean("Whether anything had to change (false when compliant)."),
        },
        dry_run=True,
    ),
    path_params=("path",),
    # path and state are echoed by the summary; content is not.
    logged_params=("path", "state"),
)

MODULES: tuple[ModuleSpec, ...] = (READ, WRITE, STAT, LIST, MANAGE)
