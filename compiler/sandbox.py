"""``security_context.seccomp_profile_path``: read, check and pin each profile at build time.

The path is relative to the playbook's folder.  The file must be a Docker/libseccomp JSON
profile whose every syscall name libseccomp knows; a problem is a ``seccomp-profile`` error at
its position in the JSON file.  The checked profile (our platform-independent form) and the
file's sha256 go into the plan: ``gxo`` applies that copy, so a file changed after the build
changes nothing (``gxoc build`` again to take it).
"""

from __future__ import annotations

import hashlib
import json
import os

from gxo.compiler.diagnostics import Diagnostics, Span
from gxo.compiler.loader import MapNode, ScalarNode, SeqNode, load_playbook, walk_path
from gxo.compiler.model import Playbook
from gxo.runtime.sandbox.profiles import ProfileError, normalize
from gxo.runtime.support import plain_absolute

#: a profile larger than this is refused (Docker's default profile is about 20 kB)
MAX_PROFILE_BYTES = 1 << 20


def check_paths(pb: Playbook, diags: Diagnostics) -> None:
    """``read_only_paths`` and ``root_filesystem`` are paths of the machine that runs the
    plan: absolute, without ``..`` (the sandbox mounts them as written)."""
    for w in pb.workloads:
        sc = w.node.get("security_context")
        if not isinstance(sc, MapNode):
            continue
        ro = sc.get("read_only_paths")
        nodes = list(ro.items) if isinstance(ro, SeqNode) else []
        root = sc.get("root_filesystem")
        if root is not None:
            nodes.append(root)
        for node in nodes:
            if not isinstance(node, ScalarNode) or not isinstance(node.value, str) or not node.value:
                continue
            text = node.value
            if not plain_absolute(text) or "{{" in text:
                diags.add("invalid-value", f"'{text}' must be an absolute path of the machine that runs the plan, "
                          "without '..' or a template", node.span,
                          help="write it as /srv/data: the sandbox mounts it as written")


def check_profiles(pb: Playbook, playbook_path: str, diags: Diagnostics) -> dict[str, str]:
    """Check each workload's profile; set ``w.seccomp_profile``.  Returns the texts of the
    profile files (path as shown in diagnostics -> text) for rendering."""
    sources: dict[str, str] = {}
    cache: dict[str, tuple[dict | None, str]] = {}
    for w in pb.workloads:
        sc = w.node.get("security_context")
        node = sc.get("seccomp_profile_path") if isinstance(sc, MapNode) else None
        if not isinstance(node, ScalarNode) or not isinstance(node.value, str) or node.value in ("", "default"):
            continue
        if isinstance(sc, MapNode) and sc.get("seccomp") is not None:
            continue  # the schema reports the pair as exclusive
        shown = node.value if os.path.isabs(node.value) else os.path.join(os.path.dirname(playbook_path), node.value)
        if shown not in cache:
            cache[shown] = _read(shown, node, diags, sources)
        profile, digest = cache[shown]
        if profile is not None:
            w.seccomp_profile = {"path": node.value, "sha256": digest, "profile": profile}
    return sources


def _read(shown: str, node: ScalarNode, diags: Diagnostics, sources: dict[str, str]) -> tuple[dict | None, str]:
    try:
        with open(shown, "rb") as fh:
            data = fh.read(MAX_PROFILE_BYTES + 1)
    except OSError as exc:
        diags.add("seccomp-profile", f"cannot read the seccomp profile {shown}: {exc.strerror}", node.span,
                  help="the path is relative to the playbook's folder")
        return None, ""
    if len(data) > MAX_PROFILE_BYTES:
        diags.add("seccomp-profile", f"the seccomp profile {shown} is larger than {MAX_PROFILE_BYTES:,} bytes",
                  node.span)
        return None, ""
    digest = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8")
        doc = json.loads(text)
    except UnicodeDecodeError:
        diags.add("seccomp-profile", f"the seccomp profile {shown} is not UTF-8 text", node.span)
        return None, digest
    except json.JSONDecodeError as exc:
        sources[shown] = text
        diags.add("seccomp-profile", f"the seccomp profile is not valid JSON: {exc.msg}",
                  Span.point(shown, exc.lineno, exc.colno), help="a Docker/libseccomp JSON profile")
        return None, digest
    sources[shown] = text
    try:
        from gxo.runtime.sandbox.bpf import SeccompUnavailable, known_syscall

        try:
            known_syscall("read")
        except SeccompUnavailable as exc:
            diags.add("seccomp-profile", f"cannot check the syscall names of {shown}: {exc}", node.span)
            return None, digest
        profile = normalize(doc, known_syscall)
    except ProfileError as exc:
        diags.add("seccomp-profile", str(exc), _span(text, shown, exc.where) or node.span,
                  help=f"in the seccomp profile named at {node.span.path}:{node.span.line}:{node.span.col}")
        return None, digest
    return profile, digest


def _span(text: str, shown: str, where: tuple) -> Span | None:
    """The position of ``where`` (keys and indexes) in the JSON ``text`` (read as YAML, which
    keeps positions; JSON is YAML 1.2)."""
    root = load_playbook(text, shown, Diagnostics()).root
    node = walk_path(root, where)
    while node is None and where:  # the key is missing: point at its parent
        where = where[:-1]
        node = walk_path(root, where)
    return getattr(node, "span", None)
