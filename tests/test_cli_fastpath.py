"""``gxo exec``'s click-free fast path (gxo.runtime.cli) against the click application.

The fast parser may decline an invocation (click then parses it), but whatever it accepts, click
must accept with the same parameters; and a plain ``gxo exec`` must not import click at all.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import click
import pytest

from gxo.runtime.cli import EXEC_OPTIONS, fast_exec_args
from gxo.runtime.clickapp import exec_cmd


def click_params(args: list[str]) -> dict | None:
    try:
        ctx = exec_cmd.make_context("exec", list(args))
    except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
        return None
    return dict(ctx.params)


def test_exec_options_match_the_click_command():
    declared = {}
    for p in exec_cmd.params:
        if isinstance(p, click.Option):
            for name in p.opts:
                if name.startswith("--"):
                    declared[name] = p.name
    assert {name: dest for name, (dest, _) in EXEC_OPTIONS.items()} == declared


@pytest.fixture()
def paths(tmp_path: Path) -> dict[str, str]:
    plan = tmp_path / "p.gxp"
    plan.write_text("x")
    unreadable = tmp_path / "locked.json"
    unreadable.write_text("{}")
    unreadable.chmod(0)
    return {"plan": str(plan), "dir": str(tmp_path), "missing": str(tmp_path / "nope.gxp"),
            "locked": str(unreadable)}


def pieces(paths: dict[str, str]) -> list[list[str]]:
    values = ["5", "0", "05", "-1", " 5", "+3", "x", "", "a=1", "--json", "-v", "/abs", "rel", "٣",
              paths["plan"], paths["dir"], paths["missing"]]
    out: list[list[str]] = [[paths["plan"]], [paths["missing"]], [paths["dir"]], [""], ["-"], ["--"],
                            ["-v"], ["-vv"], ["-vvv"], ["-vx"], ["-x"], ["-h"], ["--help"], ["--nope"],
                            ["--verbose=2"], ["--json=1"], ["--dry-run"], ["--json"], ["--require-native"],
                            ["--verbose"], ["extra"]]
    if os.geteuid() != 0:  # root reads any file: click then accepts it too
        out.append(["--vars-file", paths["locked"]])
    for name, (_, kind) in EXEC_OPTIONS.items():
        if kind in ("multi", "value"):
            out.append([name])  # missing value at the end
            for v in values:
                out.append([name, v])
                out.append([f"{name}={v}"])
    return out


def test_fast_parser_agrees_with_click(paths):
    rng = random.Random(7)
    parts = pieces(paths)
    accepted = 0
    for _ in range(4000):
        args: list[str] = []
        for _ in range(rng.randint(0, 4)):
            args += rng.choice(parts)
        if rng.random() < 0.7:
            args.insert(rng.randint(0, len(args)), paths["plan"])
        fast = fast_exec_args(args)
        if fast is None:
            continue
        accepted += 1
        slow = click_params(args)
        assert slow is not None, f"the fast path accepts what click refuses: {args}"
        assert fast == slow, f"{args}: fast {fast} != click {slow}"
    assert accepted > 500  # the fast path is taken for ordinary invocations


@pytest.mark.parametrize("args", [
    ["{plan}"],
    ["{plan}", "--json"],
    ["--var", "a=1", "--var=b=x", "{plan}", "-vv", "--timeout", "10m", "--max-concurrency=4"],
    ["{plan}", "--allow-path", "/srv", "--dry-run", "--trusted-key", "{plan}", "--require-native"],
    ["--", "{plan}"],
])
def test_everyday_invocations_take_the_fast_path(paths, args):
    args = [a.format(plan=paths["plan"]) for a in args]
    fast = fast_exec_args(args)
    assert fast is not None and fast == click_params(args)


@pytest.mark.parametrize("args", [["-h"], ["{plan}", "--help"], ["{plan}", "--max-concurrency", "0"],
                                  ["{plan}", "--allow-path", "rel"], ["{plan}", "--bogus"], ["{dir}"]])
def test_what_click_must_report_is_handed_over(paths, args):
    assert fast_exec_args([a.format(**paths) for a in args]) is None


def test_gxo_exec_does_not_import_click(tmp_path):
    playbook = tmp_path / "one.yaml"
    playbook.write_text('name: one\nschemaVersion: "1.0.0"\nworkloads:\n  - name: a\n    lifecycle: {policy: run_once}\n    process: {module: control:identity}\n')
    plan = tmp_path / "one.gxp"
    gxoc = str(Path(sys.executable).parent / "gxoc")
    subprocess.run([gxoc, "build", "--no-native", str(playbook), "-o", str(plan)], capture_output=True, check=True)
    code = ("import sys\nfrom gxo.runtime.cli import main\nrc = main(['exec', sys.argv[1], '--json'])\n"
            "print('CLICK' if 'click' in sys.modules else 'NOCLICK', rc)\n")
    out = subprocess.run([sys.executable, "-c", code, str(plan)], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "NOCLICK 0"
    # a usage error found after parsing is still reported by click, in its words
    bad = subprocess.run([sys.executable, "-m", "gxo.runtime.cli", "exec", str(plan), "--var", "x=1"],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert "Error: Invalid value for --var: 'x' is not a var of this playbook" in bad.stderr
    assert "Try 'gxo exec --help' for help." in bad.stderr
    assert "unsigned plan" not in bad.stderr  # nothing printed before the usage error


def test_gxo_exec_start_up_imports_what_it_runs_with(tmp_path):
    """The ``gxo`` process's records are msgspec Structs, and msgspec is imported without
    ``typing_extensions`` (bench/coldstart.py: together about 10 ms of every start); exec of an
    ``exec`` task then still runs, and a later import of typing_extensions still works.  Small
    digests use the built-in SHA-256 and a plan without native shards makes no temporary
    folder: hashlib (OpenSSL), secrets and tempfile are not imported either (about 5 ms)."""
    playbook = tmp_path / "one.yaml"
    playbook.write_text('name: one\nschemaVersion: "1.0.0"\nworkloads:\n  - name: a\n    lifecycle: {policy: run_once}\n'
                        '    process: {module: exec, params: {command: "true"}}\n')
    plan = tmp_path / "one.gxp"
    gxoc = str(Path(sys.executable).parent / "gxoc")
    subprocess.run([gxoc, "build", str(playbook), "-o", str(plan)], capture_output=True, check=True)
    code = ("import sys, atexit\n"
            "def report():\n"
            "    seen = sorted({'dataclasses', 'typing_extensions', 'click', 'hashlib', 'secrets', 'tempfile'}\n"
            "                  & set(sys.modules))\n"
            "    import typing_extensions\n"
            "    print('IMPORTED', ','.join(seen) or '-', file=sys.stderr)\n"
            "atexit.register(report)\n"
            "from gxo.runtime.cli import main\n"
            "sys.argv = ['gxo', 'exec', '--state-dir', 'state', sys.argv[1]]\n"
            "sys.exit(main())\n")
    out = subprocess.run([sys.executable, "-c", code, str(plan)], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "ok       a" in out.stdout
    assert out.stderr.strip().splitlines()[-1] == "IMPORTED -"
