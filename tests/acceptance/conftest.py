"""Every acceptance test runs with its own workspace root, and checks that GXO left nothing
in it: the workspace is removed on every exit path (success, failure, timeout, signals)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def ws_root(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path_factory.mktemp("ws") / "workspaces"
    monkeypatch.setenv("GXO_WORKSPACE_ROOT", str(root))
    yield root
    left = sorted(os.listdir(root)) if root.exists() else []
    assert left == [], f"workspace root not emptied: {left}"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A folder for plans, stub scripts and marker files (outside any workspace)."""
    d = tmp_path / "work"
    d.mkdir()
    return d
