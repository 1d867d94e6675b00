"""``gxoc``: the compiler's command line (``gxoc check`` now; build, show, diff, graph next).

Exit codes: 0 no errors, 1 errors (warnings too under ``--warnings-as-errors``), 2 usage,
70 a bug in gxoc ("please report"), never a Python traceback.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import click

from gxo.compiler.diagnostics import (
    ERROR,
    WARNING,
    limit_per_code,
    render_json,
    render_sarif,
    render_text,
    summary_line,
)

EXIT_OK, EXIT_ERRORS, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 70


def _version() -> str:
    try:
        return version("gxo")
    except PackageNotFoundError:  # running from a source tree
        return "0.0.0+unknown"


def _collect(paths: tuple[str, ...]) -> list[str]:
    """Files to check, as the user would name them: files as given, directories expanded."""
    out: list[str] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(
                f for f in path.rglob("*")
                if f.suffix in (".yaml", ".yml") and f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(path).parts)
            )
            if not found:
                raise click.UsageError(f"no playbooks (*.yaml, *.yml) under directory '{p}'")
            out.extend(os.path.join(p, str(f.relative_to(path))).replace(os.sep, "/") for f in found)
        elif path.is_file():
            out.append(p)
        elif path.exists():
            raise click.UsageError(f"'{p}' is not a regular file or a directory")
        else:
            raise click.UsageError(f"no such file or directory: '{p}'")
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), "--version", prog_name="gxoc", message="%(prog)s %(version)s")
def cli() -> None:
    """gxoc: compile GXO playbooks into frozen plans, and lint them in CI."""


@cli.command()
@click.argument("paths", nargs=-1, required=True, metavar="FILE|DIR...")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "sarif"]), default="text",
              show_default=True, help="Output format: text for people, json (one object per line) or sarif for CI.")
@click.option("--warnings-as-errors", is_flag=True, help="Exit 1 when there are warnings.")
@click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
              help="Colour the text output (auto: only on a terminal).")
def check(paths: tuple[str, ...], fmt: str, warnings_as_errors: bool, color: str) -> None:
    """Check playbooks: YAML, schema, names, references, types, lifecycles, streams, cycles."""
    from gxo.compiler.pipeline import check_path
    from gxo.runtime.files import FileProblem

    files = _collect(paths)
    all_diags = []
    sources: dict[str, str] = {}
    for f in files:
        try:
            res, _ = check_path(f)
        except FileProblem as exc:
            raise click.UsageError(str(exc)) from None
        sources.update(res.sources)
        all_diags.extend(res.diags.sorted())
    shown = limit_per_code(all_diags)
    if fmt == "json":
        click.echo(render_json(shown), nl=False)
    elif fmt == "sarif":
        click.echo(render_sarif(shown, _version()), nl=False)
    else:
        use_color = color == "always" or (color == "auto" and sys.stdout.isatty() and not os.environ.get("NO_COLOR"))
        click.echo(render_text(shown, sources, color=use_color), nl=False, color=use_color)
        click.echo(summary_line(all_diags, len(files)))
    failing = {ERROR, WARNING} if warnings_as_errors else {ERROR}
    sys.exit(EXIT_ERRORS if any(d.severity in failing for d in all_diags) else EXIT_OK)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: click's usage errors exit 2; our own bugs exit 70, no traceback."""
    try:
        cli.main(args=argv, prog_name="gxoc", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE
    except click.exceptions.Abort:
        click.echo("gxoc: aborted", err=True)
        return 130
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) or exc.code is None else EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
        return internal_error(exc)
    return EXIT_OK


def internal_error(exc: BaseException) -> int:
    from gxo.runtime.cli import internal_error as report

    return report("gxoc", exc)


from gxo.compiler import cli_build  # noqa: E402,F401

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
