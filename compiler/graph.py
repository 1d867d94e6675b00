"""Phase ``deps``: the workload graph with networkx.

Edges carry the set of their kinds: ``state`` (an expression reads another workload's
register or status), ``stream`` (``stream_inputs`` and event sources), ``needs`` and
``on_failure`` (from a workload to the handlers it names).  Each
strongly connected component is reported once as a ``dependency-cycle`` with its whole path;
a consumer that also waits on its producer through state or needs edges is a
``stream-deadlock``.  Topological levels come from sorted ``topological_generations``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from gxo.compiler.diagnostics import Diagnostics, Note, Span
from gxo.compiler.resolve import Analysis


@dataclass
class Graph:
    g: nx.DiGraph
    levels: list[list[str]] = field(default_factory=list)

    def edges(self) -> list[tuple[str, str, tuple[str, ...]]]:
        return sorted((u, v, tuple(sorted(d["kinds"]))) for u, v, d in self.g.edges(data=True))


def build_graph(an: Analysis, diags: Diagnostics) -> Graph:
    g = nx.DiGraph()
    for w in an.playbook.workloads:
        g.add_node(w.name)
    evidence: dict[tuple[str, str], Span] = {}

    def edge(u: str, v: str, kind: str, span: Span) -> None:
        if g.has_edge(u, v):
            g[u][v]["kinds"].add(kind)
        else:
            g.add_edge(u, v, kinds={kind})
            evidence[(u, v)] = span

    for w in an.playbook.workloads:
        for ref in an.refs.get(w.name, []):
            target = None
            if ref.kind == "register":
                target = an.by_register.get(ref.name)
                target = target.name if target else None
            elif ref.kind == "gxo" and len(ref.path) >= 3 and ref.path[1] in ("workloads", "tasks"):
                target = str(ref.path[2])
            if target is None:
                continue
            if target == w.name:
                what = "its own register" if ref.kind == "register" else "its own status"
                diags.add("dependency-cycle", f"workload '{w.name}' refers to {what}", ref.span,
                          help="a workload cannot wait for itself; read the value in a later workload")
                continue
            edge(target, w.name, "state", ref.span)
        for name, node in w.stream_inputs:
            if name in an.by_name and name != w.name:
                edge(name, w.name, "stream", node.span)
        if w.source is not None and w.source[0] in an.by_name and w.source[0] != w.name:
            edge(w.source[0], w.name, "stream", w.source[1].span)
        for name, node in w.needs:
            if name in an.by_name and name != w.name:
                edge(name, w.name, "needs", node.span)
        for name, node in w.on_failure:  # a handler waits for the workload it handles
            if name in an.by_name and name != w.name:
                edge(w.name, name, "on_failure", node.span)

    order = {w.name: w.index for w in an.playbook.workloads}
    cyclic = False
    for comp in nx.strongly_connected_components(g):
        if len(comp) < 2:
            continue
        cyclic = True
        sub = g.subgraph(comp)
        start = min(comp, key=lambda n: order.get(n, 0))
        cycle = nx.find_cycle(sub, source=start)
        path = [cycle[0][0]] + [v for _, v in cycle]
        notes = [Note(f"'{v}' depends on '{u}' ({'/'.join(sorted(g[u][v]['kinds']))})", evidence[(u, v)]) for u, v in cycle]
        first_edge = cycle[-1]
        diags.add("dependency-cycle", "dependency cycle: " + " -> ".join(path), evidence[first_edge],
                  help="break the cycle: one of these references must go", notes=notes)
    state_needs = nx.DiGraph()
    state_needs.add_nodes_from(g.nodes)
    waits = {"state", "needs", "on_failure"}
    state_needs.add_edges_from((u, v) for u, v, d in g.edges(data=True) if d["kinds"] & waits)
    for u, v, d in g.edges(data=True):
        if "stream" in d["kinds"] and not cyclic:
            if d["kinds"] & waits or _path_without(state_needs, u, v):
                diags.add("stream-deadlock",
                          f"'{v}' reads the stream of '{u}' but also waits for '{u}' to finish",
                          evidence[(u, v)],
                          help="a consumer runs while its producer runs; read the producer's summary in "
                          "another workload, or drop the state/needs dependency")
    levels: list[list[str]] = []
    if not cyclic:
        levels = [sorted(gen, key=lambda n: n) for gen in nx.topological_generations(g)]
    return Graph(g, levels)


def _path_without(g: nx.DiGraph, u: str, v: str) -> bool:
    try:
        return nx.has_path(g, u, v)
    except nx.NodeNotFound:
        return False
