"""Spawn cost of the exec sandbox: a child started plain against one started through the
launcher (``gxo-sandbox-exec``) unconfined, with the ``default`` and the ``default-minimal``
profile, and with namespaces (net; pid, net, ipc, uts, mount with a private /tmp and a
read-only path; as a user namespace), next to bubblewrap (``bwrap``) and util-linux's
``unshare`` making the same namespaces (Debian's packages; skipped when not installed).
Goal: a sandboxed ``exec true`` costs at most 5 ms over the plain child.

Each ``posix_spawn`` figure is the best of 5 interleaved rounds of N/3 spawns of ``/bin/true``
and waits, in µs per spawn (the bare cost; wall time, and CPU time of gxo plus its children,
which a busy machine inflates less); the asyncio figure is the best of 3 rounds of N through
``create_subprocess_exec`` with pipes and a new session, as ``exec`` starts its children.  Also
the time to build each filter with libseccomp (pyseccomp imported first, not counted) and to
make and remove a child's cgroups with limits.  Linux only.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import time

N = 300
ROUNDS = 5
GOAL_MS = 5.0


def _cpu() -> float:
    """CPU seconds of this process and its reaped children (user + system)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def posix_spawn_us(argv: list[str], fds: tuple[int, ...], n: int) -> tuple[float, float]:
    """(wall, CPU) µs per spawn + wait over ``n`` spawns; OSError when the child fails."""
    for fd in fds:
        os.set_inheritable(fd, True)
    try:
        t0, c0 = time.perf_counter(), _cpu()
        for _ in range(n):
            _, status = os.waitpid(os.posix_spawn(argv[0], argv, os.environ), 0)
            if status:
                raise OSError(f"{argv[0]} ended with wait status {status}")
        return (time.perf_counter() - t0) / n * 1e6, (_cpu() - c0) / n * 1e6
    finally:
        for fd in fds:
            os.set_inheritable(fd, False)


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
    import shutil

    from gxo.runtime.sandbox.limits import Limits, refusals

    resources = {"memory_bytes": 256 << 20, "pids_max": 100, "cpu_quota_us": 50000}
    if not refusals(resources):
        t0 = time.perf_counter()
        for i in range(50):
            Limits.make(resources, "bench").close()
        print(f"  cgroup limits (memory, pids, cpu): make + close {(time.perf_counter() - t0) / 50 * 1e3:.2f} ms")
    cases = [("plain", ["/bin/true"], ())]
    for label in ("unconfined", "default", "default-minimal"):
        launch = sandbox.launch("/bin/true", [], sandbox.sandbox_of({"seccomp": label}))
        cases.append((f"gxo, seccomp {label}", launch.argv, launch.pass_fds))
    all_ns = {"pid": True, "net": True, "ipc": True, "uts": True, "mount": True}
    for label, sc in (("gxo, default + net", {"namespaces": {"net": True}}),
                      ("gxo, default + pid,net,ipc,uts,mount", {"namespaces": all_ns, "read_only_paths": ["/etc"]}),
                      ("gxo, same + user namespace", {"namespaces": {**all_ns, "user": True},
                                                      "read_only_paths": ["/etc"]})):
        launch = sandbox.launch("/bin/true", [], sandbox.sandbox_of(sc), cwd="/")
        cases.append((label, launch.argv, launch.pass_fds))
    bwrap, unshare = shutil.which("bwrap"), shutil.which("unshare")
    if bwrap:
        cases.append(("bwrap, net", [bwrap, "--bind", "/", "/", "--unshare-net", "/bin/true"], ()))
        cases.append(("bwrap, pid,net,ipc,uts,mount", [
            bwrap, "--bind", "/", "/", "--ro-bind", "/etc", "/etc", "--tmpfs", "/tmp", "--proc", "/proc",
            "--dev", "/dev", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "/bin/true"], ()))
    else:
        print("  bwrap: not installed (apt-get install bubblewrap)")
    if unshare:
        cases.append(("unshare, net", [unshare, "--net", "/bin/true"], ()))
        cases.append(("unshare, pid,net,ipc,uts,mount", [unshare, "--pid", "--fork", "--mount-proc", "--net",
                                                         "--ipc", "--uts", "/bin/true"], ()))
    # rounds interleave the cases, so a burst of load elsewhere hits all of them alike
    print(f"  spawn + wait of /bin/true, best of {ROUNDS} interleaved rounds x {N // 3}:")
    best: dict[str, list[float]] = {}
    runnable = []
    for label, argv, fds in cases:
        try:
            posix_spawn_us(argv, fds, 1)
            runnable.append((label, argv, fds))
        except OSError as exc:
            print(f"    {label:38s} cannot run: {exc}")
    for _ in range(ROUNDS):
        for label, argv, fds in runnable:
            wall, cpu = posix_spawn_us(argv, fds, N // 3)
            b = best.setdefault(label, [wall, cpu])
            b[0], b[1] = min(b[0], wall), min(b[1], cpu)
    plain_wall, plain_cpu = best["plain"]
    for label, argv, fds in runnable:
        wall, cpu = best[label]
        aio = asyncio.run(asyncio_us(argv, fds))
        print(f"    {label:38s} posix_spawn {wall:6.0f} µs wall {cpu:6.0f} µs CPU   asyncio {aio:6.0f} µs wall"
              f"   over plain: {(wall - plain_wall) / 1000:+.2f} ms wall, {(cpu - plain_cpu) / 1000:+.2f} ms CPU")
    print(f"  goal: at most {GOAL_MS:.0f} ms over the plain child")


if __name__ == "__main__":
    main()
