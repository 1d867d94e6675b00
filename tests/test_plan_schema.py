"""schemas/plan.schema.json is generated from the IR and every plan golden validates against it."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLDENS = sorted((ROOT / "tests" / "golden" / "plans").glob("*/manifest.json"))


def _schema() -> dict:
    return json.loads(resources.files("gxo.schemas").joinpath("plan.schema.json").read_text("utf-8"))


def test_schema_is_generated_from_the_ir() -> None:
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_plan_schema.py"), "--check"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def test_schema_is_valid_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(_schema())


@pytest.mark.parametrize("manifest", GOLDENS, ids=[m.parent.name for m in GOLDENS])
def test_golden_manifests_validate(manifest: Path) -> None:
    jsonschema.Draft202012Validator(_schema()).validate(json.loads(manifest.read_text("utf-8")))


def test_schema_rejects_an_unknown_field() -> None:
    data = json.loads(GOLDENS[0].read_text("utf-8"))
    data["workloads"][0]["surprise"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(_schema()).validate(data)
