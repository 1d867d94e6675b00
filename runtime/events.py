"""The event bus: every event of a run goes through ``Events.emit`` to its sinks.

Sinks are plain callables taking an event dict; a sink with a ``types`` attribute (a set of
event types) gets only those.  Every string of every event is redacted (tracked secrets in
their encoded forms, then keyword redaction) before any sink sees it, so no output that GXO
writes can carry a secret.  Emitting an event no sink wants costs one check: ``wants(type)``
lets a caller skip building its payload too.
"""

from __future__ import annotations

import time
from typing import Any, Callable

Sink = Callable[[dict[str, Any]], None]


class _Every(frozenset):  # type: ignore[type-arg]
    """Every event type (a sink without ``types`` takes them all)."""

    def __contains__(self, item: object) -> bool:
        return True


EVERY: frozenset[str] = _Every()


class Events:
    def __init__(self, playbook: str, redact: Callable[[Any], Any]) -> None:
        self.playbook = playbook
        self.redact = redact
        self.sinks: list[Sink] = []
        self._routes: dict[str, list[Sink]] = {}  # event type -> the sinks that want it
        self._all: list[Sink] = []  # sinks that want every type
        #: the event types some sink takes (``EVERY`` once one takes all): a hot path tests
        #: ``type in events.wanted`` before it builds an event's payload
        self.wanted: frozenset[str] = frozenset()

    def add(self, sink: Sink) -> None:
        self.sinks.append(sink)
        types = getattr(sink, "types", None)
        if types is None:
            self._all.append(sink)
            for route in self._routes.values():
                route.append(sink)
            self.wanted = EVERY
        else:
            for t in types:
                self._routes.setdefault(t, list(self._all)).append(sink)
            if self.wanted is not EVERY:
                self.wanted = self.wanted | frozenset(types)

    def wants(self, type_: str) -> bool:
        """Whether any sink takes events of ``type_``."""
        return type_ in self.wanted

    def emit(self, type_: str, **payload: Any) -> None:
        sinks = self._routes.get(type_, self._all)
        if not sinks:
            return
        event = {"type": type_, "timestamp": time.time(), "playbook_name": self.playbook, **payload}
        event = self.redact(event)
        for sink in sinks:
            sink(event)

    def logger(self, workload: str) -> "EventLogger":
        return EventLogger(self, workload)


class LevelLogger:
    """The logger interface modules use (``debug``/``info``/``warning``/``error``), on top of
    one ``_log(level, msg, attrs)`` that a subclass gives."""

    __slots__ = ()

    def _log(self, level: str, msg: str, attrs: dict[str, Any]) -> None:
        raise NotImplementedError

    def debug(self, msg: str, **attrs: Any) -> None:
        self._log("DEBUG", msg, attrs)

    def info(self, msg: str, **attrs: Any) -> None:
        self._log("INFO", msg, attrs)

    def warning(self, msg: str, **attrs: Any) -> None:
        self._log("WARN", msg, attrs)

    def error(self, msg: str, **attrs: Any) -> None:
        self._log("ERROR", msg, attrs)


class EventLogger(LevelLogger):
    """The logger a module gets: its records are ``Log`` events bound to the workload."""

    __slots__ = ("_events", "_workload")

    def __init__(self, events: Events, workload: str) -> None:
        self._events = events
        self._workload = workload

    def _log(self, level: str, msg: str, attrs: dict[str, Any]) -> None:
        self._events.emit("Log", workload=self._workload, level=level, message=msg, **attrs)
