"""The module contract of the kernel: what a module's code receives and returns.

A module is a class with ``name`` and ``perform(ctx, params)``.  ``perform`` may be ``async``
(it runs on the kernel's loop and must await, never block) or a plain function (the kernel
runs it in a worker thread).  It returns the summary, a JSON-serialisable value that becomes
the registered value; it raises ``ModuleError`` (or a subclass) to fail the workload.  The
kernel creates a new instance for every execution.

Module code lives beside its declaration in ``gxo.stdlib.<namespace>`` and is listed in that
file's ``CODE`` mapping (``{"exec": Exec}``); heavy imports happen inside ``perform`` so that
importing a namespace stays cheap for the compiler.
"""

from __future__ import annotations

import importlib
import inspect
from functools import lru_cache
from typing import Any, Callable, ClassVar, Protocol

from msgspec import Struct, field


class GxoError(Exception):
    """Base of every error the runtime reports to the user (never a traceback)."""


class ModuleError(GxoError):
    """A module's fatal failure.  ``summary`` is kept in the failure record when given
    (``exec`` hands back its output with a non-zero exit)."""

    def __init__(self, message: str, *, summary: Any = None) -> None:
        super().__init__(message)
        self.summary = summary


class ValidationError(ModuleError):
    """Bad params or a failed assertion."""


class SecurityError(ModuleError):
    """A param that breaks a security rule (a path outside the workspace)."""


class Logger(Protocol):
    def debug(self, msg: str, **attrs: Any) -> None: ...
    def info(self, msg: str, **attrs: Any) -> None: ...
    def warning(self, msg: str, **attrs: Any) -> None: ...
    def error(self, msg: str, **attrs: Any) -> None: ...


class Workspace(Protocol):
    path: str

    def resolve(self, user_path: str) -> str:
        """The absolute path of ``user_path`` inside the workspace; raises SecurityError
        when it (or a symlink on the way) leaves it."""
        ...


def _no_connections() -> Any:
    raise ModuleError("no connection manager in this context (connection:* modules run inside a gxo run)")


class Context(Struct):
    """What one execution of a module sees."""

    workload: str  # the workload's name
    run_id: str
    logger: Logger
    workspace: Workspace
    state: Callable[[], dict[str, Any]]  # a read-only (copied) view of the whole state
    dry_run: bool = False
    plan_dir: str = "."  # folder holding the .gxp (the playbook's for gxo run): ._gxo.plan_dir
    loop_index: int | None = None
    #: register a cleanup coroutine run when the whole run ends (servers that outlive perform)
    on_run_end: Callable[[Callable[[], Any]], None] = lambda fn: None
    #: secret values known to this run, for modules that must keep them out of their output
    redact: Callable[[str], str] = lambda text: text
    #: a long-running workload's ``lifecycle.stop_timeout``: how long a program stopped with
    #: SIGTERM may take before SIGKILL (None: the module's own default)
    stop_timeout: float | None = None
    #: the run's connection manager (gxo.runtime.connections), made on first call
    connections: Callable[[], Any] = _no_connections
    #: the sandbox of the workload's child processes (gxo.runtime.sandbox.Sandbox); None: the
    #: baseline (no_new_privs and the default seccomp profile)
    sandbox: Any = None
    extras: dict[str, Any] = field(default_factory=dict)
    #: the module's derived summary fields (``Module.derived_fields``) that nothing reads: no
    #: expression of the plan (``Workload.register_reads``) and no sink that takes every event
    #: (``--json``).  A module may leave them out of its summary (exec: ``stdout_lines``).
    unread: frozenset[str] = frozenset()


class Module:
    """Base class of module code."""

    name: ClassVar[str] = ""
    #: summary fields that are a function of another field, ``{field: (source, function)}``:
    #: the durable run history does not store them, a resumed run computes them again, and a
    #: module may leave out those its context lists as ``unread`` (``ctx.state()`` fills them in)
    derived_fields: ClassVar[dict[str, tuple[str, Callable[[Any], Any]]]] = {}
    #: optional ``secrets_in(params) -> list[str]`` (a staticmethod): the secret parts of the
    #: rendered params (a DSN's password) that the kernel tracks, before it shows or uses them,
    #: as it tracks ``${NAME}`` values: redacted from every output of the run from then on
    secrets_in: ClassVar[Callable[[dict[str, Any]], list[str]] | None] = None

    def perform(self, ctx: Context, params: dict[str, Any]) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


@lru_cache(maxsize=None)
def load_module_class(name: str) -> type[Module] | None:
    """The code of module ``name`` from its namespace's ``CODE`` mapping, or None."""
    from gxo.stdlib._spec import namespace_of

    modname = namespace_of(name)
    if modname is None:
        return None
    mod = importlib.import_module(modname)
    code = getattr(mod, "CODE", {})
    return code.get(name)


def is_async(module: Module) -> bool:
    return inspect.iscoroutinefunction(module.perform)
