"""The click application behind ``gxo``: help texts, every command, and the error messages for
whatever the entry point's fast path (``gxo.runtime.cli``) hands over.  Imports nothing of the
compiler's dependencies for ``exec``.
"""

from __future__ import annotations

import os
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

    def __init__(self, message: str, prefix: str = "plan refused") -> None:
        super().__init__(message)
        self.prefix = prefix

    def show(self, file: Any = None) -> None:
        click.echo(f"gxo: {self.prefix}: {self.message}", err=True)


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
@click.option("--state-dir", metavar="DIR",
              help="Where the run history lives (default: $XDG_STATE_HOME/gxo, one database per plan).")
@click.option("--state-key-file", type=click.Path(dir_okay=False),
              help="Seal the run history with this key (base64 of 32 bytes; also: $GXO_STATE_KEY).")
@click.option("--resume", metavar="last|RUN_ID",
              help="Continue an interrupted run of this plan without re-running what it finished.")
@click.option("--no-state", is_flag=True, help="Keep no run history (the run cannot be resumed).")
@click.option("--keep-runs", metavar="N|all",
              help="After the run, keep the plan's N newest ended runs in its history (default: $GXO_KEEP_RUNS, "
                   "else 100).")
def exec_cmd(plan_path, var_pairs, vars_files, dry_run, as_json, max_concurrency, run_timeout, allow_paths, verbose,
             trusted_keys, require_native, state_dir, state_key_file, resume, no_state, keep_runs) -> None:
    """Verify and run a frozen plan."""
    params = dict(plan_path=plan_path, var_pairs=var_pairs, vars_files=vars_files, dry_run=dry_run, as_json=as_json,
                  max_concurrency=max_concurrency, run_timeout=run_timeout, allow_paths=allow_paths, verbose=verbose,
                  trusted_keys=trusted_keys, require_native=require_native, state_dir=state_dir,
                  state_key_file=state_key_file, resume=resume, no_state=no_state, keep_runs=keep_runs)
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
        from gxo.runtime import regex

        try:
            rx = regex.compile(pattern)
        except regex.RegexError as exc:
            raise click.BadParameter(f"bad regular expression: {exc}; {regex.DIALECT}",
                                     param_hint="--run") from None
        files = [f for f in files if rx.test(f)]
    if not files:
        raise click.UsageError("no test playbooks (*.test.yaml) found")
    if junit_path:
        _output_ok(junit_path, "--junit")
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
        from gxo.runtime.files import FileProblem

        try:
            write_junit(junit_path, cases)
        except FileProblem as exc:
            raise click.UsageError(str(exc)) from None
        except OSError as exc:
            click.echo(f"gxo: error: cannot write '{junit_path}': {exc.strerror or exc}", err=True)
            sys.exit(1)
    sys.exit(1 if failed else 0)


def _output_ok(path: str, option: str) -> None:
    """A usage error unless ``path`` is a new path or a regular file (before any work is done)."""
    from gxo.runtime.files import FileProblem, check_output

    try:
        check_output(path, option)
    except FileProblem as exc:
        raise click.UsageError(str(exc)) from None


# -- gxo runs / gxo state: the run-history store (gxo.runtime.store, docs/state.md) ---------------


class StateProblem(Refused):
    """The state store refuses (a wrong, missing or malformed key; a newer schema; an unreadable
    database): one line, exit 3."""

    def show(self, file: Any = None) -> None:
        click.echo(f"gxo: {self.message}", err=True)


class _store_errors:
    """Turn the store's errors into one line and exit 3."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        from gxo.runtime.store import StoreError

        if isinstance(exc, StoreError):
            raise StateProblem(str(exc)) from None
        return False


def _state_options(f: Any) -> Any:
    for deco in reversed([
        click.option("--state-dir", metavar="DIR",
                     help="The state directory (default: $XDG_STATE_HOME/gxo, else ~/.local/state/gxo)."),
        click.option("--state-key-file", "key_file", type=click.Path(dir_okay=False), metavar="FILE",
                     help="The key (base64 of 32 bytes) of a sealed store (default: $GXO_STATE_KEY)."),
    ]):
        f = deco(f)
    return f


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _took(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f}s"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _open_each(state_dir: str | None, key_file: str | None) -> tuple[str, list[tuple[str, Any]], list[str]]:
    """The state directory, every database in it opened (path, store), and one line per database
    that could not be read.  A refusal (a key problem, a newer schema) stops at once."""
    from gxo.runtime.store import SqliteStore, StoreError, StoreRefused, default_state_dir, list_databases, resolve_key

    directory = state_dir or default_state_dir()
    key = resolve_key(key_file)
    opened: list[tuple[str, Any]] = []
    problems: list[str] = []
    try:
        for path in list_databases(directory):
            try:
                opened.append((path, SqliteStore(path, key, create=False)))
            except StoreRefused:
                raise
            except StoreError as exc:
                problems.append(str(exc))
    except BaseException:
        for _, store in opened:
            store.close()
        raise
    return directory, opened, problems


@cli.group("runs", invoke_without_command=True)
@_state_options
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
@click.pass_context
def runs_cmd(ctx: click.Context, state_dir: str | None, key_file: str | None, as_json: bool) -> None:
    """List the recorded runs, newest first.

    `gxo runs show ID` shows one run's workloads."""
    ctx.obj = {"state_dir": state_dir, "key_file": key_file, "as_json": as_json}
    if ctx.invoked_subcommand is not None:
        return
    import json

    with _store_errors():
        directory, opened, problems = _open_each(state_dir, key_file)
        runs = []
        try:
            for _, store in opened:
                runs += store.list_runs()
        finally:
            for _, store in opened:
                store.close()
    runs.sort(key=lambda r: (-r.started, r.run_id))
    if as_json:
        click.echo(json.dumps([r.as_json() for r in runs], indent=2))
    elif not runs:
        click.echo(f"no runs in {directory}")
    else:
        _table([["RUN", "PLAN", "STATUS", "STARTED", "DURATION", "FAILURES"]]
               + [[r.run_id, r.plan_name, r.status, _when(r.started), _took(r.duration), str(r.failures)]
                  for r in runs])
    if problems:
        for line in problems:
            click.echo(f"gxo: {line}", err=True)
        sys.exit(EXIT_REFUSED)


@runs_cmd.command("show")
@click.argument("run_id", metavar="ID")
@_state_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
@click.pass_context
def runs_show_cmd(ctx: click.Context, run_id: str, state_dir: str | None, key_file: str | None,
                  as_json: bool) -> None:
    """Show one run's workloads: status, duration, reason.

    ID may be a unique prefix of the run's id."""
    import json

    parent = ctx.obj or {}
    state_dir = state_dir or parent.get("state_dir")
    key_file = key_file or parent.get("key_file")
    as_json = as_json or parent.get("as_json", False)
    with _store_errors():
        directory, opened, problems = _open_each(state_dir, key_file)
        try:
            hits = [(store, r.run_id) for _, store in opened for r in store.list_runs()
                    if r.run_id == run_id or r.run_id.startswith(run_id)]
            exact = [h for h in hits if h[1] == run_id]
            hits = exact or hits
            if len(hits) != 1:
                some = ", ".join(sorted(h[1] for h in hits)[:5])
                why = (f"no run '{run_id}' in {directory}" if not hits
                       else f"'{run_id}' names {len(hits)} runs ({some}): give more of the id")
                if problems:
                    why += f" ({len(problems)} unreadable database(s): {problems[0]})"
                raise click.BadParameter(why, param_hint="ID")
            store, found = hits[0]
            run = store.load_run(found)
        finally:
            for _, store in opened:
                store.close()
    rows = [{"name": w.name, "status": w.status, "reason": w.reason, "started": w.started, "ended": w.ended,
             "duration": w.duration, "register": w.register_key} for w in run.workloads.values()]
    if as_json:
        click.echo(json.dumps({**run.as_json(), "plan_digest": run.plan_digest, "workloads": rows}, indent=2))
        return
    resumed = f", resumed from {run.resumed_from}" if run.resumed_from else ""
    click.echo(f"run {run.run_id} of plan {run.plan_name}: {run.status}, started {_when(run.started)}, "
               f"took {_took(run.duration)}, {run.failures} failed{resumed}")
    if rows:
        _table([["WORKLOAD", "STATUS", "DURATION", "REASON"]]
               + [[r["name"], r["status"], _took(r["duration"]), r["reason"] or ""] for r in rows])
    else:
        click.echo("no workload finished")


def _age(text: str) -> float:
    """``--older-than``: a duration (``12h``, ``90m``, ``1h30m``) or a number of days (``30d``)."""
    from gxo.runtime.durations import parse_duration

    days = text[:-1]
    if text.endswith("d") and days.isascii() and days.isdigit():
        return int(days) * 86400.0
    try:
        return parse_duration(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: give a duration such as 30d, 12h or 90m", param_hint="--older-than") \
            from None


@runs_cmd.command("prune")
@click.option("--keep", metavar="N", type=click.IntRange(min=0),
              help="Keep each plan's N newest ended runs, remove the older ones.")
@click.option("--older-than", metavar="DURATION",
              help="Remove the ended runs that ended more than DURATION ago (30s, 12h, 30d).")
@click.option("--plan", "plan_name", metavar="NAME", help="Only the runs of this plan (default: every plan).")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option("--vacuum", is_flag=True, help="Then give the space back to the file system (rewrites each database).")
@_state_options
@click.pass_context
def runs_prune_cmd(ctx: click.Context, keep: int | None, older_than: str | None, plan_name: str | None,
                   dry_run: bool, vacuum: bool, state_dir: str | None, key_file: str | None) -> None:
    """Remove old runs from the run history.

    A run that has not ended (running, or interrupted and so resumable) is never removed; `gxo
    exec` itself keeps each plan's 100 newest ended runs (--keep-runs, $GXO_KEEP_RUNS)."""
    parent = ctx.obj or {}
    state_dir = state_dir or parent.get("state_dir")
    key_file = key_file or parent.get("key_file")
    if keep is None and older_than is None:
        raise click.UsageError("say what to remove: --keep N, --older-than DURATION, or both")
    before = None
    if older_than is not None:
        before = time.time() - _age(older_than)
    with _store_errors():
        directory, opened, problems = _open_each(state_dir, key_file)
        removed = 0
        try:
            for path, store in opened:
                plans = sorted({r.plan_name for r in store.list_runs()})
                for name in plans:
                    if plan_name is not None and name != plan_name:
                        continue
                    gone = store.prune_runs(name, keep=keep, ended_before=before, dry_run=dry_run)
                    removed += len(gone)
                    for run_id in gone:
                        click.echo(f"{'would remove' if dry_run else 'removed'} run {run_id} of plan {name}")
                if vacuum and not dry_run:
                    store.vacuum()
        finally:
            for _, store in opened:
                store.close()
    word = "would be removed" if dry_run else "removed"
    click.echo(f"{removed} run{'s' if removed != 1 else ''} {word} in {directory}")
    if problems:
        for line in problems:
            click.echo(f"gxo: {line}", err=True)
        sys.exit(EXIT_REFUSED)


@cli.group("state")
def state_cmd() -> None:
    """Manage the durable state store (docs/state.md)."""


@state_cmd.command("rekey")
@click.option("--new-key-file", required=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="The new key: a file holding base64 of 32 random bytes.")
@_state_options
def state_rekey_cmd(new_key_file: str, state_dir: str | None, key_file: str | None) -> None:
    """Re-seal every value of every database with a new key (one transaction per database).

    The current key comes from --state-key-file or $GXO_STATE_KEY; without one, clear databases
    are sealed for the first time."""
    from gxo.runtime.store.sealing import load_key_file

    with _store_errors():
        new_key = load_key_file(new_key_file)
        directory, opened, problems = _open_each(state_dir, key_file)
        try:
            if problems:  # touch nothing while a database is unreadable
                raise StateProblem(problems[0])
            for _, store in opened:  # every database opens with the current key: then re-seal
                store.require_key()
            for path, store in opened:
                n = store.rekey(new_key)
                click.echo(f"resealed {n} value{'s' if n != 1 else ''} in {path}")
        finally:
            for _, store in opened:
                store.close()
    if not opened:
        click.echo(f"no state databases in {directory}")


#: what ``compile_quiet`` returns for a playbook whose only errors are ``not-implemented``
NOT_RUNNABLE = object()


def compile_quiet(path: str, stream: Any) -> Any:
    """The loaded plan; None after errors; ``NOT_RUNNABLE`` when every error is ``not-implemented``
    (the errors are printed to ``stream`` either way)."""
    try:
        from gxo.compiler.inmemory import NotRunnable, compile_in_memory
    except ModuleNotFoundError as exc:
        raise click.UsageError(f"`gxo test` needs the compiler: pip install 'gxo[compiler]' ({exc.name} is missing)")
    from gxo.runtime.files import FileProblem

    try:
        return compile_in_memory(path, stream)
    except NotRunnable:
        return NOT_RUNNABLE
    except FileProblem as exc:
        raise click.UsageError(str(exc)) from None


class _reported:
    """Turn the entry point's click-free errors into click's: a usage error is reported as
    ``Invalid value for PARAM``, a refusal as one line (exit 3)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        if isinstance(exc, UsageProblem):
            raise click.BadParameter(exc.message, param_hint=exc.param_hint) from None
        if isinstance(exc, RefusedPlan):
            raise Refused(str(exc), exc.prefix) from None
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
