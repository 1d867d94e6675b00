"""Phase ``load``: YAML text to a located node tree, through a restricted loader.

The YAML is composed (never constructed) with libyaml where available, then converted into
``ScalarNode``/``MapNode``/``SeqNode`` that keep a ``Span`` for every node and can map a
character offset inside a string value back to the file (``ScalarNode.position``) for every
scalar style.  Limits: file size, nesting depth, and the node count *after* alias and merge-key
expansion (so an alias bomb is refused before anything is expanded).  Scalars follow YAML 1.2
core: only true/false are booleans; ``yes``/``on``... stay strings with a ``bool-string``
warning.  Every problem is a diagnostic, never an exception.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

import yaml

from gxo.compiler.diagnostics import Diagnostics, Span
from gxo.runtime.limits import MAX_INT_BITS, MAX_INT_DIGITS, yaml_expanded_size
from gxo.runtime.limits import MAX_NESTING as MAX_DEPTH
from gxo.runtime.limits import MAX_YAML_BYTES as MAX_BYTES
from gxo.runtime.limits import MAX_YAML_NODES as MAX_NODES  # after alias and merge expansion

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_PLAIN_TAG = "tag:gxo:plain"
_STR_TAG = "tag:yaml.org,2002:str"
_KNOWN_TAGS = {
    _STR_TAG: "str",
    "tag:yaml.org,2002:int": "int",
    "tag:yaml.org,2002:float": "float",
    "tag:yaml.org,2002:bool": "bool",
    "tag:yaml.org,2002:null": "null",
}


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """No implicit resolution: plain scalars are resolved here, by YAML 1.2 core rules."""

    yaml_implicit_resolvers: dict = {}
    DEFAULT_SCALAR_TAG = _PLAIN_TAG


# ---------------------------------------------------------------------------------------------
# Located nodes


@dataclass(eq=False, slots=True)
class YNode:
    span: Span


@dataclass(eq=False, slots=True)
class ScalarNode(YNode):
    value: Any  # str, int, float, bool or None
    style: str = ""  # "" plain, "'", '"', "|", ">"
    _source: str = field(default="", repr=False)
    _start: int = 0  # character index of the node in the source
    _end: int = 0
    _map: list[tuple[int, int]] | None = field(default=None, repr=False)

    def position(self, offset: int) -> tuple[int, int]:
        """(line, col), 1-based, of character ``offset`` of this string's value in the file."""
        if not isinstance(self.value, str):
            return self.span.line, self.span.col
        if self._map is None:
            self._map = _offset_map(self.value, self._source, self._start, self._end, self.style)
        if not self._map:
            return self.span.line, self.span.col
        offset = min(max(offset, 0), len(self._map) - 1)
        return self._map[offset]

    def sub_span(self, start: int, end: int) -> Span:
        """The file span of value characters ``start:end`` (end exclusive)."""
        line, col = self.position(start)
        if end <= start:
            return Span(self.span.path, line, col, line, col + 1)
        eline, ecol = self.position(end - 1)
        return Span(self.span.path, line, col, eline, ecol + 1)


@dataclass(eq=False, slots=True)
class MapNode(YNode):
    items: list[tuple[ScalarNode, YNode]] = field(default_factory=list)

    def get(self, key: str) -> YNode | None:
        for k, v in self.items:
            if k.value == key:
                return v
        return None

    def key_node(self, key: str) -> ScalarNode | None:
        for k, _ in self.items:
            if k.value == key:
                return k
        return None

    def keys(self) -> list[str]:
        return [str(k.value) for k, _ in self.items]


@dataclass(eq=False, slots=True)
class SeqNode(YNode):
    items: list[YNode] = field(default_factory=list)


def to_plain(node: YNode | None) -> Any:
    """The plain Python value of a node (dicts keep YAML order)."""
    if node is None:
        return None
    if isinstance(node, ScalarNode):
        return node.value
    if isinstance(node, SeqNode):
        return [to_plain(n) for n in node.items]
    assert isinstance(node, MapNode)
    return {str(k.value): to_plain(v) for k, v in node.items}


def walk_path(node: YNode | None, path: Iterator[str | int] | tuple) -> YNode | None:
    """Follow keys/indexes from ``node``; None when the path leaves the tree."""
    for seg in path:
        if isinstance(node, MapNode) and isinstance(seg, str):
            node = node.get(seg)
        elif isinstance(node, SeqNode) and isinstance(seg, int) and 0 <= seg < len(node.items):
            node = node.items[seg]
        else:
            return None
    return node


# ---------------------------------------------------------------------------------------------
# Scalars (YAML 1.2 core schema)

_NULL_RE = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT_RE = re.compile(r"^[-+]?[0-9]+$")
_OCT_RE = re.compile(r"^0o[0-7]+$")
_HEX_RE = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT_RE = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_INF_RE = re.compile(r"^[-+]?\.(?:inf|Inf|INF)$")
_NAN_RE = re.compile(r"^\.(?:nan|NaN|NAN)$")
_BOOL_WORDS = re.compile(r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF)$")


#: The longest integer a playbook may hold, in decimal digits (Python's own limit for turning
#: text into an int and back, which the plan's JSON does).


class _IntTooLong(ValueError):
    pass


def _resolve_plain(text: str) -> tuple[Any, bool]:
    """(value, is_bool_word) for a plain scalar; ``_IntTooLong`` past ``MAX_INT_DIGITS``."""
    if _NULL_RE.match(text):
        return None, False
    if text in _BOOL:
        return _BOOL[text], False
    if _INT_RE.match(text):
        if len(text.lstrip("+-")) > MAX_INT_DIGITS:
            raise _IntTooLong(text)
        return int(text), False
    if _OCT_RE.match(text) or _HEX_RE.match(text):
        value = int(text[2:], 8 if text[1] == "o" else 16)
        if value.bit_length() > MAX_INT_BITS:
            raise _IntTooLong(text)
        return value, False
    if _FLOAT_RE.match(text):
        return float(text), False
    if _INF_RE.match(text):
        return (-math.inf if text.startswith("-") else math.inf), False
    if _NAN_RE.match(text):
        return math.nan, False
    return text, bool(_BOOL_WORDS.match(text))


def is_bool_word(node: "ScalarNode") -> bool:
    """Whether ``node`` is a plain yes/no/on/off word (a boolean in YAML 1.1, a string here)."""
    return node.style == "" and isinstance(node.value, str) and bool(_BOOL_WORDS.match(node.value))


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass
class Loaded:
    root: YNode | None
    source: str


def read_playbook(path: str, diags: Diagnostics) -> bytes | None:
    """The bytes of the playbook file ``path``; None after a ``yaml-limit`` error when it is too
    large, found from its size before a byte is read.  Raises ``gxo.runtime.files.FileProblem``
    (a usage error) for a path that cannot be read or is not a regular file: a FIFO or a device
    is refused without blocking."""
    from gxo.runtime.files import FileTooLarge, read_limited

    try:
        return read_limited(path, MAX_BYTES, what="playbook")
    except FileTooLarge as exc:
        _too_large(exc.size, path, diags)
        return None


def _too_large(size: int, path: str, diags: Diagnostics) -> None:
    diags.add(
        "yaml-limit",
        f"the file is {size:,} bytes; playbooks are limited to {MAX_BYTES:,} bytes",
        Span.point(path, 1, 1),
        help="split the playbook or move data into files read at run time",
    )


def load_playbook(data: bytes | str, path: str, diags: Diagnostics) -> Loaded:
    """Load ``data`` (the file's bytes) into located nodes; problems go to ``diags``."""
    size = len(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    if size > MAX_BYTES:
        _too_large(size, path, diags)
        return Loaded(None, "")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            diags.add("yaml-syntax", "the file is not valid UTF-8", Span.point(path, line, col),
                      help="save the playbook as UTF-8")
            return Loaded(None, "")
    else:
        text = data
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        diags.add("yaml-syntax", "the playbook is empty", Span.point(path, 1, 1),
                  help="a playbook needs at least `name`, `schemaVersion` and `workloads`")
        return Loaded(None, text)
    _CURRENT_SOURCE["text"] = text
    if not _precheck(text, path, diags):
        return Loaded(None, text)
    try:
        composed = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        _yaml_error(exc, path, diags)
        return Loaded(None, text)
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        diags.add("yaml-syntax", f"the file could not be read as YAML: {exc}", Span.point(path, 1, 1))
        return Loaded(None, text)
    if composed is None:
        diags.add("yaml-syntax", "the playbook holds no YAML document", Span.point(path, 1, 1))
        return Loaded(None, text)
    total = yaml_expanded_size(composed, {})
    if total > MAX_NODES:
        diags.add(
            "yaml-limit",
            f"the document expands to more than {MAX_NODES:,} nodes through aliases and merge keys",
            Span.point(path, composed.start_mark.line + 1, composed.start_mark.column + 1),
            help="an alias bomb, an alias inside its own anchor (&a [*a]), or a playbook that should "
                 "reuse less through anchors",
        )
        return Loaded(None, text)
    conv = _Converter(path, text, diags)
    return Loaded(conv.convert(composed), text)


_CURRENT_SOURCE: dict[str, str] = {}


def _precheck(text: str, path: str, diags: Diagnostics) -> bool:
    """One pass over the parser's events: syntax errors and nesting depth, before composing."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    mark = event.start_mark
                    diags.add(
                        "yaml-limit",
                        f"nesting deeper than {MAX_DEPTH} levels",
                        Span.point(path, mark.line + 1, mark.column + 1),
                        help="flatten the structure; playbooks never need this depth",
                    )
                    return False
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.MarkedYAMLError as exc:
        _yaml_error(exc, path, diags)
        return False
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        diags.add("yaml-syntax", f"the file could not be read as YAML: {exc}", Span.point(path, 1, 1))
        return False
    return True


def _yaml_error(exc: yaml.MarkedYAMLError, path: str, diags: Diagnostics) -> None:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    problem = exc.problem or "invalid YAML"
    msg = problem
    if exc.context:
        msg = f"{problem} ({exc.context})"
    help_text = None
    if "found character '\\t'" in problem or "\\t" in problem:
        help_text = "YAML indentation must use spaces, not tabs"
    elif "expected a single document" in str(exc):
        msg = "the file holds more than one YAML document"
        help_text = "a playbook is one document; remove the extra `---`"
    elif "mapping values are not allowed" in problem:
        help_text = "quote a value that contains ': ' (for example a template with a colon)"
    elif "found undefined alias" in problem:
        help_text = "define the anchor (&name) before its alias (*name)"
    elif "found unhashable key" in problem or "found character '{'" in problem:
        help_text = "a value that starts with '{{' must be quoted: when: \"{{ .x }}\""
    src_line = _source_line(exc, line)
    if help_text is None and "cannot start any token" in problem and "\t" in src_line[: max(col, 1)]:
        help_text = "YAML indentation must use spaces, not tabs"
    elif help_text is None and col >= 2 and src_line[col - 2 : col - 1] == "*" and "alias" in str(exc).lower():
        col -= 1
        msg = "a plain value that starts with '*' is read as an alias"
        help_text = "quote the value, e.g. cron: \"*/15 * * * *\""
    diags.add("yaml-syntax", msg, Span.point(path, line, col), help=help_text)


def _source_line(exc: yaml.MarkedYAMLError, line: int) -> str:
    mark = exc.problem_mark or exc.context_mark
    buf = getattr(mark, "buffer", None) or _CURRENT_SOURCE.get("text") or ""
    lines = buf.split("\n")
    return lines[line - 1] if 0 < line <= len(lines) else ""


def _is_unquoted_template(node: yaml.Node) -> bool:
    return (
        isinstance(node, yaml.MappingNode)
        and node.flow_style is True
        and len(node.value) == 1
        and isinstance(node.value[0][0], yaml.MappingNode)
        and node.value[0][0].flow_style is True
        and isinstance(node.value[0][1], yaml.ScalarNode)
        and node.value[0][1].value == ""
    )


class _Converter:
    def __init__(self, path: str, text: str, diags: Diagnostics) -> None:
        self.path = path
        self.text = text
        self.diags = diags
        self.memo: dict[int, YNode] = {}

    def span(self, node: yaml.Node) -> Span:
        s, e = node.start_mark, node.end_mark
        return Span(self.path, s.line + 1, s.column + 1, e.line + 1, e.column + 1)

    def convert(self, node: yaml.Node) -> YNode:
        key = id(node)
        done = self.memo.get(key)
        if done is not None:
            return done
        if isinstance(node, yaml.ScalarNode):
            out: YNode = self.scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            self._check_tag(node, "tag:yaml.org,2002:seq")
            seq = SeqNode(self.span(node))
            self.memo[key] = seq
            seq.items = [self.convert(n) for n in node.value]
            return seq
        elif _is_unquoted_template(node):
            # `when: {{ .x }}` parses as a flow mapping inside a flow mapping: report it once and
            # keep the text, so that the rest of the playbook is still checked
            text = self.text[node.start_mark.index : node.end_mark.index]
            self.diags.add("yaml-syntax", "a value that starts with '{{' must be quoted", self.span(node),
                           help=f"YAML reads an unquoted {{{{ as a mapping: write '{text}' in quotes")
            out = ScalarNode(self.span(node), text, "", self.text, node.start_mark.index, node.end_mark.index)
        else:
            self._check_tag(node, "tag:yaml.org,2002:map")
            mapping = MapNode(self.span(node))
            self.memo[key] = mapping
            mapping.items = self.mapping_items(node)
            return mapping
        self.memo[key] = out
        return out

    def _check_tag(self, node: yaml.Node, expected: str) -> None:
        if node.tag not in (expected, _PLAIN_TAG):
            self.diags.add("yaml-syntax", f"unsupported YAML tag '{node.tag}'", self.span(node),
                           help="remove the tag; playbooks use plain YAML data only")

    def scalar(self, node: yaml.ScalarNode, *, is_key: bool = False) -> ScalarNode:
        try:
            return self._scalar(node, is_key)
        except _IntTooLong:
            self.diags.add("yaml-limit", f"integer too large: more than {MAX_INT_DIGITS:,} decimal digits", self.span(node),
                           help="quote it to keep the digits as a string")
            return ScalarNode(self.span(node), node.value, node.style or "", self.text,
                              node.start_mark.index, node.end_mark.index)

    def _scalar(self, node: yaml.ScalarNode, is_key: bool) -> ScalarNode:
        style = node.style or ""
        raw = node.value
        value: Any = raw
        if node.tag == _PLAIN_TAG and style == "":
            value, is_bool_word = _resolve_plain(raw)
            if is_bool_word and not is_key:  # a key is a name (`on:` of data:join), never a boolean
                self.diags.add(
                    "bool-string",
                    f"'{raw}' is the string \"{raw}\", not a boolean",
                    self.span(node),
                    help="write true or false for a boolean, or quote the word to keep the string",
                )
        elif node.tag not in (_PLAIN_TAG, _STR_TAG):
            kind = _KNOWN_TAGS.get(node.tag)
            if kind is None:
                self.diags.add("yaml-syntax", f"unsupported YAML tag '{node.tag}'", self.span(node),
                               help="remove the tag; playbooks use plain YAML data only")
            else:
                value, _ = _resolve_plain(raw)
                ok = {"int": isinstance(value, int) and not isinstance(value, bool),
                      "float": isinstance(value, (int, float)) and not isinstance(value, bool),
                      "bool": isinstance(value, bool), "null": value is None}.get(kind, True)
                if not ok:
                    self.diags.add("invalid-value", f"'{raw}' is not a valid !!{kind}", self.span(node))
                    value = raw
                elif kind == "float":
                    value = float(value)
        return ScalarNode(self.span(node), value, style, self.text,
                          node.start_mark.index, node.end_mark.index)

    def mapping_items(self, node: yaml.MappingNode) -> list[tuple[ScalarNode, YNode]]:
        items: list[tuple[ScalarNode, YNode]] = []
        seen: dict[Any, ScalarNode] = {}
        merged: list[tuple[ScalarNode, YNode]] = []
        for knode, vnode in node.value:
            if isinstance(knode, yaml.ScalarNode) and knode.value == "<<" and not knode.style:
                merged.extend(self.merge_items(vnode))
                continue
            if not isinstance(knode, yaml.ScalarNode):
                self.diags.add("yaml-syntax", "a mapping key must be a plain value, not a list or mapping",
                               self.span(knode), help="quote the key, or restructure the mapping")
                continue
            key = self.scalar(knode, is_key=True)
            hashable = key.value if not isinstance(key.value, float) or key.value == key.value else str(key.value)
            if hashable in seen:
                first = seen[hashable]
                from gxo.compiler.diagnostics import Note

                self.diags.add(
                    "duplicate-key",
                    f"duplicate key '{key.value}'",
                    key.span,
                    help="remove one of the two; YAML keeps only one value per key",
                    notes=[Note("first defined here", first.span)],
                )
                continue
            seen[hashable] = key
            items.append((key, self.convert(vnode)))
        for key, value in merged:  # explicit keys win over merged ones, like YAML's merge
            if key.value not in seen:
                seen[key.value] = key
                items.append((key, value))
        return items

    def merge_items(self, vnode: yaml.Node) -> list[tuple[ScalarNode, YNode]]:
        sources = vnode.value if isinstance(vnode, yaml.SequenceNode) else [vnode]
        out: list[tuple[ScalarNode, YNode]] = []
        names: set[Any] = set()
        for src in sources:
            conv = self.convert(src)
            if not isinstance(conv, MapNode):
                self.diags.add("yaml-syntax", "a merge key '<<' takes a mapping or a list of mappings",
                               self.span(src))
                continue
            for k, v in conv.items:
                if k.value not in names:  # earlier sources win
                    names.add(k.value)
                    out.append((k, v))
        return out


# ---------------------------------------------------------------------------------------------
# Offsets inside a scalar


_ESCAPES = {
    "0": "\0", "a": "\a", "b": "\b", "t": "\t", "\t": "\t", "n": "\n", "v": "\v", "f": "\f",
    "r": "\r", "e": "\x1b", " ": " ", '"': '"', "/": "/", "\\": "\\", "N": "\x85",
    "_": "\xa0", "L": "\u2028", "P": "\u2029",
}
_HEX_LEN = {"x": 2, "u": 4, "U": 8}


def _units(source: str, start: int, end: int, style: str) -> list[tuple[str, int]]:
    """The scalar's source as (decoded character, source index) units, escapes decoded."""
    units: list[tuple[str, int]] = []
    i = start
    if style in ('"', "'"):
        i += 1
        end -= 1
    elif style in ("|", ">"):
        nl = source.find("\n", start, end)
        i = end if nl < 0 else nl + 1
    while i < end:
        ch = source[i]
        if style == '"' and ch == "\\" and i + 1 < end:
            nxt = source[i + 1]
            if nxt in _HEX_LEN:
                n = _HEX_LEN[nxt]
                try:
                    units.append((chr(int(source[i + 2 : i + 2 + n], 16)), i))
                except ValueError:
                    units.append((nxt, i))
                i += 2 + n
                continue
            if nxt == "\n":  # escaped line break: continuation
                i += 2
                continue
            units.append((_ESCAPES.get(nxt, nxt), i))
            i += 2
            continue
        if style == "'" and ch == "'" and i + 1 < end and source[i + 1] == "'":
            units.append(("'", i))
            i += 2
            continue
        units.append((ch, i))
        i += 1
    return units


def _offset_map(value: str, source: str, start: int, end: int, style: str) -> list[tuple[int, int]]:
    """Map each character of ``value`` to (line, col) by aligning it with the source units.

    Folding and indentation only remove or turn whitespace into spaces/newlines, so a greedy
    alignment where whitespace matches whitespace is exact for every non-space character."""
    units = _units(source, start, end, style)
    line_starts = _line_starts(source)
    out: list[tuple[int, int]] = []
    j = 0
    n = len(units)
    for ch in value:
        k = j
        if ch in " \n\t":
            while k < n and units[k][0] != ch and units[k][0] not in " \n\t":
                k += 1
        else:
            while k < n and units[k][0] != ch:
                k += 1
        if k >= n:  # no match (should not happen): stay on the last known position
            k = min(j, n - 1) if n else -1
            idx = units[k][1] if k >= 0 else start
            out.append(_line_col(line_starts, idx))
            continue
        out.append(_line_col(line_starts, units[k][1]))
        j = k + 1
    out.append(_line_col(line_starts, units[j][1]) if j < n else _line_col(line_starts, max(end - 1, start)))
    return out


_LINE_CACHE: dict[int, tuple[str, list[int]]] = {}


def _line_starts(source: str) -> list[int]:
    cached = _LINE_CACHE.get(id(source))
    if cached is not None and cached[0] is source:
        return cached[1]
    starts = [0]
    starts.extend(m.end() for m in re.finditer("\n", source))
    if len(_LINE_CACHE) > 64:
        _LINE_CACHE.clear()
    _LINE_CACHE[id(source)] = (source, starts)
    return starts


def _line_col(starts: list[int], index: int) -> tuple[int, int]:
    import bisect

    line = bisect.bisect_right(starts, index) - 1
    return line + 1, index - starts[line] + 1
