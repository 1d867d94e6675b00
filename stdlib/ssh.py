"""``ssh:*`` (L3): SSH clients on asyncssh.

``ssh:connect`` opens an authenticated SSH connection (``host``, ``port``, ``user``, and
``password`` or ``private_key``) and registers it with the kernel's connection manager; its
``connection_id`` lets ``ssh:command``, ``ssh:script``, ``ssh:upload`` and ``ssh:download`` run
over it, several at once (each on its own channel).  Given the connection params instead, each
of those opens its own connection and closes it when it ends.  A connection from ssh:connect
belongs to the run: ``connection:close`` closes it, the idle timeout closes it when no module
has used it for ``GXO_CONNECTION_IDLE_TIMEOUT``, and the run's end closes it, however the run
ends; it counts against ``GXO_MAX_CONNECTIONS``.

Host keys are always checked: against ``known_hosts`` (the text of a known_hosts file, or the
path of one in the workspace or under the allowed paths) or, without it, against
``~/.ssh/known_hosts`` and ``/etc/ssh/ssh_known_hosts`` of the user running gxo.
``insecure_ignore_host_key: true`` turns the check off and logs a warning.  Passwords, keys and
passphrases are never logged nor echoed; every error message is redacted.
"""

from __future__ import annotations

from gxo.stdlib import _schemas as s
from gxo.stdlib._spec import ModuleSpec

#: The connection params: ssh:connect's, or those of a module that opens its own connection.
CONNECTION_PARAMS = ("host", "port", "user", "password", "private_key", "passphrase",
                     "known_hosts", "insecure_ignore_host_key", "connect_timeout")
#: Connection params that show up in logs and errors (the others are credentials).
_LOGGED_CONNECTION = ("host", "port", "user")


def _connection_props() -> dict:
    return {
        "host": s.nonempty("Host name or address to connect to."),
        "port": s.port("TCP port of the SSH server.", default=22),
        "user": s.nonempty("Remote user."),
        "password": s.string("Password (use a secret); exclusive with private_key."),
        "private_key": s.nonempty(
            "Private key: its text, PEM or OpenSSH format (use a secret), or the path of a key "
            "file in the workspace or under allowed_paths; exclusive with password."),
        "passphrase": s.string("Passphrase of an encrypted private_key (use a secret)."),
        "known_hosts": s.nonempty(
            "Trusted host keys: the text of a known_hosts file (lines \"host keytype key\"; "
            "\"[host]:port\" for a port other than 22), or the path of one in the workspace or "
            "under allowed_paths. Default: ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts of "
            "the user running gxo."),
        "insecure_ignore_host_key": s.boolean(
            "Accept any host key: logs a prominent warning, the connection can be intercepted. "
            "Only for throwaway hosts.", default=False),
        "connect_timeout": s.duration("Time limit for connecting and authenticating.",
                                      default="10s"),
    }


#: The rules of the connection params, once host is given.
_CONNECTION_RULES = (
    {"dependentRequired": {"host": ["user"], "passphrase": ["private_key"]}},
    s.when_present("host", {"anyOf": [{"required": ["password"]},
                                      {"required": ["private_key"]}]}),
    s.at_most_one_of("password", "private_key"),
    s.at_most_one_of("known_hosts", "insecure_ignore_host_key"),
)

CONNECT = ModuleSpec(
    name="ssh:connect",
    layer="L3",
    description="Open an authenticated, persistent SSH client and register it with the kernel.",
    params_schema=s.params(_connection_props(), required=("host", "user"),
                           rules=list(_CONNECTION_RULES)),
    summary_schema=s.summary(
        {
            "connection_id": s.string(
                "Id of the SSH connection, for the connection_id of ssh:command, ssh:script, "
                "ssh:upload, ssh:download and connection:close."),
            "host": s.string("The host connected to."),
            "port": s.integer("The server's TCP port.", minimum=0, maximum=65535),
            "user": s.string("The remote user."),
            "server_version": s.string(
                "The server's SSH version string, e.g. \"SSH-2.0-OpenSSH_9.2p1\"."),
            "local_addr": s.string(
                "Local address of the connection, host:port (the server sees it as the "
                "client's address, e.g. in SSH_CONNECTION)."),
        },
        dry_run=True,
    ),
    # host, port, user are echoed; password, private_key and passphrase never are.
    logged_params=_LOGGED_CONNECTION,
)


def _with_connection(own: dict, *, required: tuple[str, ...] = (),
                     rules: tuple[dict, ...] = ()) -> dict:
    """A params schema: the module's ``own`` params, plus either the connection params (the
    module opens its own connection) or ``connection_id`` (it runs over ssh:connect's)."""
    props = {
        "connection_id": s.connection_id(
            "Id returned by ssh:connect: run over that connection instead of opening one "
            "(exclusive with host and the other connection params)."),
        **_connection_props(),
        **own,
    }
    return s.params(
        props,
        required=required,
        rules=[
            s.exactly_one_of("connection_id", "host"),
            *_CONNECTION_RULES,
            # with host too, the rule above says it; without, none of the others goes with it
            {"if": {"not": {"required": ["host"]}},
             "then": {"not": {"anyOf": [{"required": ["connection_id", k]}
                                        for k in CONNECTION_PARAMS if k != "host"]}}},
            *rules,
        ],
    )


def _ok_exit_codes() -> dict:
    return s.array(
        s.integer("An exit code.", minimum=0, maximum=255),
        "Exit codes that count as success; any other code fails the workload.",
        default=[0],
        minItems=1,
        uniqueItems=True,
    )


def _command_timeout() -> dict:
    return s.duration("Time limit for the remote command, once connected.", default="1h")


COMMAND = ModuleSpec(
    name="ssh:command",
    layer="L3",
    description="Run one non-interactive command on the remote host.",
    params_schema=_with_connection(
        {
            "command": s.nonempty(
                "Command line, sent as it is to the remote user's shell, which parses it (as "
                "`ssh host 'command'` does): quote it yourself, and pass values from templates "
                "with args instead."),
            "args": s.string_list(
                "The program and its arguments; each is quoted for the remote shell "
                "(shlex.join) before it is sent, so no value is ever read as shell syntax.",
                "One argument.", minItems=1),
            "ok_exit_codes": _ok_exit_codes(),
            "timeout": _command_timeout(),
        },
        rules=(s.exactly_one_of("command", "args"),),
    ),
    summary_schema=s.summary(s.command_result_properties(lines=False), dry_run=True),
    logged_params=(*_LOGGED_CONNECTION, "command", "args"),  # logged, as exec's command is
)

SCRIPT = ModuleSpec(
    name="ssh:script",
    layer="L3",
    description="Upload a workspace script to a temporary remote path, run it, always remove it.",
    params_schema=_with_connection(
        {
            "script_path": s.nonempty(
                "Script to upload, relative to the workspace or under allowed_paths; it runs "
                "by its #! line."),
            "script": s.nonempty("The script's text, instead of script_path."),
            "script_args": s.string_list(
                "Arguments of the script (each quoted for the remote shell).", "One argument.",
                default=[]),
            "remote_tmp": s.nonempty(
                "Remote directory the script is uploaded to (as gxo-script-<random>, mode "
                "0700, removed after the run).", default="/tmp"),
            "ok_exit_codes": _ok_exit_codes(),
            "timeout": _command_timeout(),
        },
        rules=(s.exactly_one_of("script_path", "script"),),
    ),
    summary_schema=s.summary(s.command_result_properties(lines=False), dry_run=True),
    path_params=("script_path",),
    # logged, as exec's command and args are; the script's text is not
    logged_params=(*_LOGGED_CONNECTION, "script_path", "script_args"),
)

UPLOAD = ModuleSpec(
    name="ssh:upload",
    layer="L3",
    description="Upload a workspace file to the remote host over SFTP.",
    params_schema=_with_connection(
        {
            "src": s.nonempty("Local file, relative to the workspace or under allowed_paths."),
            "dest": s.nonempty("Remote file path (its directory must exist); replaced if it "
                               "exists."),
            "mode": s.file_mode("Permission bits of the remote file, e.g. \"0644\" (default: "
                                "the server's default for a new file, unchanged for an "
                                "existing one)."),
        },
        required=("src", "dest"),
    ),
    summary_schema=s.summary(
        {
            "bytes_written": s.integer("Bytes uploaded.", minimum=0),
            "dest": s.string("The remote path written."),
            "mode": s.string("Permission bits of the remote file afterwards, octal (\"0644\")."),
        },
        dry_run=True,
    ),
    path_params=("src",),
    logged_params=(*_LOGGED_CONNECTION, "src", "dest"),  # dest is echoed; src is logged
)

DOWNLOAD = ModuleSpec(
    name="ssh:download",
    layer="L3",
    description="Download a remote file into the workspace over SFTP.",
    params_schema=_with_connection(
        {
            "src": s.nonempty("Remote file path."),
            "dest": s.nonempty(
                "Local file, relative to the workspace or under allowed_paths (its directory "
                "must exist); replaced atomically if it exists."),
        },
        required=("src", "dest"),
    ),
    summary_schema=s.summary(
        {
            "path": s.string("Absolute local path written."),
            "bytes": s.integer("Bytes downloaded.", minimum=0),
            "mode": s.string("Permission bits of the remote file, octal (\"0644\"); the local "
                             "file gets them too (without setuid, setgid and sticky bits)."),
        },
        dry_run=True,
    ),
    path_params=("dest",),
    logged_params=(*_LOGGED_CONNECTION, "src", "dest"),  # dest is echoed as path; both logged
)

MODULES: tuple[ModuleSpec, ...] = (CONNECT, COMMAND, SCRIPT, UPLOAD, DOWNLOAD)


# --------------------------------------------------------------------------- code
#
# Module code (design.md §8).  asyncssh is imported inside perform: the compiler imports this
# file, and `gxo exec` must not pay for asyncssh (nor cryptography's deprecation warnings about
# DSA, which importing asyncssh raises) unless a plan runs an ssh:* module.

#: Local files read as private_key, known_hosts or a script: at most this many bytes.
_MAX_SMALL_FILE = 1 << 20
#: SFTP transfers go in blocks of this size.
_BLOCK = 1 << 16
#: known_hosts text rather than a path: a line "[marker] host[,host] keytype base64"
_KNOWN_HOSTS_LINE = r"^\s*(@\S+\s+)?\S+\s+[a-z][a-z0-9@.-]*-[a-z0-9@.-]+\s+[A-Za-z0-9+/]+=*"


def _asyncssh():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cryptography deprecates DSA, which asyncssh supports
        import asyncssh
    return asyncssh


class _Target:
    """Validated connection params (read before a dry run returns; nothing is opened)."""

    __slots__ = ("host", "port", "user", "password", "key", "passphrase", "known_hosts",
                 "insecure", "timeout", "timeout_text")

    def __init__(self, params: dict) -> None:
        from gxo.runtime.module import ValidationError
        from gxo.stdlib import _params as p

        self.host = p.req_str(params, "host")
        port = params.get("port")
        if isinstance(port, str) and port.strip().isdigit():  # rendered from a template
            params = {**params, "port": int(port)}
        self.port = p.opt_int(params, "port", 22, minimum=1, maximum=65535)
        self.user = p.req_str(params, "user")
        self.password = p.opt_str(params, "password")
        self.key = p.opt_str(params, "private_key")
        if (self.password is None) == (self.key is None):
            raise ValidationError("give exactly one of 'password' and 'private_key'")
        if self.key == "":
            raise ValidationError("parameter 'private_key' must not be empty")
        self.passphrase = p.opt_str(params, "passphrase")
        if self.passphrase is not None and self.key is None:
            raise ValidationError("parameter 'passphrase' goes with 'private_key'")
        self.known_hosts = p.opt_str(params, "known_hosts")
        self.insecure = p.opt_bool(params, "insecure_ignore_host_key")
        if self.insecure and self.known_hosts is not None:
            raise ValidationError("give known_hosts or insecure_ignore_host_key: true, not both")
        self.timeout = p.opt_duration(params, "connect_timeout", "10s")
        self.timeout_text = params.get("connect_timeout") or "10s"

    @property
    def where(self) -> str:
        """``ssh user@host:port``, the prefix of every message about the connection."""
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        return f"ssh {self.user}@{host}:{self.port}"


def _read_local(ctx, user_path: str, what: str) -> bytes:
    """A small local file (key, known_hosts, script), contained in the workspace."""
    import os

    from gxo.runtime.module import ModuleError

    path = ctx.workspace.resolve(user_path)
    try:
        if os.path.exists(path) and not os.path.isfile(path):  # a FIFO would block the open
            raise ModuleError(f"{what} {ctx.redact(user_path)!r} is not a regular file")
        with open(path, "rb") as fh:
            data = fh.read(_MAX_SMALL_FILE + 1)
    except OSError as exc:
        raise ModuleError(f"cannot read {what} {ctx.redact(user_path)!r}: "
                          f"{exc.strerror or exc}") from None
    if len(data) > _MAX_SMALL_FILE:
        raise ModuleError(f"{what} {ctx.redact(user_path)!r} is larger than 1 MiB")
    return data


def _private_key(ctx, t: _Target):
    """The asyncssh key pair of ``private_key`` (text, or a file path) and ``passphrase``."""
    from gxo.runtime.module import ValidationError

    asyncssh = _asyncssh()
    text = t.key
    assert text is not None
    is_text = "-----BEGIN" in text or "\n" in text.strip() or len(text) > 4096
    data = text.encode("utf-8") if is_text else _read_local(ctx, text, "private_key file")
    try:
        return asyncssh.import_private_key(data, t.passphrase)
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        where = "the private_key text" if is_text else f"private_key file {text!r}"
        hint = ""
        if "assphrase" in reason and t.passphrase is None:
            hint = " (give its passphrase as passphrase)"
        raise ValidationError(ctx.redact(f"{where} is not a usable private key: {reason}"
                                         f"{hint}")) from None


def _known_hosts(ctx, t: _Target):
    """``(asyncssh known hosts or None, where they come from)``."""
    import os
    import re

    from gxo.runtime.module import ValidationError

    asyncssh = _asyncssh()
    if t.insecure:
        return None, "insecure_ignore_host_key"
    if t.known_hosts is not None:
        value = t.known_hosts
        if "\n" in value.strip() or re.match(_KNOWN_HOSTS_LINE, value):
            text, source = value, "the known_hosts text"
        else:
            text = _read_local(ctx, value, "known_hosts file").decode("utf-8", "replace")
            source = f"known_hosts file {value}"
    else:
        parts = []
        files = [os.path.expanduser("~/.ssh/known_hosts"), "/etc/ssh/ssh_known_hosts"]
        for path in files:
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    parts.append(fh.read(_MAX_SMALL_FILE))
            except OSError:
                pass
        text = "\n".join(parts)
        source = " and ".join(files)
    try:
        return asyncssh.import_known_hosts(text), source
    except (ValueError, asyncssh.Error) as exc:
        raise ValidationError(f"{source} is not in known_hosts format: {exc}") from None


def _connect_error(exc: BaseException, t: _Target, source: str) -> str | None:
    """The one-line message of a failed connection, or None for an unexpected exception."""
    import socket

    asyncssh = _asyncssh()
    if isinstance(exc, TimeoutError):
        return (f"{t.where}: no SSH session within {t.timeout_text} (connect_timeout): check "
                f"the host, the port and firewalls, or raise connect_timeout")
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return (f"{t.where}: the host key of {t.host} is not trusted: no matching key in "
                f"{source}. Check the host's key fingerprint, then add it to known_hosts "
                f"(text or a file; `ssh-keyscan -p {t.port} {t.host}` prints the line), or set "
                f"insecure_ignore_host_key: true for a throwaway host")
    if isinstance(exc, asyncssh.PermissionDenied):
        how = "password" if t.password is not None else "private key"
        # the credential's kind comes last: keyword redaction (--redact-keywords) would hide
        # whatever follows the word "password" on the line
        return f"{t.where}: authentication failed for user {t.user}: the server refused the {how}"
    if isinstance(exc, ConnectionRefusedError):
        return f"{t.where}: connection refused: no SSH server listens on port {t.port}"
    if isinstance(exc, socket.gaierror):
        return f"{t.where}: cannot resolve host {t.host!r}: {exc.strerror or exc}"
    if isinstance(exc, OSError):
        return f"{t.where}: cannot connect: {exc.strerror or exc}"
    if isinstance(exc, asyncssh.Error):
        return f"{t.where}: {exc.reason or type(exc).__name__}"
    return None


async def _connect(ctx, t: _Target):
    """An authenticated asyncssh connection to ``t``; every failure is a one-line
    ModuleError."""
    import asyncio

    from gxo.runtime.module import ModuleError

    asyncssh = _asyncssh()
    known_hosts, source = _known_hosts(ctx, t)
    if t.insecure:
        ctx.logger.warning(
            "SSH HOST KEY CHECKING IS DISABLED (insecure_ignore_host_key: true): any "
            "server can pose as this host and read the credentials and data sent; never "
            "use this in production", host=t.host, port=t.port)
    kwargs: dict = {
        "port": t.port, "username": t.user, "known_hosts": known_hosts,
        "config": None,  # no ~/.ssh/config: the params say everything
        "agent_path": None, "gss_auth": False, "gss_kex": False, "kbdint_auth": False,
        "connect_timeout": t.timeout,
        # a peer that stops answering mid-transfer is given up after about a minute
        "keepalive_interval": 15, "keepalive_count_max": 4,
    }
    if t.password is not None:
        kwargs.update(password=t.password, client_keys=None, preferred_auth="password")
    else:
        kwargs.update(client_keys=[_private_key(ctx, t)], password=None,
                      preferred_auth="publickey")
    try:
        async with asyncio.timeout(t.timeout):
            conn = await asyncssh.connect(t.host, **kwargs)
    except Exception as exc:  # noqa: BLE001 - every failure is one line, never a traceback
        message = _connect_error(exc, t, source) or \
            f"{t.where}: cannot connect: {type(exc).__name__}: {exc}"
        raise ModuleError(ctx.redact(message)) from None
    ctx.logger.debug("connected", host=t.host, port=t.port, user=t.user)
    return conn


async def _close(conn) -> None:
    import asyncio

    conn.close()
    try:
        async with asyncio.timeout(5):
            await conn.wait_closed()
    except TimeoutError:
        pass


#: Modules that may use one connection from ssh:connect at once; the others wait their turn.
#: OpenSSH serves 10 channels per connection by default (MaxSessions) and ssh:script uses two.
_USES_AT_ONCE = 5
_WANTED = "an SSH connection: give the connection_id that ssh:connect returned"


class _Link:
    """The connection a module runs over: ``async with link as conn`` lends ssh:connect's
    (``connection_id``), which stays open, or opens the module's own from the connection
    params and closes it on the way out (also when the workload is cancelled).  Params are
    checked when it is made, before a dry run returns."""

    def __init__(self, ctx, params: dict) -> None:
        from gxo.runtime.module import ValidationError
        from gxo.stdlib import _params as p

        self.ctx = ctx
        self.conn = None
        self._use = None
        self.t: _Target | None = None
        self.cid: str | None = None
        if params.get("connection_id") is not None:
            given = [k for k in CONNECTION_PARAMS if params.get(k) is not None]
            if given:
                raise ValidationError(
                    f"give connection_id or the connection params, not both: connection_id "
                    f"runs over the connection ssh:connect opened (drop {', '.join(given)})")
            # a dry run's ssh:connect returns an empty id
            self.cid = p.req_str(params, "connection_id", nonempty=not ctx.dry_run)
            self.where = f"ssh connection '{self.cid}'"
        elif params.get("host") is None:
            raise ValidationError(
                "give connection_id (from ssh:connect) or host, user and password or "
                "private_key (the module then opens its own connection)")
        else:
            self.t = _Target(params)
            self.where = self.t.where

    @property
    def shown(self) -> dict:
        """Fields that name the connection in logs."""
        if self.t is not None:
            return {"host": self.t.host}
        return {"connection_id": self.cid}

    async def __aenter__(self):
        if self.t is not None:
            self.conn = await _connect(self.ctx, self.t)
            return self.conn
        handle = self.ctx.connections().get(self.cid, kind="ssh", wanted=_WANTED)
        self.where = handle.where
        self._use = handle.use()
        self.conn = await self._use.__aenter__()
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        if self._use is not None:
            await self._use.__aexit__(*exc)
        elif self.conn is not None:
            await _close(self.conn)


def _ok_codes(params: dict) -> list[int]:
    from gxo.runtime.module import ValidationError

    codes = params.get("ok_exit_codes")
    if codes is None:
        return [0]
    if not (isinstance(codes, list) and codes
            and all(isinstance(c, int) and not isinstance(c, bool) for c in codes)):
        raise ValidationError("parameter 'ok_exit_codes' must be a non-empty list of integers")
    return codes


def _result_summary(stdout: bytes | str | None, stderr: bytes | str | None,
                    exit_code: int) -> dict:
    def text(data) -> str:
        if data is None:
            return ""
        if isinstance(data, bytes):
            data = data.decode("utf-8", "replace")
        return data.rstrip("\n")

    return {"stdout": text(stdout), "stderr": text(stderr), "exit_code": exit_code}


def _exit_code(result) -> tuple[int, str]:
    """``(exit code, how it ended)``: a signal is reported as a shell does, 128 + N."""
    import signal

    if result.exit_signal:
        name = result.exit_signal[0]
        try:
            number = signal.Signals[f"SIG{name}"].value
        except KeyError:
            return -1, f"was killed by signal {name}"
        return 128 + number, f"was killed by SIG{name}"
    if result.exit_status is None or result.exit_status < 0:
        return -1, "ended without an exit status"
    return result.exit_status, f"exited with code {result.exit_status}"


async def _run_remote(ctx, where: str, conn, command: str, shown: str, ok_codes: list[int],
                      timeout: float, timeout_text: str) -> dict:
    """Run ``command`` on ``conn`` (stdin closed), its output as exec's summary; a code not in
    ``ok_codes`` fails with the summary."""
    from gxo.runtime.module import ModuleError

    asyncssh = _asyncssh()
    try:
        result = await conn.run(command, check=False, timeout=timeout, encoding=None,
                                stdin=asyncssh.DEVNULL)
    except asyncssh.TimeoutError as exc:
        summary = _result_summary(exc.stdout, exc.stderr, -1)
        raise ModuleError(ctx.redact(f"{where}: {shown} did not finish within {timeout_text} "
                                     f"(timeout)"), summary=summary) from None
    except (asyncssh.Error, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise ModuleError(ctx.redact(f"{where}: cannot run {shown}: {reason}")) from None
    code, how = _exit_code(result)
    summary = _result_summary(result.stdout, result.stderr, code)
    if code not in ok_codes:
        last = summary["stderr"].strip().splitlines()[-1:] if summary["stderr"] else []
        # redact before cutting: a cut through a secret would leak its first half
        tail = f": {ctx.redact(last[0])[:500]}" if last else ""
        raise ModuleError(f"{ctx.redact(f'{where}: {shown} {how}')}{tail}", summary=summary)
    return summary


def _shown(command: str) -> str:
    """A command for messages: its first line, at most 200 characters."""
    first = command.strip().splitlines()[0] if command.strip() else command
    if len(first) > 200 or first != command.strip():
        first = first[:200] + "..."
    return f"command {first!r}"


class Connect:
    """``ssh:connect``: an authenticated SSH connection, registered with the kernel's
    connection manager for the ssh:* modules' ``connection_id``."""

    name = "ssh:connect"

    async def perform(self, ctx, params):
        from gxo.runtime.connections import ClientConnection, format_addr
        from gxo.runtime.module import ModuleError
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        p.check_allowed(params, tuple(CONNECT.params_schema["properties"]), CONNECT.name)
        t = _Target(params)
        if ctx.dry_run:
            ctx.logger.info("dry run: would open an SSH connection", host=t.host, port=t.port)
            return {"dry_run": True, "connection_id": "", "host": t.host, "port": t.port,
                    "user": t.user, "server_version": "", "local_addr": ""}
        mgr = ctx.connections()
        mgr.check_room()  # before the handshake: the limit fails at once
        conn = await _connect(ctx, t)
        handle = ClientConnection(
            "ssh", conn, format_addr(conn.get_extra_info("sockname")),
            format_addr(conn.get_extra_info("peername")),
            what="an SSH connection (from ssh:connect)",
            used_by="ssh:command, ssh:script, ssh:upload or ssh:download",
            where=t.where, slots=_USES_AT_ONCE)
        try:
            cid = mgr.add(handle)  # closes the connection when it cannot be registered
        except ModuleError:
            await handle._wait_closed()
            raise
        ctx.logger.debug("SSH connection registered", connection_id=cid, host=t.host,
                         port=t.port, local_addr=handle.local_addr)
        return {"connection_id": cid, "host": t.host, "port": t.port, "user": t.user,
                "server_version": conn.get_extra_info("server_version") or "",
                "local_addr": handle.local_addr}


class Command:
    """``ssh:command``: one remote command; its output as ``exec``'s summary."""

    name = "ssh:command"

    async def perform(self, ctx, params):
        import shlex

        from gxo.runtime.module import ValidationError
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        link = _Link(ctx, params)
        command = p.opt_str(params, "command")
        args = p.opt_str_list(params, "args", scalars=True)
        if (command is None) == (not args):
            raise ValidationError("give exactly one of 'command' and 'args' (a non-empty list)")
        if command is None:
            command = shlex.join(args)
        elif not command.strip():
            raise ValidationError("parameter 'command' must not be blank")
        ok_codes = _ok_codes(params)
        timeout = p.opt_duration(params, "timeout", "1h")
        if ctx.dry_run:
            ctx.logger.info("dry run: would run a remote command", **link.shown, command=command)
            return {"dry_run": True, **_result_summary("", "", 0)}
        async with link as conn:
            return await _run_remote(ctx, link.where, conn, command, _shown(command), ok_codes,
                                     timeout, params.get("timeout") or "1h")


class Script:
    """``ssh:script``: upload the script (mode 0700, a random name under ``remote_tmp``, never
    an existing file), run it with its arguments, always remove it."""

    name = "ssh:script"

    async def perform(self, ctx, params):
        import secrets
        import shlex

        from gxo.runtime.module import ModuleError, ValidationError
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        link = _Link(ctx, params)
        script_path = p.opt_str(params, "script_path")
        script_text = p.opt_str(params, "script")
        if (script_path is None) == (script_text is None):
            raise ValidationError("give exactly one of 'script_path' and 'script'")
        script_args = p.opt_str_list(params, "script_args", scalars=True)
        remote_tmp = p.opt_str(params, "remote_tmp", "/tmp") or "/tmp"
        ok_codes = _ok_codes(params)
        timeout = p.opt_duration(params, "timeout", "1h")
        if script_path is not None:
            data = _read_local(ctx, script_path, "script_path")
            shown = f"script {script_path}"
        else:
            data = (script_text or "").encode("utf-8")
            shown = "script"
        if not data.startswith(b"#!"):
            ctx.logger.warning("the script has no #! line: the remote shell decides how it runs")
        if ctx.dry_run:
            ctx.logger.info("dry run: would run a remote script", **link.shown, script=shown)
            return {"dry_run": True, **_result_summary("", "", 0)}

        asyncssh = _asyncssh()
        remote = f"{remote_tmp.rstrip('/') or ''}/gxo-script-{secrets.token_hex(16)}"
        async with link as conn:
            try:
                async with conn.start_sftp_client() as sftp:
                    try:
                        async with sftp.open(remote, "xb",
                                             asyncssh.SFTPAttrs(permissions=0o700)) as fh:
                            await fh.write(data)
                        await sftp.chmod(remote, 0o700)
                        return await _run_remote(
                            ctx, link.where, conn, shlex.join([remote, *script_args]), shown,
                            ok_codes, timeout, params.get("timeout") or "1h")
                    finally:
                        try:
                            await sftp.remove(remote)
                        except asyncssh.SFTPNoSuchFile:
                            pass
                        except (asyncssh.Error, OSError) as exc:
                            ctx.logger.warning("could not remove the uploaded script",
                                               path=remote, error=str(exc))
            except (asyncssh.SFTPError, asyncssh.ChannelOpenError) as exc:
                raise ModuleError(ctx.redact(f"{link.where}: cannot upload the script to "
                                             f"{remote_tmp}: {exc.reason}")) from None


def _mode_text(attrs) -> str:
    return f"{(attrs.permissions or 0) & 0o7777:04o}"


class Upload:
    """``ssh:upload``: one workspace file to a remote path over SFTP."""

    name = "ssh:upload"

    async def perform(self, ctx, params):
        import os
        import stat

        from gxo.runtime.module import ModuleError
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        link = _Link(ctx, params)
        src = p.req_str(params, "src")
        dest = p.req_str(params, "dest")
        mode = p.opt_mode(params, "mode")
        local = ctx.workspace.resolve(src)
        if ctx.dry_run:
            ctx.logger.info("dry run: would upload a file", **link.shown, src=src, dest=dest)
            return {"dry_run": True, "bytes_written": 0, "dest": dest,
                    "mode": f"{mode or 0:04o}"}
        try:
            if os.path.exists(local) and not os.path.isfile(local):  # a FIFO would block
                raise ModuleError(f"src {src!r} is not a regular file")
            fh = open(local, "rb")
        except OSError as exc:
            raise ModuleError(f"cannot read src {src!r}: {exc.strerror or exc}") from None
        with fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise ModuleError(f"src {src!r} is not a regular file")
            asyncssh = _asyncssh()
            async with link as conn:
                try:
                    async with conn.start_sftp_client() as sftp:
                        attrs = asyncssh.SFTPAttrs(permissions=mode) if mode is not None \
                            else asyncssh.SFTPAttrs()
                        written = 0
                        async with sftp.open(dest, "wb", attrs) as remote:
                            while chunk := fh.read(_BLOCK):
                                await remote.write(chunk)
                                written += len(chunk)
                        if mode is not None:  # an existing file keeps its bits on open
                            await sftp.chmod(dest, mode)
                        after = await sftp.stat(dest)
                except (asyncssh.SFTPError, asyncssh.ChannelOpenError) as exc:
                    raise ModuleError(ctx.redact(f"{link.where}: cannot upload {src} to {dest}: "
                                                 f"{exc.reason}")) from None
        return {"bytes_written": written, "dest": dest, "mode": _mode_text(after)}


class Download:
    """``ssh:download``: one remote file into the workspace over SFTP, through a temporary file
    beside ``dest`` renamed into place (a failed transfer leaves ``dest`` as it was)."""

    name = "ssh:download"

    async def perform(self, ctx, params):
        import os
        import tempfile

        from gxo.runtime.module import ModuleError
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        link = _Link(ctx, params)
        src = p.req_str(params, "src")
        dest = p.req_str(params, "dest")
        local = ctx.workspace.resolve(dest)
        if ctx.dry_run:
            ctx.logger.info("dry run: would download a file", **link.shown, src=src, dest=dest)
            return {"dry_run": True, "path": local, "bytes": 0, "mode": "0000"}
        parent = os.path.dirname(local)
        if not os.path.isdir(parent):
            raise ModuleError(f"dest {dest!r}: directory {parent} does not exist")
        if os.path.isdir(local):
            raise ModuleError(f"dest {dest!r} is a directory; name the file to write")

        asyncssh = _asyncssh()
        async with link as conn:
            fd, tmp = tempfile.mkstemp(dir=parent, prefix=".gxo-download-")
            try:
                with os.fdopen(fd, "wb") as out:
                    try:
                        async with conn.start_sftp_client() as sftp:
                            attrs = await sftp.stat(src)
                            if attrs.type != asyncssh.FILEXFER_TYPE_REGULAR:
                                raise ModuleError(f"{link.where}: {src} is not a regular file")
                            size = 0
                            async with sftp.open(src, "rb") as remote:
                                while chunk := await remote.read(_BLOCK):
                                    out.write(chunk)
                                    size += len(chunk)
                    except (asyncssh.SFTPError, asyncssh.ChannelOpenError) as exc:
                        raise ModuleError(ctx.redact(f"{link.where}: cannot download {src}: "
                                                     f"{exc.reason}")) from None
                    os.fchmod(out.fileno(), (attrs.permissions or 0o600) & 0o777)
                os.replace(tmp, local)
            except BaseException:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                raise
        return {"path": local, "bytes": size, "mode": _mode_text(attrs)}


CODE = {"ssh:connect": Connect, "ssh:command": Command, "ssh:script": Script, "ssh:upload": Upload,
        "ssh:download": Download}
