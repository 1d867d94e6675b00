"""``gxo``: run frozen plans (``exec``), playbooks (``run``, needs the compiler extra) and test
playbooks (``test``).

This module is the console script's entry point and imports no CLI framework: a well-formed
``gxo exec PLAN.gxp [options]`` (the production path, where start-up time counts) is parsed
here and runs without importing click (~25 ms of a cold start).  Everything else (help, other
commands, a malformed or unknown option, a usage error found later) goes to the click
application in ``gxo.runtime.clickapp``, which owns the help texts and the error messages; the
fast parser accepts only what click would accept with the same meaning, and hands over before
anything is printed or run.  ``tests/test_cli_fastpath.py`` compares the two parsers.

Exit codes (design.md section 10): 0 success, 1 a workload failed, 2 usage (a bad ``--var``
included), 3 plan refused, 124 run timeout, 130 SIGINT, 143 SIGTERM, 70 a bug in gxo.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

from gxo.runtime.limits import MAX_INT_DIGITS, MAX_NESTING, MAX_VARS_FILE_BYTES, nests_deeper

EXIT_USAGE, EXIT_REFUSED, EXIT_INTERNAL = 2, 3, 70


class UsageProblem(Exception):
    """A bad argument: the click application reports it as ``Invalid value for PARAM``."""

    def __init__(self, message: str, param_hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param_hint = param_hint


class RefusedPlan(Exception):
    """The plan is refused (exit 3): one line, ``gxo: plan refused: ...``."""

    prefix = "plan refused"


class RefusedState(RefusedPlan):
    """The run store refuses (a wrong key, a different plan to resume; exit 3): one line."""

    prefix = "state refused"


def parse_duration(text: str) -> float:
    from gxo.runtime.durations import parse_duration as parse

    try:
        return parse(text)
    except ValueError:
        raise UsageProblem(f"'{text}' is not a duration like 30s, 5m or 1h30m", "--timeout") from None


_INT = re.compile(r"^[-+]?[0-9]+$")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")

#: Limits of ``--var``/``--vars-file`` values, as for a playbook's own (YAML depth, int digits).
MAX_VAR_DEPTH = MAX_NESTING


def parse_scalar(text: str) -> Any:
    """A ``--var`` value: JSON, or a YAML 1.2 core scalar (true/false/null/numbers), else text."""
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if text in ("null", "Null", "NULL", "~"):
        return None
    if _INT.match(text):
        if len(text.lstrip("+-")) > MAX_INT_DIGITS:
            raise UsageProblem(f"integer too large: more than {MAX_INT_DIGITS:,} digits", "--var")
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    if text[:1] in "[{\"":
        try:
            return json.loads(text)
        except ValueError:
            pass
        except RecursionError:
            raise UsageProblem(f"value nested deeper than {MAX_VAR_DEPTH} levels", "--var") from None
    return text


def _kind_ok(value: Any, type_text: str) -> bool:
    """Whether ``value`` matches a compiled type's outer kind (``int``, ``list[str]``, ...)."""
    options = [t.strip() for t in type_text.split(" | ")] if "[" not in type_text else [type_text]
    for t in options:
        if t == "any" or (t == "null" and value is None):
            return True
        if t == "str" and isinstance(value, str):
            return True
        if t == "bool" and isinstance(value, bool):
            return True
        if t == "int" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if t == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if t.startswith("list[") and isinstance(value, list):
            return True
        if (t.startswith("map{") or t.startswith("dict[")) and isinstance(value, dict):
            return True
    return False


def collect_vars(plan: Any, pairs: tuple[str, ...], files: tuple[str, ...]) -> dict[str, Any]:
    declared = dict(plan.var_types)
    out: dict[str, Any] = {}
    if files:
        from gxo.runtime.files import FileProblem, read_limited
    for f in files:
        try:  # a FIFO or a device is refused without blocking, a file over the limit before reading
            data = json.loads(read_limited(f, MAX_VARS_FILE_BYTES, what="vars file"))
        except FileProblem as exc:
            raise UsageProblem(str(exc), "--vars-file") from None
        except ValueError as exc:
            raise UsageProblem(f"'{f}' is not JSON: {exc}", "--vars-file") from None
        except RecursionError:
            raise UsageProblem(f"'{f}' nests deeper than {MAX_VAR_DEPTH} levels", "--vars-file") from None
        if not isinstance(data, dict):
            raise UsageProblem(f"'{f}' must hold a JSON object", "--vars-file")
        out.update(data)
    for pair in pairs:
        if "=" not in pair:
            raise UsageProblem(f"'{pair}' is not KEY=VALUE", "--var")
        key, raw = pair.split("=", 1)
        out[key] = parse_scalar(raw)
    for key, value in out.items():
        if key not in declared:
            hint = f"; the playbook declares: {', '.join(sorted(declared))}" if declared else "; it declares no vars"
            raise UsageProblem(f"'{key}' is not a var of this playbook{hint}", "--var")
        if nests_deeper(value):
            raise UsageProblem(f"var '{key}' nests deeper than {MAX_VAR_DEPTH} levels", "--var")
        if not _kind_ok(value, declared[key]):
            raise UsageProblem(f"var '{key}' must be {declared[key]}, got {json.dumps(value)}", "--var")
    return out


def refuse_unsupported(plan: Any) -> None:
    """Refuse (exit 3) before anything runs when the plan holds a feature this runtime cannot run."""
    from gxo.runtime.support import unsupported

    problems = unsupported(plan)
    if problems:
        more = f" (and {len(problems) - 1} more: gxoc check lists them)" if len(problems) > 1 else ""
        raise RefusedPlan(f"{problems[0]}{more}; gxo never runs it another way")


# -- gxo exec ------------------------------------------------------------------------------------

#: ``gxo exec``'s options: name -> (destination, kind).  ``kind``: ``multi`` (repeatable value),
#: ``value``, ``flag`` or ``count``.  The click application declares the same options (with help);
#: the fast-path test checks that the two agree.
EXEC_OPTIONS: dict[str, tuple[str, str]] = {
    "--var": ("var_pairs", "multi"),
    "--vars-file": ("vars_files", "multi"),
    "--dry-run": ("dry_run", "flag"),
    "--json": ("as_json", "flag"),
    "--max-concurrency": ("max_concurrency", "value"),
    "--timeout": ("run_timeout", "value"),
    "--allow-path": ("allow_paths", "multi"),
    "--verbose": ("verbose", "count"),
    "--trusted-key": ("trusted_keys", "multi"),
    "--require-native": ("require_native", "flag"),
    "--state-dir": ("state_dir", "value"),
    "--state-key-file": ("state_key_file", "value"),
    "--resume": ("resume", "value"),
    "--no-state": ("no_state", "flag"),
    "--keep-runs": ("keep_runs", "value"),
}

#: how many ended runs of a plan its history keeps when neither ``--keep-runs`` nor
#: ``GXO_KEEP_RUNS`` says (docs/state.md#retention)
DEFAULT_KEEP_RUNS = 100
KEEP_RUNS_ENV = "GXO_KEEP_RUNS"


def keep_runs_of(p: dict[str, Any]) -> int | None:
    """How many ended runs of the plan to keep after this one (None: all), from ``--keep-runs``,
    else ``GXO_KEEP_RUNS``, else ``DEFAULT_KEEP_RUNS``; ``UsageProblem`` for anything but a whole
    number of 1 or more or ``all``."""
    value, hint = p.get("keep_runs"), "--keep-runs"
    if value is None:
        value, hint = os.environ.get(KEEP_RUNS_ENV), KEEP_RUNS_ENV
        if not value:
            return DEFAULT_KEEP_RUNS
    value = value.strip()
    if value == "all":
        return None
    if value.isascii() and value.isdigit() and 0 < int(value) <= 10**9:
        return int(value)
    raise UsageProblem(f"{value!r}: give a number of runs (1 or more) or 'all'", hint)


def exec_defaults() -> dict[str, Any]:
    out: dict[str, Any] = {"plan_path": None}
    for dest, kind in EXEC_OPTIONS.values():
        out[dest] = () if kind == "multi" else False if kind == "flag" else 0 if kind == "count" else None
    return out


def fast_exec_args(args: list[str]) -> dict[str, Any] | None:
    """The parameters of ``gxo exec ARGS`` when ARGS is plainly well formed, else None (the click
    application then parses them and reports what is wrong).  Accepts exactly: the options of
    ``EXEC_OPTIONS`` as ``--name VALUE`` or ``--name=VALUE``, ``-v``/``-vv``..., ``--`` and one
    plan path that does not start with ``-``.  Values are checked as click checks them."""
    out = exec_defaults()
    lists: dict[str, list[str]] = {}
    positional: list[str] = []
    i, n = 0, len(args)
    while i < n:
        a = args[i]
        i += 1
        if a == "--":
            positional.extend(args[i:])
            break
        if not a.startswith("-") or a == "-":
            positional.append(a)
            continue
        if a[1] != "-":  # short options: only -v, -vv, ...
            if a.strip("-v") or len(a) < 2:
                return None
            out["verbose"] += len(a) - 1
            continue
        name, eq, value = a.partition("=")
        spec = EXEC_OPTIONS.get(name)
        if spec is None:
            return None
        dest, kind = spec
        if kind in ("flag", "count"):
            if eq:
                return None
            out[dest] = out[dest] + 1 if kind == "count" else True
            continue
        if not eq:
            if i >= n:
                return None
            value = args[i]
            i += 1
        if kind == "multi":
            lists.setdefault(dest, []).append(value)
        else:
            out[dest] = value
    if len(positional) != 1 or not positional[0]:
        return None
    out["plan_path"] = positional[0]
    for dest, values in lists.items():
        out[dest] = tuple(values)
    mc = out["max_concurrency"]
    if mc is not None:  # click.IntRange(min=1)
        if not mc.isascii() or not mc.isdigit() or int(mc) < 1:
            return None
        out["max_concurrency"] = int(mc)
    if any(not d.startswith("/") for d in out["allow_paths"]):
        return None
    for path in (out["plan_path"], *out["vars_files"], *out["trusted_keys"],
                 *([out["state_key_file"]] if out["state_key_file"] is not None else [])):
        if not _plain_path(path):
            return None
    return out


def _plain_path(path: str) -> bool:
    """What ``click.Path(dir_okay=False)`` accepts without a word: a missing path, or one that is
    not a directory and is readable."""
    if not path:
        return False
    try:
        st = os.stat(path)
    except OSError:
        return True
    return not (st.st_mode & 0o170000 == 0o040000) and os.access(path, os.R_OK)


def prepare_exec(p: dict[str, Any]) -> tuple[Any, dict[str, Any], float | None]:
    """Load, verify and check a plan and its arguments; nothing is printed or run yet.
    Raises ``UsageProblem`` or ``RefusedPlan``."""
    import stat

    from gxo.runtime.planfile import PlanRefused, load_plan, trusted_keys_from_env

    plan_path = p["plan_path"]
    try:
        mode = os.stat(plan_path).st_mode
    except OSError:
        raise UsageProblem(f"no such file: '{plan_path}'", "PLAN.gxp") from None
    if not stat.S_ISREG(mode):  # a FIFO or a device would block or never end
        raise UsageProblem(f"'{plan_path}' is not a regular file", "PLAN.gxp")
    try:
        keys = [*p["trusted_keys"], *trusted_keys_from_env()]
        loaded = load_plan(plan_path, trusted_keys=keys, require_native=p["require_native"])
    except PlanRefused as exc:
        raise RefusedPlan(str(exc)) from None
    refuse_unsupported(loaded.plan)  # before any other line: a refusal is one line
    from gxo.runtime.proctrack import prepare_for

    if not p["dry_run"]:
        prepare_for(loaded.plan)  # the run's cgroup, set up while the run store opens
    overrides = collect_vars(loaded.plan, p["var_pairs"], p["vars_files"])
    deadline = parse_duration(p["run_timeout"]) if p["run_timeout"] else None
    return loaded, overrides, deadline


def plan_warnings(loaded: Any) -> list[str]:
    from gxo.runtime.planfile import TRUSTED_KEYS_ENV

    out = []
    if not loaded.signed:
        out.append(f"running an unsigned plan (set {TRUSTED_KEYS_ENV} to require signatures)")
    elif not loaded.signature_checked:
        out.append(f"the plan's signature is not checked: no trusted key (set {TRUSTED_KEYS_ENV} "
                   "or pass --trusted-key)")
    return out


def execute_loaded(loaded: Any, p: dict[str, Any], overrides: dict[str, Any], deadline: float | None,
                   plan_dir: str, extra_warnings: list[str] = (), durable: dict[str, Any] | None = None) -> int:
    """Run a loaded plan (``gxo exec`` and ``gxo run``); the exit code."""
    from gxo.runtime.kernel import RunOptions
    from gxo.runtime.run import Outputs, execute

    resume_collector()  # the start-up's imports are done
    if not p["dry_run"]:  # a dry run starts no child
        from gxo.runtime.support import sandbox_refusals

        problems = sandbox_refusals(loaded.plan)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise RefusedPlan(f"{problems[0]}{more}; gxo never runs a child without its sandbox")
    for warning in [*extra_warnings, *getattr(loaded, "warnings", [])]:
        print(f"gxo: warning: {warning}", file=sys.stderr, flush=True)
    opts = RunOptions(vars=overrides, dry_run=p["dry_run"], max_concurrency=p["max_concurrency"],
                      plan_dir=plan_dir, allowed_paths=tuple(p["allow_paths"]), show_params=p["verbose"] >= 2,
                      **(durable or {}))
    code, _ = execute(loaded.plan, loaded.functions, opts, Outputs(json=p["as_json"], verbose=p["verbose"]),
                      timeout=deadline)
    return code


def exec_plan(p: dict[str, Any]) -> int:
    """``gxo exec`` once its arguments are parsed; raises ``UsageProblem``/``RefusedPlan``
    before anything is printed."""
    pause_collector()
    try:
        loaded, overrides, deadline = prepare_exec(p)
        store, resume_from, notes = open_run_store(loaded, p)
    except BaseException:
        resume_collector()
        raise
    try:
        freeze_loaded()
        plan_dir = os.path.dirname(os.path.realpath(p["plan_path"]))
        durable = {"store": store, "resume_from": resume_from, "plan_digest": getattr(store, "plan_digest", "")}
        return execute_loaded(loaded, p, overrides, deadline, plan_dir, plan_warnings(loaded) + notes, durable)
    finally:
        resume_collector()  # (done already unless the run was refused before it started)
        if store is not None:
            prune_history(store, loaded.plan.name, p)
            store.close()


def prune_history(store: Any, plan_name: str, p: dict[str, Any]) -> None:
    """After a run: keep the plan's newest ``keep_runs_of(p)`` ended runs, remove the older ones
    (docs/state.md#retention).  A failure is a warning: the run's own record is committed."""
    if not getattr(store, "began", False):
        return  # refused before it started: nothing was added
    keep = p["keep"] if "keep" in p else keep_runs_of(p)
    if keep is None:
        return
    from gxo.runtime.store import StoreError

    try:
        store.prune_runs(plan_name, keep=keep)
    except StoreError as exc:
        print(f"gxo: warning: the run history was not pruned: {exc}", file=sys.stderr)


def open_run_store(loaded: Any, p: dict[str, Any]) -> tuple[Any, str | None, list[str]]:
    """The durable run store of the loaded plan (None with ``--no-state``), the run to resume, and the
    notes to print (an interrupted run that could be resumed).  Raises ``RefusedState`` or
    ``UsageProblem`` before anything runs."""
    if p["no_state"]:
        if p["resume"] or p["state_dir"] or p["state_key_file"] or p["keep_runs"]:
            raise UsageProblem("--no-state keeps no run history: it cannot be used with --resume, --state-dir, "
                               "--state-key-file or --keep-runs", "--no-state")
        return None, None, []
    p["keep"] = keep_runs_of(p)  # checked before anything runs
    from gxo.runtime.durable import plan_digest
    from gxo.runtime.store import StoreError, open_store, resolve_key

    plan = loaded.plan

    state_dir = p["state_dir"]
    if state_dir is not None and not state_dir:
        raise UsageProblem("an empty directory name", "--state-dir")
    try:
        # a dry run changes nothing: it only reads the history (an interrupted run to mention)
        store = open_store(plan.name, state_dir, resolve_key(p["state_key_file"]),
                           create=not (p["dry_run"] and p["resume"] is None))
    except StoreError as exc:
        raise RefusedState(str(exc)) from None
    if store is None:
        return None, None, []
    try:
        store.plan_digest = getattr(loaded, "digest", "") or plan_digest(plan)
        resume = p["resume"]
        if not p["dry_run"]:
            store.require_key()  # a sealed history without its key: refused before anything runs
        if resume is None:
            old = store.interrupted_run(plan.name)
            notes = [] if old is None else [
                f"run {old} of this plan was interrupted; continue it with: gxo exec {p['plan_path']} --resume {old}"]
            if p["dry_run"]:  # a dry run changes nothing: it is not part of the plan's history
                store.close()
                return None, None, notes
            return store, None, notes
        if p["dry_run"]:
            raise UsageProblem("a dry run cannot resume a run (it would change nothing)", "--resume")
        run_id = store.interrupted_run(plan.name) if resume == "last" else resume
        if run_id is None:
            raise RefusedState(f"no interrupted run of plan '{plan.name}' to resume (gxo runs lists its runs)")
        record = store.load_run(run_id)
        if record.plan_name != plan.name:
            raise RefusedState(f"run {run_id} is a run of plan '{record.plan_name}', not '{plan.name}'")
        if record.plan_digest != store.plan_digest:
            raise RefusedState(f"run {run_id} ran a different plan (digest {record.plan_digest[:12]}, this plan "
                               f"{store.plan_digest[:12]}): a run resumes only with the plan it started with")
        if record.status != "Interrupted":
            raise RefusedState(f"run {run_id} is {record.status.lower()}, not interrupted: only an interrupted run "
                               "can be resumed")
        return store, run_id, []
    except StoreError as exc:
        store.close()
        raise RefusedState(str(exc)) from None
    except BaseException:
        store.close()
        raise


#: the cycle collector was paused for the start-up (``pause_collector``)
_paused = False


def pause_collector() -> None:
    """No cycle collection while ``gxo exec`` starts: importing the runtime and loading the plan
    make tens of thousands of long-lived objects (modules, classes, functions, the plan) and
    no garbage to speak of, and the collector's passes over them found nothing (about 40
    young and 3 older passes before a run).  ``resume_collector`` freezes what the start-up
    made and turns the collector back on before anything runs."""
    global _paused
    import gc

    if gc.isenabled():
        gc.disable()
        _paused = True


def resume_collector() -> None:
    """End ``pause_collector``: what the start-up made is frozen (kept out of later passes),
    the collector runs again."""
    global _paused
    if _paused:
        import gc

        gc.freeze()
        gc.enable()
        _paused = False


def freeze_loaded() -> None:
    """The loaded plan and code live as long as the process: keep them out of the collector's
    later passes (a full pass over a 10,000-workload plan costs milliseconds each time)."""
    import gc

    gc.freeze()


# -- the entry point -----------------------------------------------------------------------------


def import_msgspec() -> None:
    """Import msgspec (the plan's records) with ``typing_extensions`` hidden, in the ``gxo``
    process only.  msgspec imports it, when it is installed, for two names that Python 3.11's
    ``typing`` has as well (``get_type_hints`` with extras, ``Required``/``NotRequired``), and
    the plan's records use neither; importing it costs about 2 ms of every start
    (bench/coldstart.py --profile).  A process that already has it keeps it, and a later
    import of it works as ever."""
    if "msgspec" in sys.modules or "typing_extensions" in sys.modules:
        return
    sys.modules["typing_extensions"] = None  # type: ignore[assignment]  # an import of it fails
    try:
        import msgspec  # noqa: F401
    finally:
        del sys.modules["typing_extensions"]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if argv is None:  # the `gxo` command itself (not a caller's process): adopt what workloads orphan
        import_msgspec()
        from gxo.runtime.proctrack import become_subreaper, enable_guard

        become_subreaper()
        enable_guard()  # and, at its first exec, a guardian and a cgroup for the run
    try:
        return _main(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
        return internal_error("gxo", exc)


def _main(args: list[str]) -> int:
    fast = args[:1] == ["exec"] and "_GXO_COMPLETE" not in os.environ  # completion is click's
    p = fast_exec_args(args[1:]) if fast else None
    if p is not None:
        try:
            return exec_plan(p)
        except RefusedPlan as exc:
            print(f"gxo: {exc.prefix}: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        except UsageProblem:
            pass  # nothing was printed or run: click reports it, in its words
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    from gxo.runtime.clickapp import run_click

    return run_click(args)


def internal_error(prog: str, exc: BaseException) -> int:
    """A bug of ours: one line with a short reference, never a traceback (``GXO_DEBUG=1``
    prints it); exit 70.  Shared by ``gxo`` and ``gxoc``."""
    import hashlib
    import traceback

    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    ref = hashlib.sha256(tb.encode()).hexdigest()[:12]
    print(f"{prog}: internal error: bug in gxo, please report (reference {ref}: {type(exc).__name__})",
          file=sys.stderr)
    if os.environ.get("GXO_DEBUG") == "1":
        print(tb, file=sys.stderr)
    return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
