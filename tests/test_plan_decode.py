"""The plan IR decodes straight from the manifest's bytes, fast, and stores each edge once.

A 2,000-workload chain (as ``gxoc build`` gives it for ``needs`` chains) is encoded with
``encode_manifest`` and decoded with ``decode_plan``: the decoded plan equals the built one,
re-encodes to the same bytes (the canonical check of ``gxo exec``), and derives every workload's
``deps`` and ``dependents`` from the edges.  Decoding used to reflect over the type hints of every
object (about 1.2 s of CPU for 2,000 workloads); the test below checks that nothing reflects.
"""

from __future__ import annotations

import subprocess
import sys

from gxo.runtime.plan import (
    Edge,
    Lifecycle,
    Plan,
    Source,
    SourceSpan,
    Workload,
    decode_plan,
    encode_manifest,
)

N = 2_000


def chain(n: int) -> Plan:
    ws = [Workload(name=f"w{i}", index=i, module="control:identity", module_version="0.1.0",
                   lifecycle=Lifecycle(policy="run_once"), params={"i": i, "tags": ["a", "b"]},
                   needs=(f"w{i - 1}",) if i else (), level=i, inline=True,
                   span=SourceSpan(path="chain.yaml", line=5 * i + 4, col=11, end_line=5 * i + 4, end_col=14))
          for i in range(n)]
    edges = tuple(sorted((Edge(source=f"w{i - 1}", target=f"w{i}", kinds=("needs",)) for i in range(1, n)),
                         key=lambda e: (e.source, e.target)))
    return Plan(compiler_version="0.1.0", name="chain", source=Source(path="chain.yaml", sha256="0" * 64), vars={},
                var_types=(), workloads=tuple(ws), edges=edges, levels=tuple((w.name,) for w in ws), channels=(),
                expressions=(), modules=(), plan_code_sha256="0" * 64)


def test_each_edge_is_stored_once_and_deps_are_derived() -> None:
    plan = chain(4)
    raw = encode_manifest(plan)
    assert b'"deps"' not in raw and b'"dependents"' not in raw
    assert raw.count(b'"source": "w1"') == 1  # the edge w1 -> w2, once
    decoded = decode_plan(raw)
    assert decoded == plan
    assert [(w.name, w.deps, w.dependents) for w in decoded.workloads] == [
        ("w0", (), ("w1",)), ("w1", ("w0",), ("w2",)), ("w2", ("w1",), ("w3",)), ("w3", ("w2",), ())]


def test_a_stream_edge_is_not_a_dependency() -> None:
    plan = chain(2)
    plan = Plan(**{f: getattr(plan, f) for f in plan.__struct_fields__ if f != "edges"},
                edges=(Edge(source="w0", target="w1", kinds=("stream",)),))
    assert decode_plan(encode_manifest(plan)).workloads[1].deps == ()
    both = Plan(**{f: getattr(plan, f) for f in plan.__struct_fields__ if f != "edges"},
                edges=(Edge(source="w0", target="w1", kinds=("needs", "stream")),))
    assert decode_plan(encode_manifest(both)).workloads[1].deps == ("w0",)


def test_decoding_2000_workloads_reflects_over_nothing(monkeypatch) -> None:
    """The decoder is msgspec's, built once per type: decoding calls no type-hint reflection per
    object (what cost about 1.2 s of CPU for 2,000 workloads).  Its speed is a benchmark figure
    (``bench/kernel.py``), not asserted here."""
    import typing

    plan = chain(N)
    raw = encode_manifest(plan)
    decode_plan(raw)  # the decoder of each type is made on first use

    def reflected(*_a, **_k):
        raise AssertionError("decode_plan reflected over type hints")

    monkeypatch.setattr(typing, "get_type_hints", reflected)
    decoded = decode_plan(raw)
    assert encode_manifest(decoded) == raw
    assert decoded.workloads[N - 1].deps == (f"w{N - 2}",)


def test_the_ir_module_needs_no_dataclass_machinery() -> None:
    code = "import sys, gxo.runtime.plan; assert 'dataclasses' not in sys.modules, 'dataclasses imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_lean_leaves_out_what_holds_its_default() -> None:
    """Format 3: a field equal to its default is not written (``lean``, which the compiler
    applies), and the text decodes to the same plan and encodes back to the same bytes."""
    from gxo.runtime.plan import Retry, lean

    one = float("1.0")  # equal to Retry.delay's default, but not that object
    plan = chain(2)
    w0 = plan.workloads[0]
    fields = {f: getattr(w0, f) for f in w0.__struct_fields__ if f not in ("retry", "lifecycle")}
    w0 = Workload(**fields, retry=Retry(delay=one, attempts=3),
                  lifecycle=Lifecycle(policy="run_once", stop_timeout=float("10.0"), concurrency=9))
    plan = Plan(**{f: getattr(plan, f) for f in plan.__struct_fields__ if f != "workloads"},
                workloads=(w0, plan.workloads[1]))
    assert b'"delay"' in encode_manifest(plan)  # msgspec tells a default by identity only
    lean_plan = lean(plan)
    assert lean_plan == plan
    raw = encode_manifest(lean_plan)
    first = raw[raw.index(b'"workloads"'):raw.index(b'"name": "w1"')]
    assert b'"delay"' not in first and b'"stop_timeout"' not in first and b'"loop_var"' not in first
    assert b'"attempts": 3' in first and b'"concurrency": 9' in first
    assert b'"format": "gxo-plan"' in raw and b'"format_version": 3' in raw  # the plan's own fields: all
    decoded = decode_plan(raw)
    assert decoded == plan and encode_manifest(decoded) == raw
    assert lean(lean_plan) is lean_plan  # nothing left to change: the same object
    assert decoded.workloads[1].deps == ("w0",)  # the plan made again still derives its deps


def test_lean_keeps_a_value_of_another_type() -> None:
    """``1`` is not the default ``1.0``, nor ``0`` the default ``False``: kept as written."""
    from gxo.runtime.plan import Retry, lean

    assert lean(Retry(attempts=1, delay=1)).delay == 1 and type(lean(Retry(delay=1)).delay) is int
    assert b'"delay"' in encode_manifest_of(lean(Retry(delay=1)))


def encode_manifest_of(record: object) -> bytes:
    import msgspec

    return msgspec.json.encode(record)


def test_lean_reflects_once_per_record_type(monkeypatch) -> None:
    """``lean`` looks up each record type's fields once (``msgspec.structs.fields`` reflects over
    type hints: per object, it cost 1.6 s of a 1,000-workload build)."""
    import msgspec

    from gxo.runtime import plan as P

    calls: list[type] = []
    real = msgspec.structs.fields

    def counting(cls):
        calls.append(cls)
        return real(cls)

    monkeypatch.setattr(msgspec.structs, "fields", counting)
    monkeypatch.setattr(P, "_DEFAULTS", {})
    P.lean(chain(N))
    assert len(calls) == len(set(calls)) <= 8
