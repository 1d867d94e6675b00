"""Phase ``native``: the plan's hot expression functions compiled by Cython into cached shards.

design.md section 7.  What goes native: the functions of expressions evaluated per stream record
or per loop item (``CodegenItem.hot``).  Native code saves ~0.18 us per evaluation over the
bytecode (216 vs 396 ns), which pays for its build only where an expression runs many times; a
param rendered once per task runs its bytecode.  The plan's other functions stay in
``plan_code.py``, and the runtime takes a function from a shard when one holds it.

How shards are cut: the hot functions, each named by the digest of its body
(:func:`gxo.compiler.codegen.functions_of`), in order of first use, are split where the place of
a function's first use (workload and param path) hashes to a boundary, about every
``SHARD_TARGET`` functions and never more than ``SHARD_SIZE``.  A shard's source holds nothing
but its functions, so editing one expression changes one shard (the one holding its function),
and adding or removing a workload changes the shard it falls in: every other shard is taken
from the cache, ``$XDG_CACHE_HOME/gxo/native/``, keyed by the digest of the shard's source plus
the gxo, Cython, C compiler and interpreter versions and the flags.  One Cython process
(:class:`CythonWorker`, which ``gxoc build`` starts before reading the playbook, so that its
second of warm-up overlaps the front end) translates the shards to build one after the other,
and ``cc -O1`` compiles each as soon as its C file is ready, ``jobs`` at once.  A shard's module name is derived from its source digest (``gxo_shard_<hex20>``), so
identical sources share one cache entry and two plans' shards never clash in one process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from gxo.compiler import _cython_worker as W
from gxo.runtime import planfile as F

SHARD_SIZE = 16  # at most this many functions per shard
SHARD_TARGET = 8  # about this many on average: a one-line edit recompiles about this many
OPT_FLAGS = ("-O1",)
CACHE_LAYOUT = "2"  # bump when the cache key's meaning changes


class NativeBuildError(RuntimeError):
    """Cython or the C compiler failed (the message ends with their last output lines)."""


@dataclass
class NativeResult:
    tag: str
    index: bytes
    shards: list[bytes]
    seconds: float
    built: int  # shards compiled now
    cached: int  # shards taken from the cache
    functions: int  # functions in the shards


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gxo", "native")


def _cc() -> list[str]:
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return cc.split()


@lru_cache(maxsize=1)
def toolchain() -> dict[str, str]:
    """Versions that go into every shard's cache key."""
    try:
        import Cython

        cython_version = Cython.__version__
    except ImportError:
        raise NativeBuildError("Cython is not installed (install gxo[compiler], or build with --no-native)") from None
    try:
        out = subprocess.run(check=False, args=[*_cc(), "--version"], capture_output=True, text=True, timeout=60)
        cc_version = (out.stdout.splitlines() or ["?"])[0]
    except (OSError, subprocess.TimeoutExpired):
        raise NativeBuildError(f"no C compiler ({' '.join(_cc())}); build with --no-native") from None
    from gxo.compiler.lower import gxo_version

    return {
        "layout": CACHE_LAYOUT,
        "gxo": gxo_version(),
        "cython": cython_version,
        "cc": cc_version,
        "python": sys.version,
        "tag": F.platform_tag(),
        "flags": " ".join(OPT_FLAGS),
        "cython_options": json.dumps([W.FLAGS, W.DIRECTIVES], sort_keys=True),
    }


def shard_module_name(source: str) -> str:
    return "gxo_shard_" + hashlib.sha256(source.encode("utf-8")).hexdigest()[:20]


def _cache_key(source: str) -> str:
    blob = json.dumps({"source": hashlib.sha256(source.encode("utf-8")).hexdigest(), **toolchain()}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _tail(text: str, n: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def _cc_shard(module: str, folder: str, out_path: str) -> None:
    include = sysconfig.get_paths()["include"]
    so = os.path.join(folder, module + ".so")
    cc = subprocess.run(
        [*_cc(), "-shared", "-fPIC", *OPT_FLAGS, "-fno-strict-aliasing", "-DNDEBUG", "-w",
         f"-I{include}", f"{module}.c", "-o", so],
        cwd=folder, capture_output=True, text=True, check=False,
    )
    if cc.returncode != 0:
        raise NativeBuildError(f"the C compiler failed on {module}:\n{_tail(cc.stderr + cc.stdout)}")
    shutil.copyfile(so, out_path)


class CythonWorker:
    """A running :mod:`gxo.compiler._cython_worker`: started early, it warms up while the
    front end works; :meth:`compile` yields each module as its C file is ready."""

    def __init__(self) -> None:
        self.errors = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gxo.compiler._cython_worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors, text=True,
        )

    def _failure(self, what: str) -> NativeBuildError:
        self.errors.seek(0)
        return NativeBuildError(f"cython failed on {what}:\n{_tail(self.errors.read())}")

    def compile(self, folder: str, modules: Sequence[str]) -> Iterator[str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps({"folder": folder, "modules": list(modules)}) + "\n")
            self.proc.stdin.flush()
        except OSError:
            self.proc.wait()
            raise self._failure(", ".join(modules)) from None
        for _ in modules:
            line = self.proc.stdout.readline().split()
            if len(line) != 2 or line[0] != "ok":
                raise self._failure(line[1] if len(line) == 2 else ", ".join(modules))
            yield line[1]

    def close(self) -> None:
        """Stop the process (every answer asked for has been read: nothing is left to do)."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.errors.close()


def _build(todo: Sequence[tuple], worker: CythonWorker, folder: str, jobs: int | None) -> None:
    """Cython (one process) feeding ``cc`` (``jobs`` at once) as each C file is ready."""
    targets = {module: target for _, _, module, target in todo}

    def cc(module: str, tmp: str) -> None:
        fd, part = tempfile.mkstemp(dir=folder, prefix=".build-", suffix=".so")
        os.close(fd)
        try:
            _cc_shard(module, tmp, part)
            os.replace(part, targets[module])
        finally:
            if os.path.exists(part):
                os.unlink(part)

    with tempfile.TemporaryDirectory(prefix="gxo-shard-") as tmp:
        for _, source, module, _ in todo:
            with open(os.path.join(tmp, module + ".py"), "w", encoding="utf-8") as fh:
                fh.write(source)
        with ThreadPoolExecutor(max_workers=max(1, jobs or os.cpu_count() or 1)) as pool:
            futures = []
            try:
                for module in worker.compile(tmp, list(targets)):
                    futures.append(pool.submit(cc, module, tmp))
            finally:
                wait(futures)  # no C compiler left running in a folder about to go
            for fut in futures:
                fut.result()


def _boundary(site: str) -> bool:
    return int(hashlib.sha256(site.encode("utf-8")).hexdigest()[:8], 16) % SHARD_TARGET == 0


def split(functions: Sequence[Any], sites: dict[str, str] | None = None, size: int = SHARD_SIZE) -> list[list[Any]]:
    """Cut ``functions`` into shards: after a function whose first place (``sites[name]``, else
    its name) hashes to a boundary, or at ``size`` functions."""
    out: list[list[Any]] = []
    cur: list[Any] = []
    for fn in functions:
        cur.append(fn)
        site = (sites or {}).get(fn.name, fn.name)
        if len(cur) >= size or _boundary(site):
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def native_functions(items: Sequence[Any], *, functions: Sequence[Any] | None = None,
                     everything: bool = False) -> tuple[list[Any], dict[str, str]]:
    """The functions that go native (the hot ones, or all) and each one's first place."""
    from gxo.compiler.codegen import functions_of

    fns = [fn for fn in (functions if functions is not None else functions_of(items)) if everything or fn.hot]
    site_of = {i.id: i.site or i.id for i in items}
    return fns, {fn.name: site_of[fn.ids[0]] for fn in fns}


def build_native(
    items: Sequence[Any],
    *,
    plan_code_sha256: str,
    jobs: int | None = None,
    cache: str | None = None,
    shard_size: int = SHARD_SIZE,
    everything: bool = False,
    functions: Sequence[Any] | None = None,
    cython: CythonWorker | None = None,
) -> NativeResult:
    """Compile the hot functions of ``items`` (the code generator's, in id order) into the
    native members; ``everything`` compiles every function.  ``functions``: the items'
    :func:`~gxo.compiler.codegen.functions_of`, when already made; ``cython``: a worker started
    earlier (it stays open: the caller closes it), else one is started for the shards to build."""
    from gxo.compiler.codegen import render_shard

    start = time.perf_counter()
    tc = toolchain()
    folder = cache or cache_dir()
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fns, sites = native_functions(items, functions=functions, everything=everything)
    chunks = split(fns, sites, shard_size)
    plans = []
    for chunk in chunks:
        source = render_shard(chunk)
        module = shard_module_name(source)
        plans.append((chunk, source, module, os.path.join(folder, _cache_key(source) + ".so")))
    todo = list({p[3]: p for p in plans if not os.path.exists(p[3])}.values())  # equal sources: one build
    if todo:
        worker = cython or CythonWorker()
        try:
            _build(todo, worker, folder, jobs)
        finally:
            if cython is None:
                worker.close()
    shards: list[bytes] = []
    entries = []
    for i, (chunk, _source, module, target) in enumerate(plans):
        with open(target, "rb") as fh:
            data = fh.read()
        shards.append(data)
        entries.append({
            "file": f"shard_{i:03d}.so",
            "module": module,
            "sha256": F.sha256_hex(data),
            "functions": [fn.name for fn in chunk],
        })
    index = F.canonical_bytes({
        "format": F.NATIVE_FORMAT,
        "format_version": F.INDEX_FORMAT_VERSION,
        "platform": tc["tag"],
        "cache_tag": sys.implementation.cache_tag,
        "plan_code_sha256": plan_code_sha256,
        "shards": entries,
    })
    return NativeResult(tc["tag"], index, shards, time.perf_counter() - start, len(todo), len(plans) - len(todo),
                        len(fns))
