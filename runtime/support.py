"""What this release's runtime can run: one list shared by ``gxoc check`` and ``gxo``.

``gxoc check`` reports ``not-implemented`` for anything outside it (at the exact key), and
``gxo run|exec`` refuses a plan that holds such a feature (exit 3) before anything runs, so no
playbook is ever silently run another way.  A feature joins these sets when its runtime lands.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

#: lifecycle policies the kernel runs (all four: a plan built by hand with another one is refused)
RUNNABLE_POLICIES = frozenset({"run_once", "supervise", "scheduled", "event_driven"})

#: security_context keys the runtime applies to a child process; the others are refused
APPLIED_SECURITY_KEYS: frozenset[str] = frozenset({
    "seccomp", "seccomp_profile_path", "no_new_privileges", "namespaces", "resources", "user",
    "read_only_paths", "root_filesystem"})

#: modules whose work is a child process: the sandbox (the baseline without a
#: security_context) is applied to it.  A security_context on another module runs its
#: ``perform`` in a sandboxed worker process (gxo.runtime.sandbox.worker) when
#: ``worker_refusal`` allows it, and is refused otherwise.
SANDBOXED_MODULES = frozenset({"exec"})


def worker_refusal(spec: Any, param_keys: Any = (), security_keys: Any = ()) -> str | None:
    """Why module ``spec`` (a ModuleSpec), given the top-level keys of its params and of its
    security_context, cannot run in a sandboxed worker process (``None``: it can, or it is a
    child-process module).

    A worker runs a self-contained ``perform``: it gets its params, a logger, the workspace
    and the secrets to redact, and hands back a JSON summary.  So it takes no module that
    needs the kernel's process while it runs: one that reads or writes a stream (records pass
    through in-process channels), one that runs inside the scheduler step (``inline``: pure,
    no I/O of its own, or answering a request the kernel holds), one that opens or uses a
    connection the run keeps (``connection_id`` in its summary or in the params), one whose
    params are evaluated by the kernel during perform (``per_record_params``, when set), and
    one whose declaration says it must stay (``in_process``).  The worker is gxo's own Python,
    which a ``root_filesystem`` does not hold."""
    if spec is None or spec.name in SANDBOXED_MODULES:
        return None
    if "root_filesystem" in set(security_keys):
        return "its worker is gxo's own Python, which a root_filesystem does not hold"
    if spec.in_process:
        return spec.in_process
    if spec.inline:
        return ("it runs inside the scheduler step (pure computation on the run's state, or an answer to "
                "a request gxo holds): there is no process of its own to sandbox")
    if spec.stream_input != "none" or spec.record_schema is not None:
        return "it reads or writes a stream, whose records pass through gxo's own process"
    keys = set(param_keys)
    if "connection_id" in keys:
        return "it uses a connection kept by the run (connection_id)"
    if "connection_id" in ((spec.summary_schema or {}).get("properties") or {}):
        return "the connection it opens is kept by the run for other workloads"
    for path in spec.per_record_params:
        top = path.split(".", 1)[0]
        if top in keys:
            return f"its '{top}' is evaluated by gxo while the module runs"
    return None


def plain_absolute(path: str) -> bool:
    """A sandbox path as the launcher mounts it (read_only_paths, root_filesystem): absolute,
    without a ``..`` component (``gxoc check`` and the runtime's check of a plan agree)."""
    return path.startswith("/") and "/../" not in path + "/"


def module_runs(name: str) -> bool:
    """Whether the code of module ``name`` ships in this release (imports its namespace)."""
    from gxo.runtime.module import load_module_class

    return load_module_class(name) is not None


def unsupported(plan: Any) -> list[str]:
    """What in ``plan`` this runtime cannot run, one phrase per feature (empty: it all runs).

    Cheap: one pass over the workloads, importing only the namespaces the plan uses (the
    kernel imports them anyway).  It catches a plan built by an older compiler or by hand.
    """
    problems: list[str] = []
    runs: dict[str, bool] = {}  # module -> module_runs(module), asked once per module

    def module_ok(name: str) -> bool:
        ok = runs.get(name)
        if ok is None:
            ok = runs[name] = module_runs(name)
        return ok

    for w in plan.workloads:
        policy = w.lifecycle.policy
        if policy not in RUNNABLE_POLICIES:
            problems.append(f"workload '{w.name}': lifecycle policy '{policy}' is not implemented")
        elif policy != "run_once" and w.loop is not None:
            problems.append(f"workload '{w.name}': loop under lifecycle policy '{policy}' is not implemented")
        sc = w.security_context
        if isinstance(sc, dict):
            for key in sorted(k for k in sc if k not in APPLIED_SECURITY_KEYS):
                problems.append(f"workload '{w.name}': security_context.{key} is not implemented")
            problems += _sandbox_fields(w, sc)
            why = _worker_refusal_of(w)
            if why is not None:
                problems.append(f"workload '{w.name}': security_context on module '{w.module}' is not "
                                f"implemented ({why})")
        if not module_ok(w.module):
            problems.append(f"workload '{w.name}': module '{w.module}' is not implemented")
        if w.module == "stream:pipeline" and isinstance(w.params, dict):
            steps = w.params.get("steps")
            for i, step in enumerate(steps if isinstance(steps, list) else ()):
                uses = step.get("uses") if isinstance(step, dict) else None
                if isinstance(uses, str) and not module_ok(uses):
                    problems.append(f"workload '{w.name}': steps[{i}] module '{uses}' is not implemented")
    return problems


def sandbox_refusals(plan: Any) -> list[str]:
    """What the plan's child processes (exec children and sandboxed workers) need that this
    machine cannot give (the launcher, seccomp in the kernel, libseccomp, CAP_SYS_ADMIN for a
    filter without no_new_privs), one phrase each; empty when the plan starts no child or all
    can be sandboxed."""
    boxed = [w for w in plan.workloads if not w.disabled and (
        w.module in SANDBOXED_MODULES or (w.security_context is not None and _worker_refusal_of(w) is None))]
    if not boxed:
        return []
    from gxo.runtime.sandbox import refusals, sandbox_of

    problems = refusals([(w.name, sandbox_of(w.security_context, w.seccomp_profile)) for w in boxed])
    for w in boxed:
        user = w.security_context.get("user") if isinstance(w.security_context, dict) else None
        if user is not None and w.module not in SANDBOXED_MODULES:
            from gxo.runtime.sandbox.worker import unreachable_for

            why = unreachable_for(str(user))
            if why is not None:
                problems.append(f"workload '{w.name}': {why}")
    return problems


def _worker_refusal_of(w: Any) -> str | None:
    from gxo.stdlib._spec import spec_of

    spec = spec_of(w.module)
    if spec is None:
        return None  # an unknown module is refused as such
    sc = w.security_context
    return worker_refusal(spec, w.params if isinstance(w.params, dict) else (), sc if isinstance(sc, dict) else ())


def _sandbox_fields(w: Any, sc: dict[str, Any]) -> list[str]:
    """A hand-made or foreign plan's sandbox fields that would not mean what they say."""
    from gxo.runtime.sandbox.profiles import BUILTIN

    seccomp = sc.get("seccomp")
    if seccomp is not None and seccomp not in BUILTIN:
        return [f"workload '{w.name}': security_context.seccomp {seccomp!r} is not a built-in profile"]
    path = sc.get("seccomp_profile_path")
    pinned = w.seccomp_profile
    if path not in (None, "default") and not (isinstance(pinned, dict) and isinstance(pinned.get("profile"), dict)):
        return [f"workload '{w.name}': security_context.seccomp_profile_path {path!r} has no profile embedded "
                "in the plan (build it with gxoc build)"]
    from gxo.runtime.sandbox import NAMESPACES

    where = f"workload '{w.name}': security_context"
    ns = sc.get("namespaces")
    if ns is not None and not (isinstance(ns, dict) and all(k in NAMESPACES and isinstance(v, bool)
                                                            for k, v in ns.items())):
        return [f"{where}.namespaces {ns!r} is not a map of {', '.join(NAMESPACES)} to booleans"]
    res = sc.get("resources")
    if res is not None and not isinstance(res, dict):
        return [f"{where}.resources {res!r} is not a map"]  # its keys and values: limits.refusals
    user = sc.get("user")
    if user is not None and not (isinstance(user, str) and user):
        return [f"{where}.user {user!r} is not a user name or uid"]
    ro, root = sc.get("read_only_paths"), sc.get("root_filesystem")
    if ro is not None and not isinstance(ro, list):
        return [f"{where}.read_only_paths {ro!r} is not a list of absolute paths"]
    for value in [*(ro or ()), root]:
        if value is not None and not (isinstance(value, str) and plain_absolute(value)):
            return [f"{where}: {value!r} is not an absolute path (read_only_paths, root_filesystem)"]
    return []


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` in hex.  Small data goes through the interpreter's built-in
    SHA-256, large data through hashlib's OpenSSL one (faster on long input, but importing
    hashlib loads OpenSSL: about 3 ms of every start)."""
    if len(data) < _SMALL_HASH:
        builtin = _builtin_sha256()
        if builtin is not None:
            return builtin(data).hexdigest()  # type: ignore[no-any-return]
    import hashlib

    return hashlib.sha256(data).hexdigest()


#: below this many bytes, sha256_hex uses the built-in SHA-256 (a few ms at most)
_SMALL_HASH = 1 << 20


@functools.lru_cache(maxsize=1)
def _builtin_sha256() -> Any:
    """The interpreter's own SHA-256 constructor (``_sha2`` from 3.12, ``_sha256`` before),
    which hashlib falls back on without OpenSSL; None where there is neither."""
    for name, attr in (("_sha2", "sha256"), ("_sha256", "sha256")):
        try:
            return getattr(importlib.import_module(name), attr)
        except (ImportError, AttributeError):
            continue
    return None
