"""The per-run workspace: creation, containment of paths, removal and the stale sweep."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest
from gxo.runtime.module import SecurityError, ValidationError
from gxo.runtime.workspace import Workspace, default_root, resolve_inside, sweep_stale


@pytest.fixture
def root(tmp_path):
    base = tmp_path / "base"
    return str(base)


@pytest.fixture
def ws(root):
    w = Workspace.create(root)
    yield w
    w.remove()


# --------------------------------------------------------------------------- creation


def test_create_mode_name_and_lock(root):
    w = Workspace.create(root)
    try:
        st = os.stat(w.path)
        assert stat.S_ISDIR(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o700
        name = os.path.basename(w.path)
        assert len(name) == 32 and all(c in "0123456789abcdef" for c in name)
        assert os.path.dirname(w.path) == os.path.realpath(root)
        assert os.path.exists(w.lock_path) and not w.lock_path.startswith(w.path + "/")
        # the base directories we created are private too
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o700
        # nothing but the lock file in the base beside the workspace
        assert sorted(os.listdir(root)) == sorted([name, name + ".lock"])
    finally:
        w.remove()
    assert not os.path.exists(w.path)
    assert not os.path.exists(w.lock_path)
    w.remove()  # idempotent


def test_names_are_unpredictable(root):
    spaces = [Workspace.create(root) for _ in range(20)]
    try:
        names = {os.path.basename(w.path) for w in spaces}
        assert len(names) == 20
    finally:
        for w in spaces:
            w.remove()


def test_base_dirs_created_0700_under_umask(tmp_path):
    old = os.umask(0)
    try:
        w = Workspace.create(str(tmp_path / "a" / "b" / "c"))
    finally:
        os.umask(old)
    try:
        for p in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
            assert stat.S_IMODE(os.stat(p).st_mode) == 0o700, p
    finally:
        w.remove()


def test_default_root(monkeypatch):
    monkeypatch.delenv("GXO_WORKSPACE_ROOT", raising=False)
    assert default_root() == f"/tmp/gxo-{os.geteuid()}/workspaces"
    monkeypatch.setenv("GXO_WORKSPACE_ROOT", "/somewhere/else")
    assert default_root() == "/somewhere/else"


def test_env_root_is_used(monkeypatch, tmp_path):
    monkeypatch.setenv("GXO_WORKSPACE_ROOT", str(tmp_path / "env-root"))
    with Workspace.create() as w:
        assert w.path.startswith(str(tmp_path / "env-root") + "/")
    assert not os.path.exists(w.path)


def test_shared_writable_root_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(SecurityError, match="writable by other users"):
        Workspace.create(str(shared))


def test_root_owned_by_someone_else_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to make a directory owned by another user")
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    os.chown(other, 65534, 65534)
    with pytest.raises(SecurityError, match="owned by uid 65534"):
        Workspace.create(str(other))


def test_context_manager_removes_on_error(root):
    with pytest.raises(RuntimeError), Workspace.create(root) as w:
        open(os.path.join(w.path, "f"), "w").close()
        raise RuntimeError("boom")
    assert not os.path.exists(w.path)


# --------------------------------------------------------------------------- containment


def test_relative_paths_join_the_workspace(ws):
    assert ws.resolve("a.txt") == os.path.join(ws.path, "a.txt")
    assert ws.resolve("./x/../b/c.txt") == os.path.join(ws.path, "b", "c.txt")
    assert ws.resolve(".") == ws.path
    assert ws.resolve("sub/") == os.path.join(ws.path, "sub")


def test_absolute_inside_allowed(ws):
    inside = os.path.join(ws.path, "deep", "file")
    assert ws.resolve(inside) == inside


@pytest.mark.parametrize("attack", [
    "..", "../x", "../../../../etc/passwd", "a/../../x", "/etc/passwd", "/", "//etc",
    "sub/../../", "./../", "a/b/c/../../../../x",
])
def test_traversal_refused(ws, attack):
    with pytest.raises(SecurityError, match="outside the workspace"):
        ws.resolve(attack)


def test_sibling_with_common_prefix_refused(ws):
    # /base/<name>-evil starts with the workspace path as text, but is not inside it
    with pytest.raises(SecurityError):
        ws.resolve(ws.path + "-evil/x")
    with pytest.raises(SecurityError):
        ws.resolve("../" + os.path.basename(ws.path) + "x")


def test_dotdot_back_inside_is_fine(ws):
    name = os.path.basename(ws.path)
    assert ws.resolve(f"../{name}/f") == os.path.join(ws.path, "f")


def test_symlink_out_refused(ws, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("x")
    os.symlink(str(outside), os.path.join(ws.path, "link"))
    os.symlink("../../", os.path.join(ws.path, "rel"))
    os.symlink("/etc/passwd", os.path.join(ws.path, "pw"))
    for p in ("link", "link/secret", "link/new/file", "rel", "rel/x", "pw"):
        with pytest.raises(SecurityError, match="outside the workspace"):
            ws.resolve(p)


def test_symlink_through_missing_component(ws, tmp_path):
    # "missing/../link" must still follow link (no lexical shortcut after a missing part)
    os.symlink(str(tmp_path), os.path.join(ws.path, "link"))
    with pytest.raises(SecurityError):
        ws.resolve("missing/../link/x")


def test_symlink_inside_is_followed(ws):
    os.mkdir(os.path.join(ws.path, "real"))
    os.symlink("real", os.path.join(ws.path, "alias"))
    os.symlink(os.path.join(ws.path, "real"), os.path.join(ws.path, "abs_alias"))
    assert ws.resolve("alias/f") == os.path.join(ws.path, "real", "f")
    assert ws.resolve("abs_alias") == os.path.join(ws.path, "real")
    # a dangling link to a place inside: the target path, to be created
    os.symlink("real/later", os.path.join(ws.path, "dangling"))
    assert ws.resolve("dangling") == os.path.join(ws.path, "real", "later")


def test_dangling_symlink_out_refused(ws):
    os.symlink("/nonexistent-dir/for-gxo", os.path.join(ws.path, "d"))
    with pytest.raises(SecurityError):
        ws.resolve("d")


def test_symlink_loop_refused(ws):
    os.symlink("b", os.path.join(ws.path, "a"))
    os.symlink("a", os.path.join(ws.path, "b"))
    os.symlink("self", os.path.join(ws.path, "self"))
    for p in ("a", "a/x", "self"):
        with pytest.raises(SecurityError, match="symlink loop"):
            ws.resolve(p)


def test_nonexistent_paths_are_contained(ws):
    assert ws.resolve("new/dir/file") == os.path.join(ws.path, "new", "dir", "file")
    with pytest.raises(SecurityError):
        ws.resolve("new/../../escape")


def test_bad_inputs(ws):
    with pytest.raises(ValidationError, match="empty"):
        ws.resolve("")
    with pytest.raises(SecurityError, match="NUL"):
        ws.resolve("a\x00b")
    with pytest.raises(ValidationError, match="string"):
        ws.resolve(42)  # type: ignore[arg-type]


def test_resolve_after_remove_refused(root):
    w = Workspace.create(root)
    w.remove()
    with pytest.raises(SecurityError, match="removed"):
        w.resolve("x")


def test_resolve_inside_needs_no_workspace(tmp_path):
    base = os.path.realpath(tmp_path)
    assert resolve_inside(base, "q") == os.path.join(base, "q")


# --------------------------------------------------------------------------- removal


def test_remove_read_only_and_unreadable_dirs(root):
    w = Workspace.create(root)
    deep = os.path.join(w.path, "a", "b", "c")
    os.makedirs(deep)
    for d in ("a", "a/b", "a/b/c"):
        open(os.path.join(w.path, d, "f"), "w").close()
    os.chmod(os.path.join(w.path, "a", "b", "c"), 0o000)
    os.chmod(os.path.join(w.path, "a", "b"), 0o500)
    os.chmod(os.path.join(w.path, "a"), 0o500)
    os.chmod(os.path.join(w.path, "a", "f"), 0o000)
    os.symlink("/etc", os.path.join(w.path, "etc_link"))  # removed, never followed
    w.remove()
    assert not os.path.exists(w.path)
    assert os.path.isdir("/etc")


def _interpreter_for(uid: int) -> str | None:
    for cand in (sys.executable, "/usr/bin/python3"):
        try:
            r = subprocess.run([cand, "-c", "pass"], check=False, user=uid, group=uid, timeout=30,
                               capture_output=True)
        except (OSError, subprocess.SubprocessError):
            continue
        if r.returncode == 0:
            return cand
    return None


def test_remove_read_only_unprivileged(tmp_path):
    """The same as an unprivileged user, where permissions are really enforced (root ignores
    them): a copy of the workspace code runs as nobody."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the check as another user")
    python = _interpreter_for(65534)
    if python is None:
        pytest.skip("no interpreter that nobody may run")
    import gxo.runtime.module as module_py
    import gxo.runtime.workspace as workspace_py

    pkg = tmp_path / "pkg" / "gxo" / "runtime"
    pkg.mkdir(parents=True)
    (tmp_path / "pkg" / "gxo" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    for mod in (module_py, workspace_py):
        shutil.copy(mod.__file__, pkg / os.path.basename(mod.__file__))
    import msgspec  # module.py's records (the same interpreter version, so its build loads)

    shutil.copytree(os.path.dirname(msgspec.__file__), tmp_path / "pkg" / "msgspec")
    base = tmp_path / "nobody-root"
    base.mkdir()
    os.chown(base, 65534, 65534)
    for p in (tmp_path, tmp_path.parent, tmp_path.parent.parent):
        os.chmod(p, os.stat(p).st_mode | 0o755)
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(tmp_path / "pkg")!r})
        from gxo.runtime.workspace import Workspace
        w = Workspace.create({str(base)!r})
        os.makedirs(os.path.join(w.path, "a", "b", "c"))
        open(os.path.join(w.path, "a", "b", "f"), "w").close()
        os.chmod(os.path.join(w.path, "a", "b", "c"), 0o000)
        os.chmod(os.path.join(w.path, "a", "b"), 0o500)
        os.chmod(os.path.join(w.path, "a"), 0o000)
        os.chmod(w.path, 0o500)
        w.remove()
        print("gone" if not os.path.exists(w.path) else "left")
    """)
    out = subprocess.run([python, "-c", script], check=False, capture_output=True, text=True,
                         timeout=60, user=65534, group=65534,
                         env={"PATH": "/usr/bin:/bin", "HOME": "/"}, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "gone"


# --------------------------------------------------------------------------- stale sweep

_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


def test_sweep_removes_stale_keeps_locked(root):
    live = Workspace.create(root)          # held by this process
    stale = Workspace.create(root)         # will be released without removal (a crash)
    held = Workspace.create(root)          # handed over to another process
    os.close(stale._lock_fd)  # type: ignore[arg-type]
    stale._lock_fd = None
    open(os.path.join(stale.path, "junk"), "w").close()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, held.lock_path],
                              stdout=subprocess.PIPE, text=True)
    try:
        os.close(held._lock_fd)  # type: ignore[arg-type]
        held._lock_fd = None
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        orphan = os.path.join(os.path.realpath(root), "f" * 32)  # a workspace without a lock
        os.mkdir(orphan)
        unrelated = os.path.join(root, "keep-me")
        os.mkdir(unrelated)
        removed = sweep_stale(root)
        assert sorted(removed) == sorted([stale.path, orphan])
        assert not os.path.exists(stale.path) and not os.path.exists(stale.lock_path)
        assert not os.path.exists(orphan)
        assert os.path.isdir(live.path) and os.path.exists(live.lock_path)
        assert os.path.isdir(held.path) and os.path.exists(held.lock_path)
        assert os.path.isdir(unrelated)
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    # once the holder is gone, its workspace is stale too
    assert Workspace.sweep_stale(root) == [held.path]
    live.remove()
    assert sorted(os.listdir(root)) == ["keep-me"]


def test_sweep_of_killed_run(root, tmp_path):
    """A process that created a workspace and was SIGKILLed leaves a stale one behind."""
    script = textwrap.dedent(f"""
        import os, signal
        from gxo.runtime.workspace import Workspace
        w = Workspace.create({root!r})
        print(w.path, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    out = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True,
                         text=True, timeout=60)
    path = out.stdout.strip()
    assert os.path.isdir(path)
    assert sweep_stale(root) == [path]
    assert not os.path.exists(path)


def test_sweep_missing_root_is_empty(tmp_path):
    assert sweep_stale(str(tmp_path / "nope")) == []


def test_default_root_symlink_planted_refused(monkeypatch, tmp_path):
    import gxo.runtime.workspace as wsmod

    planted = tmp_path / "gxo-planted"
    os.symlink(str(tmp_path), planted)
    monkeypatch.delenv("GXO_WORKSPACE_ROOT", raising=False)
    monkeypatch.setattr(wsmod, "default_root", lambda: str(planted / "workspaces"))
    with pytest.raises(SecurityError, match="is a symlink"):
        Workspace.create()


# --------------------------------------------------------------------------- allowed roots


@pytest.fixture
def allowed(tmp_path):
    d = tmp_path / "etc-app"
    d.mkdir()
    return d


def test_absolute_path_under_an_allowed_root(ws, allowed):
    view = ws.allowing((str(allowed),))
    assert view.path == ws.path
    assert view.resolve(str(allowed / "ntp.conf")) == str(allowed / "ntp.conf")
    assert view.resolve(str(allowed / "new" / "dir" / "f")) == str(allowed / "new" / "dir" / "f")
    assert view.resolve(str(allowed)) == str(allowed)
    assert view.resolve("rel/x") == os.path.join(ws.path, "rel", "x")  # relative: still the workspace
    with pytest.raises(SecurityError, match="outside the workspace"):
        ws.resolve(str(allowed / "ntp.conf"))  # the workspace itself is unchanged


def test_allowed_root_given_through_a_symlink_is_its_real_path(ws, allowed, tmp_path):
    link = tmp_path / "link-to-app"
    link.symlink_to(allowed)
    view = ws.allowing((str(link),))
    assert view.resolve(str(link / "f")) == str(allowed / "f")
    assert view.resolve(str(allowed / "f")) == str(allowed / "f")


def test_symlink_leaving_an_allowed_root_refused(ws, allowed, tmp_path):
    outside = tmp_path / "secret"
    outside.mkdir()
    (allowed / "escape").symlink_to(outside)
    (allowed / "escape-file").symlink_to("/etc/passwd")
    view = ws.allowing((str(allowed),))
    for p in (allowed / "escape" / "x", allowed / "escape-file", allowed / ".." / "secret" / "x"):
        with pytest.raises(SecurityError, match=r"outside the workspace and the allowed paths .*allowed: "):
            view.resolve(str(p))


def test_sibling_of_an_allowed_root_with_a_common_prefix_refused(ws, allowed, tmp_path):
    (tmp_path / "etc-app2").mkdir()
    with pytest.raises(SecurityError):
        ws.allowing((str(allowed),)).resolve(str(tmp_path / "etc-app2" / "f"))


def test_dotdot_out_of_the_workspace_refused_without_an_allowed_root(ws):
    with pytest.raises(SecurityError, match="workload_policy.allowed_paths or pass --allow-path"):
        ws.resolve("../../etc/passwd")
    assert ws.allowing(()) is ws


def test_allowed_roots_must_be_absolute(ws):
    with pytest.raises(ValidationError, match="must be an absolute directory"):
        ws.allowing(("etc",))
