"""Phase ``native``: the plan's expression functions compiled by Cython into cached shards.

design.md section 7: one compile unit of 1,000 functions costs minutes and gigabytes, so the
functions are split into shards of at most ``SHARD_SIZE``, each rendered as its own module by
the code generator, compiled at ``-O1`` in parallel, and cached under
``$XDG_CACHE_HOME/gxo/native/`` by the digest of its source plus the Cython, C compiler and
interpreter versions: rebuilding after a one-line edit recompiles one shard.  A shard's module
name is derived from its source digest (``gxo_shard_<hex20>``), so identical sources share one
cache entry and two plans' shards never clash in one process.
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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from gxo.runtime import planfile as F

SHARD_SIZE = 64
OPT_FLAGS = ("-O1",)
CACHE_LAYOUT = "1"  # bump when the cache key's meaning changes


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
    return {
        "layout": CACHE_LAYOUT,
        "cython": cython_version,
        "cc": cc_version,
        "python": sys.version,
        "tag": F.platform_tag(),
        "flags": " ".join(OPT_FLAGS),
    }


def shard_module_name(source: str) -> str:
    return "gxo_shard_" + hashlib.sha256(source.encode("utf-8")).hexdigest()[:20]


def _cache_key(source: str) -> str:
    blob = json.dumps({"source": hashlib.sha256(source.encode("utf-8")).hexdigest(), **toolchain()}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _tail(text: str, n: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def compile_shard(source: str, module: str, out_path: str) -> None:
    """Cython + cc of one shard module into ``out_path`` (a shared library)."""
    with tempfile.TemporaryDirectory(prefix="gxo-shard-") as tmp:
        py = f"{module}.py"
        with open(os.path.join(tmp, py), "w", encoding="utf-8") as fh:
            fh.write(source)
        cy = subprocess.run(
            [sys.executable, "-m", "cython", "-3", "--fast-fail", "-o", f"{module}.c", py],
            cwd=tmp, capture_output=True, text=True, check=False,
        )
        if cy.returncode != 0:
            raise NativeBuildError(f"cython failed on {module}:\n{_tail(cy.stderr + cy.stdout)}")
        include = sysconfig.get_paths()["include"]
        so = os.path.join(tmp, module + ".so")
        cc = subprocess.run(
            [*_cc(), "-shared", "-fPIC", *OPT_FLAGS, "-fno-strict-aliasing", "-DNDEBUG", "-w",
             f"-I{include}", f"{module}.c", "-o", so],
            cwd=tmp, capture_output=True, text=True, check=False,
        )
        if cc.returncode != 0:
            raise NativeBuildError(f"the C compiler failed on {module}:\n{_tail(cc.stderr + cc.stdout)}")
        shutil.copyfile(so, out_path)


def split(items: Sequence[Any], size: int = SHARD_SIZE) -> list[list[Any]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def build_native(
    items: Sequence[Any],
    *,
    header: str,
    plan_code_sha256: str,
    render: Callable[..., str] | None = None,
    jobs: int | None = None,
    cache: str | None = None,
    shard_size: int = SHARD_SIZE,
) -> NativeResult:
    """Compile ``items`` (the code generator's, in id order) into the native members."""
    if render is None:
        from gxo.compiler.codegen import render_plan_code as render
    start = time.perf_counter()
    tc = toolchain()
    folder = cache or cache_dir()
    os.makedirs(folder, mode=0o700, exist_ok=True)
    chunks = split(items, shard_size)
    plans = []
    for i, chunk in enumerate(chunks):
        source = render(chunk, header=header + f"Native shard {i:03d}.\n")
        module = shard_module_name(source)
        plans.append((chunk, source, module, os.path.join(folder, _cache_key(source) + ".so")))
    todo = [p for p in plans if not os.path.exists(p[3])]

    def work(p: tuple) -> None:
        _, source, module, target = p
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".build-", suffix=".so")
        os.close(fd)
        try:
            compile_shard(source, module, tmp)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    if todo:
        with ThreadPoolExecutor(max_workers=max(1, jobs or os.cpu_count() or 1)) as pool:
            for fut in [pool.submit(work, p) for p in todo]:
                fut.result()
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
            "functions": [it.id for it in chunk],
        })
    index = F.canonical_bytes({
        "format": F.NATIVE_FORMAT,
        "format_version": F.INDEX_FORMAT_VERSION,
        "platform": tc["tag"],
        "cache_tag": sys.implementation.cache_tag,
        "plan_code_sha256": plan_code_sha256,
        "shards": entries,
    })
    return NativeResult(tc["tag"], index, shards, time.perf_counter() - start, len(todo), len(plans) - len(todo))
