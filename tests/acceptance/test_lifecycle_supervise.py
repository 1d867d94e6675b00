"""supervise on the real kernel, real child processes, a fake clock (E13, E17's cadence)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from acceptance.inproc import Running, wait_for


def playbook(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "pb.yaml"
    p.write_text('name: sup\nschemaVersion: "1.0.0"\nworkloads:\n' + body)
    return p


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_backoff_doubles_and_the_start_limit_fails_the_workload(tmp_path):
    counter = tmp_path / "count"
    pb = playbook(tmp_path, f"""\
  - name: web
    lifecycle:
      policy: supervise
      restart: on_failure
      backoff: {{base: 1s, cap: 60s, jitter: 0, max_restarts: 3, restart_window: 10m}}
    process:
      module: exec
      params: {{command: sh, args: ["-c", "echo x >> {counter}; exit 1"]}}
""")

    async def main():
        r = Running(pb)
        r.start()
        for _ in range(3):
            await r.clock.wait_for_sleepers(1)
            await r.clock.advance(r.clock.sleeps[-1])
        report = await r.wait_ended()
        r.close()
        return r, report

    r, report = run(main())
    assert r.clock.sleeps == [1.0, 2.0, 4.0]
    assert counter.read_text().count("x") == 4  # the first run and three restarts
    res = report.results["web"]
    assert res.status == "Failed"
    assert "start limit reached: 3 restart(s) within 10m" in res.reason
    assert "exited with code 1" in res.reason
    assert report.halted_by == "web"  # a start limit halts the run like any failure
    updates = r.of("LifecycleUpdate", "web")
    assert [u["restarts"] for u in updates][-1] == 3
    assert updates[0]["last_exit"].startswith("command sh exited with code 1")


def test_a_clean_exit_under_on_failure_is_not_restarted(tmp_path):
    counter = tmp_path / "count"
    pb = playbook(tmp_path, f"""\
  - name: web
    lifecycle: {{policy: supervise}}
    process:
      module: exec
      params: {{command: sh, args: ["-c", "echo x >> {counter}; exit 0"]}}
  - name: after
    lifecycle: {{policy: run_once}}
    needs: [web]
    process: {{module: control:identity, params: {{value: 1}}}}
""")

    async def main():
        r = Running(pb)
        r.start()
        report = await r.wait_ended()
        r.close()
        return r, report

    r, report = run(main())
    assert r.clock.sleeps == []
    assert counter.read_text() == "x\n"
    assert report.results["web"].status == "Completed"
    assert report.results["after"].status == "Completed"


@pytest.mark.parametrize("restart, runs", [("always", 3), ("never", 1)])
def test_always_restarts_after_a_clean_exit_and_never_does_not(tmp_path, restart, runs):
    counter = tmp_path / "count"
    pb = playbook(tmp_path, f"""\
  - name: job
    lifecycle: {{policy: supervise, restart: {restart}, backoff: {{jitter: 0}}}}
    process:
      module: exec
      params: {{command: sh, args: ["-c", "echo x >> {counter}"]}}
""")

    async def main():
        r = Running(pb)
        r.start()
        if restart == "always":
            for _ in range(2):
                await r.clock.wait_for_sleepers(1)
                await r.clock.advance(r.clock.sleeps[-1])
            await r.clock.wait_for_sleepers(1)
            report = await r.stop()
        else:
            report = await r.wait_ended()
        r.close()
        return report

    report = run(main())
    assert counter.read_text().count("x") == runs
    assert report.results["job"].status == "Completed"
    assert not report.failed


def test_a_graceful_stop_terminates_the_child_and_completes(tmp_path):
    pidfile = tmp_path / "pid"
    pb = playbook(tmp_path, f"""\
  - name: server
    lifecycle: {{policy: supervise, restart: always}}
    process:
      module: exec
      params: {{command: sh, args: ["-c", "echo $$ > {pidfile}; exec sleep 300"]}}
""")

    async def main():
        r = Running(pb)
        r.start()
        await wait_for(lambda: pidfile.exists() and pidfile.read_text().strip())
        pid = int(pidfile.read_text())
        report = await r.stop()
        r.close()
        return pid, report, r

    pid, report, r = run(main())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert report.results["server"].status == "Completed"
    assert report.results["server"].reason == "stopped: run interrupted by SIGTERM"
    assert not report.failed
    end = r.of("PlaybookEnd")[-1]
    assert end["status"] == "Completed" and end["error_message"] is None


def test_e17_a_supervised_reconciler_reverts_drift_within_one_interval(tmp_path):
    """E17: filesystem:manage under supervise passes again every interval; an external edit, a
    chmod and a deletion are each reverted by the next pass."""
    import getpass

    content = "server time.google.com iburst\nserver time.cloudflare.com iburst\n"
    pb = playbook(tmp_path, f"""\
  - name: enforce_ntp_config
    lifecycle: {{policy: supervise, restart: on_failure, interval: 30s}}
    register: ntp
    process:
      module: filesystem:manage
      params:
        path: etc/ntp.conf
        state: present
        content: |
          server time.google.com iburst
          server time.cloudflare.com iburst
        mode: "0644"
        owner: {getpass.getuser()}
""")

    async def main():
        r = Running(pb)
        r.start()
        target = Path(r.workspace.path) / "etc" / "ntp.conf"
        changed = []

        async def next_pass(edit=None):
            await r.clock.wait_for_sleepers(1)
            changed.append(r.kernel.state.get("ntp")["changed"])
            if edit:
                edit()
            await r.clock.advance(30)

        # each call reads the pass that just ran, then edits the file before the next one
        await next_pass()  # 1: created
        await next_pass(lambda: target.write_text("server evil.example\n"))  # 2: compliant
        await next_pass(lambda: target.chmod(0o600))  # 3: the content edit reverted
        await next_pass(lambda: target.unlink())  # 4: the chmod reverted
        await next_pass()  # 5: the deleted file recreated; 6 (read below): compliant
        await r.clock.wait_for_sleepers(1)
        changed.append(r.kernel.state.get("ntp")["changed"])
        text, mode = target.read_text(), target.stat().st_mode & 0o777
        report = await r.stop()
        r.close()
        return changed, text, mode, r.clock.sleeps, report

    changed, text, mode, sleeps, report = run(main())
    assert changed == [True, False, True, True, True, False]
    assert text == content and mode == 0o644
    assert set(sleeps) == {30.0}  # one pass per interval, no back-off: every pass succeeded
    assert report.results["enforce_ntp_config"].status == "Completed"


def test_the_workload_timeout_bounds_each_run_of_a_supervised_program(tmp_path):
    pb = playbook(tmp_path, """\
  - name: hung
    timeout: 200ms
    lifecycle: {policy: supervise, backoff: {jitter: 0, max_restarts: 1}}
    process: {module: exec, params: {command: sleep, args: ["300"]}}
""")

    async def main():
        r = Running(pb)
        r.start()
        await r.clock.wait_for_sleepers(1)
        await r.clock.advance(r.clock.sleeps[-1])
        report = await r.wait_ended()
        r.close()
        return report

    report = run(main())
    assert report.results["hung"].status == "Failed"
    assert "last exit: timed out after 0.2s" in report.results["hung"].reason
