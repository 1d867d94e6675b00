"""The restricted YAML loader: positions for every scalar style, limits, YAML 1.2 scalars."""

from __future__ import annotations

import pytest

from gxo.compiler.diagnostics import Diagnostics
from gxo.compiler.loader import MAX_BYTES, MapNode, ScalarNode, load_playbook


def load(text: str):
    d = Diagnostics()
    loaded = load_playbook(text.encode("utf-8"), "p.yaml", d)
    return loaded.root, d


def value_node(text: str, key: str = "a") -> ScalarNode:
    root, _ = load(text)
    assert isinstance(root, MapNode)
    node = root.get(key)
    assert isinstance(node, ScalarNode)
    return node


@pytest.mark.parametrize(
    ("text", "pos"),
    [
        ('a: "{{ .x }}"\n', (1, 5)),
        ("a: '{{ .x }}'\n", (1, 5)),
        ("a: {{ .x }}\n".replace("{{", "x {{"), (1, 6)),
        ('a: "é\\t\\u00e9{{ .x }}"\n', (1, 14)),
        ("a: 'it''s {{ .x }}'\n", (1, 11)),
        ("a: |\n  one\n  two {{ .x }}\n", (3, 7)),
        ("a: >\n  one\n  two {{ .x }}\n", (3, 7)),
        ("a: plain\n  more {{ .x }}\n", (2, 8)),
        ('a: "one\n  two {{ .x }}"\n', (2, 7)),
        ('a: "one \\\n  two{{ .x }}"\n', (2, 6)),
    ],
)
def test_offset_positions_for_every_style(text: str, pos: tuple[int, int]) -> None:
    node = value_node(text)
    assert node.position(node.value.index("{{")) == pos


@pytest.mark.parametrize(
    "text",
    [
        'a: "{{ .x }}"\n', "a: '{{ .x }}'\n", "a: plain {{ .x }}\n", "a: x\n", 'a: "x"\n', "a: ''\n",
        'a: "é\\t{{ .x }}"\n', "a: 'it''s {{ .x }}'\n", "a: |\n  one {{ .x }}\n", "a: >\n  one\n  two\n",
        "a: plain\n  more {{ .x }}\n", 'a: "one\n  two {{ .x }}"\n', "a: [x, 'y z', \"w\"]\n",
        "a: {{ .x }}\n", "a: \"tab\there\"\n", "a: 'a\r\n  b'\n", "a: x  # comment\n",
        "\ufeffa: 'é è'\n", "a:   \"  spaced  \"  \n",
    ],
)
def test_every_offset_maps_like_the_aligned_source(text: str) -> None:
    """The shortcut for a value written as is agrees with the character alignment everywhere."""
    from gxo.compiler.loader import _offset_map

    root, _ = load(text)
    nodes = [root.get("a")]
    while nodes:
        node = nodes.pop()
        if not isinstance(node, ScalarNode):
            nodes.extend(getattr(node, "items", []))
            continue
        if not isinstance(node.value, str):
            continue
        slow = ScalarNode(node.span, node.value, node.style, node._source, node._start, node._end,
                          _map=_offset_map(node.value, node._source, node._start, node._end, node.style))
        for k in range(-2, len(node.value) + 3):
            assert node.position(k) == slow.position(k), (text, k)
            assert node.sub_span(k, k + 2) == slow.sub_span(k, k + 2)


def test_yaml_12_core_scalars() -> None:
    root, d = load("a: 0644\nb: 0o644\nc: 0x1F\nd: true\ne: True\nf: ~\ng: 1.5\nh: yes\ni: 'yes'\nj: .inf\n")
    vals = {k.value: v.value for k, v in root.items}
    assert vals["a"] == 644 and vals["b"] == 0o644 and vals["c"] == 31
    assert vals["d"] is True and vals["e"] is True and vals["f"] is None and vals["g"] == 1.5
    assert vals["h"] == "yes" and vals["i"] == "yes" and vals["j"] == float("inf")
    codes = [x.code for x in d]
    assert codes == ["bool-string"]  # only the plain `yes`
    assert d.items[0].span.line == 8


def test_duplicate_key_points_at_both() -> None:
    _, d = load("a: 1\nb: 2\na: 3\n")
    (diag,) = d.items
    assert diag.code == "duplicate-key" and diag.span.line == 3
    assert diag.notes[0].span.line == 1


def test_billion_laughs_is_rejected_quickly() -> None:
    import time

    bomb = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    prev = "a"
    for name in "bcdefghi":
        bomb += f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]\n"
        prev = name
    t0 = time.perf_counter()
    root, d = load(bomb)
    assert root is None and [x.code for x in d] == ["yaml-limit"]
    assert time.perf_counter() - t0 < 5  # generous: the real bound is measured in bench/loader_bomb.py


def test_merge_key_bomb_is_rejected() -> None:
    text = "a: &a {x: 1, y: 2}\n"
    prev = "a"
    for i in range(30):
        name = f"m{i}"
        text += f"{name}: &{name} {{<<: [*{prev}], k{i}: [*{prev}, *{prev}]}}\n"
        prev = name
    root, d = load(text)
    assert root is None and [x.code for x in d] == ["yaml-limit"]


def test_nesting_depth_limit() -> None:
    root, d = load("a: " + "[" * 65 + "]" * 65 + "\n")
    assert root is None and d.items[0].code == "yaml-limit" and "nesting" in d.items[0].message
    root, d = load("a: " + "[" * 60 + "]" * 60 + "\n")
    assert root is not None and not d.items


def test_size_limit() -> None:
    d = Diagnostics()
    loaded = load_playbook(b"a: 1\n" + b"#" * MAX_BYTES, "p.yaml", d)
    assert loaded.root is None and d.items[0].code == "yaml-limit"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"a: [1, 2\n", "flow"),
        (b"\xff\xfe", "UTF-8"),
        (b"", "empty"),
        (b"a: 1\n---\nb: 2\n", "more than one"),
        (b"a: *nope\n", "alias"),
        (b"a: !!python/object:os.system x\n", "unsupported YAML tag"),
        (b"a:\n\tb: 1\n", ""),
    ],
)
def test_bad_yaml_is_a_diagnostic(data: bytes, fragment: str) -> None:
    d = Diagnostics()
    load_playbook(data, "p.yaml", d)
    assert d.items and d.items[0].code in ("yaml-syntax", "yaml-limit")
    assert fragment in d.items[0].message


def test_bool_word_in_a_string_param_is_not_a_warning() -> None:
    """The loader's bool-string warning is withdrawn where the module's param schema takes a
    string and no boolean (a pipeline step's `with` included); untyped places keep it."""
    from gxo.compiler.pipeline import check_source

    text = """name: p
schemaVersion: "1.0.0"
vars:
  flag: off
workloads:
  - name: source
    lifecycle: {policy: run_once}
    process:
      module: data:generate_from_list
      params:
        items: [{n: 1, y: a}, {n: 2, y: b}]
  - name: totals
    lifecycle: {policy: run_once}
    stream_inputs: [source]
    process:
      module: stream:pipeline
      params:
        steps:
          - id: sum
            uses: data:aggregate
            with:
              count: 2
              group_by_fields: [y]
              aggregate_fields: [{name: total, op: sum, source_field: n}]
    ignore_errors: no
"""
    res = check_source(text, "p.yaml")
    warned = sorted(d.span.line for d in res.diags if d.code == "bool-string")
    assert warned == [4, 25], [(d.span.line, d.message) for d in res.diags]  # the var, ignore_errors


@pytest.mark.parametrize("alias", [False, True])
def test_node_limit_is_exact_with_and_without_aliases(alias: bool) -> None:
    """The count taken in the syntax pass (no alias) and the expanded count (aliases) agree on
    the limit: a document of exactly MAX_NODES nodes loads, one more node is refused."""
    from gxo.compiler.loader import MAX_NODES

    def doc(nodes: int) -> str:
        # the root mapping, its key `a`, the list, and its items; with an alias, the last item
        # is `*x`, an alias of the scalar anchored as the first item (one node expanded)
        items = nodes - 3
        body = ["&x 0", *(["1"] * (items - 2)), "*x" if alias else "2"]
        return "a: [" + ",".join(body) + "]\n"

    root, d = load(doc(MAX_NODES))
    assert [x.code for x in d] == [] and isinstance(root, MapNode)
    assert len(root.get("a").items) == MAX_NODES - 3  # type: ignore[union-attr]
    root, d = load(doc(MAX_NODES + 1))
    assert root is None and [x.code for x in d] == ["yaml-limit"]
