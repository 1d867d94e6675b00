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
from typing import Any

from msgspec import Struct

from gxo.runtime.sandbox.profiles import BASELINE, builtin

LAUNCHER_NAME = "gxo-sandbox-exec"
_HERE = os.path.dirname(os.path.abspath(__file__))


class Sandbox(Struct, frozen=True):
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

    def describe(self, limits: Any = None) -> str:
        """What is applied, in words (``-v``, ``--json`` events); ``limits``: the child's
        cgroup limits (``gxo.runtime.sandbox.limits.Limits``) when it has some."""
        parts = [f"seccomp {self.label}", f"no_new_privs {'on' if self.no_new_privs else 'off'}"]
        layout = self.layout()
        if layout.namespaces:
            parts.append("namespaces " + ",".join(layout.namespaces))
        if layout.private_tmp:
            parts.append("private /tmp")
        if self.read_only_paths:
            parts.append("read-only " + ",".join(self.read_only_paths))
        if self.root_filesystem:
            parts.append(f"root {self.root_filesystem}")
        if self.user is not None:
            parts.append(f"user {self.user}")
        if limits is not None:
            parts.append(limits.describe())
        return ", ".join(parts)

    def needs_launcher_setup(self) -> bool:
        """Whether the child asks for more than no_new_privs and a filter (a probe checks it)."""
        return bool(self.namespaces or self.user is not None or self.read_only_paths or self.root_filesystem)

    def layout(self) -> "Layout":
        """The namespaces this sandbox makes: those asked for, plus a mount namespace where
        paths are remounted (read_only_paths, root_filesystem, a user's private /tmp, a pid
        namespace's own /proc), plus a user namespace when gxo lacks CAP_SYS_ADMIN (as
        bubblewrap does)."""
        ns = set(self.namespaces)
        if self.read_only_paths or self.root_filesystem or "pid" in ns or (
                self.user is not None and not _same_user(self.user)):
            ns.add("mount")
        if ns - {"user"} and not _privileged():
            ns.add("user")
        private_tmp = "mount" in ns and not self.root_filesystem
        return Layout(tuple(n for n in NAMESPACES if n in ns), private_tmp)


class Layout(Struct, frozen=True):
    namespaces: tuple[str, ...]  # those made, in NAMESPACES order
    private_tmp: bool  # a fresh /tmp holding only the binds (workspace, plan folder, program)


_admin: bool | None = None  # _privileged(), read once: gxo never changes its own capabilities


def _privileged() -> bool:
    """Whether gxo holds CAP_SYS_ADMIN (namespaces without a user namespace of their own, a
    seccomp filter without no_new_privs)."""
    global _admin
    if _admin is None:
        try:
            _admin = bool(int(_status_field("CapEff") or "0", 16) & (1 << 21))
        except ValueError:
            _admin = False
    return _admin


def _same_user(user: str) -> bool:
    try:
        return resolve_user(user)[0] == os.geteuid()
    except SandboxError:
        return False


def resolve_user(user: str) -> tuple[int, int, tuple[int, ...]]:
    """``user`` (a name, or a uid as text) as (uid, gid, supplementary groups): the passwd
    entry's group and the groups it is a member of; a uid without an entry gets its own
    number as gid and no groups."""
    import pwd

    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        if user.isdigit():
            return int(user), int(user), ()
        raise SandboxError(f"user '{user}' does not exist on this machine (security_context.user)") from None
    except (OverflowError, ValueError):
        raise SandboxError(f"user '{user}' is not a valid uid (security_context.user)") from None
    try:
        groups = tuple(g for g in os.getgrouplist(entry.pw_name, entry.pw_gid) if g != entry.pw_gid)
    except OSError:
        groups = ()
    return entry.pw_uid, entry.pw_gid, groups


class Launch(Struct):
    """How to start one sandboxed child: spawn ``argv`` with ``pass_fds``, then call
    :meth:`finish` once it has exited (on every path: it removes what was made for it)."""

    argv: list[str]
    pass_fds: tuple[int, ...]
    sandbox: Sandbox
    #: the child's cgroup limits (gxo.runtime.sandbox.limits.Limits), owned by this launch
    limits: Any = None

    def describe(self) -> str:
        return self.sandbox.describe(self.limits)

    async def within_limits(self, awaitable: Any) -> tuple[Any, str | None]:
        """Await ``awaitable`` (the child's work) unless the child reaches a limit first
        (``pids_max``, an OOM kill): then everything in its cgroups is killed, the work is
        cancelled and the reason returned.  ``(result, None)`` or ``(None, reason)``."""
        if self.limits is None:
            return await awaitable, None
        import asyncio

        work = asyncio.ensure_future(awaitable)
        watching = asyncio.ensure_future(self.limits.watch())
        try:
            await asyncio.wait((work, watching), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watching.cancel()
            if not work.done():
                work.cancel()
        if work.done() and not work.cancelled():
            return work.result(), None
        self.limits.kill()
        return None, watching.result()

    def finish(self) -> str | None:
        """Clean up after the child (idempotent); the limit it ran into, in words, or None."""
        if self.limits is None:
            return None
        hit = self.limits.hit()  # read before the cgroups go (kept after)
        self.limits.close()
        return hit


def prepare(program: str, args: list[str], sandbox: Sandbox, *, label: str, workspace: str,
            cwd: str, binds: tuple[str, ...]) -> Launch:
    """Everything a child needs before it starts: its cgroup limits (named after ``label``),
    the workspace (and ``cwd``) opened to its ``user``, and the launcher's argv
    (:func:`launch`).  Raises :class:`SandboxError`, having removed what it made."""
    limits = None
    try:
        if sandbox.resources:
            from gxo.runtime.sandbox.limits import LimitError, Limits

            try:
                limits = Limits.make(dict(sandbox.resources), label)
            except LimitError as exc:
                raise SandboxError(str(exc)) from None
        if sandbox.user is not None:
            uid = resolve_user(sandbox.user)[0]
            if uid != os.geteuid():
                for path in dict.fromkeys((workspace, cwd)):
                    grant(path, uid)
        return launch(program, args, sandbox, cwd=cwd, binds=binds, limits=limits)
    except BaseException:
        if limits is not None:
            limits.close()
        raise


def killed_by(returncode: int, pid: int, sandbox: Sandbox) -> str:
    """``killed by SIGTERM`` for a child that ended by signal ``-returncode``; for SIGSYS (a
    seccomp KILL action) also which syscall, when the kernel's audit record says it."""
    import signal

    try:
        signame = signal.Signals(-returncode).name
    except ValueError:
        return f"killed by signal {-returncode}"
    if signame != "SIGSYS":
        return f"killed by {signame}"
    name = denied_syscall(pid)
    what = f"syscall {name} denied" if name and not name.startswith("syscall ") else (
        f"{name} denied" if name else "a syscall denied")
    profile = sandbox.label if sandbox.label.startswith("profile ") else f"the profile {sandbox.label}"
    return f"killed by SIGSYS ({what} by seccomp {profile})"


#: the baseline of every exec child without a security_context
BASELINE_SANDBOX = Sandbox(BASELINE, builtin(BASELINE), True)


NAMESPACES = ("user", "mount", "pid", "ipc", "uts", "net")


def sandbox_of(security_context: Any, seccomp_profile: Any = None) -> Sandbox:
    """The sandbox of a workload from its plan fields (``security_context`` as written,
    ``seccomp_profile``: ``{path, sha256, profile}`` embedded by ``gxoc build``)."""
    if not isinstance(security_context, dict):
        return BASELINE_SANDBOX
    sc = security_context
    nnp = sc.get("no_new_privileges", True) is not False
    ns = sc.get("namespaces")
    namespaces = frozenset(k for k in NAMESPACES if isinstance(ns, dict) and ns.get(k) is True)
    res = sc.get("resources")
    # every value as written: a wrong one is a refusal (limits.refusals), never a limit left out
    resources = tuple(sorted(res.items(), key=lambda kv: str(kv[0]))) if isinstance(res, dict) else ()
    user = sc.get("user")
    ro = sc.get("read_only_paths")
    rest = {"namespaces": namespaces, "resources": resources,
            "user": str(user) if user is not None else None,
            "read_only_paths": tuple(str(x) for x in ro) if isinstance(ro, list) else (),
            "root_filesystem": sc.get("root_filesystem") or None}
    if isinstance(seccomp_profile, dict) and "seccomp_profile_path" in sc:
        label = f"profile {seccomp_profile.get('path')} (sha256 {str(seccomp_profile.get('sha256'))[:12]})"
        return Sandbox(label, seccomp_profile.get("profile"), nnp, **rest)
    name = sc.get("seccomp", BASELINE)
    if sc.get("seccomp_profile_path") == "default":
        name = BASELINE
    return Sandbox(name, builtin(name), nnp, **rest)


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
    from gxo.runtime.support import sha256_hex
    from gxo.runtime.sandbox import bpf

    version = _version()
    digest = sha256_hex(f"{key}\0{os.uname().machine}\0{version}".encode())
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


def launch(program: str, args: list[str], sandbox: Sandbox, *, cwd: str | None = None,
           binds: tuple[str, ...] = (), limits: Any = None, probe: bool = False) -> Launch:
    """The argv that runs ``program args`` under ``sandbox`` and the fds to pass to it.

    ``cwd``: the working directory (entered again after the mounts); ``binds``: folders the
    child must see at their paths however its mounts change (the workspace, the plan's
    folder), kept in a private /tmp or a root_filesystem; ``limits``: its cgroup limits, whose
    cgroups it joins first.  ``probe``: the argv checks the setup and exits without running.

    Raises :class:`SandboxError` when the machine cannot give it (``refusals`` catches that
    before a run; this is the last line of defence)."""
    launcher = launcher_path()
    if launcher is None:
        raise SandboxError(f"the sandbox launcher {LAUNCHER_NAME} is not installed (gxo was installed "
                           "without a C compiler): reinstall gxo where cc is available")
    argv = [launcher]
    pass_fds: tuple[int, ...] = ()
    if limits is not None:
        for path in limits.join:
            argv += ["--cgroup", path]
    if sandbox.profile is not None:
        from gxo.runtime.sandbox.bpf import SeccompUnavailable

        try:
            fd = _filter_fd(sandbox)
        except SeccompUnavailable as exc:
            raise SandboxError(f"seccomp is not available: {exc}") from None
        argv += ["--seccomp", str(fd)]
        pass_fds = (fd,)
    if sandbox.no_new_privs:
        argv.append("--nnp")
    if sandbox.needs_launcher_setup():
        layout = sandbox.layout()
        if sandbox.user is not None and not _same_user(sandbox.user):
            uid, gid, groups = resolve_user(sandbox.user)
            argv += ["--uid", str(uid), "--gid", str(gid)]
            if groups:
                argv += ["--groups", ",".join(map(str, groups))]
        if layout.namespaces:
            argv += ["--unshare", ",".join(layout.namespaces)]
        root = sandbox.root_filesystem
        if root:
            argv += ["--root", root]
        if layout.private_tmp:
            argv += ["--tmpfs", "/tmp"]
        if "mount" in layout.namespaces:
            seen: list[str] = []
            # binds, then a read-only path under the private /tmp (bound in, then made read-only)
            for path in (*binds, os.path.dirname(program) if not root else None,
                         *(() if root else sandbox.read_only_paths)):
                if not path:
                    continue
                path = os.path.realpath(path)
                under_tmp = path == "/tmp" or path.startswith("/tmp/")
                # a jail gets the working directory wherever it is (its mount point is made in
                # the jail when missing) and what lies under /tmp (the jail's own tmpfs)
                if root:
                    wanted = path == os.path.realpath(cwd or "/") or (
                        under_tmp and os.path.isdir(os.path.join(root, "tmp")))
                else:
                    wanted = under_tmp and layout.private_tmp
                if wanted and not any(
                        path == s or path.startswith(s + "/") for s in seen):
                    seen.append(path)
                    argv += ["--bind", path]
            for path in sandbox.read_only_paths:
                argv += ["--ro", path]
        if cwd and "mount" in layout.namespaces or sandbox.user is not None:
            argv += ["--chdir", cwd or "/"]
    if probe:
        argv.append("--probe")
    argv += ["--", program, program, *args]
    return Launch(argv, pass_fds, sandbox, limits)


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
    problems = _probe(sandboxes)
    limited = [(n, s) for n, s in sandboxes if s.resources]
    if limited:
        from gxo.runtime.sandbox.limits import refusals as limit_refusals

        for name, sb in limited:
            problems += [f"workload '{name}': {why}" for why in limit_refusals(dict(sb.resources))]
    if problems:
        return problems
    needs_filter = [(n, s) for n, s in sandboxes if s.profile is not None]
    if needs_filter and _status_field("Seccomp") is None:
        return ["this kernel has no seccomp (no Seccomp line in /proc/self/status): the exec sandbox "
                "cannot be applied"]
    for name, sb in needs_filter:
        if not sb.no_new_privs:
            if not _privileged():
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


def _probe(sandboxes: list[tuple[str, Sandbox]]) -> list[str]:
    """Try each distinct namespace, mount and user setup once (the launcher's ``--probe``
    does it all but the exec): what fails is a refusal, in the launcher's words."""
    import subprocess

    problems: list[str] = []
    tried: dict[tuple, str | None] = {}
    for name, sb in sandboxes:
        if not sb.needs_launcher_setup():
            continue
        key = (sb.namespaces, sb.user, sb.read_only_paths, sb.root_filesystem)
        if key not in tried:
            plain = Sandbox("unconfined", None, False, sb.namespaces, (), sb.user, sb.read_only_paths,
                            sb.root_filesystem)
            try:
                if sb.user is not None and not _same_user(sb.user) and os.geteuid() != 0:
                    raise SandboxError(f"user '{sb.user}' needs gxo to run as root (it switches users "
                                       "with setuid)")
                if sb.root_filesystem and not os.path.isdir(sb.root_filesystem):
                    raise SandboxError(f"root_filesystem {sb.root_filesystem} is not a directory")
                argv = launch("/bin/true", [], plain, probe=True).argv
                proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, timeout=30, cwd="/")
                why = None if proc.returncode == 0 else (
                    proc.stderr.decode("utf-8", "replace").strip().removeprefix(f"{LAUNCHER_NAME}: ")
                    or f"the sandbox check exited with {proc.returncode}")
            except SandboxError as exc:
                why = str(exc)
            except (OSError, subprocess.SubprocessError) as exc:
                why = f"the sandbox check could not run: {exc}"
            tried[key] = why
        if tried[key] is not None:
            problems.append(f"workload '{name}': {sb.describe()}: {tried[key]}")
    return problems


#: POSIX ACL xattr layout (linux/posix_acl_xattr.h)
_ACL_VERSION, _ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_MASK, _ACL_OTHER = 2, 1, 2, 4, 0x10, 0x20
_ACL_UNDEFINED = 0xFFFFFFFF


def grant(path: str, uid: int) -> None:
    """Let ``uid`` read, write and enter the folder ``path`` (a POSIX ACL entry beside its
    mode bits): the workspace of a child that runs as another user.  Raises SandboxError."""
    import stat
    import struct

    try:
        st = os.stat(path)
        mode = stat.S_IMODE(st.st_mode)
        entries = [(_ACL_USER_OBJ, (mode >> 6) & 7, _ACL_UNDEFINED), (_ACL_USER, 7, uid),
                   (_ACL_GROUP_OBJ, (mode >> 3) & 7, _ACL_UNDEFINED), (_ACL_MASK, 7, _ACL_UNDEFINED),
                   (_ACL_OTHER, mode & 7, _ACL_UNDEFINED)]
        blob = struct.pack("<I", _ACL_VERSION) + b"".join(struct.pack("<HHI", *e) for e in entries)
        os.setxattr(path, "system.posix_acl_access", blob)
    except OSError as exc:
        raise SandboxError(f"cannot give uid {uid} access to the workspace {path} (a POSIX ACL): "
                           f"{exc.strerror or exc}; the file system must support ACLs") from None


def denied_syscall(pid: int, max_records: int = 50000, wait: float = 0.25) -> str | None:
    """The syscall whose seccomp KILL action ended process ``pid``, from the kernel's audit
    record (``type=1326 ... pid=<pid> ... syscall=<nr>`` in ``/dev/kmsg``), as a name; None when
    the log cannot be read (it needs CAP_SYSLOG) or holds no such record.  The kernel's audit
    thread writes the record after the process is gone, later still on a busy machine: when it
    is not there yet, new records are awaited for up to ``wait`` seconds.  A failure path only."""
    import re
    import select
    import time

    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    found: int | None = None
    want = re.compile(rb"type=1326 .*\bpid=%d\b.*\bsyscall=(\d+)" % pid)
    deadline = time.monotonic() + wait
    try:
        for _ in range(max_records):
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:  # every record read: wait for the next one, a while
                left = deadline - time.monotonic()
                if found is not None or left <= 0 or not select.select([fd], [], [], left)[0]:
                    break
                continue
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
