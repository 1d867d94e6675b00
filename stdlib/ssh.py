"""``ssh:*`` (L3): persistent SSH clients held by the kernel's connection manager."""

from __future__ import annotations

from gxo.stdlib import _schemas as s
from gxo.stdlib._spec import ModuleSpec

def _conn() -> dict:
    return s.connection_id("Id returned by ssh:connect.")

CONNECT = ModuleSpec(
    name="ssh:connect",
    layer="L3",
    description="Open an authenticated, persistent SSH client and register it with the kernel.",
    params_schema=s.params(
        {
            "host": s.nonempty("Host name or address."),
            "port": s.port("TCP port.", default=22),
            "user": s.nonempty("Remote user."),
            "password": s.string("Password (use a secret); exclusive with private_key."),
            "private_key": s.string(
                "Private key content, PEM or OpenSSH format (use a secret); exclusive with "
                "password."
            ),
        },
        required=("host", "user"),
        rules=[s.exactly_one_of("password", "private_key")],
    ),
    summary_schema=s.summary(
        {
            "connection_id": s.string("Id of the SSH client."),
            "host": s.string("The host connected to."),
            "user": s.string("The remote user."),
        },
        dry_run=True,
    ),
    # host, user (summary) and port (logs) are echoed; password/private_key never are.
    logged_params=("host", "port", "user"),
)

COMMAND = ModuleSpec(
    name="ssh:command",
    layer="L3",
    description="Run one non-interactive command on the remote host.",
    params_schema=s.params(
        {"connection_id": _conn(), "command": s.nonempty("Command line, run by the remote shell.")},
        required=("connection_id", "command"),
    ),
    summary_schema=s.summary(s.command_result_properties(lines=False), dry_run=True),
    logged_params=("command",),  # logged, as exec's command is
)

SCRIPT = ModuleSpec(
    name="ssh:script",
    layer="L3",
    description="Upload a workspace script to a temporary remote path, run it, always remove it.",
    params_schema=s.params(
        {
            "connection_id": _conn(),
            "script_path": s.nonempty("Script to upload, relative to the workspace."),
            "script_args": s.string_list("Arguments of the script.", "One argument.", default=[]),
        },
        required=("connection_id", "script_path"),
    ),
    summary_schema=s.summary(s.command_result_properties(lines=False), dry_run=True),
    path_params=("script_path",),
    logged_params=("script_path", "script_args"),  # logged, as exec's command and args are
)

UPLOAD = ModuleSpec(
    name="ssh:upload",
    layer="L3",
    description="Upload a workspace file to the remote host over SFTP.",
    params_schema=s.params(
        {
            "connection_id": _conn(),
            "src": s.nonempty("Local file, relative to the workspace."),
            "dest": s.nonempty("Remote path."),
            "mode": s.file_mode("Permission bits of the remote file, e.g. \"0644\"."),
        },
        required=("connection_id", "src", "dest"),
    ),
    summary_schema=s.summary(
        {"bytes_written": s.integer("Bytes uploaded.", minimum=0)}, dry_run=True
    ),
    path_params=("src",),
    logged_params=("src", "dest"),  # logged
)

DOWNLOAD = ModuleSpec(
    name="ssh:download",
    layer="L3",
    description="Download a remote file into the workspace over SFTP.",
    params_schema=s.params(
        {
            "connection_id": _conn(),
            "src": s.nonempty("Remote path."),
            "dest": s.nonempty("Local file, relative to the workspace."),
        },
        required=("connection_id", "src", "dest"),
    ),
    summary_schema=s.summary(
        {
            "path": s.string("Absolute local path written."),
            "bytes": s.integer("Bytes downloaded.", minimum=0),
        },
        dry_run=True,
    ),
    path_params=("dest",),
    logged_params=("src", "dest"),  # dest is echoed as path; both are logged
)

MODULES: tuple[ModuleSpec, ...] = (CONNECT, COMMAND, SCRIPT, UPLOAD, DOWNLOAD)
