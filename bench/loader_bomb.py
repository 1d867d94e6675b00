"""The 457-byte "billion laughs" merge-key/alias bomb against the loader.

Goal: rejected (``yaml-limit``) in < 100 ms and < 50 MB RSS above a process that has already
imported the compiler.  Baseline in the same run: loading a normal 200-workload playbook,
so the ratio shows the bomb costs no more than ordinary work.
"""

from __future__ import annotations

import resource
import time


def bomb() -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    prev = "a"
    for name in "bcdefghi":
        text += f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]\n"
        prev = name
    return text


def merge_bomb() -> str:
    """The merge-key form: each level merges nine copies of the level below."""
    text = "a: &a {k0: lol, k1: lol, k2: lol, k3: lol, k4: lol, k5: lol, k6: lol, k7: lol, k8: lol}\n"
    prev = "a"
    for i, name in enumerate("bcdefghi"):
        text += f"{name}: &{name} {{<<: *{prev}, m{i}: [" + ",".join([f"*{prev}"] * 9) + "]}\n"
        prev = name
    return text


def normal(n: int = 200) -> str:
    out = ["name: n", 'schemaVersion: "1.0.0"', "workloads:"]
    for i in range(n):
        out += [f"  - name: w{i}", "    lifecycle: {policy: run_once}",
                "    process: {module: exec, params: {command: echo, args: ['{{ .x }}']}}"]
    return "\n".join(out) + "\n"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_load(text: str) -> tuple[float, list[str]]:
    from gxo.compiler.diagnostics import Diagnostics
    from gxo.compiler.loader import load_playbook

    d = Diagnostics()
    t0 = time.perf_counter()
    load_playbook(text.encode(), "bomb.yaml", d)
    return time.perf_counter() - t0, [x.code for x in d]


def main() -> None:
    import gxo.compiler.pipeline  # noqa: F401 - the baseline process has the compiler loaded

    timed_load(normal(5))  # warm up
    base, _ = timed_load(normal())
    for label, text in (("alias bomb", bomb()), ("merge-key bomb", merge_bomb())):
        before = rss_mb()
        dt, codes = timed_load(text)
        grown = rss_mb() - before
        assert codes == ["yaml-limit"], codes
        print(f"{label}: {len(text.encode())} bytes rejected ({codes[0]}) in {dt * 1000:.2f} ms (goal < 100 ms), "
              f"peak RSS growth {grown:.1f} MB (goal < 50 MB)")
        print(f"  baseline: a 200-workload playbook loads in {base * 1000:.2f} ms; ratio bomb/baseline {dt / base:.2f}x")


if __name__ == "__main__":
    main()
