"""The front end's named stages, run in order on one playbook: load, validate, model,
resolve, deps.  Each stage appends to the same ``Diagnostics``; later stages run even after
errors where they can, so that one run reports every problem (blockers stop it)."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from gxo.compiler.diagnostics import Diagnostics
from gxo.compiler.loader import MapNode, load_playbook, read_playbook
from gxo.compiler.schema import validate_playbook

STAGES = ("load", "validate", "model", "resolve", "deps")


@dataclass
class Result:
    path: str
    source: str
    diags: Diagnostics
    playbook: object | None = None
    analysis: object | None = None
    graph: object | None = None
    #: other files the diagnostics point into (a seccomp profile), path -> text
    extra_sources: dict[str, str] | None = None

    @property
    def sources(self) -> dict[str, str]:
        return {**(self.extra_sources or {}), self.path: self.source}


def check_path(path: str) -> tuple[Result, bytes]:
    """Read the playbook file ``path`` (type and size checked before reading: a file over the
    limit is a ``yaml-limit`` error, never read) and check it; the result and the bytes read.
    Raises ``gxo.runtime.files.FileProblem`` for a path that is not a readable regular file."""
    diags = Diagnostics()
    data = read_playbook(path, diags)
    if data is None:
        return Result(path, "", diags), b""
    return check_source(data, path), data


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: the stages allocate one object per YAML node and
    per expression, all kept to the end, which the collector would otherwise walk again and
    again (half the time of a large playbook).  What they leave behind is reference-counted."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()  # the next young collection frees what a dropped result leaves in cycles


def check_source(data: bytes | str, path: str) -> Result:
    with gc_paused():
        return _check_source(data, path)


def _check_source(data: bytes | str, path: str) -> Result:
    diags = Diagnostics()
    loaded = load_playbook(data, path, diags)
    res = Result(path, loaded.source, diags)
    root = loaded.root
    if root is None:
        return res
    validate_playbook(root, diags)
    if not isinstance(root, MapNode):
        return res
    from gxo.compiler.graph import build_graph
    from gxo.compiler.model import build_model
    from gxo.compiler.resolve import resolve

    pb = build_model(root, diags)
    res.playbook = pb
    an = resolve(pb, diags)
    res.analysis = an
    from gxo.compiler.sandbox import check_paths, check_profiles

    check_paths(pb, diags)
    res.extra_sources = check_profiles(pb, path, diags)
    res.graph = build_graph(an, diags)
    return res
