"""Plan goldens: tests/golden/plans/<case>/{playbook.yaml, manifest.json, plan_code.py}.

Built through ``lower``/``emit`` directly (not ``gxoc build``, which refuses what this release
cannot run: the ``supervised`` case keeps the IR of a lifecycle that is ``not-implemented``),
from the case folder so the playbook is named by its base name.  Every
case also checks the IR invariants: ``decode(encode(plan)) == plan``, two builds give the same
members, and the written plan loads and verifies.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from golden_util import GOLDEN, compare_or_update
from gxo.compiler.emit import build_plan, emit_gxp, members_of
from gxo.compiler.pipeline import check_source
from gxo.runtime.plan import canonical_json, decode_plan, encode_manifest
from gxo.runtime.planfile import load_plan

CASES = sorted(p for p in (GOLDEN / "plans").iterdir() if (p / "playbook.yaml").exists())
IDS = [c.name for c in CASES]


def build_case(case: Path):
    data = (case / "playbook.yaml").read_bytes()
    with contextlib.chdir(case):  # files the playbook names (a seccomp profile) are beside it
        result = check_source(data, "playbook.yaml")
    errors = [d.message for d in result.diags.items if d.severity == "error" and d.code != "not-implemented"]
    assert not errors, errors
    result.diags.items = [d for d in result.diags.items if d.code != "not-implemented"]
    return build_plan(result, source_bytes=data)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_plan_golden(case: Path, update_golden: bool) -> None:
    built = build_case(case)
    compare_or_update(case / "manifest.json", canonical_json(built.plan, pretty=True), update_golden)
    compare_or_update(case / "plan_code.py", built.code, update_golden)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_plan_invariants(case: Path, tmp_path: Path) -> None:
    built = build_case(case)
    plan = built.plan
    assert decode_plan(canonical_json(plan).encode()) == plan
    decoded = decode_plan(encode_manifest(plan))
    assert decoded == plan and encode_manifest(decoded) == encode_manifest(plan)
    # deps and dependents are not stored: decoding derives them from the edges, as building did
    assert [(w.deps, w.dependents) for w in decoded.workloads] == [(w.deps, w.dependents) for w in plan.workloads]
    again = build_case(case)
    assert members_of(again) == members_of(built)
    text = canonical_json(plan, pretty=True)
    assert str(case) not in text and str(Path.cwd()) not in text and "/tmp" not in text
    out = tmp_path / "plan.gxp"
    emit_gxp(str(out), built)
    loaded = load_plan(str(out))
    assert loaded.plan == plan
    assert sorted(loaded.functions) == sorted(e.id for e in plan.expressions)
    assert not loaded.warnings


def test_enough_plan_cases() -> None:
    assert len(CASES) >= 6


def test_policies_case_resolves_everything() -> None:
    plan = build_case(GOLDEN / "plans" / "policies").plan
    call = plan.workload("call")
    assert call.retry.delay == 0.25 and call.retry.max_delay == 90.0 and call.timeout == 3723.5
    assert call.state_access == "unsafe_direct_reference" and call.secret_params == ("params.args[1]",)
    assert plan.workload("produce").params["items"][:2] == [{"$lit": {"$expr": "not an expression"}}, {"$lit": {"$lit": 1}}]
    assert plan.workload("never").disabled and plan.workload("never").deps == ("call",)
    assert plan.workload("consume").skip_on_no_input is False and plan.workload("produce").skip_on_no_input is True
    assert [(c.producer, c.consumer, c.capacity, c.overflow) for c in plan.channels] == [("produce", "consume", 8, "drop_oldest")]
    # a stream edge is a channel, not a dependency
    assert plan.workload("consume").deps == () and plan.workload("produce").dependents == ()
    assert plan.max_concurrency == 3
    assert dict(plan.var_types)["greeting"] == "any" and dict(plan.var_types)["region"] == "str"
    ids = [e.id for e in plan.expressions]
    assert ids == [f"e{i}" for i in range(len(ids))]
    lines = [(e.span.line, e.span.col) for e in plan.expressions]
    assert lines == sorted(lines)
    assert [e.secret for e in plan.expressions if e.workload == "call"] == [True, False]
