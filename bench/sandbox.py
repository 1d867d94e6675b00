"""Spawn cost of the exec sandbox: a child started plain against one started through the
launcher (``gxo-sandbox-exec``) unconfined, with the ``default`` and the ``default-minimal``
profile.  Each figure is the best of 3 rounds of N spawns of ``/bin/true`` and waits, in µs per
spawn: ``posix_spawn`` (the bare cost; wall time, and CPU time of gxo plus its children, which a
busy machine inflates less) and asyncio's ``create_subprocess_exec`` with pipes and a
new session, as ``exec`` starts its children.  Also the time to build each filter with
libseccomp (pyseccomp imported first, not counted).  Linux only.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import time

N = 300


def _cpu() -> float:
    """CPU seconds of this process and its reaped children (user + system)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def posix_spawn_us(argv: list[str], fds: tuple[int, ...]) -> tuple[float, float]:
    """(wall, CPU) µs per spawn + wait, each the best of 3 rounds."""
    for fd in fds:
        os.set_inheritable(fd, True)
    wall = cpu = float("inf")
    for _ in range(3):
        t0, c0 = time.perf_counter(), _cpu()
        for _ in range(N):
            os.waitpid(os.posix_spawn(argv[0], argv, os.environ), 0)
        wall = min(wall, (time.perf_counter() - t0) / N * 1e6)
        cpu = min(cpu, (_cpu() - c0) / N * 1e6)
    for fd in fds:
        os.set_inheritable(fd, False)
    return wall, cpu


async def asyncio_us(argv: list[str], fds: tuple[int, ...]) -> float:
    async def one() -> None:
        proc = await asyncio.create_subprocess_exec(
            *argv, pass_fds=fds, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
        await proc.communicate()

    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(N):
            await one()
        best = min(best, (time.perf_counter() - t0) / N * 1e6)
    return best


def main() -> None:
    from gxo.runtime import sandbox
    from gxo.runtime.sandbox import bpf, profiles

    if sandbox.launcher_path() is None:
        sys.exit("bench/sandbox.py: the launcher gxo-sandbox-exec is not built")
    import pyseccomp  # noqa: F401 - imported before the filter timings

    for name in ("default", "default-minimal"):
        t0 = time.perf_counter()
        program = bpf.compile_bpf(profiles.builtin(name))
        print(f"  build the {name} filter: {(time.perf_counter() - t0) * 1e3:.2f} ms, "
              f"{len(program) // 8} BPF instructions")
    cases = [("plain", ["/bin/true"], ())]
    for label in ("unconfined", "default", "default-minimal"):
        launch = sandbox.launch("/bin/true", [], sandbox.sandbox_of({"seccomp": label}))
        cases.append((f"launcher, {label}", launch.argv, launch.pass_fds))
    print(f"  spawn + wait of /bin/true, best of 3 x {N}:")
    for label, argv, fds in cases:
        wall, cpu = posix_spawn_us(argv, fds)
        aio = asyncio.run(asyncio_us(argv, fds))
        print(f"    {label:28s} posix_spawn {wall:6.0f} µs wall {cpu:6.0f} µs CPU   asyncio {aio:6.0f} µs wall")


if __name__ == "__main__":
    main()
