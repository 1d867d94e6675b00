"""Third-party modules through the ``gxo.modules`` entry point: the example plugin of
``examples/plugin/`` is pip-installed (``--no-deps --target``, a folder put on PYTHONPATH) and
the playbook of docs/modules/plugins.md goes through ``gxoc check``, ``gxoc build`` and
``gxo exec``.  Two more plugins built here show the honest edges: a module declared without
code (``not-implemented`` at build) and an entry point that does not import."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DOC = ROOT / "docs" / "modules" / "plugins.md"

_DECLARED = '''
from gxo.stdlib import ModuleSpec

# implemented=True is not trusted: there is no code for it in CODE
ONLY = ModuleSpec(name="decl:only", layer="X", description="Declared, no code.", implemented=True,
                  params_schema={"type": "object", "properties": {}, "additionalProperties": False},
                  summary_schema={"type": "object", "properties": {}})
MODULES = [ONLY]
CODE = {}
'''
_BROKEN = 'raise ImportError("needs libfoo")\n'


def _package(folder: Path, dist: str, module: str, source: str) -> Path:
    (folder / module).mkdir(parents=True)
    (folder / module / "__init__.py").write_text(source)
    (folder / "pyproject.toml").write_text(
        f'[build-system]\nrequires = ["setuptools>=77"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{dist}"\nversion = "0.1.0"\n'
        f'[project.entry-points."gxo.modules"]\n{module} = "{module}:MODULES"\n'
        f'[tool.setuptools]\npackages = ["{module}"]\n')
    return folder


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("plugins")
    greet = work / "greet"
    shutil.copytree(ROOT / "examples" / "plugin", greet)  # the build writes into its source folder
    declared = _package(work / "declared", "gxo-declared", "gxo_declared", _DECLARED)
    broken = _package(work / "broken", "gxo-broken", "gxo_broken", _BROKEN)
    target = work / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                           str(greet), str(declared), str(broken)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (target / "gxo_greet" / "__init__.py").is_file()
    return target


def run(tool: str, args: list[str], cwd: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("GXO_TRUSTED_KEYS", None)
    return subprocess.run([str(BIN / tool), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120)


def _doc_playbook() -> str:
    (text,) = re.findall(r"^```yaml\n(.*?)^```", DOC.read_text("utf-8"), re.M | re.S)
    return text


def test_example_plugin_checks_builds_and_runs(site: Path, tmp_path: Path) -> None:
    (tmp_path / "greet.yaml").write_text(_doc_playbook())
    proc = run("gxoc", ["check", "greet.yaml"], tmp_path, site)
    assert proc.returncode == 0 and "no problems" in proc.stdout, proc.stdout + proc.stderr
    proc = run("gxoc", ["build", "greet.yaml", "-o", "greet.gxp", "--no-native"], tmp_path, site)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run("gxo", ["exec", "greet.gxp"], tmp_path, site)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^ok +greet ", proc.stdout, re.M) and "COMPLETED" in proc.stdout
    # the plugin's code computed the message the assertion reads: another name fails it
    proc = run("gxo", ["exec", "greet.gxp", "--var", "who=gxo"], tmp_path, site)
    assert proc.returncode == 1 and "failed: check: assertion failed" in proc.stdout, proc.stdout


def test_plugin_schemas_type_the_playbook(site: Path, tmp_path: Path) -> None:
    text = _doc_playbook().replace(".greeting.length", ".greeting.size").replace("shout: true", "shout: loud")
    (tmp_path / "greet.yaml").write_text(text)
    proc = run("gxoc", ["check", "greet.yaml"], tmp_path, site)
    assert proc.returncode == 1
    assert "error[unknown-field]: .greeting has no field 'size'" in proc.stdout, proc.stdout
    assert "help: its fields are: message, length" in proc.stdout
    assert "error[invalid-value]: params.shout must be of type boolean" in proc.stdout


def test_plugin_module_without_code_is_not_implemented(site: Path, tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text('name: p\nschemaVersion: "1.0.0"\nworkloads:\n  - name: w\n'
                                     '    lifecycle: {policy: run_once}\n    process: {module: decl:only}\n')
    proc = run("gxoc", ["build", "p.yaml", "-o", "p.gxp", "--no-native"], tmp_path, site)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "error[not-implemented]: module 'decl:only' is declared but its code is not in this release" in proc.stdout
    assert not (tmp_path / "p.gxp").exists()


def test_plugin_that_does_not_import_is_named(site: Path, tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text('name: p\nschemaVersion: "1.0.0"\nworkloads:\n  - name: w\n'
                                     '    lifecycle: {policy: run_once}\n    process: {module: broken:thing}\n')
    proc = run("gxoc", ["check", "p.yaml"], tmp_path, site)
    assert proc.returncode == 1 and "error[unknown-module]: unknown module 'broken:thing'" in proc.stdout
    assert ("note: plugin entry point 'gxo_broken = gxo_broken:MODULES' does not load: "
            "ImportError: needs libfoo") in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_registry_marks_plugin_code_as_implemented(site: Path) -> None:
    code = ("from gxo.stdlib import registry\nr = registry()\n"
            "print(r['greet:hello'].implemented, r['decl:only'].implemented)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(site)})
    assert proc.stdout.split() == ["True", "False"], proc.stderr
