"""The run-history store: the interface (``base``), the in-memory backend (``memory``), the
durable SQLite backend (``sqlite``) and sealing at rest (``sealing``); ``docs/state.md``.

Importing this package loads only ``base``; the backends load when first named
(``from gxo.runtime.store import open_store`` loads ``sqlite3``, never ``cryptography``).
"""

from __future__ import annotations

import importlib
from typing import Any

from gxo.runtime.store.base import (
    INTERRUPTED,
    RESUMED,
    RUNNING,
    RunRecord,
    RunStore,
    RunSummary,
    StoreError,
    StoreRefused,
    UnknownRun,
    WorkloadRecord,
    WorkloadRow,
)

__all__ = [
    "INTERRUPTED",
    "RESUMED",
    "RUNNING",
    "MemoryStore",
    "RunRecord",
    "RunStore",
    "RunSummary",
    "SqliteStore",
    "StoreError",
    "StoreRefused",
    "UnknownRun",
    "WorkloadRecord",
    "WorkloadRow",
    "database_path",
    "default_state_dir",
    "list_databases",
    "new_run_id",
    "open_store",
    "resolve_key",
]

_LAZY = {
    "MemoryStore": "memory",
    "SqliteStore": "sqlite",
    "database_path": "sqlite",
    "default_state_dir": "sqlite",
    "list_databases": "sqlite",
    "open_store": "sqlite",
    "resolve_key": "sealing",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def new_run_id(started: float) -> str:
    """A run id: the UTC start time to the second and 6 random hex digits
    (``20261206-065512-a3f9c1``), so ids sort by start and are short enough to type."""
    import os
    import time

    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(started)) + "-" + os.urandom(3).hex()
