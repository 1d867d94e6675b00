"""``gxoc build``, ``show``, ``diff``, ``graph`` and ``keygen``: the plan side of the compiler CLI.

Attached to the ``gxoc`` group of ``gxo.compiler.cli``.  Exit codes as ``gxoc check``'s: 0 ok, 1
errors (nothing is written), 2 usage; a refused plan given to ``show``/``diff``/``graph`` exits
3 like ``gxo exec``; never a traceback (``main`` turns our bugs into exit 70).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
from gxo.compiler.cli import EXIT_ERRORS, cli
from gxo.compiler.diagnostics import ERROR, WARNING, limit_per_code, render_text, summary_line
from gxo.runtime.files import FileProblem, check_output, read_head, write_output
from gxo.runtime.plan import Plan, expr_id, to_data

EXIT_REFUSED = 3



def _channel_policy(c: Any) -> str:
    """A channel's policy as `gxoc show` and `gxoc diff` print it."""
    return f"capacity {c.capacity}, {c.overflow}, flush after {c.flush_interval * 1000:g}ms"

def schedule_line(lc: Any, now: float, n: int = 3) -> str:
    """`gxoc show`'s line under a scheduled workload: its schedule, zone and next ``n`` fire
    times after ``now`` (ISO 8601 with the zone's offset)."""
    from gxo.runtime.lifecycles.cron import preview

    zone = lc.timezone or "local time"
    try:
        times = ", ".join(preview(lc.cron, lc.timezone, now, n))
    except ValueError as exc:  # a plan written by hand; the compiler never lets one through
        times = f"none ({exc})"
    return f"schedule {lc.cron!r} ({zone}; overlap {lc.overlap}, misfire {lc.misfire}); next: {times}"


def _check_output(path: str, option: str = "-o") -> None:
    """A usage error (exit 2) unless ``path`` is a new path or a regular file (checked before the
    work that produces what goes there)."""
    try:
        check_output(path, option)
    except FileProblem as exc:
        raise click.UsageError(str(exc)) from None


def _write(path: str, data: bytes, option: str = "-o", mode: int = 0o644) -> None:
    """Write an output file whole (``gxo.runtime.files.write_output``): exit 2 for a target
    that is not a new path or a regular file, exit 1 when the writing fails."""
    try:
        write_output(path, data, option=option, mode=mode)
    except FileProblem as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        click.echo(f"gxoc: error: cannot write '{path}': {exc.strerror or exc}", err=True)
        sys.exit(EXIT_ERRORS)


def _print_diags(result: Any, warnings_as_errors: bool = False) -> bool:
    """Print the diagnostics as ``gxoc check`` does; True when they stop the build."""
    diags = result.diags.sorted()
    if diags:
        use_color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        click.echo(render_text(limit_per_code(diags), result.sources, color=use_color), nl=False, color=use_color)
        click.echo(summary_line(diags, 1))
    failing = {ERROR, WARNING} if warnings_as_errors else {ERROR}
    return any(d.severity in failing for d in diags)


def _compile(path: str, *, build: bool, warnings_as_errors: bool = False) -> tuple[Any, bytes]:
    from gxo.compiler.pipeline import check_path

    try:
        result, data = check_path(path)
    except FileProblem as exc:
        raise click.UsageError(str(exc)) from None
    if build:
        if _print_diags(result, warnings_as_errors):
            sys.exit(EXIT_ERRORS)
    elif result.diags.has_errors:
        _print_diags(result)
        sys.exit(EXIT_ERRORS)
    return result, data


def _build_plan(playbook: str, output: str | None, *, no_native: bool, jobs: int | None, cython: Any,
                channel_buffer_size: int | None, warnings_as_errors: bool, signing_key: Any) -> tuple[Any, Any, str]:
    """Check, lower and write the plan; the native shards build while the bytecode and the
    manifest are made."""
    from gxo.compiler.pipeline import gc_paused

    with gc_paused():
        return _build_plan_paused(playbook, output, no_native=no_native, jobs=jobs, cython=cython,
                                  channel_buffer_size=channel_buffer_size, warnings_as_errors=warnings_as_errors,
                                  signing_key=signing_key)


def _build_plan_paused(playbook: str, output: str | None, *, no_native: bool, jobs: int | None, cython: Any,
                       channel_buffer_size: int | None, warnings_as_errors: bool,
                       signing_key: Any) -> tuple[Any, Any, str]:
    from gxo.compiler.emit import NativeMembers, build_plan, emit_gxp, members_of

    result, data = _compile(playbook, build=True, warnings_as_errors=warnings_as_errors)
    out = output or (Path(playbook).stem + ".gxp")
    _check_output(out)
    built = build_plan(result, channel_buffer_size=channel_buffer_size, source_bytes=data)
    native = None
    if no_native:
        members = members_of(built)
    else:
        from concurrent.futures import ThreadPoolExecutor

        from gxo.compiler.native import NativeBuildError, build_native

        with ThreadPoolExecutor(max_workers=1) as pool:
            job = pool.submit(build_native, built.items, functions=built.functions, jobs=jobs, cython=cython,
                              plan_code_sha256=built.plan.plan_code_sha256)
            members = members_of(built)
            try:
                nr = job.result()
            except NativeBuildError as exc:
                click.echo(f"gxoc: error: native build failed: {exc}", err=True)
                click.echo("help: build with --no-native to skip Cython", err=True)
                sys.exit(EXIT_ERRORS)
        native = NativeMembers(nr.tag, nr.index, nr.shards)
        click.echo(f"native: {nr.functions} function(s) evaluated per record or loop item in {len(nr.shards)} "
                   f"shard(s) for {nr.tag} ({nr.built} built, {nr.cached} cached) in {nr.seconds:.2f} s", err=True)
    try:
        emit_gxp(out, built, native=native, signing_key=signing_key, members=members)
    except FileProblem as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        click.echo(f"gxoc: error: cannot write '{out}': {exc.strerror or exc}", err=True)
        sys.exit(EXIT_ERRORS)
    return built, native, out


@cli.command()
@click.argument("playbook", metavar="PLAYBOOK")
@click.option("-o", "--output", metavar="PLAN.gxp", help="Where to write the plan (default: PLAYBOOK's stem + .gxp here).")
@click.option("--no-native", is_flag=True, help="Skip the Cython build: the plan runs its bytecode.")
@click.option("--sign", "sign_key", metavar="KEY", help="Sign the plan with this Ed25519 private key (gxoc keygen).")
@click.option("--channel-buffer-size", type=click.IntRange(min=0), metavar="N",
              help="Channel capacity where the playbook sets none (default 100).")
@click.option("-j", "--jobs", type=click.IntRange(min=1), metavar="N", help="Parallel native shard builds (default: cores).")
@click.option("--warnings-as-errors", is_flag=True, help="Refuse to build when there are warnings.")
def build(playbook: str, output: str | None, no_native: bool, sign_key: str | None,
          channel_buffer_size: int | None, jobs: int | None, warnings_as_errors: bool) -> None:
    """Compile PLAYBOOK into a frozen, verifiable plan (.gxp)."""
    from gxo.compiler.emit import load_signing_key

    signing_key = None
    if sign_key is not None:
        try:
            signing_key = load_signing_key(sign_key)
        except (OSError, ValueError, TypeError) as exc:
            raise click.UsageError(f"--sign {sign_key}: {getattr(exc, 'strerror', None) or exc}") from None
    cython = None
    if not no_native and (os.cpu_count() or 1) > 1:
        from gxo.compiler.native import CythonWorker

        try:
            # warms up on another core while the playbook is checked (about a second of CPU,
            # spent for nothing when every shard is in the cache: the wall time is the same)
            cython = CythonWorker()
        except OSError:
            cython = None  # the native build starts its own and reports what fails
    try:
        built, native, out = _build_plan(playbook, output, no_native=no_native, jobs=jobs, cython=cython,
                                         channel_buffer_size=channel_buffer_size,
                                         warnings_as_errors=warnings_as_errors, signing_key=signing_key)
    finally:
        if cython is not None:
            cython.close()
    p = built.plan
    click.echo(f"wrote {out}: {len(p.workloads)} workload(s), {len(p.expressions)} expression(s)"
               f"{', native' if native else ''}{', signed' if signing_key is not None else ''}")


# ---------------------------------------------------------------------------------------------
# Reading plans for show / diff / graph


def _is_plan(path: str) -> bool:
    try:
        return read_head(path, 2, what="plan or playbook") == b"PK"
    except FileProblem as exc:
        raise click.UsageError(str(exc)) from None


def load_any(path: str, trusted_keys: tuple[str, ...] = ()) -> Plan:
    """A plan from a .gxp (verified) or a playbook (compiled in memory)."""
    if not os.path.exists(path):
        raise click.UsageError(f"no such file: '{path}'")
    if _is_plan(path) or path.endswith(".gxp"):
        from gxo.runtime.planfile import PlanRefused, open_plan

        try:
            return open_plan(path, trusted_keys=trusted_keys).plan
        except PlanRefused as exc:
            click.echo(f"gxoc: plan refused: {exc}", err=True)
            sys.exit(EXIT_REFUSED)
    from gxo.compiler.emit import build_plan

    result, data = _compile(path, build=False)
    return build_plan(result, source_bytes=data).plan


@cli.command()
@click.argument("plan_path", metavar="PLAN.gxp")
@click.option("--json", "as_json", is_flag=True,
              help="Print the manifest with every field, defaults included (manifest.json leaves them out).")
@click.option("--trusted-key", "trusted", multiple=True, metavar="PUB", help="Also check the signature against this key.")
def show(plan_path: str, as_json: bool, trusted: tuple[str, ...]) -> None:
    """Verify a plan and print what it holds."""
    from gxo.runtime.plan import canonical_json, to_data
    from gxo.runtime.planfile import PlanRefused, open_plan

    if not os.path.exists(plan_path):
        raise click.UsageError(f"no such file: '{plan_path}'")
    try:
        v = open_plan(plan_path, trusted_keys=trusted)
    except PlanRefused as exc:
        click.echo(f"gxoc: plan refused: {exc}", err=True)
        sys.exit(EXIT_REFUSED)
    p = v.plan
    if as_json:
        click.echo(canonical_json(to_data(p), pretty=True), nl=False)
        return
    now = time.time()
    sig = "unsigned"
    if v.signed:
        sig = f"signed (key {v.key_id}{', verified' if v.signature_checked else ', not checked: no --trusted-key'})"
    click.echo(f"plan {p.name!r} (format {p.format_version}, gxoc {p.compiler_version})")
    click.echo(f"source: {p.source.path} sha256 {p.source.sha256}")
    click.echo(f"code: plan_code.py sha256 {p.plan_code_sha256}; bytecode {v.bytecode_index['cache_tag']}; "
               f"native: {', '.join(sorted(v.native_indexes)) or 'none'}")
    click.echo(f"signature: {sig}")
    click.echo(f"modules: {', '.join(f'{m.name}@{m.version}' for m in p.modules) or 'none'}")
    click.echo(f"workloads ({len(p.workloads)}), by level:")
    for i, level in enumerate(p.levels or (tuple(w.name for w in p.workloads),)):
        for name in level:
            w = p.workload(name)
            extra = []
            if w.deps:
                extra.append("after " + ", ".join(w.deps))
            if w.stream_inputs:
                extra.append("reads " + ", ".join(w.stream_inputs))
            if w.register:
                extra.append(f"register {w.register}")
            if w.secret_params:
                extra.append("secret " + ", ".join(w.secret_params))
            click.echo(f"  [{i}] {w.name}: {w.module} ({w.lifecycle.policy})" + (f"; {'; '.join(extra)}" if extra else ""))
            if w.lifecycle.policy == "scheduled" and w.lifecycle.cron:
                click.echo(f"      {schedule_line(w.lifecycle, now)}")
    for c in p.channels:
        click.echo(f"channel {c.producer} -> {c.consumer}: {_channel_policy(c)}")
    click.echo(f"expressions: {len(p.expressions)}")


# ---------------------------------------------------------------------------------------------
# diff


def _exprs(plan: Plan) -> dict[str, str]:
    return {e.id: e.text for e in plan.expressions}


def _resolve(value: Any, texts: dict[str, str]) -> Any:
    """IR with expression references replaced by their source text, for comparison."""
    eid = expr_id(value)
    if eid is not None:
        return {"$expr": texts.get(eid, eid)}
    if isinstance(value, dict):
        return {k: _resolve(v, texts) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, texts) for v in value]
    return value


def _flatten(value: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, dict) and value and expr_id(value) is None and "$expr" not in value:
        for k in sorted(value):
            _flatten(value[k], f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}[{i}]", out)
    elif isinstance(value, dict) and set(value) == {"$expr"}:
        out[prefix] = json.dumps(value["$expr"], ensure_ascii=False) + " (expression)"
    else:
        out[prefix] = json.dumps(value, ensure_ascii=False, sort_keys=True)


_IGNORED = {"index", "span"}


def _workload_view(plan: Plan) -> dict[str, dict[str, str]]:
    texts = _exprs(plan)
    out = {}
    for w in plan.workloads:
        data = to_data(w)
        for k in _IGNORED:
            data.pop(k, None)
        if data.get("when"):
            data["when"] = {"$expr": texts.get(data["when"], data["when"])}
        data = _resolve(data, texts)
        flat: dict[str, str] = {}
        _flatten(data, "", flat)
        out[w.name] = flat
    return out


def semantic_diff(a: Plan, b: Plan) -> list[str]:
    """Human lines: workloads added/removed/changed (with the changed fields), edges, vars, policies."""
    lines: list[str] = []
    for field_name in ("name", "max_concurrency"):
        va, vb = getattr(a, field_name), getattr(b, field_name)
        if va != vb:
            lines.append(f"~ {field_name}: {json.dumps(va)} -> {json.dumps(vb)}")
    va_flat: dict[str, str] = {}
    vb_flat: dict[str, str] = {}
    _flatten(_resolve(a.vars, _exprs(a)), "vars", va_flat)
    _flatten(_resolve(b.vars, _exprs(b)), "vars", vb_flat)
    for key in sorted(set(va_flat) | set(vb_flat)):
        if va_flat.get(key) != vb_flat.get(key):
            lines.append(f"~ {key}: {va_flat.get(key, '(absent)')} -> {vb_flat.get(key, '(absent)')}")
    wa, wb = _workload_view(a), _workload_view(b)
    for name in sorted(set(wb) - set(wa)):
        lines.append(f"+ workload {name} ({b.workload(name).module})")
    for name in sorted(set(wa) - set(wb)):
        lines.append(f"- workload {name} ({a.workload(name).module})")
    for name in sorted(set(wa) & set(wb)):
        fa, fb = wa[name], wb[name]
        changed = [k for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
        if changed:
            lines.append(f"~ workload {name}:")
            for k in changed:
                lines.append(f"    {k}: {fa.get(k, '(absent)')} -> {fb.get(k, '(absent)')}")
    ea = {(e.source, e.target): "/".join(e.kinds) for e in a.edges}
    eb = {(e.source, e.target): "/".join(e.kinds) for e in b.edges}
    for key in sorted(set(eb) - set(ea)):
        lines.append(f"+ edge {key[0]} -> {key[1]} ({eb[key]})")
    for key in sorted(set(ea) - set(eb)):
        lines.append(f"- edge {key[0]} -> {key[1]} ({ea[key]})")
    for key in sorted(set(ea) & set(eb)):
        if ea[key] != eb[key]:
            lines.append(f"~ edge {key[0]} -> {key[1]}: {ea[key]} -> {eb[key]}")
    ca = {(c.producer, c.consumer): _channel_policy(c) for c in a.channels}
    cb = {(c.producer, c.consumer): _channel_policy(c) for c in b.channels}
    for key in sorted(set(ca) & set(cb)):
        if ca[key] != cb[key]:
            lines.append(f"~ channel {key[0]} -> {key[1]}: {ca[key]} -> {cb[key]}")
    ma = {m.name: m for m in a.modules}
    mb = {m.name: m for m in b.modules}
    for name in sorted(set(ma) & set(mb)):
        if (ma[name].version, ma[name].schema_sha256) != (mb[name].version, mb[name].schema_sha256):
            lines.append(f"~ module {name}: {ma[name].version} -> {mb[name].version}"
                         + (" (schemas changed)" if ma[name].schema_sha256 != mb[name].schema_sha256 else ""))
    return lines


@cli.command()
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@click.option("--exit-code", is_flag=True, help="Exit 1 when the plans differ.")
def diff(a: str, b: str, exit_code: bool) -> None:
    """Semantic diff of two plans (.gxp) or playbooks: workloads, fields, edges, params."""
    pa, pb = load_any(a), load_any(b)
    lines = semantic_diff(pa, pb)
    if not lines:
        click.echo("no semantic differences")
        return
    click.echo(f"--- {a}\n+++ {b}")
    for line in lines:
        click.echo(line)
    if exit_code:
        sys.exit(EXIT_ERRORS)


# ---------------------------------------------------------------------------------------------
# graph

def to_dot(plan: Plan) -> str:
    def q(s: str) -> str:
        return json.dumps(s, ensure_ascii=False)

    out = [f"digraph {q(plan.name or 'plan')} {{", "  rankdir=LR;", "  node [shape=box];"]
    for w in plan.workloads:
        out.append(f"  {q(w.name)} [label={q(w.name + chr(10) + w.module)}];")
    for e in plan.edges:
        style = "dashed" if "stream" in e.kinds else ("dotted" if e.kinds == ("needs",) else "solid")
        out.append(f"  {q(e.source)} -> {q(e.target)} [label={q('/'.join(e.kinds))}, style={style}];")
    out.append("}")
    return "\n".join(out) + "\n"


def to_mermaid(plan: Plan) -> str:
    ids = {w.name: f"w{i}" for i, w in enumerate(plan.workloads)}
    out = ["flowchart LR"]
    for w in plan.workloads:
        label = f"{w.name}<br/>{w.module}".replace('"', "#quot;")
        out.append(f'  {ids[w.name]}["{label}"]')
    for e in plan.edges:
        arrow = "-.->" if "stream" in e.kinds else "-->"
        out.append(f"  {ids[e.source]} {arrow}|{'/'.join(e.kinds)}| {ids[e.target]}")
    return "\n".join(out) + "\n"


@cli.command()
@click.argument("source", metavar="PLAN.gxp|PLAYBOOK")
@click.option("--format", "fmt", type=click.Choice(["dot", "mermaid", "svg"]), default="dot", show_default=True)
@click.option("-o", "--output", metavar="FILE", help="Write to FILE instead of standard output.")
def graph(source: str, fmt: str, output: str | None) -> None:
    """Draw the workload graph (DOT, Mermaid, or SVG through Graphviz)."""
    if output:
        _check_output(output)
    if fmt == "svg" and shutil.which("dot") is None:
        click.echo("gxoc: error: --format svg needs Graphviz's 'dot' on PATH; "
                   "install graphviz, or use --format dot or mermaid", err=True)
        sys.exit(EXIT_ERRORS)
    plan = load_any(source)
    text = to_mermaid(plan) if fmt == "mermaid" else to_dot(plan)
    if fmt == "svg":
        proc = subprocess.run(check=False, args=["dot", "-Tsvg"], input=text.encode("utf-8"), capture_output=True)
        if proc.returncode != 0:
            click.echo(f"gxoc: error: dot failed: {proc.stderr.decode('utf-8', 'replace').strip()}", err=True)
            sys.exit(EXIT_ERRORS)
        data = proc.stdout
    else:
        data = text.encode("utf-8")
    if output:
        _write(output, data)
    else:
        click.echo(data.decode("utf-8"), nl=False)


# ---------------------------------------------------------------------------------------------
# keygen


@cli.command()
@click.option("-o", "--output", required=True, metavar="KEY", help="Private key file (PEM, mode 0600); KEY.pub gets the public key.")
@click.option("--force", is_flag=True, help="Overwrite existing key files.")
def keygen(output: str, force: bool) -> None:
    """Make an Ed25519 key pair for signing plans (gxoc build --sign KEY; gxo exec --trusted-key KEY.pub)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pub_path = output + ".pub"
    for p in (output, pub_path):
        _check_output(p)  # a device, a FIFO or a link is refused even with --force
        if os.path.lexists(p) and not force:
            raise click.UsageError(f"'{p}' exists; pass --force to overwrite it")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    _write(output, private, mode=0o600)  # mode 0600 from its first byte: written beside, renamed
    _write(pub_path, public, mode=0o644)
    from gxo.runtime.planfile import key_id

    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    click.echo(f"wrote {output} (private, 0600) and {pub_path}; key id {key_id(raw)}")


__all__ = ["build", "diff", "graph", "keygen", "semantic_diff", "show", "to_dot", "to_mermaid"]
