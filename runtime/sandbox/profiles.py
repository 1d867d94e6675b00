"""Seccomp profiles: the built-in ones and the reading of a Docker/libseccomp JSON profile.

A profile is kept in one platform-independent form (plain JSON, embedded in the plan for a
``seccomp_profile_path``)::

    {"default_action": "allow", "default_errno": 1,
     "rules": [{"names": ["mount", ...], "action": "errno", "errno": 1,
                "args": [{"index": 0, "op": "masked_eq", "value": 16, "value_two": 16}]}]}

``gxo.runtime.sandbox.bpf`` compiles it for the machine (libseccomp) when a child needs it.
This module imports nothing heavy: the compiler uses it to read and check a JSON profile.
"""

from __future__ import annotations

import errno as _errno
from typing import Any

#: the built-in profiles a playbook names with ``seccomp:``
BUILTIN = ("default", "default-minimal", "unconfined")

#: what every exec-like child gets without a security_context
BASELINE = "default"

#: Docker/libseccomp action names -> ours (SCMP_ACT_KILL is KILL_THREAD in libseccomp)
ACTIONS = {
    "SCMP_ACT_ALLOW": "allow",
    "SCMP_ACT_ERRNO": "errno",
    "SCMP_ACT_KILL": "kill_thread",
    "SCMP_ACT_KILL_THREAD": "kill_thread",
    "SCMP_ACT_KILL_PROCESS": "kill_process",
    "SCMP_ACT_TRAP": "trap",
    "SCMP_ACT_LOG": "log",
}
#: Docker actions a profile may name but this runtime cannot honour (they need a tracer or a
#: user-space agent): a check error, never a silent change of meaning
UNSUPPORTED_ACTIONS = ("SCMP_ACT_TRACE", "SCMP_ACT_NOTIFY")

OPS = {
    "SCMP_CMP_NE": "ne", "SCMP_CMP_LT": "lt", "SCMP_CMP_LE": "le", "SCMP_CMP_EQ": "eq",
    "SCMP_CMP_GE": "ge", "SCMP_CMP_GT": "gt", "SCMP_CMP_MASKED_EQ": "masked_eq",
}

# --------------------------------------------------------------------------- built-in profiles

#: What Docker's default profile keeps from a process without CAP_SYS_ADMIN and friends: the
#: syscalls usable to escape or to gain privileges (mounts, namespaces, module and kexec
#: loading, tracing other processes, BPF, the kernel keyring, swap, reboot, clock setting,
#: handle-based opens, NUMA and I/O-port control, io_uring).  Each fails with EPERM.
DEFAULT_DENIED = (
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module",
    "finit_module", "fsconfig", "fsmount", "fsopen", "fspick", "get_kernel_syms", "get_mempolicy",
    "init_module", "io_uring_enter", "io_uring_register", "io_uring_setup", "ioperm", "iopl",
    "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mbind", "mount",
    "mount_setattr", "move_mount", "move_pages", "name_to_handle_at", "nfsservctl",
    "open_by_handle_at", "open_tree", "perf_event_open", "pivot_root", "process_vm_readv",
    "process_vm_writev", "ptrace", "query_module", "quotactl", "quotactl_fd", "reboot",
    "request_key", "set_mempolicy", "setns", "settimeofday", "stime", "swapoff", "swapon",
    "_sysctl", "sysfs", "umount", "umount2", "unshare", "uselib", "userfaultfd", "ustat",
    "vm86", "vm86old",
)

#: clone flags that create namespaces: clone with any of them fails with EPERM
CLONE_NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000, "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000, "CLONE_NEWTIME": 0x00000080,
}

#: ``default-minimal``: only what ordinary programs need for file and socket I/O (start-up,
#: memory, files and directories, pipes, sockets, polling, time, signals, waiting for their
#: own children); anything else fails with EPERM.
MINIMAL_ALLOWED = (
    # process start, memory, threads
    "execve", "brk", "mmap", "munmap", "mprotect", "mremap", "madvise", "arch_prctl",
    "set_tid_address", "set_robust_list", "get_robust_list", "rseq", "prlimit64", "getrlimit",
    "futex", "futex_waitv", "membarrier", "sched_yield", "sched_getaffinity", "getrandom",
    "exit", "exit_group", "restart_syscall", "uname", "sysinfo", "getrusage", "times", "prctl",
    "capget",
    # identity
    "getpid", "getppid", "gettid", "getuid", "geteuid", "getgid", "getegid", "getgroups",
    "getresuid", "getresgid", "getpgrp", "getpgid", "getsid", "setpgid", "umask",
    # files and directories
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2",
    "pwritev2", "open", "openat", "openat2", "creat", "close", "close_range", "lseek", "stat",
    "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs", "access", "faccessat",
    "faccessat2", "getdents", "getdents64", "getcwd", "chdir", "fchdir", "readlink",
    "readlinkat", "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat",
    "renameat2", "link", "linkat", "symlink", "symlinkat", "chmod", "fchmod", "fchmodat",
    "truncate", "ftruncate", "fsync", "fdatasync", "sync_file_range", "fallocate", "fadvise64",
    "flock", "utimensat", "copy_file_range", "sendfile", "splice", "tee", "ioctl", "fcntl",
    "dup", "dup2", "dup3", "pipe", "pipe2", "getxattr", "lgetxattr", "fgetxattr",
    "listxattr", "llistxattr", "flistxattr",
    # sockets and polling
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4", "sendto",
    "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown", "getsockname",
    "getpeername", "setsockopt", "getsockopt", "poll", "ppoll", "select", "pselect6",
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
    "eventfd", "eventfd2",
    # time and signals
    "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
    "alarm", "pause", "timerfd_create", "timerfd_settime", "timerfd_gettime", "rt_sigaction",
    "rt_sigprocmask", "rt_sigreturn", "rt_sigsuspend", "rt_sigpending", "rt_sigtimedwait",
    "sigaltstack", "kill", "tgkill", "tkill",
    # its own children (clone without namespace flags: see CLONE_NAMESPACE_FLAGS)
    "fork", "vfork", "wait4", "waitid",
)


def _errno_rule(names, err: int = _errno.EPERM, args=()) -> dict[str, Any]:
    return {"names": list(names), "action": "errno", "errno": err, "args": list(args)}


def _clone_namespace_rules(action: str) -> list[dict[str, Any]]:
    """clone with any namespace flag set gets EPERM; clone3 (flags behind a pointer the filter
    cannot read) ENOSYS, so that the C library falls back to clone."""
    rules = [_errno_rule(["clone"], args=[{"index": 0, "op": "masked_eq", "value": bit, "value_two": bit}])
             for _, bit in sorted(CLONE_NAMESPACE_FLAGS.items())]
    rules.append(_errno_rule(["clone3"], _errno.ENOSYS))
    if action == "allow_plain_clone":  # an allow list: clone without those flags is allowed
        mask = sum(CLONE_NAMESPACE_FLAGS.values())
        rules.append({"names": ["clone"], "action": "allow", "errno": 0,
                      "args": [{"index": 0, "op": "masked_eq", "value": mask, "value_two": 0}]})
    return rules


def builtin(name: str) -> dict[str, Any] | None:
    """The profile named ``name`` (``None`` for ``unconfined``: no filter)."""
    if name == "unconfined":
        return None
    if name == "default":
        return {"default_action": "allow", "default_errno": 0,
                "rules": [_errno_rule(DEFAULT_DENIED), *_clone_namespace_rules("deny")]}
    if name == "default-minimal":
        return {"default_action": "errno", "default_errno": _errno.EPERM,
                "rules": [{"names": list(MINIMAL_ALLOWED), "action": "allow", "errno": 0, "args": []},
                          *_clone_namespace_rules("allow_plain_clone")]}
    raise KeyError(name)


# --------------------------------------------------------------------------- JSON profiles


class ProfileError(ValueError):
    """A JSON profile that cannot be used; ``where`` is the path of keys/indexes to the value."""

    def __init__(self, message: str, where: tuple = ()) -> None:
        super().__init__(message)
        self.where = where


def normalize(doc: Any, known_syscall=None) -> dict[str, Any]:
    """The profile of a parsed Docker/libseccomp JSON document ``doc``, in our form.

    ``known_syscall(name) -> bool`` checks each syscall name (an unknown one is an error).
    Entries that apply only with a capability (``includes.caps``) are left out: a workload
    holds none that the profile may assume; entries that apply without one
    (``excludes.caps``) are kept.  ``architectures``/``archMap`` are accepted and the filter
    is built for the machine's own architecture (other ABIs are killed).
    """
    if not isinstance(doc, dict):
        raise ProfileError("a seccomp profile is a JSON object with defaultAction and syscalls")
    default = doc.get("defaultAction")
    if default is None:
        raise ProfileError("defaultAction is missing (SCMP_ACT_ERRNO, SCMP_ACT_ALLOW, ...)")
    out: dict[str, Any] = {"default_action": _action(default, ("defaultAction",)),
                           "default_errno": _errno_value(doc.get("defaultErrnoRet"), ("defaultErrnoRet",)),
                           "rules": []}
    syscalls = doc.get("syscalls", [])
    if not isinstance(syscalls, list):
        raise ProfileError("syscalls must be a list of {names, action, args}", ("syscalls",))
    for i, entry in enumerate(syscalls):
        where = ("syscalls", i)
        if not isinstance(entry, dict):
            raise ProfileError("each syscalls entry is an object {names, action, args}", where)
        names = entry.get("names")
        if names is None and "name" in entry:
            names = [entry["name"]]
            names_where = (*where, "name")
        else:
            names_where = (*where, "names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ProfileError("names must be a list of syscall names", names_where)
        for j, name in enumerate(names):
            if known_syscall is not None and not known_syscall(name):
                raise ProfileError(f"unknown syscall '{name}'",
                                   names_where if "name" in entry and "names" not in entry else (*names_where, j))
        if "action" not in entry:
            raise ProfileError("action is missing", where)
        action = _action(entry["action"], (*where, "action"))
        err = _errno_value(entry.get("errnoRet"), (*where, "errnoRet"))
        args = []
        raw_args = entry.get("args") or []
        if not isinstance(raw_args, list):
            raise ProfileError("args must be a list of {index, value, valueTwo, op}", (*where, "args"))
        for k, a in enumerate(raw_args):
            args.append(_arg(a, (*where, "args", k)))
        includes = entry.get("includes") or {}
        if isinstance(includes, dict) and includes.get("caps"):
            continue  # applies only to a process granted those capabilities
        if names:
            out["rules"].append({"names": list(names), "action": action,
                                 "errno": err if action == "errno" else 0, "args": args})
    return out


def _action(value: Any, where: tuple) -> str:
    if value in ACTIONS:
        return ACTIONS[value]
    if value in UNSUPPORTED_ACTIONS:
        raise ProfileError(f"action {value} is not supported: it needs a tracer or a notification agent", where)
    raise ProfileError(f"unknown action {value!r}: one of {', '.join(ACTIONS)}", where)


def _errno_value(value: Any, where: tuple) -> int:
    if value is None:
        return _errno.EPERM
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 4095:
        raise ProfileError("an errno value is an integer from 0 to 4095", where)
    return value


def _arg(a: Any, where: tuple) -> dict[str, Any]:
    if not isinstance(a, dict):
        raise ProfileError("an args entry is an object {index, value, valueTwo, op}", where)
    index = a.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= 5:
        raise ProfileError("index is the argument's position, 0 to 5", (*where, "index"))
    op = a.get("op")
    if op not in OPS:
        raise ProfileError(f"unknown op {op!r}: one of {', '.join(OPS)}", (*where, "op"))
    vals = []
    for key in ("value", "valueTwo"):
        v = a.get(key, 0)
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << 64:
            raise ProfileError(f"{key} is an unsigned 64-bit integer", (*where, key))
        vals.append(v)
    return {"index": index, "op": OPS[op], "value": vals[0], "value_two": vals[1]}
