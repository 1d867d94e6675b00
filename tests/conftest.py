"""Shared test options: ``--update-golden`` rewrites expected golden files instead of comparing."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite tests/golden expected files from the current output")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    update = bool(request.config.getoption("--update-golden"))
    if update and os.environ.get("CI"):
        pytest.fail("--update-golden refuses to run under CI: refresh goldens locally and review the diff")
    return update


@pytest.fixture(autouse=True)
def _state_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test's ``gxo exec`` keeps its run history under a folder of its own (the durable
    store defaults to ``$XDG_STATE_HOME/gxo``), never in the user's home."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
    monkeypatch.delenv("GXO_STATE_KEY", raising=False)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory):
    """A throwaway OpenSSH server on loopback, started once for the whole session (tests/sshd.py);
    skipped without ``sshd``, or failed under ``GXO_TEST_SERVICES=require``."""
    from sshd import start_sshd

    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()
