"""Files a user names on the command line: read only regular files of a bounded size (checked
before a byte is read), and write an output only to a new path or over a regular file.

Reading opens with ``O_NONBLOCK`` and checks the open file (``fstat``): a FIFO or a device is
refused before it can block or stream forever, and a file over its limit before it is read.
Writing goes to a temporary file beside the target, then replaces it; a device, a FIFO, a
socket, a directory or a symbolic link at the target (``lstat``: a link is not followed) is
refused, so ``-o /dev/full`` never replaces the device.  The CLIs turn ``FileProblem`` into a
usage error (exit 2).  Imports nothing heavy: ``gxo exec`` reads its ``--vars-file`` here.
"""

from __future__ import annotations

import os
import stat


class FileProblem(Exception):
    """A named file cannot be used; the message names the path and the fix (one line);
    ``reason`` says the same without the path, for a caller that names the file itself."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class FileTooLarge(FileProblem):
    """A file over its size limit (found from its size, before reading it)."""

    def __init__(self, message: str, size: int, limit: int, reason: str | None = None) -> None:
        super().__init__(message, reason)
        self.size = size
        self.limit = limit


def kind_of(mode: int) -> str:
    """What a file of ``mode`` is, in words (``a FIFO (named pipe)``, ``a directory``...)."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


def _open_regular(path: str, what: str) -> tuple[int, os.stat_result]:
    """An open descriptor of the regular file ``path`` and its status; never blocks (a FIFO is
    opened with ``O_NONBLOCK``, then refused with whatever else is not a regular file)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _unreadable(path, exc) from None
    try:
        st = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise _unreadable(path, exc) from None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        fix = "name a file in it" if stat.S_ISDIR(st.st_mode) else "save the data to a file first"
        reason = f"{kind_of(st.st_mode)}, not a regular file: name a regular {what} ({fix})"
        raise FileProblem(f"'{path}' is {reason}", reason)
    return fd, st


def read_limited(path: str, limit: int, *, what: str = "file") -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    Raises ``FileProblem`` for a path that cannot be opened or is not a regular file (a FIFO
    is opened without blocking and refused), ``FileTooLarge`` for a file over ``limit`` bytes
    (before reading it, and again if it grows while being read)."""
    fd, st = _open_regular(path, what)
    try:
        if st.st_size > limit:
            raise too_large(path, st.st_size, limit, what)
        chunks = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise _unreadable(path, exc) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise too_large(path, len(data), limit, what)
    return data


def read_head(path: str, n: int, *, what: str = "file") -> bytes:
    """The first ``n`` bytes of the regular file ``path`` (``FileProblem`` as ``read_limited``)."""
    fd, _ = _open_regular(path, what)
    try:
        return os.pread(fd, n, 0)
    except OSError as exc:
        raise _unreadable(path, exc) from None
    finally:
        os.close(fd)


def too_large(path: str, size: int, limit: int, what: str) -> FileTooLarge:
    reason = f"{size:,} bytes; a {what} is limited to {limit:,} bytes"
    return FileTooLarge(f"'{path}' is {reason}", size, limit, reason)


def _unreadable(path: str, exc: OSError) -> FileProblem:
    reason = f"cannot read: {exc.strerror or exc}"
    return FileProblem(f"cannot read '{path}': {exc.strerror or exc}", reason)


def check_output(path: str, option: str = "-o") -> None:
    """Refuse an output path that is not a new path or a regular file (``lstat``: a symbolic
    link counts as a link, not as what it points to)."""
    if not path:
        raise FileProblem(f"{option}: an empty file name: name the file to write")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise FileProblem(f"{option} '{path}': {exc.strerror or exc}") from None
    if stat.S_ISREG(st.st_mode):
        return
    fix = ("name the link's target itself, or a new path" if stat.S_ISLNK(st.st_mode)
           else "name a new path or a regular file to replace")
    raise FileProblem(f"{option} '{path}' is {kind_of(st.st_mode)}: only a new file or a regular file is "
                      f"written (replaced whole); {fix}")


def write_output(path: str, data: bytes, *, option: str = "-o", mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` whole: into a temporary file beside it, then renamed over it
    (a reader never sees half a file).  Raises ``FileProblem`` for a target that is not a new
    path or a regular file, ``OSError`` when the writing fails."""
    import tempfile

    check_output(path, option)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".gxo-", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
        check_output(path, option)  # again, just before the rename: still a new path or a file
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
