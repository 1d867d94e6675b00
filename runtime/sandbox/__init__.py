"""The process sandbox of exec-like children: no_new_privs and a seccomp filter.

One entry point for the spawn site, :func:`launch`: it turns ``program, args`` and the
workload's ``security_context`` into the argv to start and the descriptors the child must
inherit.  The child is the small launcher ``gxo-sandbox-exec`` (C, built at install), which
sets no_new_privs, loads the seccomp filter last and then execs the program: no Python runs
after fork, and the spawn site keeps its ``vfork`` fast path.  The filter is compiled once per
profile and run by libseccomp (``bpf``) into a sealed memfd that every child shares.

:func:`refusals` says, before a run, what a plan asks that this machine cannot give (exit 3
in ``gxo``): never a silent downgrade.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from gxo.runtime.sandbox.profiles import BASELINE, builtin

LAUNCHER_NAME = "gxo-sandbox-exec"
_HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class Sandbox:
    """What one workload's children get: a profile (``None``: unconfined) and no_new_privs."""

    label: str  # "default", "default-minimal", "unconfined" or "profile <path> (sha256 ...)"
    profile: dict[str, Any] | None
    no_new_privs: bool
    #: new namespaces asked for: a subset of {"user", "mount", "pid", "ipc", "uts", "net"}
    namespaces: frozenset[str] = frozenset()
    #: cgroup limits as written: ((key, value), ...) of memory_bytes, cpu_quota_us, cpu_period_us,
    #: cpu_weight, pids_max
    resources: tuple[tuple[str, int], ...] = ()
    user: str | None = None  # a user name or a numeric uid (as text)
    read_only_paths: tuple[str, ...] = ()
    root_filesystem: str | None = None

    def describe(self) -> str:
        return f"seccomp {self.label}, no_new_privs {'on' if self.no_new_privs else 'off'}"


@dataclass
class Launch:
    """How to start one sandboxed child: spawn ``argv`` with ``pass_fds``, then call
    :meth:`finish` once it has exited (on every path: it removes what was made for it)."""

    argv: list[str]
    pass_fds: tuple[int, ...]
    sandbox: Sandbox

    def finish(self) -> str | None:
        """Clean up after the child (idempotent); the limit it ran into, in words, or None."""
        return None


#: the baseline of every exec child without a security_context
BASELINE_SANDBOX = Sandbox(BASELINE, builtin(BASELINE), True)


def sandbox_of(security_context: Any, seccomp_profile: Any = None) -> Sandbox:
    """The sandbox of a workload from its plan fields (``security_context`` as written,
    ``seccomp_profile``: ``{path, sha256, profile}`` embedded by ``gxoc build``)."""
    if not isinstance(security_context, dict):
        return BASELINE_SANDBOX
    nnp = security_context.get("no_new_privileges", True) is not False
    if isinstance(seccomp_profile, dict) and "seccomp_profile_path" in security_context:
        label = f"profile {seccomp_profile.get('path')} (sha256 {str(seccomp_profile.get('sha256'))[:12]})"
        return Sandbox(label, seccomp_profile.get("profile"), nnp)
    name = security_context.get("seccomp", BASELINE)
    if security_context.get("seccomp_profile_path") == "default":
        name = BASELINE
    return Sandbox(name, builtin(name), nnp)


def launcher_path() -> str | None:
    """The installed launcher program, or None when this install has none."""
    path = os.environ.get("GXO_SANDBOX_LAUNCHER") or os.path.join(_HERE, LAUNCHER_NAME)
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


_fds: dict[str, int] = {}
_fds_lock = threading.Lock()


def _filter_fd(sandbox: Sandbox) -> int:
    """The sealed memfd of ``sandbox``'s compiled filter, made once per profile and process."""
    import json

    assert sandbox.profile is not None
    key = json.dumps(sandbox.profile, sort_keys=True)
    fd = _fds.get(key)
    if fd is None:
        from gxo.runtime.sandbox import bpf

        with _fds_lock:
            fd = _fds.get(key)
            if fd is None:
                fd = _fds[key] = bpf.sealed_fd(_program(key, sandbox.profile))
    return fd


def _cache_dir() -> str | None:
    """``$TMPDIR/gxo-<uid>/seccomp``, 0700 and ours, or None (then nothing is cached)."""
    import stat

    uid = os.getuid()
    # $TMPDIR or /tmp (tempfile.gettempdir()'s answer here, without importing tempfile: 2 ms of
    # every cold start)
    tmp = os.environ.get("TMPDIR") or os.environ.get("TEMP") or os.environ.get("TMP") or "/tmp"
    path = os.path.join(os.path.abspath(tmp), f"gxo-{uid}", "seccomp")
    try:
        # each level made 0700 (makedirs gives the parents the umask's mode), and ours
        for d in (os.path.dirname(path), path):
            try:
                os.mkdir(d, 0o700)
            except FileExistsError:
                pass
            st = os.lstat(d)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
                return None
            if st.st_mode & 0o077:
                os.chmod(d, 0o700)
    except OSError:
        return None
    return path


def _program(key: str, profile: dict[str, Any]) -> bytes:
    """The compiled filter of ``profile``: from the per-user cache (keyed by the profile, the
    machine's architecture and the files that build filters), else compiled by libseccomp and cached.  A warm
    run then never imports pyseccomp (its import runs ldconfig: tens of milliseconds)."""
    import hashlib

    from gxo.runtime.sandbox import bpf

    version = _version()
    digest = hashlib.sha256(f"{key}\0{os.uname().machine}\0{version}".encode()).hexdigest()
    cache = _cache_dir()
    if cache is not None:
        try:
            with open(os.path.join(cache, digest + ".bpf"), "rb") as fh:
                data = fh.read()
            if data and len(data) % 8 == 0:
                return data
        except OSError:
            pass
    program = bpf.compile_bpf(profile)
    if cache is not None:
        tmp = os.path.join(cache, f".{digest}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(program)
            os.replace(tmp, os.path.join(cache, digest + ".bpf"))
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return program


def _version() -> str:
    """Changes whenever the code that builds the filters changes (a reinstall, an upgrade)."""
    parts = []
    for name in ("bpf.py", "profiles.py"):
        try:
            st = os.stat(os.path.join(_HERE, name))
            parts.append(f"{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append("-")
    return ",".join(parts)


class SandboxError(RuntimeError):
    """The sandbox a child needs cannot be given on this machine."""


def launch(program: str, args: list[str], sandbox: Sandbox) -> Launch:
    """The argv that runs ``program args`` under ``sandbox`` and the fds to pass to it.

    Raises :class:`SandboxError` when the machine cannot give it (``refusals`` catches that
    before a run; this is the last line of defence)."""
    launcher = launcher_path()
    if launcher is None:
        raise SandboxError(f"the sandbox launcher {LAUNCHER_NAME} is not installed (gxo was installed "
                           "without a C compiler): reinstall gxo where cc is available")
    nnp = "1" if sandbox.no_new_privs else "0"
    if sandbox.profile is None:
        return Launch([launcher, nnp, "-", program, program, *args], (), sandbox)
    from gxo.runtime.sandbox.bpf import SeccompUnavailable

    try:
        fd = _filter_fd(sandbox)
    except SeccompUnavailable as exc:
        raise SandboxError(f"seccomp is not available: {exc}") from None
    return Launch([launcher, nnp, str(fd), program, program, *args], (fd,), sandbox)


def _status_field(name: str) -> str | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def refusals(sandboxes: list[tuple[str, Sandbox]]) -> list[str]:
    """What the machine cannot give to the workloads ``(name, sandbox)`` that start children,
    one phrase each (empty: all can run).  Compiles each filter once (cached for the run)."""
    if not sandboxes:
        return []
    if launcher_path() is None:
        return [f"the sandbox launcher {LAUNCHER_NAME} is not installed (gxo was installed without a C "
                "compiler; reinstall it where cc is available)"]
    needs_filter = [(n, s) for n, s in sandboxes if s.profile is not None]
    if needs_filter and _status_field("Seccomp") is None:
        return ["this kernel has no seccomp (no Seccomp line in /proc/self/status): the exec sandbox "
                "cannot be applied"]
    problems: list[str] = []
    admin: bool | None = None
    for name, sb in needs_filter:
        if not sb.no_new_privs:
            if admin is None:
                try:
                    admin = bool(int(_status_field("CapEff") or "0", 16) & (1 << 21))
                except ValueError:
                    admin = False
            if not admin:
                problems.append(f"workload '{name}': a seccomp filter without no_new_privileges needs "
                                "CAP_SYS_ADMIN, which gxo does not hold")
                continue
        from gxo.runtime.sandbox.bpf import SeccompUnavailable

        try:
            _filter_fd(sb)
        except (SeccompUnavailable, OSError) as exc:
            problems.append(f"workload '{name}': seccomp {sb.label} cannot be loaded: {exc}")
            break
    return problems


def denied_syscall(pid: int, max_records: int = 50000) -> str | None:
    """The syscall whose seccomp KILL action ended process ``pid``, from the kernel's audit
    record (``type=1326 ... pid=<pid> ... syscall=<nr>`` in ``/dev/kmsg``), as a name; None when
    the log cannot be read (it needs CAP_SYSLOG) or holds no such record.  A failure path only."""
    import re

    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    found: int | None = None
    want = re.compile(rb"type=1326 .*\bpid=%d\b.*\bsyscall=(\d+)" % pid)
    try:
        for _ in range(max_records):
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError:  # EPIPE: a record was overwritten while reading; go on
                continue
            if not record:
                break
            m = want.search(record)
            if m:
                found = int(m.group(1))
    finally:
        os.close(fd)
    if found is None:
        return None
    try:
        import pyseccomp

        name = pyseccomp.resolve_syscall(pyseccomp.system_arch(), found)
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001 - no libseccomp: the number still says it
        return f"syscall {found}"
