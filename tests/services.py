"""Real peers for the tests: services this machine runs on loopback (PostgreSQL, MariaDB, ...)
and programs from Debian's packages that a test starts itself (sshd, dnsmasq).

A test that needs one calls ``need_service`` or ``need_program`` first: on a machine without it
the test is skipped with the reason, and under ``GXO_TEST_SERVICES=require`` (what ``.ci/run``
sets) it fails instead, so CI never passes by skipping."""

from __future__ import annotations

import os
import shutil
import socket

import pytest


def _missing(reason: str) -> None:
    if os.environ.get("GXO_TEST_SERVICES") == "require":
        pytest.fail(f"{reason} (GXO_TEST_SERVICES=require)", pytrace=False)
    pytest.skip(reason)


def service_address(env: str, default: str) -> tuple[str, int]:
    """``HOST:PORT`` from the environment variable ``env``, else ``default``."""
    host, _, port = os.environ.get(env, default).rpartition(":")
    return host or "127.0.0.1", int(port)


def need_service(name: str, env: str, default: str) -> tuple[str, int]:
    """The address of a service on loopback (``env`` overrides ``default``), or skip/fail."""
    host, port = service_address(env, default)
    try:
        with socket.create_connection((host, port), timeout=2):
            pass
    except OSError as exc:
        _missing(f"{name} is not reachable at {host}:{port} (set {env}): {exc.strerror or exc}")
    return host, port


def need_program(program: str, package: str) -> str:
    """The path of ``program`` (from Debian's ``package``), or skip/fail."""
    path = shutil.which(program) or next(
        (p for p in (f"/usr/sbin/{program}", f"/sbin/{program}") if os.access(p, os.X_OK)), None)
    if path is None:
        _missing(f"{program} is not installed (apt-get install {package})")
    return path  # type: ignore[return-value]


def need_cgroup() -> str:
    """What ``gxo`` will make the run's cgroup in (``cgroup v2``, ``cgroup v1 freezer`` ...): a
    hierarchy where this process may make a cgroup and move processes (root, or a delegated
    cgroup v2 sub-tree), or skip/fail."""
    from gxo.runtime import cgroups

    problems: list[str] = []
    for h in cgroups.hierarchies():
        try:
            probe = cgroups.Cgroup.create(h.own, f"gxo-probe-{os.getpid()}", h.version)
        except cgroups.CgroupError as exc:
            problems.append(str(exc))
            continue
        probe.remove()
        if os.access(os.path.join(h.own, "cgroup.procs"), os.W_OK):
            return h.describe()
        problems.append(f"{h.own}/cgroup.procs is not writable")
    _missing("no cgroup this process may create and join (root, or a delegated cgroup v2 sub-tree): "
             + ("; ".join(problems) or "no cgroup hierarchy is mounted"))
    return ""
