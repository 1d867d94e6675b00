"""Run one command, SIGKILL it after a given time, and with it every process it started.

Usage: ``python killer.py SECONDS -- COMMAND...``.  This process makes itself a child subreaper
first, so that whatever the command's processes orphan is re-parented here and killed too (a
machine that loses power loses them all).  Prints the command's exit status, or ``killed``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from gxo.runtime.proctrack import become_subreaper


def descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    data = f.read()
            except OSError:
                continue
            parents[int(name)] = int(data[data.rfind(b")") + 2:].split()[1])
    found, todo = set(), [root]
    while todo:
        cur = todo.pop()
        for pid, ppid in parents.items():
            if ppid == cur and pid not in found:
                found.add(pid)
                todo.append(pid)
    return found


def main() -> None:
    delay = float(sys.argv[1])
    cmd = sys.argv[sys.argv.index("--") + 1:]
    assert become_subreaper(), "cannot become a child subreaper"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        rc = proc.wait(delay)
        print(rc)
        return
    except subprocess.TimeoutExpired:
        pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    me = os.getpid()
    for _ in range(3):  # orphans re-parent to us: kill until none is left
        left = descendants(me)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
    print("killed")


if __name__ == "__main__":
    main()
