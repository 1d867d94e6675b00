"""The state store: nested view, isolation, access modes, and the compiled deep copy vs its pure twin."""

from __future__ import annotations

import ast
import collections
import copy
import datetime
import importlib.util
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import gxo.runtime
import pytest
from gxo.runtime import _state_cy
from gxo.runtime.state import (
    UNSAFE_DIRECT_REFERENCE,
    KeyNotFound,
    StateReader,
    StateStore,
    deep_copy,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

RUNTIME_DIR = Path(gxo.runtime.__file__).parent
REPO = Path(__file__).resolve().parents[1]


def load_uncompiled_module(name: str) -> ModuleType:
    """The pure-Python twin of ``gxo.runtime.<name>``, loaded from its source under another name."""
    path = RUNTIME_DIR / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_gxo_pure_twin_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PURE = load_uncompiled_module("_state_cy")


# -- a canonical form of an object graph: equal shapes = same values, same sharing, same cycles --

_CONTAINERS = (dict, list, tuple, collections.OrderedDict, set, frozenset)


def shape(obj: Any) -> Any:
    numbers: dict[int, int] = {}

    def walk(o: Any) -> Any:
        t = type(o)
        if t not in _CONTAINERS:
            return (t.__name__, repr(o))
        if id(o) in numbers:
            return ("ref", numbers[id(o)])
        numbers[id(o)] = len(numbers)
        if t in (dict, collections.OrderedDict):
            return (t.__name__, tuple((repr(k), walk(v)) for k, v in o.items()))
        if t in (set, frozenset):
            return (t.__name__, tuple(sorted(repr(v) for v in o)))
        return (t.__name__, tuple(walk(v) for v in o))

    return walk(obj)


def mutable_ids(obj: Any) -> set[int]:
    """ids of every mutable container reachable from obj."""
    seen: set[int] = set()
    out: set[int] = set()
    stack = [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, dict):
            out.add(id(o))
            stack.extend(o.values())
        elif isinstance(o, (list, set)):
            out.add(id(o))
            stack.extend(o)
        elif isinstance(o, tuple):
            stack.extend(o)
    return out


def assert_isolated_copy(original: Any, copied: Any) -> None:
    assert shape(copied) == shape(original)
    assert not (mutable_ids(original) & mutable_ids(copied))


class Tainted(str):
    """A str subclass, like a tainted secret value: not atomic, goes through deepcopy."""


# -- deep_copy ------------------------------------------------------------------------------------


@pytest.mark.parametrize("copier", [deep_copy, PURE.deep_copy], ids=["compiled", "pure"])
class TestDeepCopy:
    def test_scalars_are_returned_as_is(self, copier: Any) -> None:
        for value in ("text", 10**30, 1.5, True, None, b"raw", -0.0):
            assert copier(value) is value

    def test_flat_and_nested(self, copier: Any) -> None:
        value: dict[str, Any] = {"a": 1, "b": [1, 2, {"c": "d"}], "e": ("f", ["g"]), "h": ("i", 2)}
        out = copier(value)
        assert out == value
        assert_isolated_copy(value, out)
        assert out["h"] is value["h"]  # a tuple of scalars is immutable: shared
        assert out["e"] is not value["e"]  # a tuple holding a list is rebuilt
        assert out["a"] is value["a"] and out["b"][2]["c"] is value["b"][2]["c"]

    def test_shared_references_are_copied_once(self, copier: Any) -> None:
        shared = {"x": [1, 2]}
        value = {"a": shared, "b": [shared, shared["x"]], "c": (shared,)}
        out = copier(value)
        assert out["a"] is out["b"][0] is out["c"][0]
        assert out["b"][1] is out["a"]["x"]
        assert out["a"] is not shared
        assert_isolated_copy(value, out)

    def test_cycles_are_preserved(self, copier: Any) -> None:
        d: dict[str, Any] = {"name": "root"}
        lst: list[Any] = [d]
        d["self"] = d
        d["list"] = lst
        lst.append(lst)
        t = (lst,)
        lst.append(t)
        out = copier(d)
        assert out["self"] is out
        assert out["list"][0] is out and out["list"][1] is out["list"]
        assert out["list"][2][0] is out["list"]
        assert_isolated_copy(d, out)
        top = copier(lst)
        assert top[1] is top and top[0]["list"] is top

    def test_flat_containers_at_the_top(self, copier: Any) -> None:
        for value in ({"a": 1, "b": "c"}, [1, "two", None], (1, 2), {}, [], ()):
            out = copier(value)
            assert out == value and type(out) is type(value)
            if not isinstance(value, tuple):
                assert out is not value

    def test_other_objects_go_through_deepcopy(self, copier: Any) -> None:
        inner = [1, 2]
        ordered = collections.OrderedDict(a=inner)
        secret = Tainted("s3cret")
        value = {"o": ordered, "i": inner, "set": {1, 2}, "when": datetime.date(2024, 1, 2), "secret": secret}
        out = copier(value)
        assert type(out["o"]) is collections.OrderedDict and out["o"] == ordered
        assert out["o"]["a"] is out["i"]  # sharing across the fallback is kept (one memo)
        assert out["set"] == {1, 2} and out["set"] is not value["set"]
        assert out["when"] == value["when"]
        assert type(out["secret"]) is Tainted and out["secret"] == secret
        assert_isolated_copy(value, out)

    def test_deep_nesting_is_bounded(self, copier: Any) -> None:
        value: list[Any] = []
        node = value
        for _ in range(300):
            node.append([])
            node = node[0]
        assert shape(copier(value)) == shape(value)
        too_deep: list[Any] = []
        node = too_deep
        for _ in range(_state_cy.MAX_DEPTH + 50):
            node.append({"k": []})
            node = node[0]["k"]
        with pytest.raises(RecursionError):
            copier(too_deep)


def test_very_deep_nesting_does_not_crash_the_compiled_copy() -> None:
    value: list[Any] = []
    node = value
    for _ in range(200_000):
        node.append([])
        node = node[0]
    with pytest.raises(RecursionError):
        deep_copy(value)


# -- random graphs: compiled vs pure twin vs copy.deepcopy ----------------------------------------

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6), st.binary(max_size=3)
)
_keys = st.text(max_size=4)


def _extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(_keys, children, max_size=5),
        st.lists(children, max_size=3).map(tuple),
    )


_trees = st.recursive(_scalars, _extend, max_leaves=40)
_others: st.SearchStrategy[Any] = st.one_of(
    st.builds(Tainted, st.text(max_size=4)),
    st.builds(collections.OrderedDict, st.dictionaries(_keys, _scalars, max_size=3)),
    st.frozensets(st.integers(), max_size=3),
)


@st.composite
def object_graphs(draw: st.DrawFn) -> Any:
    """Plain data with extra references added afterwards: shared sub-values and cycles."""
    root = draw(st.one_of(st.lists(_trees, min_size=1, max_size=4),
                          st.dictionaries(_keys, _trees, min_size=1, max_size=4)))
    if draw(st.booleans()):
        root = (root, draw(_trees))
    containers: list[Any] = []
    stack = [root]
    while stack:
        o = stack.pop()
        if isinstance(o, (dict, list, tuple)) and all(o is not c for c in containers):
            containers.append(o)
            stack.extend(o.values() if isinstance(o, dict) else o)
    mutables = [c for c in containers if isinstance(c, (dict, list))]
    for _ in range(draw(st.integers(0, 6))):
        target = draw(st.sampled_from(mutables))
        ref = draw(st.one_of(st.sampled_from(containers), _others))  # an ancestor makes a cycle
        if isinstance(target, list):
            target.insert(draw(st.integers(0, len(target))), ref)
        else:
            target[draw(_keys)] = ref
    return root


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(object_graphs())
def test_compiled_and_pure_twin_agree(value: Any) -> None:
    compiled = deep_copy(value)
    pure = PURE.deep_copy(value)
    expected = shape(value)
    assert shape(compiled) == expected
    assert shape(pure) == expected
    assert shape(copy.deepcopy(value)) == expected
    assert not (mutable_ids(value) & mutable_ids(compiled))
    assert not (mutable_ids(value) & mutable_ids(pure))


# -- the Cython build -----------------------------------------------------------------------------


def _cython_modules_of_setup_py() -> set[str]:
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                and node.target.id == "CYTHON_MODULES":
            assert node.value is not None
            return set(ast.literal_eval(node.value))
    raise AssertionError("setup.py has no CYTHON_MODULES")


def test_cy_registry() -> None:
    on_disk = {p.stem for p in (REPO / "runtime").glob("*_cy.py")}
    assert on_disk == _cython_modules_of_setup_py()


def test_cy_modules_carry_the_generated_header() -> None:
    for name in _cython_modules_of_setup_py():
        text = (REPO / "runtime" / f"{name}.py").read_text(encoding="utf-8")
        assert "\ntry:\n    # The Cython compiler needs this exact import in the file.\n    import cython\n" in text
        assert "from gxo.runtime import _cython_shim as cython" in text
        assert "def _is_compiled() -> bool:" in text


def test_compiled_when_required() -> None:
    if os.environ.get("GXO_REQUIRE_EXTENSIONS") != "1":
        pytest.skip("GXO_REQUIRE_EXTENSIONS is not set")
    assert _state_cy._is_compiled(), _state_cy.__file__
    assert not _state_cy.__file__.endswith(".py")


def test_a_built_extension_is_the_one_imported() -> None:
    built = list(RUNTIME_DIR.glob("_state_cy.*.so")) + list(RUNTIME_DIR.glob("_state_cy.*.pyd"))
    if not built:
        pytest.skip("no compiled build next to the source (GXO_NO_EXTENSIONS install)")
    assert _state_cy._is_compiled()
    assert not PURE._is_compiled()


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "GXO_REQUIRE_EXTENSIONS"}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full_env, timeout=60, check=False)


def test_require_extensions_refuses_the_pure_twin_at_import() -> None:
    code = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("gxo.runtime._state_cy", {str(RUNTIME_DIR / "_state_cy.py")!r})
mod = importlib.util.module_from_spec(spec)
sys.modules["gxo.runtime._state_cy"] = mod
spec.loader.exec_module(mod)
try:
    import gxo.runtime.state
except ImportError as exc:
    print(type(exc).__name__, exc)
else:
    print("imported")
"""
    refused = _run(code, GXO_REQUIRE_EXTENSIONS="1")
    assert refused.stdout.startswith("ExtensionNotCompiledError GXO_REQUIRE_EXTENSIONS=1"), refused
    assert "_state_cy is not compiled" in refused.stdout
    allowed = _run(code)
    assert allowed.stdout.strip() == "imported", allowed


def test_pure_twin_runs_on_the_shim_without_cython() -> None:
    code = f"""
import importlib.util, sys
sys.modules["cython"] = None  # as in a base install: `import cython` fails
spec = importlib.util.spec_from_file_location("twin", {str(RUNTIME_DIR / "_state_cy.py")!r})
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
d = {{"a": [1, {{"b": 2}}]}}
d["self"] = d
out = mod.deep_copy(d)
print(mod._is_compiled(), mod.cython.__name__, out["self"] is out, out["a"] == d["a"], out["a"] is not d["a"])
"""
    proc = _run(code)
    assert proc.stdout.split() == ["False", "gxo.runtime._cython_shim", "True", "True", "True"], proc


# -- the store ------------------------------------------------------------------------------------


def make_store(**entries: Any) -> StateStore:
    store = StateStore()
    store.load(entries)
    return store


def test_nested_view_of_dotted_keys() -> None:
    store = StateStore()
    store.set("_gxo.workloads.a.status", "Running")
    store.set("_gxo.workloads.b.status", "Pending")
    store.set("_gxo.workspace.path", "/tmp/ws")
    store.set("greeting", "hi")
    assert store.get_all() == {
        "_gxo": {"workloads": {"a": {"status": "Running"}, "b": {"status": "Pending"}},
                 "workspace": {"path": "/tmp/ws"}},
        "greeting": "hi",
    }
    assert store.get("_gxo.workloads.a.status") == "Running"
    assert store.get("_gxo.workloads") == {"a": {"status": "Running"}, "b": {"status": "Pending"}}


@pytest.mark.parametrize("order", [("a", "a.b"), ("a.b", "a")])
def test_on_collision_the_map_wins(order: tuple[str, str]) -> None:
    values = {"a": 5, "a.b": 1}
    store = StateStore()
    for key in order:
        store.set(key, values[key])
    assert store.get_all() == {"a": {"b": 1}}
    assert store.get("a") == {"b": 1}
    store.delete("a.b")
    assert store.get_all() == {"a": 5}


def test_a_longer_key_wins_at_every_depth() -> None:
    store = make_store(**{"a.b": "leaf", "a.b.c": 1, "a": None})
    assert store.get_all() == {"a": {"b": {"c": 1}}}


def test_a_stored_map_merges_with_longer_keys() -> None:
    stored = {"x": 1, "b": "shadowed", "inner": {"k": "v"}}
    store = make_store(a=stored)
    store.set("a.b", 2)
    store.set("a.inner.extra", True)
    assert store.get_all() == {"a": {"x": 1, "b": 2, "inner": {"k": "v", "extra": True}}}
    assert stored == {"x": 1, "b": "shadowed", "inner": {"k": "v"}}  # never modified
    store.delete("a.b")
    assert store.get("a.b") == "shadowed"


def test_get_reads_paths_into_stored_values() -> None:
    store = make_store(reg={"summary": {"rc": 0, "lines": ["a", "b"]}})
    assert store.get("reg.summary.rc") == 0
    assert store.get("reg.summary.lines") == ["a", "b"]
    for missing in ("nope", "reg.nope", "reg.summary.rc.deeper", "reg.summary.lines.0"):
        with pytest.raises(KeyNotFound, match="state key not found"):
            store.get(missing)


def test_delete_missing_raises_key_not_found() -> None:
    store = make_store(**{"a.b": 1})
    with pytest.raises(KeyNotFound) as info:
        store.delete("missing")
    assert info.value.key == "missing"
    assert isinstance(info.value, LookupError)
    with pytest.raises(KeyNotFound):
        store.delete("a")  # a namespace, not an entry
    store.delete("a.b")
    assert store.get_all() == {}


def test_load_replaces_everything() -> None:
    store = make_store(old=1, **{"ns.k": 2})
    store.get_all()
    entries = {"x": 1, "y.z": [1]}
    store.load(entries)
    entries["late"] = True  # the store keeps its own mapping
    assert store.get_all() == {"x": 1, "y": {"z": [1]}}
    assert store.snapshot() == {"x": 1, "y.z": [1]}


@pytest.mark.parametrize("key", ["", ".a", "a.", "a..b"])
def test_invalid_keys(key: str) -> None:
    store = StateStore()
    with pytest.raises(ValueError, match="invalid state key"):
        store.set(key, 1)
    with pytest.raises(TypeError):
        store.set(1, 1)  # type: ignore[arg-type]


def test_unknown_access_mode() -> None:
    store = StateStore()
    with pytest.raises(ValueError, match="unknown state access mode"):
        store.reader("shallow")
    with pytest.raises(ValueError):
        store.get_all("shallow")


def test_reads_are_isolated() -> None:
    value = {"list": [1, 2], "map": {"k": "v"}}
    store = make_store(reg=value, **{"ns.x": [0]})
    got = store.get("reg")
    got["list"].append(3)
    got["map"]["k"] = "changed"
    everything = store.get_all()
    everything["reg"]["list"].clear()
    everything["ns"]["x"].append(1)
    everything["ns"]["new"] = 1
    reader = store.reader()
    reader.get_all()["reg"]["map"].clear()
    reader.get("ns")["x"].append(2)
    assert store.get_all() == {"reg": {"list": [1, 2], "map": {"k": "v"}}, "ns": {"x": [0]}}
    assert value == {"list": [1, 2], "map": {"k": "v"}}


def test_reads_preserve_cycles_and_shared_references() -> None:
    shared = ["s"]
    cyclic: dict[str, Any] = {"shared": shared, "again": shared}
    cyclic["self"] = cyclic
    store = make_store(c=cyclic)
    out = store.get("c")
    assert out["self"] is out and out["shared"] is out["again"]
    assert out is not cyclic and out["shared"] is not shared
    everything = store.get_all()
    assert everything["c"]["self"] is everything["c"]


def test_unsafe_direct_reference_shares() -> None:
    value = {"list": [1]}
    store = make_store(reg=value)
    assert store.get("reg", UNSAFE_DIRECT_REFERENCE) is value
    reader = store.reader(UNSAFE_DIRECT_REFERENCE)
    assert reader.access_mode == UNSAFE_DIRECT_REFERENCE
    assert reader.get("reg") is value
    assert reader.get_all()["reg"] is value
    assert store.view()["reg"] is value


def test_the_view_is_cached_and_updated_in_place() -> None:
    store = make_store(**{"_gxo.workloads.a.status": "Pending"})
    first = store.view()
    assert store.view() is first and store.get_all(UNSAFE_DIRECT_REFERENCE) is first
    store.set("_gxo.workloads.b.status", "Running")  # a fresh slot: updated in place
    store.set("reg", {"rc": 0})
    assert store.view() is first
    assert first["_gxo"]["workloads"]["b"] == {"status": "Running"} and first["reg"] == {"rc": 0}
    store.delete("reg")  # deletes rebuild
    second = store.view()
    assert second is not first and "reg" not in second
    store.set("_gxo", "collides")  # longer keys live below `_gxo`: rebuild
    assert store.view() is not second and store.get("_gxo.workloads.b.status") == "Running"


def test_reader_is_read_only() -> None:
    reader = make_store(a=1).reader()
    assert isinstance(reader, StateReader)
    for name in ("set", "delete", "load", "snapshot", "view", "close"):
        assert not hasattr(reader, name)
    with pytest.raises(AttributeError):
        reader.extra = 1  # type: ignore[attr-defined]


def test_snapshot_round_trip() -> None:
    shared = [1]
    store = make_store(a=shared, b=shared, **{"c.d": {"e": 1}})
    snap = store.snapshot()
    assert snap == {"a": [1], "b": [1], "c.d": {"e": 1}}
    assert snap["a"] is snap["b"] and snap["a"] is not shared
    snap["c.d"]["e"] = 2
    other = StateStore()
    other.load(store.snapshot())
    assert other.get_all() == store.get_all() == {"a": [1], "b": [1], "c": {"d": {"e": 1}}}


def test_close() -> None:
    store = make_store(a=1)
    store.close()
    assert store.get_all() == {}


def test_concurrent_threads() -> None:
    store = StateStore()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(300):
                store.set(f"_gxo.workloads.w{n}_{i}.status", "Running")
                if i % 50 == 0:
                    store.set(f"w{n}", i)  # occasionally a top-level write
                if i % 97 == 0:
                    store.delete(f"_gxo.workloads.w{n}_{i}.status")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(300):
                everything = store.get_all()
                assert isinstance(everything, dict)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    threads += [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    statuses = store.get("_gxo.workloads")
    assert len(statuses) == 4 * 300 - 4 * 4


# -- in-place updates of the cached view always equal a rebuild ------------------------------------

_parts = st.sampled_from(["a", "b", "c"])
_dotted = st.lists(_parts, min_size=1, max_size=3).map(".".join)
_values = st.one_of(
    st.integers(0, 9),
    st.dictionaries(_parts, st.one_of(st.integers(0, 9), st.dictionaries(_parts, st.integers(0, 9), max_size=2)),
                    max_size=3),
)
_ops = st.lists(st.tuples(st.sampled_from(["set", "set", "set", "delete", "read"]), _dotted, _values), max_size=25)


def reference_view(flat: dict[str, Any]) -> dict[str, Any]:
    """The nesting rules stated another way: shorter keys first, a longer key overrides what it
    meets at its leaf and descends through (a copy of) whatever dict lies on its path."""
    root: dict[str, Any] = {}
    for key, value in sorted(flat.items(), key=lambda kv: kv[0].count(".")):
        *path, leaf = key.split(".")
        node = root
        for part in path:
            node[part] = dict(node[part]) if isinstance(node.get(part), dict) else {}
            node = node[part]
        node[leaf] = value
    return root


@settings(max_examples=300, deadline=None)
@given(_ops)
def test_incremental_view_equals_rebuild(ops: list[tuple[str, str, Any]]) -> None:
    store = StateStore()
    flat: dict[str, Any] = {}
    store.get_all()  # start with a cached view so writes take the in-place path
    for op, key, value in ops:
        if op == "set":
            store.set(key, value)
            flat[key] = value
        elif op == "delete":
            if key in flat:
                store.delete(key)
                del flat[key]
            else:
                with pytest.raises(KeyNotFound):
                    store.delete(key)
        fresh = StateStore()
        fresh.load(flat)
        assert store.get_all() == fresh.get_all() == reference_view(flat)
        assert shape(store.view()) == shape(fresh.view())
