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
    """One request waiting for its answer: the connection's h11 state, its writer, and the
    future its connection task waits on (set once the answer is written)."""

    __slots__ = ("conn", "writer", "done", "method")

    def __init__(self, conn: Any, writer: Any, done: Any, method: str) -> None:
        self.conn = conn
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


def reject(conn: Any, writer: Any, status: int, text: str) -> None:
    """Answer ``status`` with ``text`` on a connection whose request has no answer yet, and
    mark it to be closed; nothing when an answer was already started."""
    import h11

    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    body = (text + "\n").encode()
    try:
        data = conn.send(h11.Response(status_code=status, reason=reason_phrase(status), headers=[
            ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
            ("Connection", "close")]))
        data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    except h11.LocalProtocolError:
        return
    if not writer.is_closing():
        writer.write(data)


def reason_phrase(status: int) -> bytes:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def release_unanswered(run_id: str, record: Any, failed: bool) -> None:
    """An event-driven instance that handled a request has ended: a request it left without an
    answer is answered 500 at once (its client does not wait for the response timeout)."""
    mgr = RequestManager._runs.get(run_id)
    rid = record.get("request_id") if mgr is not None and isinstance(record, dict) else None
    pending = mgr.take(rid) if isinstance(rid, str) else None
    if pending is None:
        return
    reject(pending.conn, pending.writer, 500,
           "the request's handler failed" if failed else "the request's handler gave no response")
    if not pending.done.done():
        pending.done.set_result(0)
