"""The helpers that find the tests' real peers skip, or fail under GXO_TEST_SERVICES=require."""

from __future__ import annotations

import socket

import pytest

from services import need_program, need_service, service_address


def test_address_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GXO_X_ADDR", "127.0.0.1:7")
    assert service_address("GXO_X_ADDR", "127.0.0.1:9") == ("127.0.0.1", 7)
    monkeypatch.delenv("GXO_X_ADDR")
    assert service_address("GXO_X_ADDR", "127.0.0.1:9") == ("127.0.0.1", 9)


def test_a_missing_peer_skips_or_fails_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("GXO_TEST_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not reachable"):
        need_service("nothing", "GXO_X_ADDR", f"127.0.0.1:{port}")
    with pytest.raises(pytest.skip.Exception, match="apt-get install no-such-package"):
        need_program("no-such-program-gxo", "no-such-package")
    monkeypatch.setenv("GXO_TEST_SERVICES", "require")
    with pytest.raises(pytest.fail.Exception, match="GXO_TEST_SERVICES=require"):
        need_service("nothing", "GXO_X_ADDR", f"127.0.0.1:{port}")


def test_a_running_peer_is_found() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        assert need_service("a listener", "GXO_X_ADDR", f"127.0.0.1:{port}") == ("127.0.0.1", port)
    assert need_program("sh", "dash").endswith("/sh")
