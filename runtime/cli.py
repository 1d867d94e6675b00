"""``gxo``: the runtime's command line.  Imports nothing of the compiler's dependencies."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

import click


def _version() -> str:
    try:
        return version("gxo")
    except PackageNotFoundError:
        return "0.0.0+unknown"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), "--version", prog_name="gxo", message="%(prog)s %(version)s")
def cli() -> None:
    """gxo: run frozen GXO plans (.gxp) built by `gxoc build`."""


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="gxo", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return 2
    except (KeyboardInterrupt, click.exceptions.Abort):
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
