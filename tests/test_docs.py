"""Documentation stays true: every complete ```yaml playbook in the docs passes gxoc check (one
whose first comment says ``not-implemented`` may fail with that code only: it shows a feature
this release does not run yet)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gxo.compiler.pipeline import check_source
from gxo.compiler.diagnostics import ERROR, WARNING

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "docs" / "playbook.md", ROOT / "docs" / "expressions.md",
        ROOT / "docs" / "security.md"]
FENCE = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)


def _playbooks() -> list:
    out = []
    for doc in DOCS:
        for i, m in enumerate(FENCE.finditer(doc.read_text("utf-8"))):
            text = m.group(1)
            if "workloads:" in text and "schemaVersion:" in text:
                out.append(pytest.param(text, id=f"{doc.name}#{i}"))
    return out


PLAYBOOKS = _playbooks()


def test_docs_hold_complete_examples() -> None:
    assert len(PLAYBOOKS) >= 6


@pytest.mark.parametrize("text", PLAYBOOKS)
def test_doc_playbook_checks_clean(text: str) -> None:
    res = check_source(text, "doc.yaml")
    waiting = text.startswith("#") and "not-implemented" in text.splitlines()[0]
    bad = [d for d in res.diags.sorted() if d.severity in (ERROR, WARNING)
           and not (waiting and d.code == "not-implemented")]
    assert not bad, "\n".join(f"{d.span.line}:{d.span.col} {d.code}: {d.message}" for d in bad)


def test_pipeline_doc_names_every_stage() -> None:
    from gxo.compiler.pipeline import STAGES

    text = (ROOT / "docs" / "internals" / "pipeline.md").read_text("utf-8")
    for stage in STAGES:
        assert f"`{stage}`" in text


# ---------------------------------------------------------------------------------------------
# The README's tour runs as shown: every command of its ```sh blocks, in a fresh shell from a
# folder laid out like the repository after `make demo` (.venv, examples/, build/); a ```text
# block right after a ```sh block is the output of that block's last command.

_TOUR = re.compile(r"^## A five-minute tour\n(.*?)^What to read next:", re.S | re.M)
_BLOCK = re.compile(r"^```(sh|text)\n(.*?)^```", re.S | re.M)
_TIMES = re.compile(r"\d+\.\d+ ?s\b")


def _tour_blocks() -> list[tuple[str, str]]:
    (tour,) = _TOUR.findall((ROOT / "README.md").read_text("utf-8"))
    return _BLOCK.findall(tour)


def test_readme_tour_runs_as_shown(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "build").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GXO_")}
    blocks = _tour_blocks()
    assert sum(kind == "sh" for kind, _ in blocks) >= 5
    last_output = None
    ran = 0
    for kind, body in blocks:
        if kind == "text":
            if last_output is not None:
                assert _TIMES.sub("T", last_output) == _TIMES.sub("T", body), (last_output, body)
            last_output = None
            continue
        if "_COMPLETE=" in body:  # shell start-up lines: test_readme_completion_block_completes
            continue
        for line in body.splitlines():
            if not line.strip():
                continue
            want = re.search(r"# exit (\d+)", line)
            proc = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=600)
            assert proc.returncode == (int(want.group(1)) if want else 0), (line, proc.stdout, proc.stderr)
            assert "Traceback" not in proc.stdout + proc.stderr
            ran += 1
            # what the reader sees: stderr (warnings, native build times) as well as stdout
            last_output = (proc.stderr if line.startswith(".venv/bin/gxo ") else "") + proc.stdout
    assert ran >= 11
    for made in ("gxoc.sarif", "bad.yaml", "hello.gxp", "junit.xml", "hi.gxp"):
        assert (tmp_path / "build" / made).is_file(), made


def test_readme_completion_block_completes(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    (block,) = [body for kind, body in _tour_blocks() if kind == "sh" and "_COMPLETE=" in body]
    for prog, typed, want in (("gxoc", "ch", "check"), ("gxo", "ex", "exec")):
        script = (block + f"COMP_WORDS=({prog} {typed}); COMP_CWORD=1; complete -p {prog} >/dev/null && "
                  f"_{prog}_completion {prog}; echo \"${{COMPREPLY[@]}}\"\n")
        proc = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == [want], (proc.stdout, proc.stderr)


def test_security_doc_lists_the_default_profile() -> None:
    """docs/security.md names every syscall the ``default`` profile denies."""
    from gxo.runtime.sandbox.profiles import DEFAULT_DENIED

    text = (ROOT / "docs" / "security.md").read_text("utf-8")
    missing = [name for name in DEFAULT_DENIED if f"`{name}`" not in text]
    assert not missing
