"""The request manager: HTTP requests received by ``http:listen`` wait here, by ``request_id``,
until ``http:respond`` answers them (checklist: the kernel's request manager).

One manager per run, made by the first module that asks for it (``RequestManager.of(ctx)``)
and closed when the run ends (the kernel's run-end cleanups): a request still waiting then is
answered ``503 Service Unavailable`` and its connection closed, so no client hangs on a run
that has stopped.  The number of waiting requests is bounded (``MAX_PENDING``): past it, a new
request is answered ``503`` at once instead of being queued without end.
"""

from __future__ import annotations

import secrets
from typing import Any, ClassVar

#: requests waiting for their http:respond at once, per run
MAX_PENDING = 10_000


class Pending:
    """One request waiting for its answer: whether its connection is kept alive, its writer,
    and the future its connection task waits on (set once the answer is written)."""

    __slots__ = ("keep", "writer", "done", "method")

    def __init__(self, keep: bool, writer: Any, done: Any, method: str) -> None:
        self.keep = keep
        self.writer = writer
        self.done = done
        self.method = method


class RequestManager:
    _runs: ClassVar[dict[str, RequestManager]] = {}

    __slots__ = ("run_id", "pending")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.pending: dict[str, Pending] = {}

    @classmethod
    def of(cls, ctx: Any) -> RequestManager:
        """The run's manager (made on first use, closed with the run)."""
        run_id = ctx.run_id
        mgr = cls._runs.get(run_id)
        if mgr is None:
            mgr = cls._runs[run_id] = cls(run_id)
            ctx.on_run_end(mgr.close)
        return mgr

    def add(self, pending: Pending) -> str | None:
        """Keep ``pending``; its id, or None when MAX_PENDING requests already wait."""
        if len(self.pending) >= MAX_PENDING:
            return None
        rid = secrets.token_hex(8)
        self.pending[rid] = pending
        return rid

    def take(self, rid: str) -> Pending | None:
        """The waiting request ``rid``, no longer waiting (None: unknown or already answered)."""
        return self.pending.pop(rid, None)

    async def close(self) -> None:
        """The run ended: every request still waiting is released (its connection task answers
        503 and closes)."""
        RequestManager._runs.pop(self.run_id, None)
        waiting, self.pending = self.pending, {}
        for p in waiting.values():
            if not p.done.done():
                p.done.set_result(None)


def response_bytes(status: int, headers: dict[str, str], body: bytes, keep: bool, head: bool = False) -> bytes:
    """An HTTP/1.1 response: the status line, ``headers`` (Content-Length and Connection are
    the server's), and ``body`` (not for a HEAD request)."""
    lines = [f"HTTP/1.1 {status} {reason_phrase(status)}"]
    has_type = False
    for k, v in headers.items():
        lk = k.lower()
        if lk in ("content-length", "connection", "transfer-encoding"):
            continue
        has_type = has_type or lk == "content-type"
        lines.append(f"{k}: {v}")
    if body and not has_type:
        lines.append("Content-Type: text/plain; charset=utf-8")
    lines.append(f"Content-Length: {len(body)}")
    if not keep:
        lines.append("Connection: close")
    head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
    return head_bytes if head else head_bytes + body


def reject(writer: Any, status: int, text: str) -> None:
    """Answer ``status`` with ``text`` and mark the connection to be closed."""
    if not writer.is_closing():
        writer.write(response_bytes(status, {}, (text + "\n").encode(), keep=False))


_PHRASES: dict[int, str] = {}


def reason_phrase(status: int) -> str:
    phrase = _PHRASES.get(status)
    if phrase is None:
        from http import HTTPStatus

        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        _PHRASES[status] = phrase
    return phrase


def release_unanswered(run_id: str, record: Any, failed: bool) -> None:
    """An event-driven instance that handled a request has ended: a request it left without an
    answer is answered 500 at once (its client does not wait for the response timeout)."""
    mgr = RequestManager._runs.get(run_id)
    rid = record.get("request_id") if mgr is not None and isinstance(record, dict) else None
    pending = mgr.take(rid) if isinstance(rid, str) else None
    if pending is None:
        return
    reject(pending.writer, 500,
           "the request's handler failed" if failed else "the request's handler gave no response")
    if not pending.done.done():
        pending.done.set_result(0)
