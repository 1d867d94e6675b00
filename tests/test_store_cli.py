"""``gxo runs``, ``gxo runs show`` and ``gxo state rekey``, run as the ``gxo`` command: listings,
exit codes (2 for an unknown run, 3 for a key problem or an unreadable database) and never a
traceback."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gxo.runtime.store import open_store

GXO = str(Path(sys.executable).with_name("gxo"))
KEY = bytes(range(32))
NEW_KEY = bytes(range(100, 132))


def gxo(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GXO_")}
    proc = subprocess.run([GXO, *args], capture_output=True, text=True, env={**base, **(env or {})}, timeout=60)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert proc.returncode != 70, proc.stderr
    return proc.returncode, proc.stdout, proc.stderr


def _history(state: Path, key: bytes | None = None) -> None:
    s = open_store("deploy", str(state), key)
    s.begin_run("20261206-070000-aaaaaa", "deploy", "d1", 1_765_000_000.0)
    s.commit_workload("20261206-070000-aaaaaa", "fetch", "Completed", None, "fetched", {"n": 1},
                      1_765_000_000.0, 1_765_000_001.5)
    s.commit_workload("20261206-070000-aaaaaa", "push", "Failed", "exit code 3", None, None,
                      1_765_000_001.5, 1_765_000_002.0)
    s.end_run("20261206-070000-aaaaaa", "FAILED", 1_765_000_002.0, 1)
    s.close()
    s = open_store("nightly backup", str(state), key)
    s.begin_run("20261206-080000-bbbbbb", "nightly backup", "d2", 1_765_003_600.0)
    s.commit_workload("20261206-080000-bbbbbb", "dump", "Completed", None, None, None, 1_765_003_600.0,
                      1_765_003_601.0)
    s.close()  # no end: interrupted


@pytest.fixture
def state(tmp_path: Path) -> Path:
    _history(tmp_path / "state")
    return tmp_path / "state"


def test_runs_lists_newest_first(state: Path) -> None:
    code, out, _ = gxo(["runs", "--state-dir", str(state)])
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["RUN", "PLAN", "STATUS", "STARTED", "DURATION", "FAILURES"]
    assert lines[1].startswith("20261206-080000-bbbbbb  nightly backup  Interrupted")
    assert lines[2].startswith("20261206-070000-aaaaaa  deploy") and "FAILED" in lines[2]
    assert lines[2].split()[-2:] == ["2.00s", "1"]
    code, out, _ = gxo(["runs", "--json", "--state-dir", str(state)])
    rows = json.loads(out)
    assert [(r["id"], r["plan"], r["status"], r["duration"], r["failures"]) for r in rows] == [
        ("20261206-080000-bbbbbb", "nightly backup", "Interrupted", None, 0),
        ("20261206-070000-aaaaaa", "deploy", "FAILED", 2.0, 1)]


def test_runs_empty_and_default_dir(tmp_path: Path) -> None:
    code, out, _ = gxo(["runs", "--state-dir", str(tmp_path / "none")])
    assert (code, out.strip()) == (0, f"no runs in {tmp_path / 'none'}")
    code, out, _ = gxo(["runs", "--json"], env={"XDG_STATE_HOME": str(tmp_path / "xdg")})
    assert (code, json.loads(out)) == (0, [])
    _history(tmp_path / "xdg" / "gxo")
    code, out, _ = gxo(["runs", "--json"], env={"XDG_STATE_HOME": str(tmp_path / "xdg")})
    assert len(json.loads(out)) == 2


def test_runs_show(state: Path) -> None:
    code, out, _ = gxo(["runs", "show", "20261206-070000-aaaaaa", "--state-dir", str(state)])
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("run 20261206-070000-aaaaaa of plan deploy: FAILED")
    assert lines[1].split() == ["WORKLOAD", "STATUS", "DURATION", "REASON"]
    assert lines[2].split() == ["fetch", "Completed", "1.50s"]
    assert lines[3].split() == ["push", "Failed", "0.50s", "exit", "code", "3"]
    code, out, _ = gxo(["runs", "--state-dir", str(state), "show", "20261206-08", "--json"])  # a unique prefix
    doc = json.loads(out)
    assert code == 0 and doc["id"] == "20261206-080000-bbbbbb" and doc["status"] == "Interrupted"
    assert [w["name"] for w in doc["workloads"]] == ["dump"] and doc["plan_digest"] == "d2"


def test_runs_show_unknown_or_ambiguous(state: Path) -> None:
    code, _, err = gxo(["runs", "show", "nope", "--state-dir", str(state)])
    assert code == 2 and f"no run 'nope' in {state}" in err
    code, _, err = gxo(["runs", "show", "2026", "--state-dir", str(state)])
    assert code == 2 and "names 2 runs" in err


def test_sealed_store_and_keys(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _history(state, KEY)
    key_env = {"GXO_STATE_KEY": base64.b64encode(KEY).decode()}
    code, out, _ = gxo(["runs", "show", "20261206-070000-aaaaaa", "--state-dir", str(state)], env=key_env)
    assert code == 0 and "exit code 3" in out
    wrong = {"GXO_STATE_KEY": base64.b64encode(NEW_KEY).decode()}
    for args in (["runs"], ["runs", "show", "20261206-070000-aaaaaa"]):
        code, out, err = gxo([*args, "--state-dir", str(state)], env=wrong)
        assert code == 3 and out == "" and len(err.splitlines()) == 1 and "sealed with another key" in err
    code, _, err = gxo(["runs", "--state-dir", str(state)], env={"GXO_STATE_KEY": "xyz"})
    assert code == 3 and err.strip() == ("gxo: GXO_STATE_KEY is not a state key: not base64 "
                                         "(write 32 random bytes in base64, e.g. head -c 32 /dev/urandom | base64)")
    code, out, _ = gxo(["runs", "--state-dir", str(state)])  # no key: the list, not the values
    assert code == 0 and "deploy" in out
    code, _, err = gxo(["runs", "show", "20261206-070000-aaaaaa", "--state-dir", str(state)])
    assert code == 3 and "is sealed: set GXO_STATE_KEY" in err


def test_rekey(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _history(state, KEY)
    old_file, new_file = tmp_path / "old.key", tmp_path / "new.key"
    old_file.write_text(base64.b64encode(KEY).decode() + "\n")
    new_file.write_text(base64.b64encode(NEW_KEY).decode() + "\n")
    code, _, err = gxo(["state", "rekey", "--new-key-file", str(new_file), "--state-dir", str(state)])
    assert code == 3 and "is sealed" in err  # no current key
    code, out, _ = gxo(["state", "rekey", "--new-key-file", str(new_file), "--state-dir", str(state),
                        "--state-key-file", str(old_file)])
    assert code == 0 and len(out.splitlines()) == 2 and out.startswith("resealed ")
    code, _, _ = gxo(["runs", "show", "20261206-070000-aaaaaa", "--state-dir", str(state),
                      "--state-key-file", str(old_file)])
    assert code == 3
    code, out, _ = gxo(["runs", "show", "20261206-070000-aaaaaa", "--state-dir", str(state),
                        "--state-key-file", str(new_file)])
    assert code == 0 and "exit code 3" in out
    bad = tmp_path / "bad.key"
    bad.write_text(base64.b64encode(b"short").decode())
    code, _, err = gxo(["state", "rekey", "--new-key-file", str(bad), "--state-dir", str(state)])
    assert code == 3 and "decodes to 5 bytes, not 32" in err
    code, _, err = gxo(["state", "rekey", "--state-dir", str(state)])
    assert code == 2 and "--new-key-file" in err


def test_unreadable_database_named(state: Path) -> None:
    broken = state / "broken-000000000000.db"
    broken.write_bytes(b"not a database " * 300)
    code, out, err = gxo(["runs", "--state-dir", str(state)])
    assert code == 3 and "deploy" in out  # the others are still listed
    assert str(broken) in err and len(err.splitlines()) == 1


# -- retention ----------------------------------------------------------------------------------

ONE = 'name: kept\nschemaVersion: "1.0.0"\nworkloads:\n  - name: a\n    lifecycle: {policy: run_once}\n' \
      '    process: {module: control:identity}\n'


@pytest.fixture
def plan(tmp_path: Path) -> str:
    (tmp_path / "kept.yaml").write_text(ONE)
    out = str(tmp_path / "kept.gxp")
    gxoc = str(Path(sys.executable).with_name("gxoc"))
    subprocess.run([gxoc, "build", "--no-native", str(tmp_path / "kept.yaml"), "-o", out], check=True,
                   capture_output=True)
    return out


def _ids(state: Path) -> list[str]:
    code, out, err = gxo(["runs", "--json", "--state-dir", str(state)])
    assert code == 0, err
    return [r["id"] for r in json.loads(out)]


def test_exec_keeps_the_newest_runs(plan: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    made = []
    for _ in range(4):
        assert gxo(["exec", plan, "--state-dir", str(state), "--keep-runs", "2"])[0] == 0
        made.append(_ids(state)[0])
    assert _ids(state) == [made[3], made[2]]
    # GXO_KEEP_RUNS when the option is not given; the option wins over it
    for _ in range(2):
        assert gxo(["exec", plan, "--state-dir", str(state)], env={"GXO_KEEP_RUNS": "3"})[0] == 0
    assert len(_ids(state)) == 3
    assert gxo(["exec", plan, "--state-dir", str(state), "--keep-runs=1"], env={"GXO_KEEP_RUNS": "3"})[0] == 0
    assert len(_ids(state)) == 1
    # the default (100) and `all` keep these few runs
    for env in ({}, {"GXO_KEEP_RUNS": "all"}):
        assert gxo(["exec", plan, "--state-dir", str(state)], env=env)[0] == 0
    assert len(_ids(state)) == 3


def test_exec_never_prunes_an_interrupted_run(plan: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    s = open_store("kept", str(state), None)
    s.begin_run("20200101-000000-000000", "kept", "d0", 1_577_836_800.0)
    s.close()  # no end: interrupted, so resumable
    for _ in range(2):
        assert gxo(["exec", plan, "--state-dir", str(state), "--keep-runs", "1"])[0] == 0
    ids = _ids(state)
    assert len(ids) == 2 and ids[-1] == "20200101-000000-000000"


@pytest.mark.parametrize("args, env, hint", [
    (["--keep-runs", "0"], {}, "--keep-runs: '0'"),
    (["--keep-runs", "-3"], {}, "--keep-runs"),
    (["--keep-runs", "some"], {}, "--keep-runs: 'some'"),
    ([], {"GXO_KEEP_RUNS": "ten"}, "GXO_KEEP_RUNS: 'ten'"),
    (["--no-state", "--keep-runs", "3"], {}, "--no-state"),
])
def test_keep_runs_bad_values(plan: str, tmp_path: Path, args: list[str], env: dict[str, str], hint: str) -> None:
    state = tmp_path / "state"
    code, out, err = gxo(["exec", plan, "--state-dir", str(state), *args] if "--no-state" not in args
                         else ["exec", plan, *args], env=env)
    assert code == 2
    assert f"Invalid value for {hint}" in err
    assert out == "" and not state.exists()  # refused before anything ran


def test_runs_prune(plan: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    _history(state)  # deploy (ended long ago), nightly backup (interrupted)
    for _ in range(3):
        assert gxo(["exec", plan, "--state-dir", str(state)])[0] == 0
    ids = _ids(state)
    kept = [i for i in ids if i not in ("20261206-070000-aaaaaa", "20261206-080000-bbbbbb")]
    code, out, _ = gxo(["runs", "prune", "--keep", "1", "--dry-run", "--state-dir", str(state)])
    assert code == 0
    assert f"would remove run {kept[2]} of plan kept" in out and f"would remove run {kept[1]} of plan kept" in out
    assert out.splitlines()[-1] == f"2 runs would be removed in {state}"
    assert _ids(state) == ids
    code, out, _ = gxo(["runs", "prune", "--keep", "1", "--plan", "kept", "--state-dir", str(state)])
    assert code == 0 and out.splitlines()[-1] == f"2 runs removed in {state}"
    assert _ids(state) == [kept[0], "20261206-080000-bbbbbb", "20261206-070000-aaaaaa"]
    # --older-than: deploy's run ended in 2025, the one left of `kept` just now; the interrupted run stays
    code, out, _ = gxo(["runs", "prune", "--older-than", "30d", "--vacuum", "--state-dir", str(state)])
    assert code == 0 and out.splitlines() == ["removed run 20261206-070000-aaaaaa of plan deploy",
                                              f"1 run removed in {state}"]
    assert _ids(state) == [kept[0], "20261206-080000-bbbbbb"]


@pytest.mark.parametrize("args, message", [
    ([], "say what to remove"),
    (["--older-than", "3w"], "Invalid value for --older-than: '3w'"),
    (["--keep", "-1"], "Invalid value for '--keep'"),
])
def test_runs_prune_usage(tmp_path: Path, args: list[str], message: str) -> None:
    code, _, err = gxo(["runs", "prune", "--state-dir", str(tmp_path), *args])
    assert code == 2 and message in err
