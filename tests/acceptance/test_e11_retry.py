"""E11: retry with back-off against a real HTTP server on loopback. Two failures then a
success → Completed after exactly three calls, the waits growing (100 ms, then 200 ms, ± 10 %);
always failing → Failed after exactly three calls, and the run fails."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest

from acceptance.harness import PLAYBOOKS, HttpMock, build, gxo_exec


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(PLAYBOOKS / "e11_retry.yaml", tmp_path_factory.mktemp("e11"))


def _gaps(mock: HttpMock) -> list[float]:
    times = [c[0] for c in mock.calls]
    return [b - a for a, b in pairwise(times)]


def _check_waits(run) -> None:
    retries = run.of("WorkloadRetry", "call_flaky_api")
    assert [(r["attempt"], r["attempts"]) for r in retries] == [(1, 3), (2, 3)]
    w1, w2 = (r["wait_s"] for r in retries)
    assert 0.089 <= w1 <= 0.111 and 0.179 <= w2 <= 0.221 and w2 > w1
    assert all("status 500" in r["error"] for r in retries)


def test_fails_twice_then_succeeds(plan: Path) -> None:
    with HttpMock([500, 500, 200], body='{"value": 42}') as mock:
        run = gxo_exec(plan, "--var", f"url={mock.url}")
    assert run.rc == 0, run.explain()
    assert run.statuses == {"call_flaky_api": "Completed", "use_response": "Completed"}
    assert [(m, p) for _, m, p, _ in mock.calls] == [("GET", "/data")] * 3
    _check_waits(run)
    g1, g2 = _gaps(mock)
    assert g1 >= 0.089 and g2 >= 0.179  # the server saw the waits (upper bounds left loose)
    assert g1 < 5 and g2 < 5
    assert run.summary("call_flaky_api")["status_code"] == 200
    assert run.summary("use_response") == {"got": {"value": 42}}


def test_always_failing_fails_after_exactly_three_calls(plan: Path) -> None:
    with HttpMock([500]) as mock:
        run = gxo_exec(plan, "--var", f"url={mock.url}")
    assert run.rc == 1, run.explain()
    assert len(mock.calls) == 3
    _check_waits(run)
    assert run.statuses == {"call_flaky_api": "Failed"}
    assert run.status("use_response") == "Pending" and not run.started("use_response")
    assert "status 500" in run.end("call_flaky_api")["error"]
    assert run.playbook_end["failed"] == 1 and run.playbook_end["pending"] == 1


def test_plain_output_shows_each_retry(plan: Path) -> None:
    with HttpMock([500, 503, 200]) as mock:
        run = gxo_exec(plan, "--var", f"url={mock.url}", json_events=False)
    assert run.rc == 0, run.explain()
    assert len(mock.calls) == 3
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("retry")]
    assert len(lines) == 2
    assert "attempt 1/3" in lines[0] and "status 500" in lines[0]
    assert "attempt 2/3" in lines[1] and "status 503" in lines[1]
