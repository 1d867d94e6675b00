"""The base install runs plans: ``gxo exec`` in a venv holding ``pip install gxo`` without extras.

A fresh venv gets a regular (non-editable) install of a copy of this tree, so the Cython
extension ``runtime/_state_cy`` is built in pip's isolated build env (``GXO_REQUIRE_EXTENSIONS=1``
from the environment, as CI sets it, makes a failed build fail the install).  A plan built by the
dev venv's ``gxoc build --no-native`` (exec, filesystem:write with a template, a register,
control:assert) then runs with the base venv's ``gxo``.  The compiler's dependencies must be
absent there, and ``gxo exec`` must not import them, nor ``yaml`` (a base dependency that only
data modules' yaml format loads), nor what design.md section 8 keeps off the start-up path:
rich off a terminal, cryptography without ``--trusted-key``, httpx without ``http:request``,
asyncssh without an ``ssh:*`` module.

The venv is cached under the temp dir, keyed by the digest of everything the install reads
(pyproject.toml, setup.py, the package dirs), the interpreter and the ``GXO_*EXTENSIONS``
switches; any edit of the sources makes a new one.  The install needs PyPI (dependencies and the
build requirements); it takes 10-30 s, a cached venv none.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from golden_util import run_gxoc

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ("pyproject.toml", "setup.py", "README.md")
PACKAGE_DIRS = ("runtime", "compiler", "stdlib", "grammar", "schemas")
SKIP_SUFFIXES = (".so", ".c", ".pyc", ".pyd", ".html")
KEPT_SOURCES = ("launch.c",)  # C sources of the tree (the sandbox launcher), not Cython output
COMPILER_DEPS = ("lark", "jsonschema", "networkx", "jinja2", "Cython")
# Never imported by `gxo exec` of a plain plan (compiler deps, yaml, and design.md section 8).
NOT_AT_EXEC = (*COMPILER_DEPS, "cython", "yaml", "gxo.compiler", "rich", "cryptography", "httpx", "uvloop",
               "croniter",  # croniter: only a scheduled workload or the compiler loads it
               "asyncssh", "bcrypt",  # only an ssh:* module loads them
               "psycopg", "pymysql",  # database drivers: only database:query loads them
               "re2")  # RE2: only a regular expression (regex_match, data:parse regex, ...) loads it
INSTALL_TIMEOUT = 300
STALE_SECONDS = 3600

PLAYBOOK = """\
name: base_install
schemaVersion: "1.0.0"
vars:
  who: world
workloads:
  - name: say
    lifecycle: {policy: run_once}
    process:
      module: exec
      params:
        command: echo
        args: ["hello, {{ .who }}"]
    register: said

  - name: write_report
    lifecycle: {policy: run_once}
    process:
      module: filesystem:write
      params:
        path: out/report.txt
        content: "report: {{ .said.stdout }} ({{ .said.exit_code }})\\n"
    register: written

  - name: show
    lifecycle: {policy: run_once}
    process:
      module: exec
      params:
        command: cat
        args: ["{{ .written.path }}"]
    register: shown

  - name: check
    lifecycle: {policy: run_once}
    process:
      module: control:assert
      params:
        condition: '{{ .shown.stdout }} == "report: hello, world (0)" and {{ .written.bytes_written }} == 25'
        fail_message: "report mismatch: {{ .shown.stdout }}"
"""

# Runs `gxo` in-process under -X importtime and writes every module loaded by the end of the
# run: importlib.import_module (module namespaces) bypasses -X importtime, sys.modules does not.
EXEC_RECORDING_MODULES = """\
import atexit, sys
out = sys.argv.pop(1)
def dump():
    with open(out, "w") as fh:
        fh.write("\\n".join(sorted(sys.modules)))
atexit.register(dump)
from gxo.runtime.cli import main
sys.argv[0] = "gxo"
sys.exit(main())
"""


def _source_files() -> list[Path]:
    files = [ROOT / name for name in PACKAGING]
    for d in PACKAGE_DIRS:
        for path in sorted((ROOT / d).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and (
                    not path.name.endswith(SKIP_SUFFIXES) or path.name in KEPT_SOURCES) \
                    and path.name != "gxo-sandbox-exec":  # the launcher built in place
                files.append(path)
    return files


def _digest(files: list[Path]) -> str:
    h = hashlib.sha256()
    h.update(sys.version.encode())
    for var in ("GXO_REQUIRE_EXTENSIONS", "GXO_NO_EXTENSIONS"):
        h.update(f"{var}={os.environ.get(var, '')}\n".encode())
    for path in files:
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of the base venv's processes: nothing of the dev venv leaks in."""
    drop = ("PYTHONPATH", "PYTHONHOME", "PYTHONPROFILEIMPORTTIME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, **extra}


def _report(config: pytest.Config, line: str) -> None:
    """A line on the terminal past output capturing (the install time is worth seeing)."""
    capture = config.pluginmanager.getplugin("capturemanager")
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if capture is None or reporter is None:  # pragma: no cover
        print(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


def _install(dest: Path, files: list[Path]) -> float:
    """A venv at ``dest/venv`` with a regular install of a copy of the tree; returns the seconds."""
    t0 = time.perf_counter()
    src = dest / "src"
    for path in files:  # a copy: the in-tree build would write build/ and *.egg-info into the repo
        target = src / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    venv = dest / "venv"
    env = _clean_env()
    # Without ensurepip (seconds saved): the dev venv's pip (22.3+ has --python) installs into it.
    probe = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True)
    version = tuple(int(x) for x in probe.stdout.split()[1].split(".")[:2]) if probe.returncode == 0 else (0,)
    has_pip = version >= (22, 3)
    subprocess.run([sys.executable, "-m", "venv", *(["--without-pip"] if has_pip else []), str(venv)],
                   check=True, capture_output=True, env=env)
    pip = ([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")] if has_pip
           else [str(venv / "bin" / "python"), "-m", "pip"])
    proc = subprocess.run([*pip, "install", "--disable-pip-version-check", "-q", str(src)],
                          capture_output=True, text=True, env=env, timeout=INSTALL_TIMEOUT)
    if proc.returncode != 0:
        pytest.fail(f"pip install of the base package failed (exit {proc.returncode}):\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    shutil.rmtree(src)
    return time.perf_counter() - t0


@pytest.fixture(scope="module")
def base_venv(pytestconfig: pytest.Config) -> Path:
    files = _source_files()
    cache = Path(tempfile.gettempdir()) / "gxo-test-base-venv"
    cache.mkdir(exist_ok=True)
    dest = cache / _digest(files)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be building the same venv
        if (dest / "ok").exists():
            os.utime(dest)  # in use: not stale
            _report(pytestconfig, f"test_base_install: cached base venv {dest}")
        else:
            for old in cache.iterdir():
                if old.is_dir() and old != dest and time.time() - old.stat().st_mtime > STALE_SECONDS:
                    shutil.rmtree(old, ignore_errors=True)
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            secs = _install(dest, files)
            (dest / "ok").write_text("")
            _report(pytestconfig, f"test_base_install: venv + pip install (no extras) took {secs:.1f}s")
    return dest / "venv"


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plan, built by the dev venv's compiler."""
    d = tmp_path_factory.mktemp("base_install")
    (d / "base_install.yaml").write_text(PLAYBOOK, "utf-8")
    code, out, err = run_gxoc(["build", "--no-native", "base_install.yaml", "-o", "base_install.gxp"], d)
    assert code == 0, out + err
    return d / "base_install.gxp"


def test_base_venv_has_no_compiler_dependencies(base_venv: Path, tmp_path: Path) -> None:
    code = """\
import importlib, json, sys
missing = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
        missing[name] = False
    except ModuleNotFoundError:
        missing[name] = True
import gxo.runtime, yaml
from gxo.runtime import _state_cy
print(json.dumps({"missing": missing, "runtime": gxo.runtime.__file__, "compiled": _state_cy._is_compiled()}))
"""
    proc = subprocess.run([str(base_venv / "bin" / "python"), "-c", code, *COMPILER_DEPS], cwd=tmp_path,
                          capture_output=True, text=True, env=_clean_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["missing"] == {name: True for name in COMPILER_DEPS}
    assert Path(info["runtime"]).is_relative_to(base_venv), info["runtime"]  # not the dev tree
    if os.environ.get("GXO_REQUIRE_EXTENSIONS") == "1":
        assert info["compiled"], "GXO_REQUIRE_EXTENSIONS=1 but the base install's _state_cy is not compiled"


def test_base_venv_runs_a_plan(base_venv: Path, plan: Path, tmp_path: Path) -> None:
    gxo = str(base_venv / "bin" / "gxo")
    proc = subprocess.run([gxo, "exec", str(plan)], cwd=tmp_path, capture_output=True, text=True,
                          env=_clean_env(), timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for name in ("say", "write_report", "show", "check"):
        assert any(ln.startswith("ok ") and f" {name} (" in ln for ln in lines), proc.stdout
    assert "PLAY RECAP base_install: COMPLETED" in proc.stdout
    assert "ok=4" in proc.stdout and "failed=0" in proc.stdout
    others = [ln for ln in proc.stderr.splitlines() if "running an unsigned plan" not in ln]
    assert "Traceback" not in proc.stderr and not any("warning" in ln for ln in others), proc.stderr

    # A --var that breaks the assertion: the failure path of the base install too.
    proc = subprocess.run([gxo, "exec", str(plan), "--var", "who=there"], cwd=tmp_path, capture_output=True,
                          text=True, env=_clean_env(), timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "report mismatch: report: hello, there (0)" in proc.stdout
    assert "PLAY RECAP base_install: FAILED" in proc.stdout


def test_base_venv_exec_imports(base_venv: Path, plan: Path, tmp_path: Path) -> None:
    record = tmp_path / "modules.txt"
    proc = subprocess.run([str(base_venv / "bin" / "python"), "-X", "importtime", "-c", EXEC_RECORDING_MODULES,
                           str(record), "exec", str(plan)], cwd=tmp_path, capture_output=True, text=True,
                          env=_clean_env(), timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "PLAY RECAP base_install: COMPLETED" in proc.stdout
    timed = {ln.rsplit("|", 1)[1].strip() for ln in proc.stderr.splitlines() if ln.startswith("import time:")}
    loaded = set(record.read_text().split())
    assert "asyncio" in timed and "gxo.runtime.kernel" in loaded  # the checks see the run's imports

    def offending(names: set[str]) -> list[str]:
        return sorted(n for n in names if any(n == bad or n.startswith(bad + ".") for bad in NOT_AT_EXEC))

    assert offending(timed) == [], "gxo exec imported (-X importtime)"
    assert offending(loaded) == [], "gxo exec loaded (sys.modules at exit)"
