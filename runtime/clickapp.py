"""The click application behind ``gxo``: help texts, every command, and the error messages for
whatever the entry point's fast path (``gxo.runtime.cli``) hands over.  Imports nothing of the
compiler's dependencies for ``exec``.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import click

from gxo.runtime.cli import (
    EXIT_REFUSED,
    EXIT_USAGE,
    RefusedPlan,
    UsageProblem,
    exec_plan,
    execute_loaded,
)


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
    params = dict(plan_path=plan_path, var_pairs=var_pairs, vars_files=vars_files, dry_run=dry_run, as_json=as_json,
                  max_concurrency=max_concurrency, run_timeout=run_timeout, allow_paths=allow_paths, verbose=verbose,
                  trusted_keys=trusted_keys, require_native=require_native)
    with _reported():
        sys.exit(exec_plan(params))


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
    from gxo.runtime.cli import collect_vars, parse_duration

    params = dict(var_pairs=var_pairs, vars_files=vars_files, dry_run=dry_run, as_json=as_json,
                  max_concurrency=max_concurrency, run_timeout=run_timeout, allow_paths=allow_paths, verbose=verbose)
    with _reported():
        overrides = collect_vars(loaded.plan, var_pairs, vars_files)
        deadline = parse_duration(run_timeout) if run_timeout else None
        plan_dir = str(Path(playbook).resolve().parent)
        sys.exit(execute_loaded(loaded, params, overrides, deadline, plan_dir))


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


class _reported:
    """Turn the entry point's click-free errors into click's: a usage error is reported as
    ``Invalid value for PARAM``, a refusal as one line (exit 3)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        if isinstance(exc, UsageProblem):
            raise click.BadParameter(exc.message, param_hint=exc.param_hint) from None
        if isinstance(exc, RefusedPlan):
            raise Refused(str(exc)) from None
        return False


def run_click(args: list[str]) -> int:
    """Run the click application on ``args``; the exit code."""
    try:
        cli.main(args=args, prog_name="gxo", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code if isinstance(exc, Refused) else EXIT_USAGE
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    except click.exceptions.Abort:
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    """The console entry point (kept here for callers that import it from the click app)."""
    from gxo.runtime.cli import main as entry

    return entry(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
