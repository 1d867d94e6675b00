"""``gxoc build`` and friends: determinism, refusals, native shards, show/diff/graph/keygen.

Modules' code is still being written, so CLI tests mark every declared module implemented
(``implemented`` fixture, or ``_IMPL`` in subprocesses); ``not-implemented`` is tested with the
real registry.  Everything builds with ``--no-native`` except the native tests.
"""

from __future__ import annotations

import json

import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from msgspec.structs import replace

from golden_util import GOLDEN, run_gxoc
from gxo.compiler.lower import lower, parse_duration
from gxo.compiler.pipeline import check_source
from gxo.runtime.planfile import PlanRefused, load_plan, open_plan

HELLO = GOLDEN / "plans" / "hello" / "playbook.yaml"
STREAM = GOLDEN / "plans" / "stream-join" / "playbook.yaml"

_IMPL = (
    "import sys\n"
    "from msgspec.structs import replace\n"
    "from gxo.stdlib import registry\n"
    "r = registry()\n"
    "for k, v in list(r.items()): r[k] = replace(v, implemented=True)\n"
    "from gxo.compiler.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@pytest.fixture
def implemented(monkeypatch: pytest.MonkeyPatch) -> None:
    from gxo.stdlib import registry

    reg = registry()
    for name, spec in list(reg.items()):
        monkeypatch.setitem(reg, name, replace(spec, implemented=True))


def copy_playbook(src: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / "playbook.yaml"
    shutil.copyfile(src, dst)
    return dst


def gxoc_subprocess(args: list[str], cwd: Path, seed: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(check=False, args=[sys.executable, "-c", _IMPL, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONHASHSEED": seed, **env})


# ---------------------------------------------------------------------------------------------
# Determinism


@pytest.mark.parametrize("case", ["hello", "policies", "stream-join", "supervised"])
def test_build_is_deterministic_across_dirs_and_hash_seeds(tmp_path: Path, case: str) -> None:
    src = GOLDEN / "plans" / case / "playbook.yaml"
    outs = []
    for i, seed in enumerate(("0", "4242")):
        folder = tmp_path / f"dir{i}" / ("deep" * (i + 1))
        copy_playbook(src, folder)
        proc = gxoc_subprocess(["build", "playbook.yaml", "-o", "plan.gxp", "--no-native"], folder, seed)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outs.append((folder / "plan.gxp").read_bytes())
    assert outs[0] == outs[1]
    with zipfile.ZipFile(tmp_path / "dir0" / "deep" / "plan.gxp") as zf:
        assert [i.filename for i in zf.infolist()] == sorted(i.filename for i in zf.infolist())
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        for name in zf.namelist():
            data = zf.read(name)
            assert str(tmp_path).encode() not in data, name


# ---------------------------------------------------------------------------------------------
# gxoc build


def test_build_refuses_unimplemented_modules(tmp_path: Path) -> None:
    from gxo.stdlib import registry

    if all(s.implemented for s in registry().values()):
        pytest.skip("every module is implemented")
    name = next(n for n, s in registry().items() if not s.implemented and n != "stream:pipeline")
    pb = tmp_path / "p.yaml"
    pb.write_text(f'name: x\nschemaVersion: "1.0.0"\nworkloads:\n  - name: a\n    lifecycle: {{policy: run_once}}\n'
                  f'    process: {{module: "{name}"}}\n')
    code, out, err = run_gxoc(["build", "p.yaml", "-o", "p.gxp", "--no-native"], tmp_path)
    assert code == 1 and "error[not-implemented]" in out and "Traceback" not in out + err
    assert not (tmp_path / "p.gxp").exists()


def test_build_refuses_check_errors(tmp_path: Path, implemented: None) -> None:
    pb = tmp_path / "p.yaml"
    pb.write_text('name: x\nschemaVersion: "1.0.0"\nworkloads:\n  - name: a\n    lifecycle: {policy: run_once}\n'
                  '    process: {module: exec, params: {command: echo, args: ["{{ .nope }}"]}}\n')
    code, out, _ = run_gxoc(["build", "p.yaml", "-o", "p.gxp", "--no-native"], tmp_path)
    assert code == 1 and "undefined-name" in out
    assert not (tmp_path / "p.gxp").exists()


def test_build_usage_errors(tmp_path: Path, implemented: None) -> None:
    assert run_gxoc(["build", "missing.yaml", "--no-native"], tmp_path)[0] == 2
    copy_playbook(HELLO, tmp_path)
    assert run_gxoc(["build", "playbook.yaml", "--channel-buffer-size", "-1"], tmp_path)[0] == 2
    assert run_gxoc(["build", "playbook.yaml", "--sign", "nokey"], tmp_path)[0] == 2


def test_build_show_and_default_output(tmp_path: Path, implemented: None) -> None:
    copy_playbook(HELLO, tmp_path)
    code, out, err = run_gxoc(["build", "playbook.yaml", "--no-native"], tmp_path)
    assert code == 0, out + err
    assert "wrote playbook.gxp" in out
    code, out, _ = run_gxoc(["show", "playbook.gxp"], tmp_path)
    assert code == 0 and "plan 'hello'" in out and "say: exec (run_once)" in out and "unsigned" in out
    code, out, _ = run_gxoc(["show", "--json", "playbook.gxp"], tmp_path)
    member = json.loads(zipfile.ZipFile(tmp_path / "playbook.gxp").read("manifest.json"))
    shown = json.loads(out)
    assert code == 0 and "retry" in member["workloads"][0] and "timeout" not in member["workloads"][0]
    # every field, the defaults the member leaves out included; the rest as the member has it
    assert shown["workloads"][0]["timeout"] is None and shown["workloads"][0]["retry"]["attempts"] == 1
    assert shown["workloads"][0]["lifecycle"]["stop_timeout"] == 10.0
    assert set(shown) == set(member) and within(member, shown)


def within(lean: object, full: object) -> bool:
    """Whether ``full`` holds everything ``lean`` does (the records of ``full`` may have more
    fields: their defaults)."""
    if isinstance(lean, dict):
        return isinstance(full, dict) and all(k in full and within(v, full[k]) for k, v in lean.items())
    if isinstance(lean, list):
        return isinstance(full, list) and len(lean) == len(full) and all(map(within, lean, full))
    return lean == full


def test_show_refused_plan_exits_3(tmp_path: Path) -> None:
    (tmp_path / "bad.gxp").write_bytes(b"PK\x03\x04garbage")
    code, _, err = run_gxoc(["show", "bad.gxp"], tmp_path)
    assert code == 3 and "plan refused" in err and "Traceback" not in err


def test_channel_buffer_size_precedence() -> None:
    data = STREAM.read_bytes()
    res = check_source(data, "playbook.yaml")
    assert {c.capacity for c in lower(res)[0].channels} == {100}
    assert {c.capacity for c in lower(res, channel_buffer_size=7)[0].channels} == {7}
    pol = GOLDEN / "plans" / "policies" / "playbook.yaml"
    res = check_source(pol.read_bytes(), "playbook.yaml")
    assert {c.capacity for c in lower(res, channel_buffer_size=7)[0].channels} == {8}  # playbook wins


@pytest.mark.parametrize("text,seconds", [
    ("1s", 1.0), ("250ms", 0.25), ("1h30m", 5400.0), ("1.5s", 1.5), ("10us", 1e-05), ("3µs", 3e-06),
    ("2ns", 2e-09), ("1m0.1s", 60.1), ("0", 0.0),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "1", "s", "1d", "1s2", "-1s", "1 s"])
def test_parse_duration_rejects(bad: str) -> None:
    from gxo.compiler.lower import LowerError

    with pytest.raises(LowerError):
        parse_duration(bad)


# ---------------------------------------------------------------------------------------------
# Signing through the CLI


def test_keygen_sign_and_verify(tmp_path: Path, implemented: None) -> None:
    code, out, _ = run_gxoc(["keygen", "-o", "k"], tmp_path)
    assert code == 0 and "key id" in out
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    assert (tmp_path / "k.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert run_gxoc(["keygen", "-o", "k"], tmp_path)[0] == 2  # no silent overwrite
    copy_playbook(HELLO, tmp_path)
    code, out, err = run_gxoc(["build", "playbook.yaml", "-o", "s.gxp", "--no-native", "--sign", "k"], tmp_path)
    assert code == 0, out + err
    loaded = load_plan(str(tmp_path / "s.gxp"), trusted_keys=[str(tmp_path / "k.pub")])
    assert loaded.signed and loaded.signature_checked
    code, out, _ = run_gxoc(["show", "s.gxp", "--trusted-key", "k.pub"], tmp_path)
    assert code == 0 and "verified" in out
    run_gxoc(["keygen", "-o", "k2"], tmp_path)
    with pytest.raises(PlanRefused, match="bad signature"):
        load_plan(str(tmp_path / "s.gxp"), trusted_keys=[str(tmp_path / "k2.pub")])
    code, _, err = run_gxoc(["show", "s.gxp", "--trusted-key", "k2.pub"], tmp_path)
    assert code == 3 and "bad signature" in err


# ---------------------------------------------------------------------------------------------
# diff and graph


def test_diff_semantic(tmp_path: Path, implemented: None) -> None:
    a = copy_playbook(HELLO, tmp_path / "a")
    b = copy_playbook(HELLO, tmp_path / "b")
    text = b.read_text().replace("{{ .greeting }}, world", "{{ .greeting }}!").replace("greeting: hello", "greeting: hi")
    text += ("\n  - name: extra\n    lifecycle: {policy: run_once}\n    needs: [check]\n"
             "    process: {module: exec, params: {command: 'true'}}\n")
    b.write_text(text)
    assert run_gxoc(["build", "playbook.yaml", "-o", "p.gxp", "--no-native"], a.parent)[0] == 0
    code, out, err = run_gxoc(["diff", "a/p.gxp", "b/playbook.yaml"], tmp_path)
    assert code == 0, err
    assert "+ workload extra (exec)" in out
    assert '~ vars.greeting: "hello" -> "hi"' in out
    assert "~ workload say:" in out and 'params.args[0]: "{{ .greeting }}, world" (expression) -> "{{ .greeting }}!" (expression)' in out
    assert "+ edge check -> extra (needs)" in out
    code, out, _ = run_gxoc(["diff", "a/p.gxp", "a/playbook.yaml"], tmp_path)
    assert code == 0 and out.strip() == "no semantic differences"
    assert run_gxoc(["diff", "--exit-code", "a/p.gxp", "b/playbook.yaml"], tmp_path)[0] == 1


def test_graph_formats(tmp_path: Path, implemented: None) -> None:
    copy_playbook(STREAM, tmp_path)
    code, dot, _ = run_gxoc(["graph", "playbook.yaml", "--format", "dot"], tmp_path)
    assert code == 0 and dot.startswith("digraph ") and "style=dashed" in dot
    code, mer, _ = run_gxoc(["graph", "playbook.yaml", "--format", "mermaid"], tmp_path)
    assert code == 0 and mer.startswith("flowchart LR") and "-.->|stream|" in mer
    assert run_gxoc(["build", "playbook.yaml", "-o", "p.gxp", "--no-native"], tmp_path)[0] == 0
    assert run_gxoc(["graph", "p.gxp"], tmp_path)[1] == dot
    code, out, err = run_gxoc(["graph", "p.gxp", "--format", "svg"], tmp_path)
    if shutil.which("dot") is None:
        assert code == 1 and "Graphviz" in err
    else:
        assert code == 0 and "<svg" in out


# ---------------------------------------------------------------------------------------------
# Native shards


def _native_ok() -> bool:
    try:
        import Cython  # noqa: F401
    except ImportError:
        return False
    return shutil.which(os.environ.get("CC", "cc")) is not None or shutil.which("gcc") is not None


native = pytest.mark.skipif(not _native_ok(), reason="needs Cython and a C compiler")


@native
def test_native_build_matches_pure(tmp_path: Path) -> None:
    from gxo.compiler.emit import NativeMembers, build_plan, emit_gxp
    from gxo.compiler.native import build_native

    pb = (GOLDEN / "plans" / "policies" / "playbook.yaml").read_bytes()
    built = build_plan(check_source(pb, "playbook.yaml"), source_bytes=pb)
    cache = tmp_path / "cache"
    nr = build_native(built.items, plan_code_sha256=built.plan.plan_code_sha256,
                      cache=str(cache), shard_size=3, jobs=2, everything=True)
    assert len(nr.shards) >= 3 and nr.built == len(nr.shards) and nr.cached == 0
    again = build_native(built.items, plan_code_sha256=built.plan.plan_code_sha256,
                         cache=str(cache), shard_size=3, everything=True)
    assert again.built == 0 and again.cached == len(nr.shards) and again.index == nr.index
    emit_gxp(str(tmp_path / "n.gxp"), built, native=NativeMembers(nr.tag, nr.index, nr.shards))
    emit_gxp(str(tmp_path / "p.gxp"), built)
    nat = load_plan(str(tmp_path / "n.gxp"), require_native=True)
    pure = load_plan(str(tmp_path / "n.gxp"), allow_native=False)
    assert nat.native and not pure.native
    from gxo.runtime.kernel import ExprContext
    from gxo.runtime.secrets import EnvProvider, Tracker

    scope = {"region": "eu", "greeting": "hi", "limits": {"tags": ["a"]}, "called": {"exit_code": 0}, "tag": "t"}
    tracker = Tracker()
    ctx = ExprContext(EnvProvider({"API_TOKEN": "tok-1234"}), tracker)  # e1 reads it; e6 is tainted
    for eid in sorted(nat.functions):
        assert nat.functions[eid](scope, ctx) == pure.functions[eid](scope, ctx), eid
    assert "tok-1234" in tracker
    assert all(type(fn).__name__ != "function" for fn in nat.functions.values())
    with pytest.raises(PlanRefused, match="no native code"):
        load_plan(str(tmp_path / "p.gxp"), require_native=True)


HOT_AND_COLD = b"""\
name: hot
schemaVersion: "1.0.0"
vars:
  users: [a, b]
workloads:
  - name: each
    lifecycle: {policy: run_once}
    when: "{{ len .users }} > 0"
    loop: "{{ .users }}"
    process:
      module: control:identity
      params:
        out: "{{ .item | upper }}"
  - name: once
    lifecycle: {policy: run_once}
    process:
      module: control:identity
      params:
        out: "{{ .users | len }}"
"""


@native
def test_native_holds_the_hot_functions_only(tmp_path: Path) -> None:
    """Expressions evaluated per loop item (a looped workload's params) are native; the loop's
    own expression and once-per-task params run their bytecode."""
    from gxo.compiler.emit import NativeMembers, build_plan, emit_gxp
    from gxo.compiler.native import build_native

    pb = HOT_AND_COLD
    built = build_plan(check_source(pb, "playbook.yaml"), source_bytes=pb)
    nr = build_native(built.items, functions=built.functions, plan_code_sha256=built.plan.plan_code_sha256,
                      cache=str(tmp_path / "cache"))
    emit_gxp(str(tmp_path / "n.gxp"), built, native=NativeMembers(nr.tag, nr.index, nr.shards))
    loaded = load_plan(str(tmp_path / "n.gxp"), require_native=True)
    hot = {e.id for e in built.plan.expressions if e.workload == "each" and e.where.startswith("params.")}
    assert len(hot) == 1 and len(built.plan.expressions) == 4 and nr.functions == 1
    for e in built.plan.expressions:
        compiled = type(loaded.functions[e.id]).__name__ != "function"
        assert compiled == (e.id in hot), e.id


@native
def test_native_for_another_interpreter_falls_back(tmp_path: Path) -> None:
    import json

    from gxo.compiler.emit import NativeMembers, build_plan, emit_gxp
    from gxo.compiler.native import build_native
    from gxo.runtime import planfile as F
    from test_plan_tamper import read_members, rewrite

    pb = HELLO.read_bytes()
    built = build_plan(check_source(pb, "playbook.yaml"), source_bytes=pb)
    nr = build_native(built.items, plan_code_sha256=built.plan.plan_code_sha256,
                      cache=str(tmp_path / "cache"), everything=True)
    emit_gxp(str(tmp_path / "n.gxp"), built, native=NativeMembers(nr.tag, nr.index, nr.shards))
    members = read_members(tmp_path / "n.gxp")
    foreign = "cpython-399-sparc-linux-gnu"
    moved = {}
    for name, data in members.items():
        if name.startswith(f"native/{nr.tag}/"):
            if name.endswith("index.json"):
                idx = json.loads(data)
                idx["platform"] = foreign
                data = F.canonical_bytes(idx)
            name = name.replace(nr.tag, foreign)
        moved[name] = data
    path = rewrite(tmp_path / "n.gxp", tmp_path / "f.gxp", moved)
    loaded = load_plan(str(path))
    assert not loaded.native and any(foreign in w for w in loaded.warnings)
    with pytest.raises(PlanRefused, match="another interpreter"):
        load_plan(str(path), require_native=True)
    # a flipped shard byte is refused even though the shard would not be used
    bad = dict(moved)
    shard = f"native/{foreign}/shard_000.so"
    bad[shard] = bad[shard][:-1] + bytes([bad[shard][-1] ^ 1])
    with pytest.raises(PlanRefused, match="shard_000.so"):
        load_plan(str(rewrite(path, tmp_path / "g.gxp", bad)))
    assert open_plan(str(path)).native_indexes[foreign]["shards"][0]["functions"] == [fn.name for fn in built.functions]


@native
def test_native_index_naming_a_foreign_function_is_refused(tmp_path: Path) -> None:
    """A shard whose functions are not the plan's (an index and shard from another plan, digests
    fixed up) is refused when loading, never run."""
    import json

    from gxo.compiler.emit import NativeMembers, build_plan, emit_gxp
    from gxo.compiler.native import build_native
    from gxo.runtime import planfile as F
    from test_plan_tamper import read_members, rewrite

    other = (GOLDEN / "plans" / "parallel-loop" / "playbook.yaml").read_bytes()
    built_o = build_plan(check_source(other, "playbook.yaml"), source_bytes=other)
    nr_o = build_native(built_o.items, plan_code_sha256=built_o.plan.plan_code_sha256, cache=str(tmp_path / "c"))
    pb = HELLO.read_bytes()
    built = build_plan(check_source(pb, "playbook.yaml"), source_bytes=pb)
    nr = build_native(built.items, plan_code_sha256=built.plan.plan_code_sha256, cache=str(tmp_path / "c"))
    emit_gxp(str(tmp_path / "n.gxp"), built, native=NativeMembers(nr.tag, nr.index, nr.shards))
    members = {k: v for k, v in read_members(tmp_path / "n.gxp").items() if not k.startswith("native/")}
    idx = json.loads(nr_o.index)
    idx["plan_code_sha256"] = built.plan.plan_code_sha256
    members[f"native/{nr.tag}/index.json"] = F.canonical_bytes(idx)
    for i, so in enumerate(nr_o.shards):
        members[f"native/{nr.tag}/shard_{i:03d}.so"] = so
    path = rewrite(tmp_path / "n.gxp", tmp_path / "x.gxp", members)
    from gxo.runtime.planfile import _NATIVE_MODULES

    loaded_before = set(_NATIVE_MODULES)
    with pytest.raises(PlanRefused, match="not in plan_code.py"):
        load_plan(str(path), require_native=True)
    assert set(_NATIVE_MODULES) == loaded_before  # refused before any shard was loaded


def _looped_playbook(n: int, edit: int | None = None, insert: bool = False) -> bytes:
    """``n`` looped workloads, each with its own per-item expression; ``edit`` changes the text
    of one of them, ``insert`` adds a workload at the top."""
    lines = ["name: many", 'schemaVersion: "1.0.0"', "workloads:"]
    names = (["w_new"] if insert else []) + [f"w{i:03d}" for i in range(n)]
    for i, name in enumerate(names):
        k = i - 1 if insert else i
        suffix = "edited" if k == edit else str(k)
        lines += [f"  - name: {name}", "    lifecycle: {policy: run_once}", "    loop: [a, b]",
                  "    process:", "      module: control:identity", "      params:",
                  f'        out: "{{{{ .item | upper }}}}-{suffix}"']
    return ("\n".join(lines) + "\n").encode()


@native
def test_one_edited_expression_rebuilds_one_shard(tmp_path: Path) -> None:
    """Shards hold functions named by their bodies and are cut at places, not positions: a
    one-line edit recompiles exactly the shard holding the edited expression, and a workload
    added at the top recompiles the shard it falls in (two when it starts a new one)."""
    from gxo.compiler.emit import build_plan
    from gxo.compiler.native import build_native

    def build(pb: bytes) -> object:
        built = build_plan(check_source(pb, "playbook.yaml"), source_bytes=pb)
        return build_native(built.items, functions=built.functions, plan_code_sha256=built.plan.plan_code_sha256,
                            cache=str(tmp_path / "cache"), jobs=2)

    first = build(_looped_playbook(40))
    assert first.functions == 40 and len(first.shards) >= 3 and first.built == len(first.shards)
    edited = build(_looped_playbook(40, edit=25))
    assert (edited.built, edited.cached) == (1, len(first.shards) - 1)
    assert len(edited.shards) == len(first.shards)
    again = build(_looped_playbook(40, edit=25))
    assert (again.built, again.cached) == (0, len(first.shards))
    inserted = build(_looped_playbook(40, insert=True))
    assert 1 <= inserted.built <= 2 and inserted.cached >= len(first.shards) - 1


def test_shards_are_deterministic_across_hash_seeds(tmp_path: Path) -> None:
    """The same playbook gives the same shard sources (module names are their digests)."""
    (tmp_path / "p.yaml").write_bytes(_looped_playbook(40))
    script = (
        "import sys\n"
        "from gxo.compiler.codegen import render_shard\n"
        "from gxo.compiler.emit import build_plan\n"
        "from gxo.compiler.native import native_functions, shard_module_name, split\n"
        "from gxo.compiler.pipeline import check_source\n"
        "pb = open(sys.argv[1], 'rb').read()\n"
        "built = build_plan(check_source(pb, 'p.yaml'), source_bytes=pb)\n"
        "fns, sites = native_functions(built.items, functions=built.functions)\n"
        "print([shard_module_name(render_shard(c)) for c in split(fns, sites)])\n"
    )
    outs = {subprocess.run([sys.executable, "-c", script, str(tmp_path / "p.yaml")], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("0", "1", "999")}
    assert len(outs) == 1 and outs.pop().count("gxo_shard_") >= 3


@native
def test_cli_native_build_prints_time(tmp_path: Path) -> None:
    copy_playbook(GOLDEN / "plans" / "parallel-loop" / "playbook.yaml", tmp_path)
    proc = gxoc_subprocess(["build", "playbook.yaml", "-o", "n.gxp", "-j", "2"], tmp_path, "0",
                           XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert proc.returncode == 0, proc.stderr
    assert "native: 2 function(s) evaluated per record or loop item in 2 shard(s)" in proc.stderr
    assert "(2 built, 0 cached)" in proc.stderr
    assert " s\n" in proc.stderr
    assert list((tmp_path / "xdg" / "gxo" / "native").glob("*.so"))
    assert load_plan(str(tmp_path / "n.gxp"), require_native=True).native


def test_show_and_diff_name_the_flush_interval(tmp_path: Path, implemented: None) -> None:
    copy_playbook(STREAM, tmp_path)
    assert run_gxoc(["build", "playbook.yaml", "-o", "p.gxp", "--no-native"], tmp_path)[0] == 0
    code, out, err = run_gxoc(["show", "p.gxp"], tmp_path)
    assert code == 0, err
    assert re.search(r"channel \S+ -> \S+: capacity \d+, block, flush after 50ms", out), out
    pb = tmp_path / "playbook.yaml"
    pb.write_text(pb.read_text().replace("workloads:", "channel_policy: {flush_interval: 5ms}\nworkloads:", 1))
    code, out, err = run_gxoc(["diff", "p.gxp", "playbook.yaml"], tmp_path)
    assert code == 0, err
    assert re.search(r"~ channel \S+ -> \S+: capacity \d+, block, flush after 50ms -> capacity \d+, "
                     r"block, flush after 5ms", out), out
