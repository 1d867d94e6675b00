"""Run a playbook on the real kernel in this process, with a fake clock the test moves."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

from gxo.runtime.events import Events
from gxo.runtime.kernel import Kernel, RunOptions
from gxo.runtime.lifecycles.clock import FakeClock  # noqa: F401 - tests import it from here
from gxo.runtime.state import StateStore
from gxo.runtime.workspace import Workspace


def compile_playbook(path: Path) -> Any:
    from gxo.compiler.inmemory import compile_in_memory

    out = io.StringIO()
    loaded = compile_in_memory(str(path), out)
    assert loaded is not None and not isinstance(loaded, type), out.getvalue()
    return loaded


class Running:
    """A kernel running as a task, its events collected."""

    def __init__(self, path: Path, clock: FakeClock | None = None, **opts: Any) -> None:
        self.loaded = compile_playbook(path)
        self.clock = clock or FakeClock()
        self.events: list[dict[str, Any]] = []
        from gxo.runtime.run import make_secrets

        secrets, tracker = make_secrets()
        self.tracker = tracker
        events = Events(self.loaded.plan.name, tracker.redact_value)
        events.add(self.events.append)
        self.workspace = Workspace.create()
        self.kernel = Kernel(self.loaded.plan, self.loaded.functions, state=StateStore(), workspace=self.workspace,
                             secrets=secrets, tracker=tracker, events=events,
                             options=RunOptions(clock=self.clock, plan_dir=str(path.parent), **opts))
        self.task: asyncio.Task[Any] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.kernel.run())

    def status(self, name: str) -> str:
        return self.kernel.results[name].status

    def of(self, type_: str, workload: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == type_ and (workload is None or e.get("workload") == workload)]

    async def stop(self, reason: str = "run interrupted by SIGTERM") -> Any:
        assert self.task is not None
        assert self.kernel.react.lc.graceful_stop(reason)
        return await asyncio.wait_for(self.task, 30)

    async def wait_ended(self, timeout: float = 30) -> Any:
        assert self.task is not None
        return await asyncio.wait_for(self.task, timeout)

    def close(self) -> None:
        self.workspace.remove()


async def wait_for(pred: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.005)
