"""E23: ``gxo test`` on the module integration test playbook. PASS and exit 0 as written;
with the expected sentence changed, FAIL and exit 1; ``--junit`` writes valid JUnit XML that
carries the failure."""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from acceptance.harness import EXAMPLES, run_tool

E23 = EXAMPLES / "e23_read_module.test.yaml"
SENTENCE = "hello from integration test"


def _broken(folder: Path) -> Path:
    text = E23.read_text()
    assert text.count(f'equal_to: "{SENTENCE}"') == 1
    out = folder / "broken_read.test.yaml"
    out.write_text(text.replace(f'equal_to: "{SENTENCE}"', 'equal_to: "goodbye from integration test"'))
    return out


def test_passes_as_written(work: Path) -> None:
    res = run_tool("gxo", "test", E23, cwd=work)
    assert res.rc == 0, res.explain()
    lines = res.stdout.splitlines()
    assert re.fullmatch(rf"PASS {re.escape(str(E23))} \([0-9.]+s\)", lines[0]), lines
    assert lines[-1] == "1 passed, 0 failed"


def test_changed_expectation_fails(work: Path) -> None:
    broken = _broken(work)
    res = run_tool("gxo", "test", broken, cwd=work)
    assert res.rc == 1, res.explain()
    assert res.stdout.startswith(f"FAIL {broken} (")
    assert "verify_result" in res.stdout and "goodbye from integration test" in res.stdout
    assert res.stdout.splitlines()[-1] == "0 passed, 1 failed"


def test_directory_run_with_junit(work: Path) -> None:
    suite = work / "suite"
    suite.mkdir()
    shutil.copy(E23, suite / "good_read.test.yaml")
    _broken(suite)
    (suite / "not_a_test.yaml").write_text("this: is not collected\n")
    junit = work / "report.xml"
    res = run_tool("gxo", "test", suite, "--junit", junit, cwd=work)
    assert res.rc == 1, res.explain()
    verdicts = {ln.split()[1]: ln.split()[0] for ln in res.stdout.splitlines() if ln[:4] in ("PASS", "FAIL")}
    assert verdicts == {str(suite / "broken_read.test.yaml"): "FAIL", str(suite / "good_read.test.yaml"): "PASS"}

    root = ET.parse(junit).getroot()  # well-formed XML
    assert root.tag == "testsuites" and root.get("tests") == "2" and root.get("failures") == "1"
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert set(cases) == set(verdicts)
    good, bad = cases[str(suite / "good_read.test.yaml")], cases[str(suite / "broken_read.test.yaml")]
    assert good.find("failure") is None
    failure = bad.find("failure")
    assert failure is not None and "goodbye from integration test" in (failure.text or "")
    # the message names the failing workload and its reason, not the first line of output
    assert failure.get("message", "").startswith("verify_result: assertion failed:")
    assert float(bad.get("time")) >= 0


def test_junit_stays_valid_with_control_characters_in_output(work: Path) -> None:
    """A failing child's stderr (part of the failure text) may hold bytes XML 1.0 cannot."""
    (work / "ctl.test.yaml").write_text("""name: control-chars
schemaVersion: "1.0.0"
workloads:
  - name: noisy
    lifecycle: {policy: run_once}
    process:
      module: exec
      params:
        command: /bin/sh
        args: ["-c", "printf 'bell\\\\007 esc\\\\033[31m nul\\\\000 end\\\\n' >&2; exit 4"]
""")
    junit = work / "ctl.xml"
    res = run_tool("gxo", "test", work / "ctl.test.yaml", "--junit", junit, cwd=work)
    assert res.rc == 1, res.explain()
    failure = ET.parse(junit).getroot().find("./testsuite/testcase/failure")
    assert failure is not None
    assert failure.get("message", "").startswith("noisy: command /bin/sh exited with code 4: bell")


def test_run_filter_and_no_tests(work: Path) -> None:
    suite = work / "suite"
    suite.mkdir()
    shutil.copy(E23, suite / "good_read.test.yaml")
    _broken(suite)
    res = run_tool("gxo", "test", suite, "--run", "good_", cwd=work)
    assert res.rc == 0 and res.stdout.splitlines()[-1] == "1 passed, 0 failed", res.explain()
    empty = work / "empty"
    empty.mkdir()
    res = run_tool("gxo", "test", empty, cwd=work)
    assert res.rc == 2 and "no test playbooks" in res.stderr, res.explain()


E24 = EXAMPLES / "e24_mock_server.test.yaml"


def test_e24_mock_server_passes_and_a_wrong_expectation_fails(work: Path) -> None:
    """E24: ``test:mock_http_server`` on a real loopback port, ``http:request`` against it and
    ``test:assert`` on the answer; PASS as written, FAIL naming the field when Alice is Bob."""
    res = run_tool("gxo", "test", E24, cwd=work)
    assert res.rc == 0, res.explain()
    assert res.stdout.splitlines()[-1] == "1 passed, 0 failed"
    text = E24.read_text()
    assert text.count('equal_to: "Alice"') == 1
    broken = work / "broken_mock.test.yaml"
    broken.write_text(text.replace('equal_to: "Alice"', 'equal_to: "Bob"'))
    res = run_tool("gxo", "test", broken, cwd=work)
    assert res.rc == 1, res.explain()
    assert res.stdout.startswith(f"FAIL {broken} (") and "verify_response" in res.stdout
    assert "Bob" in res.stdout and "Alice" in res.stdout
