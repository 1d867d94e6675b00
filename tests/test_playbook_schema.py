"""The playbook JSON Schema (schemas/playbook.schema.json): well-formed, strict, and one error per rule.

Every invalid case changes one thing in a valid playbook and must produce exactly one error, at
the expected instance path and from the expected keyword: that is what lets the compiler map a
schema error to one precise diagnostic (span + hint from the schema's ``description``).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

DELETE = object()  # a patch value that removes the key


def _load_schema() -> dict[str, Any]:
    text = (files("gxo.schemas") / "playbook.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


SCHEMA = _load_schema()
VALIDATOR = Draft202012Validator(SCHEMA)


def _errors(doc: Any) -> list[tuple[tuple[Any, ...], str]]:
    return sorted(
        ((tuple(e.absolute_path), str(e.validator)) for e in VALIDATOR.iter_errors(doc)),
        key=repr,
    )


def _patched(doc: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Apply ``{"/json/pointer": value}`` patches to a deep copy of ``doc``."""
    out = copy.deepcopy(doc)
    for pointer, value in patch.items():
        parts: list[Any] = [int(p) if p.isdigit() else p for p in pointer.strip("/").split("/")]
        target: Any = out
        for part in parts[:-1]:
            target = target[part]
        if value is DELETE:
            del target[parts[-1]]
        else:
            target[parts[-1]] = value
    return out


# A minimal valid playbook that the cases below change one key at a time.
BASE: dict[str, Any] = {
    "name": "demo",
    "schemaVersion": "1.0.0",
    "workloads": [
        {
            "name": "a",
            "lifecycle": {"policy": "run_once"},
            "process": {"module": "exec", "params": {"command": "true"}},
        }
    ],
}

# A playbook that uses every key the schema defines (checked by test_full_playbook_uses_every_key).
FULL: dict[str, Any] = {
    "name": "everything",
    "schemaVersion": "v1.0.0",
    "vars": {"env": "staging", "users": ["alice", "bob"], "limits": {"cpu": 2}},
    "state_policy": {"access_mode": "deep_copy"},
    "channel_policy": {"buffer_size": 0, "overflow_strategy": "drop_oldest", "flush_interval": "10ms"},
    "workload_policy": {"max_concurrency": 8, "skip_on_no_input": False, "allowed_paths": ["/etc/app"]},
    "workloads": [
        {
            "name": "listener",
            "lifecycle": {
                "policy": "supervise",
                "restart": "always",
                "backoff": {
                    "base": "1s",
                    "cap": "60s",
                    "jitter": 0.1,
                    "max_restarts": 5,
                    "restart_window": "10m",
                },
                "healthy_after": "30s",
                "interval": "1m",  # the compiler accepts it only for a reconciler (filesystem:manage)
                "stop_timeout": "5s",
            },
            "process": {"module": "connection:listen", "params": {"network": "tcp", "address": ":8080"}},
            "security_context": {
                "seccomp": "default-minimal",
                "namespaces": {
                    "mount": True,
                    "pid": True,
                    "ipc": True,
                    "uts": True,
                    "user": True,
                    "net": False,
                },
                "resources": {
                    "memory_bytes": 268435456,
                    "cpu_quota_us": 50000,
                    "cpu_period_us": 100000,
                    "cpu_weight": 200,
                    "pids_max": 64,
                },
                "no_new_privileges": True,
                "user": "nobody",
                "read_only_paths": ["/etc", "/usr"],
                "root_filesystem": "/srv/rootfs",
            },
        },
        {
            "name": "handler",
            "lifecycle": {"policy": "event_driven", "source": "listener", "concurrency": 4},
            "process": {
                "module": "stream:pipeline",
                "params": {"steps": [{"id": "read", "uses": "connection:read", "with": {"connection_id": "{{ .connection_id }}"}}]},
            },
            "security_context": {"seccomp_profile_path": "profiles/strict.json"},
        },
        {
            "name": "nightly",
            "lifecycle": {"policy": "scheduled", "cron": "30 2 * * *", "timezone": "Europe/Berlin",
                          "overlap": "skip", "misfire": "run_once"},
            "process": {"module": "exec", "params": {"command": "date"}},
            "timeout": "5m",
        },
        {
            "name": "seed",
            "lifecycle": {"policy": "run_once"},
            "process": {"module": "data:generate_from_list", "params": {"items": [1, 2, 3]}},
            "on_failure": ["nightly"],
        },
        {
            "name": "consume",
            "lifecycle": {"policy": "run_once"},
            "process": {"module": "passthrough"},
            "stream_inputs": ["seed"],
            "policy": {"skip_on_no_input": True, "allowed_paths": ["/srv/app"]},
            "register": "consumed",
        },
        {
            "name": "write-files",
            "lifecycle": {"policy": "run_once"},
            "process": {
                "module": "filesystem:write",
                "params": {"path": "home/{{ .user }}.txt", "content": "hi {{ .user }}", "mode": "0600"},
            },
            "register": "written",
            "needs": ["consume"],
            "when": '{{ eq .env "staging" }}',
            "loop": "{{ .users }}",
            "loop_control": {"loop_var": "user", "parallel": 2},
            "retry": {
                "attempts": 3,
                "delay": "2s",
                "max_delay": "10s",
                "backoff_factor": 2.0,
                "jitter": 0.1,
                "on_error": True,
            },
            "timeout": "1m30s",
            "ignore_errors": True,
            "state_policy": {"access_mode": "unsafe_direct_reference"},
        },
    ],
}


def _subschema(ref: str) -> dict[str, Any]:
    return SCHEMA["$defs"][ref]


def _walk(node: Any, where: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every subschema (dict) of the schema, with a JSON-pointer-like location."""
    if isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            yield from _walk(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{where}/{i}")


# ---------------------------------------------------------------------------------------------
# The schema itself


def test_check_schema() -> None:
    Draft202012Validator.check_schema(SCHEMA)


def test_dialect_and_versioned_id() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert re.search(r"/v1(\.json)?$", SCHEMA["$id"]), SCHEMA["$id"]


def test_every_object_is_strict() -> None:
    free_maps = {"#/properties/vars", "#/$defs/Process/properties/params"}
    for where, node in _walk(SCHEMA):
        if node.get("type") == "object" and where not in free_maps:
            assert node.get("additionalProperties") is False, where
    for where in free_maps:
        assert "additionalProperties" not in _resolve_pointer(where), where


def _resolve_pointer(where: str) -> dict[str, Any]:
    node: Any = SCHEMA
    for part in where.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_every_property_has_a_description() -> None:
    missing = []
    for where, node in _walk(SCHEMA):
        if node.get("type") == "object" and "properties" in node:
            for key, prop in node["properties"].items():
                if not (isinstance(prop, dict) and prop.get("description", "").strip()):
                    missing.append(f"{where}/properties/{key}")
    assert missing == []
    for name, node in SCHEMA["$defs"].items():
        assert node.get("description", "").strip(), f"$defs/{name}"


def test_forbidden_keys_explain_themselves() -> None:
    """A context-dependent ban is ``{"not": {}, "description": ...}`` so its error carries a hint."""
    bans = [(where, node) for where, node in _walk(SCHEMA) if node.get("not") == {}]
    # restart, backoff, healthy_after, interval, stop_timeout; source, concurrency; cron, timezone,
    # overlap, misfire; seccomp_profile_path
    assert len(bans) == 12, "expected a ban of each lifecycle key under the other policies, and seccomp_profile_path"
    for where, node in bans:
        assert node.get("description", "").strip(), where


def test_legacy_keys_are_absent() -> None:
    """tasks / task_policy / restart_policy get rename diagnostics from the compiler, not the schema."""
    for where, node in _walk(SCHEMA):
        props = node.get("properties", {})
        for legacy in ("tasks", "task_policy", "restart_policy", "type", "resource_limits", "templating"):
            assert legacy not in props, f"{where} has legacy key {legacy}"


def test_required_keys() -> None:
    assert set(SCHEMA["required"]) == {"name", "schemaVersion", "workloads"}
    assert set(_subschema("Workload")["required"]) == {"name", "lifecycle", "process"}
    assert _subschema("Lifecycle")["required"] == ["policy"]
    assert _subschema("Process")["required"] == ["module"]


def test_duration_pattern_is_go_syntax() -> None:
    assert _subschema("Duration")["pattern"] == "^([0-9]+(\\.[0-9]+)?(ns|us|\u00b5s|ms|s|m|h))+$"


# ---------------------------------------------------------------------------------------------
# Valid documents


def test_base_is_valid() -> None:
    assert _errors(BASE) == []


def test_full_playbook_is_valid() -> None:
    assert _errors(FULL) == []


def test_full_playbook_uses_every_key() -> None:
    """FULL must exercise every property of the schema, so adding a key means adding it there."""

    def used(objs: list[dict[str, Any]]) -> set[str]:
        return set().union(*(o.keys() for o in objs))

    workloads = FULL["workloads"]
    lifecycles = [w["lifecycle"] for w in workloads]
    contexts = [w["security_context"] for w in workloads if "security_context" in w]
    expected = {
        "top level": (SCHEMA, [FULL]),
        "Workload": (_subschema("Workload"), workloads),
        "Lifecycle": (_subschema("Lifecycle"), lifecycles),
        "Backoff": (_subschema("Backoff"), [lc["backoff"] for lc in lifecycles if "backoff" in lc]),
        "Process": (_subschema("Process"), [w["process"] for w in workloads]),
        "LoopControl": (_subschema("LoopControl"), [w["loop_control"] for w in workloads if "loop_control" in w]),
        "Retry": (_subschema("Retry"), [w["retry"] for w in workloads if "retry" in w]),
        "StatePolicy": (_subschema("StatePolicy"), [FULL["state_policy"]]),
        "ChannelPolicy": (_subschema("ChannelPolicy"), [FULL["channel_policy"]]),
        "WorkloadPolicy": (_subschema("WorkloadPolicy"), [FULL["workload_policy"]]),
        "WorkloadLevelPolicy": (_subschema("WorkloadLevelPolicy"), [w["policy"] for w in workloads if "policy" in w]),
        "SecurityContext": (_subschema("SecurityContext"), contexts),
        "Namespaces": (_subschema("Namespaces"), [c["namespaces"] for c in contexts if "namespaces" in c]),
        "Resources": (_subschema("Resources"), [c["resources"] for c in contexts if "resources" in c]),
    }
    for label, (schema, objs) in expected.items():
        assert used(objs) == set(schema["properties"]), label


VALID_PATCHES: dict[str, dict[str, Any]] = {
    "schemaVersion-v-prefix": {"/schemaVersion": "v1.2.3"},
    # the schema checks the shape only; the compiler's schema-version diagnostic checks major == 1
    "schemaVersion-other-major": {"/schemaVersion": "2.0.0"},
    "vars-empty": {"/vars": {}},
    "vars-nested": {"/vars": {"a": {"b": [1, {"c": None}]}, "flag": True}},
    "name-chars": {"/workloads/0/name": "build_App-9"},
    "register-underscore": {"/workloads/0/register": "_private1"},
    # reserved _gxo registers are the compiler's reserved-name diagnostic, not a schema error
    "register-reserved-left-to-compiler": {"/workloads/0/register": "_gxo_x"},
    "process-without-params": {"/workloads/0/process": {"module": "passthrough"}},
    "process-nested-params": {"/workloads/0/process/params": {"a": {"b": ["{{ .x }}"]}}},
    "when-true": {"/workloads/0/when": True},
    "when-false": {"/workloads/0/when": False},
    "when-template": {"/workloads/0/when": "{{ .x.exit_code }} == 0"},
    "loop-list": {"/workloads/0/loop": [1, "two", {"three": 3}]},
    "loop-empty-list": {"/workloads/0/loop": []},
    "loop-template": {"/workloads/0/loop": "{{ .rows }}"},
    "loop-control-defaults": {"/workloads/0/loop_control": {}},
    "stream-inputs-and-needs": {"/workloads/0/stream_inputs": ["p-1", "p_2"], "/workloads/0/needs": ["x"]},
    "duration-ns": {"/workloads/0/timeout": "1ns"},
    "duration-us": {"/workloads/0/timeout": "250us"},
    "duration-micro-sign": {"/workloads/0/timeout": "250\u00b5s"},
    "duration-fraction": {"/workloads/0/timeout": "1.5s"},
    "duration-compound": {"/workloads/0/timeout": "1h30m10.5s"},
    "duration-zero": {"/workloads/0/timeout": "0s"},
    "retry-empty": {"/workloads/0/retry": {}},
    "retry-integer-factor": {"/workloads/0/retry": {"backoff_factor": 1, "jitter": 1, "attempts": 1}},
    "retry-zero-delay": {"/workloads/0/retry": {"delay": "0s"}},
    "buffer-unbuffered": {"/channel_policy": {"buffer_size": 0}},
    "channel-policy-empty": {"/channel_policy": {}},
    "supervise-minimal": {"/workloads/0/lifecycle": {"policy": "supervise"}},
    "supervise-never": {"/workloads/0/lifecycle": {"policy": "supervise", "restart": "never"}},
    "supervise-on-failure-backoff": {
        "/workloads/0/lifecycle": {
            "policy": "supervise",
            "restart": "on_failure",
            "backoff": {"base": "500ms", "max_restarts": 0},
        }
    },
    "event-driven": {"/workloads/0/lifecycle": {"policy": "event_driven", "source": "listener"}},
    "scheduled-every-5-min": {"/workloads/0/lifecycle": {"policy": "scheduled", "cron": "*/5 * * * *"}},
    "scheduled-weekdays": {"/workloads/0/lifecycle": {"policy": "scheduled", "cron": "0 2 * * 1-5"}},
    "scheduled-names": {"/workloads/0/lifecycle": {"policy": "scheduled", "cron": "0 0 1,15 JAN MON"}},
    "scheduled-seconds-alias-every": {"/workloads/0/lifecycle": {
        "policy": "scheduled", "cron": "@every 90s", "timezone": "Europe/Berlin", "overlap": "queue",
        "misfire": "run_once"}},
    "scheduled-six-fields": {"/workloads/0/lifecycle": {"policy": "scheduled", "cron": "0 30 2 * * *"}},
    "supervise-all-keys": {"/workloads/0/lifecycle": {
        "policy": "supervise", "healthy_after": "30s", "interval": "1m", "stop_timeout": "2s"}},
    "event-driven-concurrency": {"/workloads/0/lifecycle": {"policy": "event_driven", "source": "listener",
                                                            "concurrency": 1}},
    "security-context-empty": {"/workloads/0/security_context": {}},
    "security-context-unconfined": {"/workloads/0/security_context": {"seccomp": "unconfined"}},
    "security-context-profile": {"/workloads/0/security_context": {"seccomp_profile_path": "default"}},
}


@pytest.mark.parametrize("patch", VALID_PATCHES.values(), ids=VALID_PATCHES.keys())
def test_valid(patch: dict[str, Any]) -> None:
    assert _errors(_patched(BASE, patch)) == []


# ---------------------------------------------------------------------------------------------
# One rule, one error


W = "/workloads/0"
WP = ("workloads", 0)
LC = (*WP, "lifecycle")
SC = (*WP, "security_context")


def _lifecycle(**kw: Any) -> dict[str, Any]:
    return {f"{W}/lifecycle": kw}


# id -> (patch, expected instance path, expected keyword)
INVALID: dict[str, tuple[dict[str, Any], tuple[Any, ...], str]] = {
    # top level
    "unknown-top-level-key": ({"/extra": 1}, (), "additionalProperties"),
    "legacy-tasks": ({"/tasks": []}, (), "additionalProperties"),
    "legacy-task-policy": ({"/task_policy": {"skip_on_no_input": True}}, (), "additionalProperties"),
    "legacy-templating": ({"/templating": {"engine": "go"}}, (), "additionalProperties"),
    "missing-name": ({"/name": DELETE}, (), "required"),
    "empty-name": ({"/name": ""}, ("name",), "minLength"),
    "name-not-string": ({"/name": 7}, ("name",), "type"),
    "missing-schemaVersion": ({"/schemaVersion": DELETE}, (), "required"),
    "schemaVersion-two-parts": ({"/schemaVersion": "1.0"}, ("schemaVersion",), "pattern"),
    "schemaVersion-major-only": ({"/schemaVersion": "v1"}, ("schemaVersion",), "pattern"),
    "schemaVersion-number": ({"/schemaVersion": 1.0}, ("schemaVersion",), "type"),
    "missing-workloads": ({"/workloads": DELETE}, (), "required"),
    "empty-workloads": ({"/workloads": []}, ("workloads",), "minItems"),
    "workloads-not-list": ({"/workloads": {"a": {}}}, ("workloads",), "type"),
    "vars-not-map": ({"/vars": ["a"]}, ("vars",), "type"),
    # workload keys
    "unknown-workload-key": ({f"{W}/depends_on": ["b"]}, WP, "additionalProperties"),
    "legacy-workload-type": ({f"{W}/type": "exec"}, WP, "additionalProperties"),
    "on-failure-not-a-list": ({f"{W}/on_failure": "rollback"}, (*WP, "on_failure"), "type"),
    "missing-workload-name": ({f"{W}/name": DELETE}, WP, "required"),
    "bad-name-space": ({f"{W}/name": "build app"}, (*WP, "name"), "pattern"),
    "bad-name-dot": ({f"{W}/name": "a.b"}, (*WP, "name"), "pattern"),
    "missing-lifecycle": ({f"{W}/lifecycle": DELETE}, WP, "required"),
    "missing-process": ({f"{W}/process": DELETE}, WP, "required"),
    "missing-module": ({f"{W}/process": {"params": {}}}, (*WP, "process"), "required"),
    "empty-module": ({f"{W}/process/module": ""}, (*WP, "process", "module"), "minLength"),
    "params-not-map": ({f"{W}/process/params": ["x"]}, (*WP, "process", "params"), "type"),
    "unknown-process-key": ({f"{W}/process/timeout": "1s"}, (*WP, "process"), "additionalProperties"),
    "bad-register-digit": ({f"{W}/register": "1abc"}, (*WP, "register"), "pattern"),
    "bad-register-dash": ({f"{W}/register": "my-reg"}, (*WP, "register"), "pattern"),
    "stream-inputs-duplicate": ({f"{W}/stream_inputs": ["p", "p"]}, (*WP, "stream_inputs"), "uniqueItems"),
    "stream-inputs-bad-name": ({f"{W}/stream_inputs": ["p q"]}, (*WP, "stream_inputs", 0), "pattern"),
    "stream-inputs-not-list": ({f"{W}/stream_inputs": "p"}, (*WP, "stream_inputs"), "type"),
    "needs-duplicate": ({f"{W}/needs": ["b", "b"]}, (*WP, "needs"), "uniqueItems"),
    "needs-not-list": ({f"{W}/needs": "b"}, (*WP, "needs"), "type"),
    "when-number": ({f"{W}/when": 1}, (*WP, "when"), "type"),
    "loop-map": ({f"{W}/loop": {"a": 1}}, (*WP, "loop"), "type"),
    "loop-var-dash": ({f"{W}/loop_control": {"loop_var": "my-var"}}, (*WP, "loop_control", "loop_var"), "pattern"),
    "loop-parallel-zero": ({f"{W}/loop_control": {"parallel": 0}}, (*WP, "loop_control", "parallel"), "minimum"),
    "loop-control-unknown": ({f"{W}/loop_control": {"label": "x"}}, (*WP, "loop_control"), "additionalProperties"),
    "timeout-no-unit": ({f"{W}/timeout": "5"}, (*WP, "timeout"), "pattern"),
    "timeout-days": ({f"{W}/timeout": "1d"}, (*WP, "timeout"), "pattern"),
    "timeout-number": ({f"{W}/timeout": 30}, (*WP, "timeout"), "type"),
    "ignore-errors-string": ({f"{W}/ignore_errors": "yes"}, (*WP, "ignore_errors"), "type"),
    "workload-access-mode": (
        {f"{W}/state_policy": {"access_mode": "shallow"}},
        (*WP, "state_policy", "access_mode"),
        "enum",
    ),
    "workload-policy-unknown": ({f"{W}/policy": {"max_concurrency": 2}}, (*WP, "policy"), "additionalProperties"),
    "workload-policy-type": ({f"{W}/policy": {"skip_on_no_input": "true"}}, (*WP, "policy", "skip_on_no_input"), "type"),
    # retry
    "retry-attempts-zero": ({f"{W}/retry": {"attempts": 0}}, (*WP, "retry", "attempts"), "minimum"),
    "retry-attempts-float": ({f"{W}/retry": {"attempts": 2.5}}, (*WP, "retry", "attempts"), "type"),
    "retry-bad-delay": ({f"{W}/retry": {"delay": "2 seconds"}}, (*WP, "retry", "delay"), "pattern"),
    "retry-negative-max-delay": ({f"{W}/retry": {"max_delay": "-1s"}}, (*WP, "retry", "max_delay"), "pattern"),
    "retry-factor-below-one": ({f"{W}/retry": {"backoff_factor": 0.5}}, (*WP, "retry", "backoff_factor"), "minimum"),
    "retry-jitter-two": ({f"{W}/retry": {"jitter": 2}}, (*WP, "retry", "jitter"), "maximum"),
    "retry-jitter-negative": ({f"{W}/retry": {"jitter": -0.1}}, (*WP, "retry", "jitter"), "minimum"),
    "retry-on-error-string": ({f"{W}/retry": {"on_error": "yes"}}, (*WP, "retry", "on_error"), "type"),
    "retry-circuit-breaker": ({f"{W}/retry": {"circuit_breaker": {}}}, (*WP, "retry"), "additionalProperties"),
    # playbook policies
    "access-mode": ({"/state_policy": {"access_mode": "copy"}}, ("state_policy", "access_mode"), "enum"),
    "state-policy-unknown": ({"/state_policy": {"mode": "deep_copy"}}, ("state_policy",), "additionalProperties"),
    "negative-buffer-size": ({"/channel_policy": {"buffer_size": -1}}, ("channel_policy", "buffer_size"), "minimum"),
    "buffer-size-float": ({"/channel_policy": {"buffer_size": 1.5}}, ("channel_policy", "buffer_size"), "type"),
    "flush-interval-number": ({"/channel_policy": {"flush_interval": 50}}, ("channel_policy", "flush_interval"), "type"),
    "overflow-strategy": (
        {"/channel_policy": {"overflow_strategy": "drop"}},
        ("channel_policy", "overflow_strategy"),
        "enum",
    ),
    "max-concurrency-zero": (
        {"/workload_policy": {"max_concurrency": 0}},
        ("workload_policy", "max_concurrency"),
        "minimum",
    ),
    "worker-pool-size": (
        {"/workload_policy": {"worker_pool_size": 4}},
        ("workload_policy",),
        "additionalProperties",
    ),
    # lifecycle
    "lifecycle-not-map": ({f"{W}/lifecycle": "run_once"}, LC, "type"),
    "missing-policy": (_lifecycle(), LC, "required"),
    "unknown-policy": (_lifecycle(policy="daemon"), (*LC, "policy"), "enum"),
    "unknown-policy-with-restart": (_lifecycle(policy="daemon", restart="always"), (*LC, "policy"), "enum"),
    "lifecycle-unknown-key": (_lifecycle(policy="run_once", every="5m"), LC, "additionalProperties"),
    "restart-policy-alias": (_lifecycle(policy="supervise", restart_policy="always"), LC, "additionalProperties"),
    "restart-under-run-once": (_lifecycle(policy="run_once", restart="always"), (*LC, "restart"), "not"),
    "restart-under-scheduled": (
        _lifecycle(policy="scheduled", cron="* * * * *", restart="on_failure"),
        (*LC, "restart"),
        "not",
    ),
    "backoff-under-event-driven": (
        _lifecycle(policy="event_driven", source="p", backoff={"base": "1s"}),
        (*LC, "backoff"),
        "not",
    ),
    "restart-bad-value": (_lifecycle(policy="supervise", restart="sometimes"), (*LC, "restart"), "enum"),
    "event-driven-without-source": (_lifecycle(policy="event_driven"), LC, "required"),
    "scheduled-without-cron": (_lifecycle(policy="scheduled"), LC, "required"),
    "source-under-supervise": (_lifecycle(policy="supervise", source="p"), (*LC, "source"), "not"),
    "source-under-run-once": (_lifecycle(policy="run_once", source="p"), (*LC, "source"), "not"),
    "cron-under-run-once": (_lifecycle(policy="run_once", cron="* * * * *"), (*LC, "cron"), "not"),
    "source-bad-name": (_lifecycle(policy="event_driven", source="a b"), (*LC, "source"), "pattern"),
    "cron-empty": (_lifecycle(policy="scheduled", cron=""), (*LC, "cron"), "minLength"),
    "cron-not-string": (_lifecycle(policy="scheduled", cron=5), (*LC, "cron"), "type"),
    "backoff-jitter-two": (
        _lifecycle(policy="supervise", backoff={"jitter": 2}),
        (*LC, "backoff", "jitter"),
        "maximum",
    ),
    "backoff-negative-max-restarts": (
        _lifecycle(policy="supervise", backoff={"max_restarts": -1}),
        (*LC, "backoff", "max_restarts"),
        "minimum",
    ),
    "backoff-bad-base": (_lifecycle(policy="supervise", backoff={"base": "fast"}), (*LC, "backoff", "base"), "pattern"),
    "backoff-bad-window": (
        _lifecycle(policy="supervise", backoff={"restart_window": "10"}),
        (*LC, "backoff", "restart_window"),
        "pattern",
    ),
    "backoff-unknown-key": (_lifecycle(policy="supervise", backoff={"factor": 3}), (*LC, "backoff"), "additionalProperties"),
    "healthy-after-bad": (_lifecycle(policy="supervise", healthy_after="10"), (*LC, "healthy_after"), "pattern"),
    "stop-timeout-number": (_lifecycle(policy="supervise", stop_timeout=10), (*LC, "stop_timeout"), "type"),
    "interval-under-scheduled": (
        _lifecycle(policy="scheduled", cron="@daily", interval="30s"),
        (*LC, "interval"),
        "not",
    ),
    "stop-timeout-under-run-once": (_lifecycle(policy="run_once", stop_timeout="5s"), (*LC, "stop_timeout"), "not"),
    "concurrency-zero": (_lifecycle(policy="event_driven", source="p", concurrency=0), (*LC, "concurrency"), "minimum"),
    "concurrency-under-supervise": (_lifecycle(policy="supervise", concurrency=2), (*LC, "concurrency"), "not"),
    "timezone-under-supervise": (_lifecycle(policy="supervise", timezone="UTC"), (*LC, "timezone"), "not"),
    "timezone-empty": (_lifecycle(policy="scheduled", cron="@daily", timezone=""), (*LC, "timezone"), "minLength"),
    "overlap-bad": (_lifecycle(policy="scheduled", cron="@daily", overlap="wait"), (*LC, "overlap"), "enum"),
    "misfire-bad": (_lifecycle(policy="scheduled", cron="@daily", misfire="run_all"), (*LC, "misfire"), "enum"),
    "misfire-under-event-driven": (_lifecycle(policy="event_driven", source="p", misfire="skip"), (*LC, "misfire"), "not"),
    # security_context
    "security-unknown-key": ({f"{W}/security_context": {"privileged": True}}, SC, "additionalProperties"),
    "seccomp-unknown-profile": ({f"{W}/security_context": {"seccomp": "strict"}}, (*SC, "seccomp"), "enum"),
    "seccomp-and-profile-path": (
        {f"{W}/security_context": {"seccomp": "default", "seccomp_profile_path": "p.json"}},
        (*SC, "seccomp_profile_path"),
        "not",
    ),
    "profile-path-empty": ({f"{W}/security_context": {"seccomp_profile_path": ""}}, (*SC, "seccomp_profile_path"), "minLength"),
    "namespaces-unknown": ({f"{W}/security_context": {"namespaces": {"cgroup": True}}}, (*SC, "namespaces"), "additionalProperties"),
    "namespaces-not-bool": ({f"{W}/security_context": {"namespaces": {"net": "yes"}}}, (*SC, "namespaces", "net"), "type"),
    "resources-string": (
        {f"{W}/security_context": {"resources": {"memory_bytes": "1G"}}},
        (*SC, "resources", "memory_bytes"),
        "type",
    ),
    "resources-weight-zero": (
        {f"{W}/security_context": {"resources": {"cpu_weight": 0}}},
        (*SC, "resources", "cpu_weight"),
        "minimum",
    ),
    "resources-period-too-small": (
        {f"{W}/security_context": {"resources": {"cpu_period_us": 10}}},
        (*SC, "resources", "cpu_period_us"),
        "minimum",
    ),
    "resource-limits-alias": ({f"{W}/security_context": {"resource_limits": {}}}, SC, "additionalProperties"),
    "read-only-paths-string": ({f"{W}/security_context": {"read_only_paths": "/etc"}}, (*SC, "read_only_paths"), "type"),
    "no-new-privileges-string": (
        {f"{W}/security_context": {"no_new_privileges": "true"}},
        (*SC, "no_new_privileges"),
        "type",
    ),
    "user-number": ({f"{W}/security_context": {"user": 1000}}, (*SC, "user"), "type"),
}


@pytest.mark.parametrize(("patch", "path", "keyword"), INVALID.values(), ids=INVALID.keys())
def test_invalid(patch: dict[str, Any], path: tuple[Any, ...], keyword: str) -> None:
    assert _errors(_patched(BASE, patch)) == [(path, keyword)]


@pytest.mark.parametrize(("patch", "path", "keyword"), INVALID.values(), ids=INVALID.keys())
def test_invalid_playbooks_are_worded_without_a_python_repr(patch: dict[str, Any], path: tuple[Any, ...],
                                                           keyword: str) -> None:
    """What `gxoc check` says about each invalid playbook names the key in words, never
    jsonschema's message (a repr of the value and the schema)."""
    import re

    from gxo.compiler.diagnostics import Diagnostics
    from gxo.compiler.loader import load_playbook
    from gxo.compiler.schema import validate_playbook

    diags = Diagnostics()
    loaded = load_playbook(json.dumps(_patched(BASE, patch)), "pb.yaml", diags)
    assert loaded.root is not None
    validate_playbook(loaded.root, diags)
    # (lifecycle combinations and cron fields are left to the resolver, which words them)
    for d in diags:
        text = d.message + " " + (d.help or "")
        assert not re.search(r"\{'|\['|is not valid under|is valid under|should not be valid|"
                             r"is a dependency of|does not contain|is too (long|short)", text), text


def test_forbidden_key_error_carries_its_reason() -> None:
    doc = _patched(BASE, _lifecycle(policy="run_once", restart="always"))
    (error,) = VALIDATOR.iter_errors(doc)
    assert "supervise" in error.schema["description"]


def test_missing_source_error_carries_its_reason() -> None:
    doc = _patched(BASE, _lifecycle(policy="event_driven"))
    (error,) = VALIDATOR.iter_errors(doc)
    assert "source" in error.schema["description"]


def test_errors_in_several_workloads_are_all_reported() -> None:
    doc = copy.deepcopy(BASE)
    doc["workloads"].append({"name": "b c", "lifecycle": {"policy": "scheduled"}, "process": {"module": "exec"}})
    doc["workloads"][0]["retry"] = {"attempts": 0}
    assert _errors(doc) == [
        (("workloads", 0, "retry", "attempts"), "minimum"),
        (("workloads", 1, "lifecycle"), "required"),
        (("workloads", 1, "name"), "pattern"),
    ]


# ---------------------------------------------------------------------------------------------
# The user guide's complete examples (```yaml fences) are valid playbooks


DOC = Path(__file__).resolve().parents[1] / "docs" / "playbook.md"
_FENCE = re.compile(r"^```yaml[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def _doc_examples() -> list[str]:
    return _FENCE.findall(DOC.read_text(encoding="utf-8"))


def test_guide_has_complete_examples() -> None:
    assert len(_doc_examples()) >= 4


@pytest.mark.parametrize("index", range(len(_doc_examples()) if DOC.exists() else 0))
def test_guide_example_is_valid(index: int) -> None:
    doc = yaml.safe_load(_doc_examples()[index])
    assert _errors(doc) == []


# ---------------------------------------------------------------------------------------------
# The compiler's fast check agrees with jsonschema


def _fast(doc: Any) -> bool | None:
    from gxo.compiler.schema_check import compile_schema, is_valid

    check = compile_schema(SCHEMA)
    assert check is not None, "the fast check must cover every keyword the schema uses"
    return is_valid(check, doc)


def _mutations(doc: Any, seed: int, count: int) -> Iterator[Any]:
    """``count`` copies of ``doc``, each with one value, chosen at random, replaced or removed."""
    import random

    rng = random.Random(seed)
    values = [None, True, False, 0, -1, 1.0, 2.5, float("nan"), "", "x", "run_once", "10s", "* * * * *",
              [], ["a", "a"], ["a", "b"], [1, 1], {}, {"policy": "run_once"}, {"module": "exec"}]

    def paths(node: Any, prefix: tuple) -> Iterator[tuple]:
        yield prefix
        if isinstance(node, dict):
            for k, v in node.items():
                yield from paths(v, (*prefix, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from paths(v, (*prefix, i))

    every = [p for p in paths(doc, ()) if p]
    for _ in range(count):
        out = copy.deepcopy(doc)
        where = rng.choice(every)
        parent = out
        for part in where[:-1]:
            parent = parent[part]
        if isinstance(parent, dict) and rng.random() < 0.2:
            del parent[where[-1]]
        elif isinstance(parent, dict) and rng.random() < 0.1:
            parent[rng.choice(["typo", "tasks", "when", "register", "policy"])] = rng.choice(values)
        else:
            parent[where[-1]] = copy.deepcopy(rng.choice(values))
        yield out


def _agrees(doc: Any) -> bool | None:
    fast = _fast(doc)
    if fast is not None:
        assert fast == (not _errors(doc)), json.dumps(doc, default=str)[:2000]
    return fast


def test_fast_check_is_sure_of_valid_playbooks() -> None:
    docs = [BASE, FULL, *(_patched(BASE, p) for p in VALID_PATCHES.values())]
    docs += [yaml.safe_load(t) for t in _doc_examples()]
    for doc in docs:
        assert _agrees(doc) is True


def test_fast_check_agrees_on_invalid_playbooks() -> None:
    for patch, _, _ in INVALID.values():
        assert _agrees(_patched(BASE, patch)) in (False, None)


def test_fast_check_agrees_on_mutated_playbooks() -> None:
    answers = [_agrees(doc) for doc in _mutations(FULL, seed=7, count=600)]
    assert answers.count(True) > 20 and answers.count(False) > 100  # both sides exercised


def _module_params() -> list[tuple[str, Any]]:
    root = Path(__file__).resolve().parents[1]
    out = []
    for f in sorted([*root.glob("examples/*.yaml"), *root.glob("tests/golden/check/*/playbook.yaml")]):
        try:
            doc = yaml.safe_load(f.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            continue
        for w in (doc.get("workloads") or []) if isinstance(doc, dict) else []:
            proc = w.get("process") if isinstance(w, dict) else None
            if isinstance(proc, dict) and isinstance(proc.get("module"), str) and isinstance(proc.get("params"), dict):
                out.append((proc["module"], proc["params"]))
    return out


def test_fast_check_agrees_on_module_params() -> None:
    from jsonschema import Draft202012Validator as V

    from gxo.compiler.params import _formats
    from gxo.compiler.schema_check import compile_schema, is_valid
    from gxo.stdlib import registry

    sure = 0
    cases = _module_params()
    assert len(cases) > 50
    for i, (module, params) in enumerate(cases):
        spec = registry().get(module)
        if spec is None:
            continue
        check = compile_schema(spec.params_schema)
        assert check is not None, module
        for doc in [params, *_mutations(params, seed=i, count=20)] if params else [params]:
            fast = is_valid(check, doc)
            if fast is not None:
                sure += 1
                # with the formats the params are checked with (regex: RE2 compiles it)
                assert fast == V(spec.params_schema, format_checker=_formats()).is_valid(doc), (module, doc)
    assert sure > 500
