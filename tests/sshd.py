"""A throwaway OpenSSH server for the ``ssh:*`` tests: Debian's ``sshd`` run by the tests on a
free loopback port, with a host key, client keys and an ``sshd_config`` in a temporary folder.

``start_sshd(folder)`` returns an ``Sshd`` once the server answers; ``stop()`` kills it.  The
server lets the user running the tests log in with the client keys (``key``, ``key_enc``
protected by ``passphrase``); passwords are accepted by the configuration but checked against
the system's, which the tests never know, so a password always fails."""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from services import need_program

from acceptance.harness import free_port

PASSPHRASE = "correct horse battery staple"


@dataclass
class Sshd:
    port: int
    user: str
    folder: Path
    proc: subprocess.Popen
    host_pub: str  # the host's public key line "ssh-ed25519 AAAA..."
    key: str  # the client's private key text (no passphrase)
    key_enc: str  # another client key, protected by PASSPHRASE
    host: str = "127.0.0.1"

    @property
    def known_hosts(self) -> str:
        """A known_hosts line that trusts this server."""
        return f"[{self.host}]:{self.port} {self.host_pub}\n"

    def clients(self) -> list[int]:
        """Local ports of this machine's ESTABLISHED TCP connections to the server (their client
        side, from /proc/net/tcp, as `ss -tn state established dport = :PORT` lists them)."""
        ports = []
        with open("/proc/net/tcp") as fh:
            next(fh)
            for line in fh:
                local, remote, state = line.split()[1:4]
                if state == "01" and remote == f"0100007F:{self.port:04X}":
                    ports.append(int(local.split(":")[1], 16))
        return ports

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def _keygen(path: Path, passphrase: str = "") -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "gxo-test",
                    "-f", str(path)], check=True, capture_output=True)


def start_sshd(folder: Path) -> Sshd:
    sshd = need_program("sshd", "openssh-server")
    need_program("ssh-keygen", "openssh-client")
    user = getpass.getuser()
    _keygen(folder / "host_ed25519")
    _keygen(folder / "client")
    _keygen(folder / "client_enc", PASSPHRASE)
    (folder / "authorized_keys").write_text(
        (folder / "client.pub").read_text() + (folder / "client_enc.pub").read_text())
    port = free_port()
    (folder / "sshd_config").write_text(
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {folder / 'host_ed25519'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\n"
        f"PidFile {folder / 'sshd.pid'}\n"
        "UsePAM no\n"
        "StrictModes no\n"
        "PasswordAuthentication yes\n"
        "KbdInteractiveAuthentication no\n"
        f"PermitRootLogin {'yes' if os.geteuid() == 0 else 'no'}\n"
        "Subsystem sftp internal-sftp\n"
        "LogLevel ERROR\n"
    )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege separation folder
    log = open(folder / "sshd.log", "wb")
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(folder / "sshd_config")],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    log.close()
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}: "
                               f"{(folder / 'sshd.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.settimeout(2)
                if s.recv(4).startswith(b"SSH-"):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"sshd did not answer on port {port}: "
                               f"{(folder / 'sshd.log').read_text()}")
        time.sleep(0.05)
    host_pub = " ".join((folder / "host_ed25519.pub").read_text().split()[:2])
    return Sshd(port=port, user=user, folder=folder, proc=proc, host_pub=host_pub,
                key=(folder / "client").read_text(), key_enc=(folder / "client_enc").read_text())
