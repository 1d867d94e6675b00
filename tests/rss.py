"""Peak RSS of a command, measured right: a child forked from a large process (pytest, after
many tests) reports that process's peak as its own ``ru_maxrss``, since Linux keeps the high-water
mark of the address space it replaced at ``exec``.  So the command is started by a small Python
launcher (its own fresh process), and the launcher reports its child's ``ru_maxrss``."""

from __future__ import annotations

import sys
from pathlib import Path

#: the launcher: ``python -c LAUNCHER REPORT_FILE ADDRESS_SPACE ARGV...``; it limits the address
#: space (0: no limit), runs ARGV, writes the child's peak RSS in KiB to REPORT_FILE and exits
#: with the child's exit code (128 + N when a signal N ended it)
LAUNCHER = """\
import os, resource, sys
report, space, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
if space:
    resource.setrlimit(resource.RLIMIT_AS, (space, space))
pid = os.fork()
if pid == 0:
    try:
        os.execv(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(report, "w") as f:
    f.write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def launched(argv: list[str], report: Path, address_space: int = 0) -> list[str]:
    """``argv`` run through the launcher; its peak RSS lands in ``report`` (see ``peak_mb``)."""
    return [sys.executable, "-I", "-S", "-c", LAUNCHER, str(report), str(address_space), *map(str, argv)]


def peak_mb(report: Path) -> float:
    """The peak RSS in MB the launcher wrote (0.0 when it wrote none: the command never ended)."""
    try:
        return int(report.read_text()) / 1024
    except (OSError, ValueError):
        return 0.0

