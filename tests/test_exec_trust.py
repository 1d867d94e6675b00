"""``gxo exec`` and plan trust: ``GXO_TRUSTED_KEYS`` requires signatures without a flag, an
unsigned plan is named on stderr, and a plan path that is not a regular file is refused (exit 2)
before it is opened.  Keys come from the real ``gxoc keygen``; plans are real ``.gxp`` files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_plan_tamper import make_plan, read_members, rewrite
from gxo.runtime import planfile as F

BIN = Path(sys.executable).parent
UNSIGNED_LINE = "gxo: warning: running an unsigned plan (set GXO_TRUSTED_KEYS to require signatures)"


def gxo(args: list, cwd: Path, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "GXO_TRUSTED_KEYS"}
    environ.update(env)
    return subprocess.run([str(BIN / "gxo"), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env=environ, timeout=timeout)


def keygen(folder: Path, name: str):
    from gxo.compiler.emit import load_signing_key

    proc = subprocess.run([str(BIN / "gxoc"), "keygen", "-o", str(folder / name)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return load_signing_key(str(folder / name)), folder / f"{name}.pub"


@pytest.fixture
def keys(tmp_path: Path):
    return keygen(tmp_path, "ci"), keygen(tmp_path, "other")


def test_unsigned_plan_runs_and_says_so_in_one_line(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    proc = gxo(["exec", plan], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines().count(UNSIGNED_LINE) == 1
    assert "unsigned" not in proc.stdout


def test_trusted_keys_file_refuses_unsigned_and_foreign_plans(tmp_path: Path, keys) -> None:
    (ci_key, ci_pub), (other_key, other_pub) = keys
    trusted = tmp_path / "trusted_keys"
    trusted.write_bytes(ci_pub.read_bytes())
    unsigned = make_plan(tmp_path, name="unsigned.gxp")
    foreign = make_plan(tmp_path, name="foreign.gxp", key=other_key)
    good = make_plan(tmp_path, name="good.gxp", key=ci_key)

    proc = gxo(["exec", unsigned], tmp_path, GXO_TRUSTED_KEYS=str(trusted))
    assert proc.returncode == 3 and proc.stderr.startswith("gxo: plan refused:"), proc.stderr
    assert "unsigned" in proc.stderr and len(proc.stderr.splitlines()) == 1
    proc = gxo(["exec", foreign], tmp_path, GXO_TRUSTED_KEYS=str(trusted))
    assert proc.returncode == 3 and "bad signature" in proc.stderr, proc.stderr
    proc = gxo(["exec", good], tmp_path, GXO_TRUSTED_KEYS=str(trusted))
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr


def test_rewritten_unsigned_manifest_is_refused_only_under_trusted_keys(tmp_path: Path, keys) -> None:
    """A same-size manifest edit with valid CRCs: nothing anchors an unsigned plan, so it runs
    (with the unsigned line) until GXO_TRUSTED_KEYS asks for a signature."""
    (_, ci_pub), _ = keys
    plan = make_plan(tmp_path)
    members = read_members(plan)
    manifest = json.loads(members[F.MANIFEST])
    assert manifest["name"] == "tamper"
    manifest["name"] = "tamp3r"
    members[F.MANIFEST] = F.canonical_bytes(manifest)
    forged = rewrite(plan, tmp_path / "forged.gxp", members)
    proc = gxo(["exec", forged], tmp_path)
    assert proc.returncode == 0 and UNSIGNED_LINE in proc.stderr, proc.stderr
    assert "tamp3r" in proc.stdout
    proc = gxo(["exec", forged], tmp_path, GXO_TRUSTED_KEYS=str(ci_pub))
    assert proc.returncode == 3 and "unsigned" in proc.stderr


def test_trusted_keys_file_holds_several_keys_and_comments(tmp_path: Path, keys) -> None:
    (_, ci_pub), (other_key, other_pub) = keys
    trusted = tmp_path / "trusted_keys"
    trusted.write_bytes(b"# release keys\n" + ci_pub.read_bytes() + b"\n# ops\n" + other_pub.read_bytes())
    assert len(F.trusted_keys_from_env({"GXO_TRUSTED_KEYS": str(trusted)})) == 2
    plan = make_plan(tmp_path, key=other_key)
    proc = gxo(["exec", plan], tmp_path, GXO_TRUSTED_KEYS=str(trusted))
    assert proc.returncode == 0, proc.stderr


def test_signed_plan_without_trusted_keys_says_the_signature_is_not_checked(tmp_path: Path, keys) -> None:
    (ci_key, _), _ = keys
    plan = make_plan(tmp_path, key=ci_key)
    proc = gxo(["exec", plan], tmp_path)
    assert proc.returncode == 0
    assert "signature is not checked" in proc.stderr and "unsigned" not in proc.stderr


@pytest.mark.parametrize("content, message", [
    (None, "cannot read"),
    (b"", "holds no public key"),
    (b"ssh-ed25519 AAAAC3Nza\n", "unexpected text"),
    (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not an Ed25519 public key"),
])
def test_bad_trusted_keys_file_refuses_every_plan(tmp_path: Path, content, message: str) -> None:
    plan = make_plan(tmp_path)
    trusted = tmp_path / "trusted_keys"
    if content is not None:
        trusted.write_bytes(content)
    proc = gxo(["exec", plan], tmp_path, GXO_TRUSTED_KEYS=str(trusted))
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith(f"gxo: plan refused: GXO_TRUSTED_KEYS={trusted}") and message in proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr


def test_fifo_and_other_non_regular_files_are_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "plan.gxp"
    os.mkfifo(fifo)
    proc = gxo(["exec", fifo], tmp_path, timeout=20)  # used to block forever on open()
    assert proc.returncode == 2 and "is not a regular file" in proc.stderr, proc.stderr
    proc = gxo(["exec", "/dev/null"], tmp_path, timeout=20)
    assert proc.returncode == 2 and "is not a regular file" in proc.stderr, proc.stderr


@pytest.mark.parametrize("args", [
    ["--var", "who=" + "1" * 5000],
    ["--var", "who=" + "[" * 2000 + "]" * 2000],
    ["--var", "who=" + "[" * 100 + "]" * 100],
])
def test_var_values_past_the_limits_are_usage_errors(tmp_path: Path, args: list) -> None:
    plan = make_plan(tmp_path)
    proc = gxo(["exec", plan, *args], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "bug in gxo" not in proc.stderr


def test_vars_file_nested_too_deep_is_a_usage_error(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    (tmp_path / "vars.json").write_text('{"who": ' + "[" * 5000 + "]" * 5000 + "}")
    proc = gxo(["exec", plan, "--vars-file", "vars.json"], tmp_path)
    assert proc.returncode == 2 and "nests deeper than 64 levels" in proc.stderr, proc.stderr


def test_plan_reader_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    """The loader itself (gxoc show/diff, library callers) checks the opened file, not only gxo exec."""
    fifo = tmp_path / "plan.gxp"
    os.mkfifo(fifo)
    code = ("import sys\nfrom gxo.runtime.planfile import PlanRefused, open_plan\n"
            "try:\n    open_plan(sys.argv[1])\nexcept PlanRefused as exc:\n    print(exc)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=20)
    assert proc.stdout.strip() == f"{fifo}: not a regular file", proc.stderr
    proc = subprocess.run([str(BIN / "gxoc"), "show", str(fifo)], capture_output=True, text=True, timeout=20)
    assert proc.returncode == 3 and "not a regular file" in proc.stderr


@pytest.mark.parametrize(("edit", "message"), [
    (lambda raw: raw + b"JUNK\n", "bytes after the end of the zip (data appended to the plan, or a zip comment)"),
    (lambda raw: b"#!/bin/sh\nexit 0\n" + raw,
     "17 byte(s) that belong to no member (data prepended to the plan or inserted into it)"),
])
def test_junk_around_a_signed_plan_is_refused_by_gxo_exec(tmp_path: Path, keys, edit, message: str) -> None:
    (ci_key, ci_pub), _ = keys
    good = make_plan(tmp_path, name="good.gxp", key=ci_key)
    bad = tmp_path / "bad.gxp"
    bad.write_bytes(edit(good.read_bytes()))
    proc = gxo(["exec", bad, "--trusted-key", ci_pub], tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr == f"gxo: plan refused: {bad}: {message}\n"
