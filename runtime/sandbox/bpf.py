"""Compile a profile (``gxo.runtime.sandbox.profiles`` form) to the machine's BPF program.

libseccomp (through pyseccomp) builds the filter once per profile and run; the program is
exported to a sealed memfd that every child inherits and the launcher reads.  Imported only
when a child is started with a filter: a plan without ``exec`` never loads libseccomp.
"""

from __future__ import annotations

import os
from typing import Any


class SeccompUnavailable(RuntimeError):
    """Seccomp filters cannot be built or loaded on this machine (the message says why)."""


def _lib():
    try:
        import pyseccomp
    except ImportError as exc:
        raise SeccompUnavailable(f"the Python package pyseccomp is not installed ({exc})") from None
    except OSError as exc:  # pyseccomp loads libseccomp.so.2 at import
        raise SeccompUnavailable(f"libseccomp is not installed (Debian: apt-get install libseccomp2): {exc}") from None
    return pyseccomp


def known_syscall(name: str) -> bool:
    """Whether libseccomp knows ``name`` as a syscall on any architecture it supports."""
    sc = _lib()
    arches = [v for k, v in vars(sc.Arch).items() if k.isupper() and isinstance(v, int) and k != "NATIVE"]
    for arch in arches:
        try:
            if sc.resolve_syscall(arch, name) >= 0:
                return True
        except (OSError, ValueError):
            continue
    return False


def _action(sc, action: str, err: int) -> int:
    return {
        "allow": sc.ALLOW, "errno": sc.ERRNO(err), "kill_thread": sc.KILL_THREAD,
        "kill_process": sc.KILL_PROCESS, "trap": sc.TRAP, "log": sc.LOG,
    }[action]


def compile_bpf(profile: dict[str, Any]) -> bytes:
    """The classic-BPF program of ``profile`` for this machine's architecture."""
    sc = _lib()
    ops = {"ne": sc.NE, "lt": sc.LT, "le": sc.LE, "eq": sc.EQ, "ge": sc.GE, "gt": sc.GT,
           "masked_eq": sc.MASKED_EQ}
    default = _action(sc, profile["default_action"], profile.get("default_errno", 1))
    f = sc.SyscallFilter(default)
    f.set_attr(sc.Attr.CTL_NNP, 0)  # the launcher sets no_new_privs itself, when asked
    native = sc.system_arch()
    for rule in profile["rules"]:
        action = _action(sc, rule["action"], rule.get("errno", 1))
        if action == default:
            continue  # libseccomp refuses a rule that repeats the default action
        args = [sc.Arg(a["index"], ops[a["op"]], a["value"], a["value_two"]) for a in rule["args"]]
        for name in rule["names"]:
            try:
                nr = sc.resolve_syscall(native, name)
            except (OSError, ValueError):
                continue
            if nr < 0:  # not a syscall of this architecture (vm86 on x86_64)
                continue
            try:
                f.add_rule(action, name, *args)
            except OSError as exc:
                raise SeccompUnavailable(f"libseccomp refused the rule for {name}: {exc.strerror}") from None
    fd = os.memfd_create("gxo-seccomp", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        with os.fdopen(os.dup(fd), "wb", closefd=True) as wf:
            f.export_bpf(wf)
        return os.pread(fd, os.fstat(fd).st_size, 0)
    finally:
        os.close(fd)


def sealed_fd(program: bytes) -> int:
    """A sealed memfd holding ``program``: children inherit it, nobody can change it."""
    fd = os.memfd_create("gxo-seccomp", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    view = memoryview(program)
    while view:
        view = view[os.write(fd, view):]
    import fcntl

    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
                | fcntl.F_SEAL_WRITE)
    return fd
