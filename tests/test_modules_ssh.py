"""ssh:connect, ssh:command, ssh:script, ssh:upload, ssh:download against a real OpenSSH server
on loopback (tests/sshd.py, started once per session by the ``sshd`` fixture): each module with
its own connection, and several over one connection from ssh:connect held by a connection
manager."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from typing import Any

import pytest
from gxo.runtime.connections import ConnectionLimitError, ConnectionManager
from gxo.runtime.module import (Context, ModuleError, SecurityError, ValidationError,
                                load_module_class)
from gxo.runtime.workspace import Workspace

from acceptance.harness import free_port
from module_log import Log
from sshd import PASSPHRASE

PASSWORD = "hunter2-not-the-password"


@pytest.fixture
def ws(tmp_path):
    w = Workspace.create(str(tmp_path / "wsroot"))
    yield w
    w.remove()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A HOME without ~/.ssh/known_hosts: the default host keys are only the system's."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def run(module: str, params: dict, ws: Workspace, *, dry_run: bool = False,
        log: Log | None = None) -> Any:
    ctx = Context(workload="w", run_id="r", logger=log or Log(), workspace=ws, state=dict,
                  dry_run=dry_run,
                  redact=lambda text: text.replace(PASSWORD, "[REDACTED]"))
    return asyncio.run(load_module_class(module)().perform(ctx, params))


def read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def conn(sshd, **extra) -> dict:
    """Connection params that log in with the client key and trust the host key."""
    return {"host": sshd.host, "port": sshd.port, "user": sshd.user, "private_key": sshd.key,
            "known_hosts": sshd.known_hosts, **extra}


def test_command_with_key_auth(sshd, ws):
    out = run("ssh:command", {**conn(sshd), "command": "echo out; echo err >&2; echo $((40+2))"},
              ws)
    assert out == {"stdout": "out\n42", "stderr": "err", "exit_code": 0}


def test_args_are_quoted_for_the_remote_shell(sshd, ws):
    tricky = "a; echo INJECTED $(id) 'q' \"d\" *"
    out = run("ssh:command", {**conn(sshd), "args": ["printf", "%s|", tricky, "two words"]}, ws)
    assert out["stdout"] == f"{tricky}|two words|"
    assert out["exit_code"] == 0


def test_non_zero_exit_fails_with_the_summary(sshd, ws):
    with pytest.raises(ModuleError) as err:
        run("ssh:command", {**conn(sshd), "command": "echo partial; echo boom >&2; exit 3"}, ws)
    assert str(err.value) == (f"ssh {sshd.user}@127.0.0.1:{sshd.port}: command "
                              f"'echo partial; echo boom >&2; exit 3' exited with code 3: boom")
    assert err.value.summary == {"stdout": "partial", "stderr": "boom", "exit_code": 3}
    out = run("ssh:command", {**conn(sshd), "command": "exit 3", "ok_exit_codes": [0, 3]}, ws)
    assert out["exit_code"] == 3


def test_killed_by_a_signal_is_128_plus_n(sshd, ws):
    with pytest.raises(ModuleError) as err:
        run("ssh:command", {**conn(sshd), "command": "kill -TERM $$"}, ws)
    # sshd reports the signal when the session's program is killed; a shell reports 143 itself
    assert err.value.summary["exit_code"] == 143


def test_unknown_host_key_is_refused(sshd, ws, home):
    params = conn(sshd)
    del params["known_hosts"]  # the defaults: ~/.ssh/known_hosts (none here), the system's
    with pytest.raises(ModuleError) as err:
        run("ssh:command", {**params, "command": "true"}, ws)
    message = str(err.value)
    assert f"the host key of 127.0.0.1 is not trusted" in message
    assert "known_hosts" in message and "insecure_ignore_host_key: true" in message
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1" in message
    assert "\n" not in message
    # a known_hosts entry with another key for this host is refused too
    other = (sshd.folder / "client.pub").read_text().split()[:2]
    with pytest.raises(ModuleError, match="is not trusted"):
        run("ssh:command", {**params, "command": "true",
                            "known_hosts": f"[127.0.0.1]:{sshd.port} {' '.join(other)}\n"}, ws)


def test_known_hosts_as_a_workspace_file(sshd, ws):
    with open(os.path.join(ws.path, "known_hosts"), "w") as fh:
        fh.write("# trusted hosts\n" + sshd.known_hosts)
    out = run("ssh:command", {**conn(sshd, known_hosts="known_hosts"), "command": "echo ok"}, ws)
    assert out["stdout"] == "ok"
    with pytest.raises(ModuleError, match="cannot read known_hosts file 'missing'"):
        run("ssh:command", {**conn(sshd, known_hosts="missing"), "command": "true"}, ws)
    with pytest.raises(SecurityError):
        run("ssh:command", {**conn(sshd, known_hosts="/etc/ssh/ssh_known_hosts"),
                            "command": "true"}, ws)


def test_insecure_opt_in_warns(sshd, ws, home):
    params = conn(sshd, insecure_ignore_host_key=True)
    del params["known_hosts"]
    log = Log()
    out = run("ssh:command", {**params, "command": "echo in"}, ws, log=log)
    assert out["stdout"] == "in"
    assert any("HOST KEY CHECKING IS DISABLED" in w for w in log.warnings())
    with pytest.raises(ValidationError, match="not both"):
        run("ssh:command", {**conn(sshd, insecure_ignore_host_key=True), "command": "true"}, ws)


def test_upload_download_round_trip(sshd, ws):
    data = bytes(range(256)) * 1000 + b"tail"
    with open(os.path.join(ws.path, "payload.bin"), "wb") as fh:
        fh.write(data)
    remote_dir = sshd.folder / "remote"
    remote_dir.mkdir(exist_ok=True)
    remote = str(remote_dir / "up.bin")
    up = run("ssh:upload", {**conn(sshd), "src": "payload.bin", "dest": remote, "mode": "0640"},
             ws)
    assert up == {"bytes_written": len(data), "dest": remote, "mode": "0640"}
    assert read(remote) == data  # the server is this machine
    assert stat.S_IMODE(os.stat(remote).st_mode) == 0o640
    # an existing file gets the new mode too
    up = run("ssh:upload", {**conn(sshd), "src": "payload.bin", "dest": remote, "mode": 0o600},
             ws)
    assert up["mode"] == "0600"

    os.mkdir(os.path.join(ws.path, "back"))
    down = run("ssh:download", {**conn(sshd), "src": remote, "dest": "back/copy.bin"}, ws)
    local = os.path.join(os.path.realpath(ws.path), "back", "copy.bin")
    assert down == {"path": local, "bytes": len(data), "mode": "0600"}
    assert read(local) == data
    assert stat.S_IMODE(os.stat(local).st_mode) == 0o600
    assert os.listdir(os.path.dirname(local)) == ["copy.bin"]  # no temporary file left


def test_transfer_errors_are_one_line(sshd, ws):
    with pytest.raises(ModuleError, match=r"cannot download .*/nope: No such file"):
        run("ssh:download", {**conn(sshd), "src": str(sshd.folder / "nope"), "dest": "x"}, ws)
    assert not os.listdir(ws.path)  # nothing left behind
    with pytest.raises(ModuleError, match="is not a regular file"):
        run("ssh:download", {**conn(sshd), "src": str(sshd.folder), "dest": "x"}, ws)
    with open(os.path.join(ws.path, "f"), "w") as fh:
        fh.write("x")
    with pytest.raises(ModuleError, match=r"cannot upload f to /nonexistent/dir/f: "):
        run("ssh:upload", {**conn(sshd), "src": "f", "dest": "/nonexistent/dir/f"}, ws)
    with pytest.raises(ModuleError, match="cannot read src 'absent'"):
        run("ssh:upload", {**conn(sshd), "src": "absent", "dest": "/tmp/x"}, ws)


def test_paths_escaping_the_workspace_are_refused(sshd, ws):
    with pytest.raises(SecurityError):
        run("ssh:upload", {**conn(sshd), "src": "../../../etc/passwd", "dest": "/tmp/x"}, ws)
    with pytest.raises(SecurityError):
        run("ssh:download", {**conn(sshd), "src": "/etc/hostname", "dest": "/etc/gxo-ssh-test"},
            ws)
    with pytest.raises(SecurityError):
        run("ssh:script", {**conn(sshd), "script_path": "/etc/passwd"}, ws)
    assert not os.path.exists("/etc/gxo-ssh-test")


def test_script_runs_with_quoted_args_and_is_removed(sshd, ws):
    rtmp = sshd.folder / "rtmp-script"
    rtmp.mkdir(exist_ok=True)
    script = '#!/bin/sh\necho "[$1][$2]"\necho "$0" >&2\n'
    out = run("ssh:script", {**conn(sshd), "script": script, "script_args": ["a b; id", "$HOME"],
                             "remote_tmp": str(rtmp)}, ws)
    assert out["stdout"] == "[a b; id][$HOME]"
    assert out["stderr"].startswith(f"{rtmp}/gxo-script-")
    assert os.listdir(rtmp) == []
    with open(os.path.join(ws.path, "s.sh"), "w") as fh:
        fh.write("#!/bin/sh\necho from file\nexit 4\n")
    with pytest.raises(ModuleError, match="script s.sh exited with code 4") as err:
        run("ssh:script", {**conn(sshd), "script_path": "s.sh", "remote_tmp": str(rtmp)}, ws)
    assert err.value.summary["stdout"] == "from file"
    assert os.listdir(rtmp) == []


def test_auth_failure_names_the_user_and_redacts_the_password(sshd, ws):
    params = {"host": sshd.host, "port": sshd.port, "user": sshd.user, "password": PASSWORD,
              "known_hosts": sshd.known_hosts, "command": "true"}
    with pytest.raises(ModuleError) as err:
        run("ssh:command", params, ws)
    assert str(err.value) == (f"ssh {sshd.user}@127.0.0.1:{sshd.port}: authentication failed "
                              f"for user {sshd.user}: the server refused the password")
    with pytest.raises(ModuleError, match="refused the private key"):
        other = sshd.folder / "host_ed25519"  # a valid key the server does not authorize
        run("ssh:command", {**conn(sshd, private_key=other.read_text()), "command": "true"}, ws)


def test_encrypted_key_and_key_file(sshd, ws):
    out = run("ssh:command", {**conn(sshd, private_key=sshd.key_enc, passphrase=PASSPHRASE),
                              "command": "echo enc"}, ws)
    assert out["stdout"] == "enc"
    with pytest.raises(ValidationError, match="give its passphrase as passphrase"):
        run("ssh:command", {**conn(sshd, private_key=sshd.key_enc), "command": "true"}, ws)
    with pytest.raises(ValidationError) as err:
        run("ssh:command", {**conn(sshd, private_key=sshd.key_enc, passphrase=PASSWORD),
                            "command": "true"}, ws)
    assert "not a usable private key" in str(err.value) and PASSWORD not in str(err.value)
    with open(os.path.join(ws.path, "id"), "w") as fh:
        fh.write(sshd.key)
    out = run("ssh:command", {**conn(sshd, private_key="id"), "command": "echo file"}, ws)
    assert out["stdout"] == "file"
    with pytest.raises(ValidationError, match="the private_key text is not a usable private key"):
        run("ssh:command", {**conn(sshd, private_key="-----BEGIN junk\n"), "command": "true"},
            ws)


def test_connection_refused(ws):
    port = free_port()
    with pytest.raises(ModuleError) as err:
        run("ssh:command", {"host": "127.0.0.1", "port": port, "user": "u", "password": PASSWORD,
                            "command": "true"}, ws)
    assert str(err.value) == (f"ssh u@127.0.0.1:{port}: connection refused: no SSH server "
                              f"listens on port {port}")


def test_connect_and_command_timeouts(sshd, ws):
    with socket.socket() as silent:  # accepts connections (the backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        with pytest.raises(ModuleError) as err:
            run("ssh:command", {"host": "127.0.0.1", "port": port, "user": "u",
                                "password": PASSWORD, "connect_timeout": "300ms",
                                "command": "true"}, ws)
    assert str(err.value).startswith(f"ssh u@127.0.0.1:{port}: no SSH session within 300ms "
                                     f"(connect_timeout)")
    with pytest.raises(ModuleError) as err:
        run("ssh:command", {**conn(sshd), "command": "echo started; sleep 30",
                            "timeout": "1s"}, ws)
    assert "command 'echo started; sleep 30' did not finish within 1s (timeout)" in str(err.value)
    assert err.value.summary["exit_code"] == -1


def test_params_checked_at_run_time(ws):
    base = {"host": "127.0.0.1", "user": "u", "password": "p", "command": "true"}
    with pytest.raises(ModuleError, match="no connection manager in this context"):
        run("ssh:command", {"connection_id": "c1", "command": "true"}, ws)
    with pytest.raises(ValidationError, match="give connection_id or the connection params, "
                                              "not both.*drop host, user, password"):
        run("ssh:command", {**base, "connection_id": "c1"}, ws)
    with pytest.raises(ValidationError, match=r"give connection_id \(from ssh:connect\) or host"):
        run("ssh:command", {"command": "true"}, ws)
    with pytest.raises(ValidationError, match="exactly one of 'password' and 'private_key'"):
        run("ssh:command", {**base, "private_key": "k"}, ws)
    with pytest.raises(ValidationError, match="exactly one of 'command' and 'args'"):
        run("ssh:command", {**base, "args": ["ls"]}, ws)
    with pytest.raises(ValidationError, match="'passphrase' goes with 'private_key'"):
        run("ssh:command", {**base, "passphrase": "x"}, ws)


def test_dry_run_connects_to_nothing(ws):
    params = {"host": "127.0.0.1", "port": free_port(), "user": "u", "password": "p"}
    assert run("ssh:command", {**params, "command": "rm -rf /"}, ws, dry_run=True) == {
        "dry_run": True, "stdout": "", "stderr": "", "exit_code": 0}
    out = run("ssh:download", {**params, "src": "/etc/passwd", "dest": "p"}, ws, dry_run=True)
    assert out["dry_run"] is True and out["bytes"] == 0
    assert not os.path.exists(os.path.join(ws.path, "p"))


# --------------------------------------------------------------------------- ssh:connect


class Modules:
    """Modules run on one event loop against one connection manager, as a run's workloads."""

    def __init__(self, ws: Workspace, mgr: ConnectionManager | None = None,
                 log: Log | None = None, dry_run: bool = False) -> None:
        self.mgr = mgr or ConnectionManager()
        self.log = log or Log()
        self.ctx = Context(workload="w", run_id="r", logger=self.log, workspace=ws, state=dict,
                           dry_run=dry_run, connections=lambda: self.mgr,
                           redact=lambda text: text.replace(PASSWORD, "[REDACTED]"))

    async def __call__(self, module: str, params: dict) -> Any:
        return await load_module_class(module)().perform(self.ctx, params)


async def settled(pred, timeout: float = 10.0) -> bool:
    """``pred()`` becomes true within ``timeout`` (a closed socket takes a moment to leave
    ESTABLISHED)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            return False
        await asyncio.sleep(0.01)
    return True


def test_connect_then_three_commands_over_one_connection(sshd, ws):
    async def main():
        mods = Modules(ws)
        assert await settled(lambda: not sshd.clients())
        opened = await mods("ssh:connect", conn(sshd))
        cid = opened["connection_id"]
        assert cid.startswith("conn-")
        local_port = int(opened["local_addr"].rpartition(":")[2])
        assert opened == {"connection_id": cid, "host": "127.0.0.1", "port": sshd.port,
                          "user": sshd.user, "server_version": opened["server_version"],
                          "local_addr": f"127.0.0.1:{local_port}"}
        assert opened["server_version"].startswith("SSH-2.0-OpenSSH")
        # three commands at once over the connection: the server sees one client address
        outs = await asyncio.gather(*(
            mods("ssh:command", {"connection_id": cid, "command": f"echo {i} $SSH_CONNECTION"})
            for i in range(3)))
        for i, out in enumerate(outs):
            n, client_ip, client_port, _, server_port = out["stdout"].split()
            assert (n, client_ip, client_port, server_port) == (
                str(i), "127.0.0.1", str(local_port), str(sshd.port))
        assert sshd.clients() == [local_port]  # one TCP connection, still open
        assert list(mods.mgr.conns) == [cid]
        closed = await mods("connection:close", {"connection_id": cid})
        assert closed == {"connection_id": cid, "closed": True}
        assert await settled(lambda: not sshd.clients())
        with pytest.raises(ModuleError) as err:
            await mods("ssh:command", {"connection_id": cid, "command": "true"})
        assert str(err.value) == f"connection '{cid}' is closed (closed by connection:close)"

    asyncio.run(main())


def test_more_modules_at_once_than_the_server_has_channels_take_turns(sshd, ws):
    """OpenSSH serves 10 channels per connection (MaxSessions): 12 scripts (an SFTP channel and
    a command channel each) over one connection wait their turn instead of failing."""
    rtmp = sshd.folder / "rtmp-turns"
    rtmp.mkdir(exist_ok=True)

    async def main():
        mods = Modules(ws)
        cid = (await mods("ssh:connect", conn(sshd)))["connection_id"]
        outs = await asyncio.gather(*(
            mods("ssh:script", {"connection_id": cid, "script": f"#!/bin/sh\nsleep 0.2; echo {i}\n",
                                "remote_tmp": str(rtmp)})
            for i in range(12)))
        assert [o["stdout"] for o in outs] == [str(i) for i in range(12)]
        assert len(sshd.clients()) == 1
        await mods.mgr.close_all()

    asyncio.run(main())
    assert os.listdir(rtmp) == []


def test_upload_script_and_download_over_one_connection(sshd, ws):
    data = b"over one connection\n" * 1000
    with open(os.path.join(ws.path, "payload.bin"), "wb") as fh:
        fh.write(data)
    remote_dir = sshd.folder / "handle"
    remote_dir.mkdir(exist_ok=True)
    remote = str(remote_dir / "up.bin")

    async def main():
        mods = Modules(ws)
        cid = (await mods("ssh:connect", conn(sshd)))["connection_id"]
        use = {"connection_id": cid}
        up = await mods("ssh:upload", {**use, "src": "payload.bin", "dest": remote,
                                       "mode": "0600"})
        assert up == {"bytes_written": len(data), "dest": remote, "mode": "0600"}
        out = await mods("ssh:script", {**use, "script": f"#!/bin/sh\nwc -c < {remote}\n",
                                        "remote_tmp": str(remote_dir)})
        assert out["stdout"].strip() == str(len(data))
        down = await mods("ssh:download", {**use, "src": remote, "dest": "copy.bin"})
        assert down["bytes"] == len(data) and down["mode"] == "0600"
        assert read(down["path"]) == data
        assert len(sshd.clients()) == 1
        assert mods.mgr.opened == 1 and list(mods.mgr.conns) == [cid]
        await mods.mgr.close_all()  # the run's end
        assert await settled(lambda: not sshd.clients())

    asyncio.run(main())
    assert sorted(os.listdir(sshd.folder / "handle")) == ["up.bin"]  # the script was removed


def test_unknown_closed_and_wrong_kind_ids(sshd, ws):
    async def main():
        mods = Modules(ws)
        with pytest.raises(ModuleError) as err:
            await mods("ssh:command", {"connection_id": "conn-nope", "command": "true"})
        assert str(err.value).startswith("connection 'conn-nope' not found: no connection with "
                                         "this id is open in this run")
        assert "ssh:connect" in str(err.value)
        # a raw TCP connection is not an SSH client
        tcp = (await mods("connection:open", {"network": "tcp",
                                              "address": f"127.0.0.1:{sshd.port}"}))
        with pytest.raises(ModuleError) as err:
            await mods("ssh:command", {"connection_id": tcp["connection_id"], "command": "id"})
        assert str(err.value) == (
            f"connection '{tcp['connection_id']}' is a TCP connection (from connection:open or "
            f"connection:listen), not an SSH connection: give the connection_id that "
            f"ssh:connect returned")
        # nor is an SSH client a byte stream
        cid = (await mods("ssh:connect", conn(sshd)))["connection_id"]
        for module, extra in (("connection:read", {"read_bytes": 1}),
                              ("connection:write", {"data": "x"})):
            with pytest.raises(ModuleError) as err:
                await mods(module, {"connection_id": cid, **extra})
            assert str(err.value) == (
                f"connection '{cid}' is an SSH connection (from ssh:connect): use it with "
                f"ssh:command, ssh:script, ssh:upload or ssh:download (connection:read and "
                f"connection:write take TCP and UDP connections)")
        out = await mods("ssh:command", {"connection_id": cid, "command": "echo still open"})
        assert out["stdout"] == "still open"
        await mods.mgr.close_all()
        with pytest.raises(ModuleError, match=f"connection '{cid}' is closed "
                                              r"\(the run has ended\)"):
            await mods("ssh:command", {"connection_id": cid, "command": "true"})

    asyncio.run(main())


def test_a_connection_the_server_drops_is_forgotten(sshd, ws):
    async def main():
        mods = Modules(ws, ConnectionManager(limit=1))
        cid = (await mods("ssh:connect", conn(sshd)))["connection_id"]
        # the remote shell's parent is the server's process of this connection: killed, the
        # server side of the connection is gone
        with pytest.raises(ModuleError, match="ended without an exit status"):
            await mods("ssh:command", {"connection_id": cid, "command": "kill -9 $PPID"})
        handle = mods.mgr.conns[cid]
        assert await settled(lambda: handle.lost() is not None and not sshd.clients())
        # it no longer counts against the limit of 1
        again = (await mods("ssh:connect", conn(sshd)))["connection_id"]
        assert (await mods("ssh:command", {"connection_id": again, "command": "echo again"})
                )["stdout"] == "again"
        with pytest.raises(ModuleError) as err:
            await mods("ssh:command", {"connection_id": cid, "command": "true"})
        assert str(err.value) == (f"connection '{cid}' is closed (the SSH server or the network "
                                  f"closed it)")
        await mods.mgr.close_all()

    asyncio.run(main())


def test_connect_refuses_an_unknown_host_key_by_default(sshd, ws, home):
    async def main():
        mods = Modules(ws)
        params = conn(sshd)
        del params["known_hosts"]
        with pytest.raises(ModuleError, match="the host key of 127.0.0.1 is not trusted"):
            await mods("ssh:connect", params)
        other = " ".join((sshd.folder / "client.pub").read_text().split()[:2])
        with pytest.raises(ModuleError, match="is not trusted"):
            await mods("ssh:connect", {**params,
                                       "known_hosts": f"[127.0.0.1]:{sshd.port} {other}\n"})
        assert mods.mgr.conns == {} and mods.mgr.opened == 0
        assert await settled(lambda: not sshd.clients())

    asyncio.run(main())


def test_connect_with_insecure_ignore_host_key_warns(sshd, ws, home):
    async def main():
        mods = Modules(ws)
        params = conn(sshd, insecure_ignore_host_key=True)
        del params["known_hosts"]
        cid = (await mods("ssh:connect", params))["connection_id"]
        assert any("HOST KEY CHECKING IS DISABLED" in w for w in mods.log.warnings())
        out = await mods("ssh:command", {"connection_id": cid, "command": "echo in"})
        assert out["stdout"] == "in"
        await mods.mgr.close_all()

    asyncio.run(main())


def test_the_connection_limit_is_a_clear_error(sshd, ws):
    async def main():
        mods = Modules(ws, ConnectionManager(limit=2))
        await mods("connection:open", {"network": "tcp", "address": f"127.0.0.1:{sshd.port}"})
        cid = (await mods("ssh:connect", conn(sshd)))["connection_id"]
        with pytest.raises(ConnectionLimitError) as err:
            await mods("ssh:connect", conn(sshd))
        assert str(err.value) == (
            "connection limit reached: 2 connections are open in this run; close the ones you "
            "are done with (connection:close) or raise GXO_MAX_CONNECTIONS")
        assert len(sshd.clients()) == 2  # the refused one was never opened
        await mods("connection:close", {"connection_id": cid})
        cid = (await mods("ssh:connect", conn(sshd)))["connection_id"]  # room again
        assert (await mods("ssh:command", {"connection_id": cid, "command": "echo ok"})
                )["stdout"] == "ok"
        await mods.mgr.close_all()
        assert await settled(lambda: not sshd.clients())

    asyncio.run(main())


def test_idle_timeout_spares_a_connection_in_use(sshd, ws):
    async def main():
        mods = Modules(ws, ConnectionManager(idle_timeout=0.3))
        cid = (await mods("ssh:connect", conn(sshd)))["connection_id"]
        # a command longer than the idle timeout: the connection is in use, not idle
        out = await mods("ssh:command", {"connection_id": cid, "command": "sleep 1; echo done"})
        assert out["stdout"] == "done"
        assert await settled(lambda: cid in mods.mgr.closed)
        with pytest.raises(ModuleError) as err:
            await mods("ssh:command", {"connection_id": cid, "command": "true"})
        assert str(err.value).startswith(f"connection '{cid}' is closed (idle for 0.3s")
        assert "GXO_CONNECTION_IDLE_TIMEOUT" in str(err.value)
        assert await settled(lambda: not sshd.clients())
        await mods.mgr.close_all()

    asyncio.run(main())


def test_connect_dry_run_opens_nothing(ws):
    async def main():
        mods = Modules(ws, dry_run=True)
        params = {"host": "127.0.0.1", "port": free_port(), "user": "u", "password": "p"}
        opened = await mods("ssh:connect", params)
        assert opened == {"dry_run": True, "connection_id": "", "host": "127.0.0.1",
                          "port": params["port"], "user": "u", "server_version": "",
                          "local_addr": ""}
        out = await mods("ssh:command", {"connection_id": "", "command": "rm -rf /"})
        assert out["dry_run"] is True
        assert mods.mgr.opened == 0

    asyncio.run(main())
