"""Golden-file helpers: run ``gxoc`` in-process from a case folder and compare or rewrite."""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import tempfile
from pathlib import Path

from gxo.compiler.cli import main

GOLDEN = Path(__file__).parent / "golden"


def case_flags(playbook: Path) -> list[str]:
    """Options from a first line ``# gxo-test: flags=--format=json``."""
    try:
        first = playbook.read_text("utf-8", errors="replace").splitlines()[0]
    except IndexError:
        return []
    if first.startswith("# gxo-test:") and "flags=" in first:
        return shlex.split(first.split("flags=", 1)[1])
    return []


def run_gxoc(args: list[str], cwd: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args)
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".golden-")
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    os.replace(tmp, path)


def compare_or_update(expected_path: Path, actual: str, update: bool) -> None:
    if update:
        if not expected_path.exists() or expected_path.read_text("utf-8") != actual:
            write_atomic(expected_path, actual)
            print(f"updated {expected_path.relative_to(GOLDEN.parent)}")
        return
    assert expected_path.exists(), f"{expected_path} is missing: run pytest --update-golden and review it"
    expected = expected_path.read_text("utf-8")
    assert actual == expected, f"{expected_path.relative_to(GOLDEN.parent)} differs (run pytest --update-golden and review the diff)"
