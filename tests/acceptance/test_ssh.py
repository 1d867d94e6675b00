"""ssh:* end to end: ``gxoc build`` then ``gxo exec`` against a throwaway OpenSSH server on
loopback (the session's ``sshd`` fixture, tests/sshd.py).  A file written in the workspace goes
up over SFTP, is read by a remote command and comes back; the key and the password come from
secrets and appear nowhere in what gxo prints; a wrong password fails with one clear line."""

from __future__ import annotations

from pathlib import Path

from acceptance.harness import build, gxo_exec

PLAYBOOK = """\
name: ssh-e2e
schemaVersion: "1.0.0"
vars:
  port: 22
  user: root
  known_hosts: ""
  remote_dir: /tmp
workloads:
  - name: payload
    lifecycle: {policy: run_once}
    process:
      module: filesystem:write
      params: {path: payload.txt, content: "hello over sftp; $(not run)"}
  - name: upload
    lifecycle: {policy: run_once}
    needs: [payload]
    process:
      module: ssh:upload
      params:
        host: 127.0.0.1
        port: "{{ .port }}"
        user: "{{ .user }}"
        private_key: '{{ secret "GXO_TEST_SSH_KEY" }}'
        known_hosts: "{{ .known_hosts }}"
        src: payload.txt
        dest: "{{ .remote_dir }}/up.txt"
        mode: "0640"
    register: up
  - name: remote_cat
    lifecycle: {policy: run_once}
    process:
      module: ssh:command
      params:
        host: 127.0.0.1
        port: "{{ .port }}"
        user: "{{ .user }}"
        private_key: '{{ secret "GXO_TEST_SSH_KEY" }}'
        known_hosts: "{{ .known_hosts }}"
        args: [cat, "{{ .up.dest }}"]
    register: cat
  - name: download
    lifecycle: {policy: run_once}
    needs: [remote_cat]
    process:
      module: ssh:download
      params:
        host: 127.0.0.1
        port: "{{ .port }}"
        user: "{{ .user }}"
        private_key: '{{ secret "GXO_TEST_SSH_KEY" }}'
        known_hosts: "{{ .known_hosts }}"
        src: "{{ .up.dest }}"
        dest: back.txt
    register: back
  - name: read_back
    lifecycle: {policy: run_once}
    needs: [download]
    process:
      module: filesystem:read
      params: {path: back.txt}
    register: copy
  - name: wrong_password
    lifecycle: {policy: run_once}
    ignore_errors: true
    process:
      module: ssh:command
      params:
        host: 127.0.0.1
        port: "{{ .port }}"
        user: "{{ .user }}"
        password: '{{ secret "GXO_TEST_SSH_PASSWORD" }}'
        known_hosts: "{{ .known_hosts }}"
        command: "true"
"""

PASSWORD = "wrong-pw-4f1c9a7e"


def test_upload_command_download_and_a_refused_password(sshd, work: Path) -> None:
    pb = work / "ssh.yaml"
    pb.write_text(PLAYBOOK)
    plan = build(pb, work)
    remote_dir = sshd.folder / "e2e"
    remote_dir.mkdir(exist_ok=True)
    run = gxo_exec(plan, "--var", f"port={sshd.port}", "--var", f"user={sshd.user}",
                   "--var", f"known_hosts={sshd.known_hosts.strip()}",
                   "--var", f"remote_dir={remote_dir}",
                   env={"GXO_TEST_SSH_KEY": sshd.key, "GXO_TEST_SSH_PASSWORD": PASSWORD})
    assert run.rc == 0, run.explain()
    assert "asyncssh" not in run.stderr and "Warning" not in run.stderr, run.stderr
    assert run.statuses == {"payload": "Completed", "upload": "Completed",
                            "remote_cat": "Completed", "download": "Completed",
                            "read_back": "Completed", "wrong_password": "Failed"}
    content = "hello over sftp; $(not run)"
    assert run.summary("upload") == {"bytes_written": len(content),
                                     "dest": f"{remote_dir}/up.txt", "mode": "0640"}
    assert (remote_dir / "up.txt").read_text() == content
    assert run.summary("remote_cat") == {"stdout": content, "stderr": "", "exit_code": 0}
    back = run.summary("download")
    assert (back["bytes"], back["mode"]) == (len(content), "0640")
    assert run.summary("read_back") == {"content": content}
    end = run.end("wrong_password")
    assert end["ignored"] is True
    assert end["error"].endswith(f"ssh {sshd.user}@127.0.0.1:{sshd.port}: authentication "
                                 f"failed for user {sshd.user}: the server refused the "
                                 f"password"), end
    # the credentials appear nowhere: not the password, not a line of the key
    assert PASSWORD.encode() not in run.raw
    for line in sshd.key.splitlines()[1:-1]:
        assert line.encode() not in run.raw
