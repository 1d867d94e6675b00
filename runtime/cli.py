"""``gxo``: run frozen plans (``exec``), playbooks (``run``, needs the compiler extra) and test
playbooks (``test``).  Imports nothing of the compiler's dependencies for ``exec``.

Exit codes (design.md section 10): 0 success, 1 a workload failed, 2 usage (a bad ``--var``
included), 3 plan refused, 124 run timeout, 130 SIGINT, 143 SIGTERM, 70 a bug in gxo.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import click

from gxo.runtime.limits import MAX_INT_DIGITS, MAX_NESTING, nests_deeper

EXIT_USAGE, EXIT_REFUSED, EXIT_INTERNAL = 2, 3, 70


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # ~20 ms: only for --version

    try:
        return version("gxo")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def _show_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``--version`` as click.version_option prints it, with the version looked up only when asked."""
    if not value or ctx.resilient_parsing:
        return
    click.echo(f"gxo {_version()}", color=ctx.color)
    ctx.exit()


class Refused(click.ClickException):
    exit_code = EXIT_REFUSED

    def show(self, file: Any = None) -> None:
        click.echo(f"gxo: plan refused: {self.message}", err=True)


def parse_duration(text: str) -> float:
    from gxo.runtime.durations import parse_duration as parse

    try:
        return parse(text)
    except ValueError:
        raise click.BadParameter(f"'{text}' is not a duration like 30s, 5m or 1h30m") from None


_INT = re.compile(r"^[-+]?[0-9]+$")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")


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
            raise click.BadParameter(f"integer too large: more than {MAX_INT_DIGITS:,} digits", param_hint="--var")
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    if text[:1] in "[{\"":
        try:
            return json.loads(text)
        except ValueError:
            pass
        except RecursionError:
            raise click.BadParameter(f"value nested deeper than {MAX_VAR_DEPTH} levels", param_hint="--var") from None
    return text


#: Limits of ``--var``/``--vars-file`` values, as for a playbook's own (YAML depth, int digits).
MAX_VAR_DEPTH = MAX_NESTING


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
    for f in files:
        try:
            data = json.loads(Path(f).read_text("utf-8"))
        except OSError as exc:
            raise click.BadParameter(f"cannot read '{f}': {exc.strerror}", param_hint="--vars-file") from None
        except ValueError as exc:
            raise click.BadParameter(f"'{f}' is not JSON: {exc}", param_hint="--vars-file") from None
        except RecursionError:
            raise click.BadParameter(f"'{f}' nests deeper than {MAX_VAR_DEPTH} levels", param_hint="--vars-file") from None
        if not isinstance(data, dict):
            raise click.BadParameter(f"'{f}' must hold a JSON object", param_hint="--vars-file")
        out.update(data)
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"'{pair}' is not KEY=VALUE", param_hint="--var")
        key, raw = pair.split("=", 1)
        out[key] = parse_scalar(raw)
    for key, value in out.items():
        if key not in declared:
            hint = f"; the playbook declares: {', '.join(sorted(declared))}" if declared else "; it declares no vars"
            raise click.BadParameter(f"'{key}' is not a var of this playbook{hint}", param_hint="--var")
        if nests_deeper(value):
            raise click.BadParameter(f"var '{key}' nests deeper than {MAX_VAR_DEPTH} levels", param_hint="--var")
        if not _kind_ok(value, declared[key]):
            raise click.BadParameter(f"var '{key}' must be {declared[key]}, got {json.dumps(value)}", param_hint="--var")
    return out


def _check_allow_path(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    for d in value:
        if not d.startswith("/"):
            raise click.BadParameter(f"'{d}' is not an absolute directory", param_hint="--allow-path")
    return value


def _run_options(f: Any) -> Any:
    for deco in reversed([
        click.option("--var", "var_pairs", multiple=True, metavar="KEY=VALUE", help="Override a declared var."),
        click.option("--vars-file", "vars_files", multiple=True, type=click.Path(dir_okay=False),
                     help="A JSON object of var overrides."),
        click.option("--dry-run", is_flag=True, help="Run without side effects: modules report what they would do."),
        click.option("--json", "as_json", is_flag=True, help="Stream events as JSON lines instead of the live view."),
        click.option("--max-concurrency", type=click.IntRange(min=1), help="Workloads running at once."),
        click.option("--timeout", "run_timeout", help="Deadline for the whole run (exit 124), e.g. 10m."),
        click.option("--allow-path", "allow_paths", multiple=True, metavar="DIR", callback=_check_allow_path,
                     help="Let absolute path params reach under DIR (repeatable)."),
        click.option("-v", "--verbose", count=True,
                     help="Show each workload's summary under its line (exec: stdout, stderr); -vv adds its params."),
    ]):
        f = deco(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_show_version,
              help="Show the version and exit.")
def cli() -> None:
    """gxo: run frozen GXO plans (.gxp) built by `gxoc build`."""


def refuse_unsupported(plan: Any) -> None:
    """Exit 3 before anything runs when the plan holds a feature this runtime cannot run."""
    from gxo.runtime.support import unsupported

    problems = unsupported(plan)
    if problems:
        more = f" (and {len(problems) - 1} more: gxoc check lists them)" if len(problems) > 1 else ""
        raise Refused(f"{problems[0]}{more}; gxo never runs it another way")


def _execute(loaded: Any, var_pairs, vars_files, dry_run, as_json, max_concurrency, run_timeout, plan_dir,
             allow_paths=(), verbose: int = 0) -> int:
    from gxo.runtime.kernel import RunOptions
    from gxo.runtime.run import Outputs, execute

    for warning in getattr(loaded, "warnings", []):
        click.echo(f"gxo: warning: {warning}", err=True)
    overrides = collect_vars(loaded.plan, var_pairs, vars_files)
    deadline = parse_duration(run_timeout) if run_timeout else None
    opts = RunOptions(vars=overrides, dry_run=dry_run, max_concurrency=max_concurrency, plan_dir=plan_dir,
                      allowed_paths=tuple(allow_paths), show_params=verbose >= 2)
    code, _ = execute(loaded.plan, loaded.functions, opts, Outputs(json=as_json, verbose=verbose), timeout=deadline)
    return code


def _freeze_loaded() -> None:
    """The loaded plan and code live as long as the process: keep them out of the collector's
    later passes (a full pass over a 10,000-workload plan costs milliseconds each time)."""
    import gc

    gc.freeze()


@cli.command("exec")
@click.argument("plan_path", metavar="PLAN.gxp", type=click.Path(dir_okay=False))
@_run_options
@click.option("--trusted-key", "trusted_keys", multiple=True, type=click.Path(dir_okay=False),
              help="Ed25519 public key (PEM); the plan must carry a valid signature by one of them "
                   "(also: $GXO_TRUSTED_KEYS, a file of such keys).")
@click.option("--require-native", is_flag=True, help="Refuse a plan whose native code does not fit this interpreter.")
def exec_cmd(plan_path, var_pairs, vars_files, dry_run, as_json, max_concurrency, run_timeout, allow_paths, verbose,
             trusted_keys, require_native) -> None:
    """Verify and run a frozen plan."""
    import stat

    from gxo.runtime.planfile import TRUSTED_KEYS_ENV, PlanRefused, load_plan, trusted_keys_from_env

    try:
        mode = os.stat(plan_path).st_mode
    except OSError:
        raise click.BadParameter(f"no such file: '{plan_path}'", param_hint="PLAN.gxp") from None
    if not stat.S_ISREG(mode):  # a FIFO or a device would block or never end
        raise click.BadParameter(f"'{plan_path}' is not a regular file", param_hint="PLAN.gxp")
    try:
        keys = [*trusted_keys, *trusted_keys_from_env()]
        loaded = load_plan(plan_path, trusted_keys=keys, require_native=require_native)
    except PlanRefused as exc:
        raise Refused(str(exc)) from None
    refuse_unsupported(loaded.plan)  # before any other line: a refusal is one line
    _freeze_loaded()
    if not loaded.signed:
        click.echo(f"gxo: warning: running an unsigned plan (set {TRUSTED_KEYS_ENV} to require signatures)", err=True)
    elif not loaded.signature_checked:
        click.echo(f"gxo: warning: the plan's signature is not checked: no trusted key (set {TRUSTED_KEYS_ENV} "
                   "or pass --trusted-key)", err=True)
    plan_dir = str(Path(plan_path).resolve().parent)
    sys.exit(_execute(loaded, var_pairs, vars_files, dry_run, as_json, max_concurrency, run_timeout, plan_dir,
                      allow_paths, verbose))


@cli.command("run")
@click.argument("playbook", type=click.Path(dir_okay=False))
@_run_options
def run_cmd(playbook, var_pairs, vars_files, dry_run, as_json, max_concurrency, run_timeout, allow_paths, verbose) -> None:
    """Compile a playbook in memory, then run it."""
    if not os.path.exists(playbook):
        raise click.BadParameter(f"no such file: '{playbook}'", param_hint="PLAYBOOK")
    loaded = compile_quiet(playbook, sys.stderr)
    if loaded is None:
        sys.exit(1)
    if loaded is NOT_RUNNABLE:  # compiles, but holds what this release cannot run
        raise Refused(f"{playbook} uses what this release cannot run (not-implemented above)")
    plan_dir = str(Path(playbook).resolve().parent)
    sys.exit(_execute(loaded, var_pairs, vars_files, dry_run, as_json, max_concurrency, run_timeout, plan_dir,
                      allow_paths, verbose))


@cli.command("test")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False), help="Write JUnit XML here.")
@click.option("--run", "pattern", help="Only files whose path matches this regular expression.")
def test_cmd(paths, junit_path, pattern) -> None:
    """Run test playbooks (*.test.yaml): one PASS/FAIL line per file."""
    import io

    from gxo.runtime.kernel import RunOptions
    from gxo.runtime.output import write_junit
    from gxo.runtime.run import Outputs, execute

    files: list[str] = []
    for p in paths or (".",):
        path = Path(p)
        if path.is_dir():
            files += sorted(str(f) for f in path.rglob("*.test.yaml") if not any(x.startswith(".") for x in f.parts))
        elif path.is_file():
            files.append(p)
        else:
            raise click.BadParameter(f"no such file or directory: '{p}'", param_hint="PATHS")
    if pattern:
        try:
            rx = re.compile(pattern)
        except re.error as exc:
            raise click.BadParameter(f"bad regular expression: {exc}", param_hint="--run") from None
        files = [f for f in files if rx.search(f)]
    if not files:
        raise click.UsageError("no test playbooks (*.test.yaml) found")
    cases: list[tuple[str, float, str | None, str | None]] = []
    for f in files:
        t0 = time.perf_counter()
        buf = io.StringIO()
        loaded = compile_quiet(f, buf)
        cause = None
        if loaded is None or loaded is NOT_RUNNABLE:
            why = "does not compile" if loaded is None else "uses what this release cannot run"
            err = f"{why}:\n" + buf.getvalue()
            cause = f"{why}: " + (buf.getvalue().strip().splitlines() or [""])[0]
        else:
            out = io.StringIO()
            opts = RunOptions(plan_dir=str(Path(f).resolve().parent))
            code, report = execute(loaded.plan, loaded.functions, opts, Outputs(stream=out, live=False))
            err = None if code == 0 else (out.getvalue().strip() or f"exit {code}")
            if err is not None:  # the JUnit message: what failed (reasons are already redacted)
                failed = [f"{r.name}: {r.reason}" for r in (report.results.values() if report else [])
                          if r.status == "Failed" and not r.ignored and not r.cancelled]
                cause = "; ".join(failed) or f"exit {code}"
        secs = time.perf_counter() - t0
        cases.append((f, secs, err, cause))
        click.echo(f"{'PASS' if err is None else 'FAIL'} {f} ({secs:.2f}s)")
        if err:
            click.echo("    " + err.replace("\n", "\n    "))
    failed = sum(1 for c in cases if c[2])
    click.echo(f"{len(cases) - failed} passed, {failed} failed")
    if junit_path:
        write_junit(junit_path, cases)
    sys.exit(1 if failed else 0)


#: what ``compile_quiet`` returns for a playbook whose only errors are ``not-implemented``
NOT_RUNNABLE = object()


def compile_quiet(path: str, stream: Any) -> Any:
    """The loaded plan; None after errors; ``NOT_RUNNABLE`` when every error is ``not-implemented``
    (the errors are printed to ``stream`` either way)."""
    try:
        from gxo.compiler.inmemory import NotRunnable, compile_in_memory
    except ModuleNotFoundError as exc:
        raise click.UsageError(f"`gxo test` needs the compiler: pip install 'gxo[compiler]' ({exc.name} is missing)")
    try:
        return compile_in_memory(path, stream)
    except NotRunnable:
        return NOT_RUNNABLE


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the `gxo` command itself (not a caller's process): adopt what workloads orphan
        from gxo.runtime.proctrack import become_subreaper

        become_subreaper()
    try:
        cli.main(args=argv, prog_name="gxo", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code if isinstance(exc, Refused) else EXIT_USAGE
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    except (KeyboardInterrupt, click.exceptions.Abort):
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
        return internal_error("gxo", exc)
    return 0


def internal_error(prog: str, exc: BaseException) -> int:
    """A bug of ours: one line with a short reference, never a traceback (``GXO_DEBUG=1``
    prints it); exit 70.  Shared by ``gxo`` and ``gxoc``."""
    import hashlib
    import traceback

    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    ref = hashlib.sha256(tb.encode()).hexdigest()[:12]
    click.echo(f"{prog}: internal error: bug in gxo, please report (reference {ref}: {type(exc).__name__})", err=True)
    if os.environ.get("GXO_DEBUG") == "1":
        click.echo(tb, err=True)
    return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
