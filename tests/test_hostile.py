"""Hostile input: special files, oversized files, damaged plans and deeply nested values given to
``gxo`` and ``gxoc``.  Each case runs the real command in a child process with a bounded address
space and a wall-clock limit, and asserts its exit code, one coded message, no traceback and a
bounded peak RSS.  Every input is generated here (big files are sparse), never stored.

Add a case with :func:`run_hostile`::

    r = run_hostile(["gxoc", "check", path], expect_rc=1, message="error[yaml-limit]")
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from rss import launched, peak_mb

BIN = Path(sys.executable).parent
ADDRESS_SPACE = 1536 * 1024 * 1024  # enough for the interpreter, the compiler and Cython's modules
MAX_RSS_MB = 100.0  # for an input under 64 KB (or one refused before it is read)


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: str
    stderr: str
    peak_rss_mb: float
    seconds: float


def run_hostile(argv: list, *, expect_rc: int | set[int], message: str | None = None, timeout: float = 60.0,
                stdin: bytes | None = None, cwd: Path | None = None, env: dict[str, str] | None = None,
                max_rss_mb: float = MAX_RSS_MB, address_space: int = ADDRESS_SPACE) -> Result:
    """Run ``argv`` (``gxo``/``gxoc`` are this environment's commands) under ``RLIMIT_AS`` and a
    wall-clock limit, and check what any hostile input must give: an exit code in
    ``expect_rc``, ``message`` (a coded line, e.g. ``error[yaml-limit]`` or ``plan refused:``)
    on stdout or stderr, no traceback and no internal error, a peak RSS under ``max_rss_mb``."""
    argv = [str(BIN / a) if i == 0 and a in ("gxo", "gxoc") else str(a) for i, a in enumerate(argv)]
    expected = {expect_rc} if isinstance(expect_rc, int) else set(expect_rc)

    environ = {k: v for k, v in os.environ.items() if k not in ("GXO_TRUSTED_KEYS", "GXO_STATE_KEY")}
    environ.update(env or {})
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "rss"
        t0 = time.monotonic()
        # through the launcher (tests/rss.py): the command's own peak RSS, not pytest's
        proc = subprocess.Popen(launched(argv, report, address_space),
                                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                stdout=out, stderr=err, cwd=cwd, env=environ, start_new_session=True)
        if stdin is not None:
            try:
                proc.stdin.write(stdin)
                proc.stdin.close()
            except BrokenPipeError:
                pass
        timed_out = False
        while True:
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - t0 > timeout:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)  # the child's own session: only what it started
                pid, status, _ = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        seconds = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        result = Result(proc.returncode, out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace"),
                        peak_mb(report), seconds)
    shown = f"{' '.join(argv)[:200]}\nrc={result.rc}\nstdout={result.stdout[-2000:]}\nstderr={result.stderr[-2000:]}"
    assert not timed_out, f"no answer within {timeout} s: {shown}"
    assert result.rc in expected, shown
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, shown
    if message is not None:
        assert message in result.stdout + result.stderr, shown
    assert result.peak_rss_mb < max_rss_mb, f"peak RSS {result.peak_rss_mb:.0f} MB: {shown}"
    return result


# ---------------------------------------------------------------------------------------------
# inputs

PLAYBOOK = """\
name: p
schemaVersion: "1.0.0"
vars:
  s: 1
workloads:
  - name: a
    lifecycle: {policy: run_once}
    process:
      module: control:assert
      params:
        condition: '{{ %s }}'
"""


@pytest.fixture
def ok(tmp_path: Path) -> Path:
    path = tmp_path / "ok.yaml"
    path.write_text(PLAYBOOK % "true")
    return path


@pytest.fixture
def plan(tmp_path: Path, ok: Path) -> Path:
    from test_plan_tamper import make_plan

    return make_plan(tmp_path, name="ok.gxp", playbook=ok.read_bytes())


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "ff"
    os.mkfifo(path)
    return path


def plan_members(plan: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(plan) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


# ---------------------------------------------------------------------------------------------
# special files as inputs: refused without blocking (exit 2)


@pytest.mark.parametrize(("argv", "rc"), [
    (["gxoc", "check", "{fifo}"], 2),
    (["gxoc", "build", "{fifo}"], 2),
    (["gxoc", "graph", "{fifo}"], 2),
    (["gxoc", "diff", "{fifo}", "{ok}"], 2),
    (["gxo", "run", "{fifo}"], 2),
    (["gxo", "run", "{ok}", "--vars-file", "{fifo}"], 2),
    (["gxo", "exec", "{plan}", "--no-state", "--vars-file", "{fifo}"], 2),
    (["gxo", "exec", "{fifo}"], 2),
    (["gxo", "exec", "{plan}", "--state-dir", "{tmp}/state", "--state-key-file", "{fifo}"], 3),  # a state refusal
    (["gxoc", "build", "{ok}", "--sign", "{fifo}"], 2),
    (["gxoc", "graph", "/dev/zero"], 2),
    (["gxo", "run", "/dev/zero"], 2),
    (["gxo", "run", "{ok}", "--vars-file", "/dev/zero"], 2),
], ids=lambda a: " ".join(x.replace("{", "").replace("}", "") for x in a) if isinstance(a, list) else str(a))
def test_a_fifo_or_device_as_an_input_is_refused_without_blocking(tmp_path: Path, ok: Path, plan: Path,
                                                                  fifo: Path, argv: list, rc: int) -> None:
    args = [a.format(fifo=fifo, ok=ok, plan=plan, tmp=tmp_path) for a in argv]
    run_hostile(args, expect_rc=rc, message="not a regular file", timeout=30, cwd=tmp_path)


def test_a_fifo_as_a_plan_for_gxoc_show_is_refused(tmp_path: Path, fifo: Path) -> None:
    run_hostile(["gxoc", "show", fifo], expect_rc=3, message="plan refused:", timeout=30)


def test_a_fifo_as_trusted_keys_is_refused(tmp_path: Path, plan: Path, fifo: Path) -> None:
    run_hostile(["gxo", "exec", plan], expect_rc=3, message=f"GXO_TRUSTED_KEYS={fifo}: a FIFO", timeout=30,
                env={"GXO_TRUSTED_KEYS": str(fifo)})


def test_a_fifo_as_a_trusted_key_is_refused(tmp_path: Path, ok: Path, fifo: Path) -> None:
    run_hostile(["gxoc", "keygen", "-o", tmp_path / "ci"], expect_rc=0, cwd=tmp_path)
    signed = tmp_path / "signed.gxp"
    run_hostile(["gxoc", "build", "--no-native", ok, "--sign", tmp_path / "ci", "-o", signed], expect_rc=0, cwd=tmp_path)
    run_hostile(["gxo", "exec", signed, "--no-state", "--trusted-key", fifo], expect_rc=3,
                message=f"plan refused: trusted key {fifo}: a FIFO (named pipe), not a regular file", timeout=30)


# ---------------------------------------------------------------------------------------------
# special files as outputs: never replaced (exit 2)


@pytest.mark.parametrize("argv", [
    ["gxoc", "build", "--no-native", "{ok}", "-o", "{target}"],
    ["gxoc", "graph", "{ok}", "-o", "{target}"],
    ["gxoc", "keygen", "-o", "{target}", "--force"],
    ["gxo", "test", "{ok}", "--junit", "{target}"],
], ids=["build", "graph", "keygen", "test-junit"])
def test_a_fifo_device_link_or_directory_as_an_output_is_refused_and_kept(tmp_path: Path, ok: Path, argv: list) -> None:
    real = tmp_path / "real.txt"
    real.write_text("keep me\n")
    fifo = tmp_path / "ff"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to(real)
    folder = tmp_path / "folder"
    folder.mkdir()
    if os.geteuid() == 0:  # a copy of /dev/full: a failure here replaces only the copy
        device = tmp_path / "full"
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    else:  # a user cannot replace /dev/full: safe to name it
        device = Path("/dev/full")
    for target, kind in ((fifo, stat.S_ISFIFO), (device, stat.S_ISCHR), (link, stat.S_ISLNK), (folder, stat.S_ISDIR)):
        args = [a.format(ok=ok, target=target) for a in argv]
        r = run_hostile(args, expect_rc=2, timeout=30, cwd=tmp_path)
        assert f"'{target}' is " in r.stderr, r.stderr
        if kind is not stat.S_ISDIR:  # (click's own check words a directory for --junit)
            assert "name a new path" in r.stderr or "name the link's target" in r.stderr, r.stderr
        assert kind(os.lstat(target).st_mode), target
    assert real.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_a_regular_output_is_replaced_whole(tmp_path: Path, ok: Path) -> None:
    out = tmp_path / "out.gxp"
    out.write_text("old")
    run_hostile(["gxoc", "build", "--no-native", ok, "-o", out], expect_rc=0, message="wrote", cwd=tmp_path)
    assert out.read_bytes()[:2] == b"PK" and stat.S_IMODE(out.stat().st_mode) == 0o644
    run_hostile(["gxoc", "keygen", "-o", tmp_path / "k"], expect_rc=0, cwd=tmp_path)
    run_hostile(["gxoc", "keygen", "-o", tmp_path / "k", "--force"], expect_rc=0, cwd=tmp_path)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


# ---------------------------------------------------------------------------------------------
# damaged plans: refused from the zip's directory, before any member is read (exit 3)


def test_junk_around_a_plan_is_refused(tmp_path: Path, plan: Path) -> None:
    raw = plan.read_bytes()
    (tmp_path / "appended.gxp").write_bytes(raw + b"JUNK\n")
    (tmp_path / "prepended.gxp").write_bytes(b"JUNK\n" + raw)
    run_hostile(["gxo", "exec", tmp_path / "appended.gxp"], expect_rc=3,
                message="plan refused: ", cwd=tmp_path)
    run_hostile(["gxo", "exec", tmp_path / "prepended.gxp"], expect_rc=3,
                message="5 byte(s) that belong to no member", cwd=tmp_path)


def test_a_compressed_member_is_refused_without_decompressing_it(tmp_path: Path, plan: Path) -> None:
    """A 4 KB plan whose bzip2 member expands to 250 MiB: refused from the central directory."""
    members = plan_members(plan)
    bomb = tmp_path / "bomb.gxp"
    with zipfile.ZipFile(bomb, "w") as zf:
        for name in sorted(members):
            zf.writestr(name, members[name])
        info = zipfile.ZipInfo("native/cpython-311-x86_64-linux-gnu/shard_000.so")
        info.compress_type = zipfile.ZIP_BZIP2
        zero = bytes(1 << 20)
        with zf.open(info, "w") as fh:
            for _ in range(250):
                fh.write(zero)
    assert bomb.stat().st_size < 64 * 1024
    r = run_hostile(["gxo", "exec", bomb], expect_rc=3, message="is compressed (method 12)", cwd=tmp_path)
    assert r.stderr.count("\n") == 1
    run_hostile(["gxoc", "show", bomb], expect_rc=3, message="is compressed (method 12)", cwd=tmp_path)


def test_a_sparse_2_gb_plan_is_refused_by_its_size(tmp_path: Path) -> None:
    big = tmp_path / "big.gxp"
    with open(big, "wb") as fh:
        fh.write(b"PK\x03\x04")
        fh.truncate(2 * 1024**3)
    run_hostile(["gxo", "exec", big], expect_rc=3, message="too large for a plan", cwd=tmp_path)


# ---------------------------------------------------------------------------------------------
# oversized files: refused from their size, before reading


def test_a_200_mb_playbook_is_refused_before_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with open(big, "wb") as fh:
        fh.truncate(200 * 1024 * 1024)
    for argv in (["gxoc", "check", big], ["gxoc", "build", big], ["gxoc", "graph", big], ["gxo", "run", big]):
        run_hostile(argv, expect_rc=1, message="error[yaml-limit]: the file is 209,715,200 bytes", cwd=tmp_path)


def test_an_oversized_vars_file_is_a_usage_error(tmp_path: Path, ok: Path) -> None:
    big = tmp_path / "vars.json"
    with open(big, "wb") as fh:
        fh.truncate(200 * 1024 * 1024)
    run_hostile(["gxo", "run", ok, "--vars-file", big], expect_rc=2, message="a vars file is limited to", cwd=tmp_path)


# ---------------------------------------------------------------------------------------------
# deep nesting: coded errors, never a RecursionError

DEEP_EXPRESSIONS = {
    "brackets": "[" * 330,
    "pipes": "1" + " | print" * 325,
    "calls": "len(" * 326 + "1" + ")" * 326,
    "plus": " + ".join(["1"] * 493),
    "and": " and ".join(["true"] * 493),
    "not": "not " * 986 + "true",
}


@pytest.mark.parametrize("command", ["check", "graph"])
@pytest.mark.parametrize("name", sorted(DEEP_EXPRESSIONS))
def test_deeply_nested_expressions_are_template_syntax_errors(tmp_path: Path, name: str, command: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(PLAYBOOK % DEEP_EXPRESSIONS[name])
    assert path.stat().st_size < 64 * 1024
    run_hostile(["gxoc", command, path], expect_rc=1, message="error[template-syntax]", cwd=tmp_path)


@pytest.mark.parametrize(("args", "message"), [
    (["--var", "s=" + "9" * 4301], "integer too large"),
    (["--var", "s=" + "[" * 987 + "]" * 987], "nested deeper than 64 levels"),
    (["--vars-file", "deep.json"], "nests deeper than 64 levels"),
], ids=["4301-digits", "987-deep-var", "100000-deep-vars-file"])
def test_var_values_past_the_limits_are_usage_errors(tmp_path: Path, ok: Path, args: list, message: str) -> None:
    (tmp_path / "deep.json").write_text('{"s": ' + "[" * 100_000 + "]" * 100_000 + "}")
    run_hostile(["gxo", "run", ok, *args], expect_rc=2, message=message, cwd=tmp_path)


# ---------------------------------------------------------------------------------------------
# long regexes and bombs: bounded time and memory, a coded message, never gigabytes

BOMBS = {
    # catastrophic backtracking under a backtracking engine: RE2 answers at once (false)
    "regex-39": (["run", "--timeout", "20s"], 'regex_match "^(a+)+$" "' + "a" * 39 + '!"', 1,
                 "assertion failed"),
    # a format built at run time: refused at run time, naming the limit
    "printf-runtime": (["run"], '(printf (print "%." "999999999" "f") 1.5) != ""', 1,
                       "the precision 999999999 of %f is over the limit of 10,000"),
    # a literal format: refused at check time
    "printf-literal": (["check"], '(printf "%.999999999f" 1.5) != ""', 1, "error[expr-limit]"),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_long_regexes_and_format_bombs_are_bounded(tmp_path: Path, name: str) -> None:
    how, expr, rc, message = BOMBS[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(PLAYBOOK % expr)
    tool = "gxoc" if how[0] == "check" else "gxo"
    r = run_hostile([tool, *how, path], expect_rc=rc, message=message, cwd=tmp_path, timeout=30)
    assert r.seconds < 20  # a hang bound, not a speed test


YAML_BOMB = "a: &a [" + ",".join(["x"] * 9) + "]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8))


def test_a_yaml_alias_bomb_is_refused_in_a_playbook_and_at_run_time(tmp_path: Path) -> None:
    assert len(YAML_BOMB) < 1100  # 9**9 nodes once expanded
    pb = tmp_path / "bomb.yaml"
    pb.write_text('name: p\nschemaVersion: "1.0.0"\nvars:\n  ' + YAML_BOMB.replace("\n", "\n  ") + """
workloads:
  - name: a
    lifecycle: {policy: run_once}
    process: {module: control:assert, params: {condition: '{{ true }}'}}
""")
    run_hostile(["gxoc", "check", pb], expect_rc=1, message="error[yaml-limit]", cwd=tmp_path)
    rt = tmp_path / "parse.yaml"
    rt.write_text(f"""\
name: p
schemaVersion: "1.0.0"
workloads:
  - name: parse
    lifecycle: {{policy: run_once}}
    process:
      module: data:parse
      params:
        format: yaml
        content: |
{chr(10).join("          " + line for line in YAML_BOMB.splitlines())}
""")
    run_hostile(["gxo", "run", rt], expect_rc=1, message="nodes", cwd=tmp_path, timeout=30)


def test_the_harness_sees_a_failure(tmp_path: Path) -> None:
    """The harness is itself checked: a wrong exit code, a timeout and the RSS bound fail."""
    with pytest.raises(AssertionError, match="rc=0"):
        run_hostile([sys.executable, "-c", "pass"], expect_rc=2)
    with pytest.raises(AssertionError, match="no answer within"):
        run_hostile([sys.executable, "-c", "import time; time.sleep(30)"], expect_rc=0, timeout=0.5)
    with pytest.raises(AssertionError, match="peak RSS"):
        run_hostile([sys.executable, "-c", "b = bytearray(150 * 1024 * 1024)"], expect_rc=0)
    r = run_hostile([sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"], expect_rc=0,
                    stdin=b"hostile")
    assert r.stdout == "HOSTILE\n" and 1 < r.peak_rss_mb < MAX_RSS_MB


# ---------------------------------------------------------------------------------------------
# the shared file helpers (gxo.runtime.files), in process


def test_write_output_replaces_a_regular_file_and_never_writes_through_it(tmp_path: Path) -> None:
    from gxo.runtime.files import FileProblem, write_output

    target = tmp_path / "out"
    target.write_text("old")
    other = tmp_path / "other"
    os.link(target, other)  # a second name of the old file keeps the old bytes
    write_output(str(target), b"new", mode=0o600)
    assert target.read_bytes() == b"new" and other.read_bytes() == b"old"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    link = tmp_path / "link"
    link.symlink_to(other)
    with pytest.raises(FileProblem, match=r"'.*link' is a symbolic link: .*name the link's target itself"):
        write_output(str(link), b"x", option="--out")
    assert other.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["link", "other", "out"]


def test_read_limited_checks_type_and_size_before_reading(tmp_path: Path, fifo: Path) -> None:
    from gxo.runtime.files import FileProblem, FileTooLarge, read_limited

    with pytest.raises(FileProblem, match="is a FIFO \\(named pipe\\), not a regular file"):
        read_limited(str(fifo), 10)  # would block without O_NONBLOCK
    sparse = tmp_path / "sparse"
    with open(sparse, "wb") as fh:
        fh.truncate(10**10)  # 10 GB, none of it on disk
    with pytest.raises(FileTooLarge) as info:
        read_limited(str(sparse), 1024, what="vars file")
    assert (info.value.size, info.value.limit) == (10**10, 1024)
    assert "a vars file is limited to 1,024 bytes" in str(info.value)
    (tmp_path / "small").write_bytes(b"x" * 1024)
    assert read_limited(str(tmp_path / "small"), 1024) == b"x" * 1024
