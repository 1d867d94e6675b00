"""A stand-in for ``ctx.logger`` in tests that call a module's ``perform`` directly: it keeps
every record (level, message, fields) for the test to read."""

from __future__ import annotations


class Log:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict]] = []

    def debug(self, msg, **a): self.records.append(("debug", msg, a))  # noqa: E704
    def info(self, msg, **a): self.records.append(("info", msg, a))  # noqa: E704
    def warning(self, msg, **a): self.records.append(("warning", msg, a))  # noqa: E704
    def error(self, msg, **a): self.records.append(("error", msg, a))  # noqa: E704

    def warnings(self) -> list[str]:
        return [msg for level, msg, _ in self.records if level == "warning"]
