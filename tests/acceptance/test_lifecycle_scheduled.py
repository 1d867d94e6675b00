"""scheduled on the real kernel, real child processes, a fake clock (E15)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

from acceptance.inproc import Running

BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=BERLIN).timestamp()


def playbook(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "pb.yaml"
    p.write_text('name: sched\nschemaVersion: "1.0.0"\nworkloads:\n' + body)
    return p


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_e15_fires_at_0230_in_its_timezone_once_a_day_and_never_at_start(tmp_path, monkeypatch):
    from acceptance.inproc import FakeClock

    monkeypatch.setenv("db_backup_password", "s3cr3t-pw-123")
    log = tmp_path / "backups"
    pb = playbook(tmp_path, f"""\
  - name: nightly_database_backup
    lifecycle: {{policy: scheduled, cron: "30 2 * * *", timezone: Europe/Berlin}}
    register: backup
    process:
      module: exec
      params:
        command: sh
        args: ["-c", "echo ran-with-$PG_PASSWORD >> {log}; echo $PG_PASSWORD"]
        environment: ["PG_PASSWORD={{{{ secret 'db_backup_password' }}}}"]
""")

    async def main():
        r = Running(pb, clock=FakeClock(at("2026-12-07T02:29:59")))
        r.start()
        await r.clock.wait_for_sleepers(1)
        assert not log.exists()  # nothing at start
        first = r.of("LifecycleUpdate", "nightly_database_backup")[-1]["next_fire"]
        await r.clock.advance(1)  # 02:30:00
        await asyncio.sleep(0)
        await r.clock.wait_for_sleepers(1)
        for _ in range(200):
            if log.exists():
                break
            await asyncio.sleep(0.01)
        once = log.read_text()
        await r.clock.advance(24 * 3600 - 1)  # 02:29:59 the next day: not yet
        await asyncio.sleep(0.05)
        not_yet = log.read_text()
        await r.clock.advance(1)
        for _ in range(200):
            if log.read_text().count("\n") == 2:
                break
            await asyncio.sleep(0.01)
        await r.clock.wait_for_sleepers(1)
        second = r.of("LifecycleUpdate", "nightly_database_backup")[-1]["next_fire"]
        registered = r.kernel.state.get("backup")
        report = await r.stop()
        r.close()
        return r, first, once, not_yet, second, registered, report

    r, first, once, not_yet, second, registered, report = run(main())
    assert first == at("2026-12-07T02:30:00")
    assert once == "ran-with-s3cr3t-pw-123\n"  # the script sees the secret
    assert not_yet == once
    assert second == at("2026-12-09T02:30:00")
    assert registered["stdout"] == "[REDACTED]"  # never the secret in the state
    assert "s3cr3t-pw-123" not in json.dumps(r.events)
    assert report.results["nightly_database_backup"].status == "Completed"


def test_overlap_skip_counts_a_tick_that_meets_a_running_instance(tmp_path):
    from acceptance.inproc import FakeClock, wait_for

    gate = tmp_path / "gate"
    pb = playbook(tmp_path, f"""\
  - name: slow
    lifecycle: {{policy: scheduled, cron: "@every 10s"}}
    process:
      module: exec
      params: {{command: sh, args: ["-c", "while [ ! -e {gate} ]; do sleep 0.02; done"]}}
""")

    async def main():
        r = Running(pb, clock=FakeClock())
        r.start()
        await r.clock.wait_for_sleepers(1)
        await r.clock.advance(10)  # fires; the instance waits for the gate
        await r.clock.wait_for_sleepers(1)
        await r.clock.advance(10)  # fires while it runs: skipped
        await r.clock.wait_for_sleepers(1)
        info = r.kernel.react.lc.info["slow"]
        skipped_then = info["skipped"]
        gate.write_text("go")
        await wait_for(lambda: r.kernel.react.lc.info["slow"].get("instances_ok") == 1)
        report = await r.stop()
        r.close()
        return skipped_then, report

    skipped, report = run(main())
    assert skipped == 1
    assert not report.failed
