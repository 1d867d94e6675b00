"""The standard library's module declarations: completeness, schema validity, contracts."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from gxo.stdlib import ModuleSpec, registry
from gxo.stdlib import _schemas
from gxo.stdlib._spec import _BUILTIN_NAMESPACES, LIFECYCLES

ROOT = Path(__file__).resolve().parent.parent

L1 = ("exec", "filesystem:read", "filesystem:write", "filesystem:stat", "filesystem:list",
      "filesystem:manage", "control:wait_for_signal", "control:barrier", "control:assert",
      "control:identity")
L2 = ("connection:open", "connection:listen", "connection:read", "connection:write",
      "connection:close")
L3 = ("dns:query", "http:listen", "http:respond", "ssh:connect", "ssh:command", "ssh:script",
      "ssh:upload", "ssh:download")
L4 = ("passthrough", "data:generate_from_list", "data:parse", "data:map", "data:filter",
      "data:join", "data:aggregate", "data:format")
L5 = ("http:request", "database:query", "template:render")
LX = ("stream:pipeline", "test:assert", "test:mock_http_server", "test:producer")
REQUIRED = {**{n: "L1" for n in L1}, **{n: "L2" for n in L2}, **{n: "L3" for n in L3},
            **{n: "L4" for n in L4}, **{n: "L5" for n in L5}, **{n: "X" for n in LX}}

#: Summary keys always present (checklist §3 tables + design.md), then the optional ones.
D = {"dry_run"}
SUMMARY_KEYS: dict[str, tuple[set[str], set[str]]] = {
    "exec": ({"stdout", "stderr", "stdout_lines", "exit_code"}, {"dry_run", "command", "args"}),
    "filesystem:read": ({"content"}, D),
    "filesystem:write": ({"path", "bytes_written"}, D),
    "filesystem:stat": ({"path", "size", "mode", "is_dir", "modified_time"}, D),
    "filesystem:list": ({"path", "entries"}, D),
    "filesystem:manage": ({"path", "state", "changed"}, D),
    "control:wait_for_signal": ({"resume_token"}, {"resume_payload", "dry_run"}),
    "control:barrier": ({"synchronized_streams"}, set()),
    "control:assert": ({"condition_met", "evaluated_value"}, set()),
    "connection:open": ({"connection_id", "local_addr", "remote_addr"}, D),
    "connection:listen": ({"address", "connections_accepted"}, D),
    "connection:read": ({"data", "bytes_read"}, D),
    "connection:write": ({"bytes_written"}, D),
    "connection:close": ({"connection_id", "closed"}, D),
    "dns:query": ({"answers", "name", "ttl"}, D),
    "http:listen": ({"address", "requests_received"}, D),
    "http:respond": ({"request_id", "bytes_written"}, D),
    "http:request": ({"status_code", "headers", "body", "json_body", "latency_ms"},
                     {"xml_body", "pages", "dry_run"}),
    "ssh:connect": ({"connection_id", "host", "port", "user", "server_version", "local_addr"}, D),
    "ssh:command": ({"stdout", "stderr", "exit_code"}, D),
    "ssh:script": ({"stdout", "stderr", "exit_code"}, D),
    "ssh:upload": ({"bytes_written", "dest", "mode"}, D),
    "ssh:download": ({"path", "bytes", "mode"}, D),
    "passthrough": ({"records_processed"}, {"message"}),
    "data:generate_from_list": ({"records_generated"}, set()),
    "data:parse": ({"records_parsed"}, set()),
    "data:map": ({"records_in", "records_out"}, set()),
    "data:filter": ({"records_in", "records_out"}, set()),
    "data:join": ({"records_joined", "probe_stream_records", "build_stream_records",
                   "skipped_key_errors"}, set()),
    "data:aggregate": ({"records_in", "groups_emitted"}, set()),
    "data:format": ({"formatted_content"}, set()),
    "database:query": ({"rows", "row_count", "rows_affected"}, D),
    "template:render": ({"rendered"}, set()),
    "stream:pipeline": ({"records_processed", "steps"}, set()),
    "test:assert": ({"assertions_passed"}, set()),
    "test:mock_http_server": ({"server_url"}, set()),
    "test:producer": ({"records_sent"}, set()),
}

STREAM_INPUT = {
    "exec": "optional", "passthrough": "required", "control:barrier": "required",
    "control:assert": "optional", "test:assert": "optional", "http:listen": "optional",
    "stream:pipeline": "optional", "data:map": "one", "data:filter": "one",
    "data:aggregate": "one", "data:format": "one", "data:join": "two_or_more",
}
PRODUCERS = {"passthrough", "filesystem:list", "connection:listen", "http:listen",
             "data:generate_from_list", "data:parse", "data:map", "data:filter", "data:join",
             "data:aggregate", "database:query", "stream:pipeline", "test:producer"}
LONG_LIFECYCLES = {
    "exec": ("run_once", "supervise", "event_driven"),  # a source with stdout_records: true
    "filesystem:manage": ("run_once", "supervise"),
    "connection:listen": ("run_once", "supervise", "event_driven"),
    "http:listen": ("run_once", "supervise", "event_driven"),
    "stream:pipeline": ("run_once", "event_driven"),
    "test:producer": ("run_once", "event_driven"),  # a timed source with interval
}
#: producers whose records a boolean param switches on
RECORDS_PARAMS = {"exec": "stdout_records"}
RECONCILERS = {"filesystem:manage"}
INLINE = {"control:identity", "control:assert", "test:assert", "template:render", "http:respond"}

SPECS = registry()
NAMES = sorted(REQUIRED)


# --------------------------------------------------------------------------- inventory


def test_every_required_module_declared_exactly_once() -> None:
    seen: list[str] = []
    for modname in _BUILTIN_NAMESPACES:
        seen += [spec.name for spec in importlib.import_module(modname).MODULES]
    assert sorted(seen) == sorted(set(seen)), "a module is declared twice"
    assert set(REQUIRED) <= set(seen)
    assert set(seen) == set(REQUIRED), f"undeclared extras: {set(seen) - set(REQUIRED)}"
    assert len(seen) == 10 + 5 + 8 + 8 + 3 + 4


def test_modules_live_in_their_namespace_file() -> None:
    for modname in _BUILTIN_NAMESPACES:
        file = modname.rsplit(".", 1)[1]
        for spec in importlib.import_module(modname).MODULES:
            ns = spec.name.split(":")[0] if ":" in spec.name else "core"
            assert ns == file, (spec.name, file)


#: modules whose code ships in this release (issue 4: the L1 modules, http:request, test:*;
#: issue 5: the stream modules)
IMPLEMENTED = {
    "exec", "filesystem:read", "filesystem:write", "filesystem:stat", "filesystem:manage",
    "control:assert", "control:identity", "test:assert", "test:mock_http_server", "http:request",
    "passthrough", "data:generate_from_list", "data:parse", "data:map", "data:filter",
    "data:join", "data:aggregate", "data:format", "control:barrier", "test:producer",
    "filesystem:list", "stream:pipeline", "http:listen", "http:respond", "dns:query",
    "template:render", "database:query",
    "ssh:connect", "ssh:command", "ssh:script", "ssh:upload", "ssh:download",
    "connection:open", "connection:listen", "connection:read", "connection:write", "connection:close",
}


@pytest.mark.parametrize("name", NAMES)
def test_basic_fields(name: str) -> None:
    spec = SPECS[name]
    assert isinstance(spec, ModuleSpec)
    assert re.fullmatch(r"^[a-z_]+(:[a-z_]+)?$", spec.name)
    assert spec.layer == REQUIRED[name]
    assert spec.description and "\n" not in spec.description and len(spec.description) <= 120
    assert spec.implemented is (name in IMPLEMENTED)
    assert spec.inline is (name in INLINE)
    assert spec.stream_input == STREAM_INPUT.get(name, "none")
    assert (spec.record_schema is not None) is (name in PRODUCERS or name in RECORDS_PARAMS)
    assert spec.records_param == RECORDS_PARAMS.get(name)
    if spec.records_param is not None:
        assert spec.params_schema["properties"][spec.records_param]["type"] == "boolean"
        assert spec.records_param in spec.literal_params
    assert spec.reconciler is (name in RECONCILERS)
    assert spec.summary_from_params is (name == "control:identity")


@pytest.mark.parametrize("name", NAMES)
def test_lifecycles(name: str) -> None:
    spec = SPECS[name]
    assert set(spec.lifecycles) <= set(LIFECYCLES)
    assert len(set(spec.lifecycles)) == len(spec.lifecycles)
    assert spec.lifecycles[0] == "run_once"
    # scheduled is never declared: every run-to-completion module may run under it
    assert "scheduled" not in spec.lifecycles
    assert spec.lifecycles == LONG_LIFECYCLES.get(name, ("run_once",))


# --------------------------------------------------------------------------- schemas


def _schemas_of(spec: ModuleSpec):
    yield "params", spec.params_schema
    yield "summary", spec.summary_schema
    if spec.record_schema is not None:
        yield "record", spec.record_schema


def _walk_properties(schema: object, path: str = ""):
    """Yield (path, property schema) for every property, through items and nested objects."""
    if not isinstance(schema, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        yield f"{path}{key}", sub
        yield from _walk_properties(sub, f"{path}{key}.")
    if isinstance(schema.get("items"), dict):
        yield from _walk_properties(schema["items"], f"{path}*.")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk_properties(schema["additionalProperties"], f"{path}?.")


def _all_keys(schema: object):
    if isinstance(schema, dict):
        for key, value in schema.items():
            yield key
            yield from _all_keys(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _all_keys(value)


@pytest.mark.parametrize("name", NAMES)
def test_schemas_are_valid_2020_12(name: str) -> None:
    for kind, schema in _schemas_of(SPECS[name]):
        Draft202012Validator.check_schema(schema)
        assert schema.get("type") == "object", (kind, schema)
        keys = set(_all_keys(schema))
        assert "$ref" not in keys and "$defs" not in keys, kind
        # cross-field rules must sit under allOf, never at the top (see _schemas docstring)
        assert not {"oneOf", "anyOf"} & set(schema), kind


@pytest.mark.parametrize("name", NAMES)
def test_params_schema_is_strict(name: str) -> None:
    spec = SPECS[name]
    schema = spec.params_schema
    if spec.summary_from_params:
        assert schema.get("additionalProperties", True) is not False
        return
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert set(schema.get("required", ())) <= set(props)
    for path, sub in _walk_properties(schema):
        if isinstance(sub, dict) and sub.get("type") == "object" and "properties" in sub:
            assert sub.get("additionalProperties") is False, path
            assert set(sub.get("required", ())) <= set(sub["properties"]), path


@pytest.mark.parametrize("name", NAMES)
def test_every_property_has_a_description(name: str) -> None:
    for kind, schema in _schemas_of(SPECS[name]):
        for path, sub in _walk_properties(schema):
            assert isinstance(sub, dict) and sub.get("description"), f"{kind} {path}"


@pytest.mark.parametrize("name", NAMES)
def test_defaults_are_valid_values(name: str) -> None:
    for path, sub in _walk_properties(SPECS[name].params_schema):
        if "default" in sub:
            assert Draft202012Validator(sub).is_valid(sub["default"]), path


@pytest.mark.parametrize("name", sorted(SUMMARY_KEYS))
def test_summary_keys(name: str) -> None:
    schema = SPECS[name].summary_schema
    required, optional = SUMMARY_KEYS[name]
    assert set(schema["required"]) == required
    assert set(schema["properties"]) == required | optional
    assert schema["additionalProperties"] is False


def test_exec_summary_and_dry_run_shape() -> None:
    v = Draft202012Validator(SPECS["exec"].summary_schema)
    v.validate({"stdout": "x", "stderr": "", "stdout_lines": ["x"], "exit_code": 0})
    v.validate({"dry_run": True, "command": "ls", "args": ["-l"], "stdout": "", "stderr": "",
                "stdout_lines": [], "exit_code": 0})
    assert not v.is_valid({"stdout": "x", "stderr": "", "exit_code": 0})


# --------------------------------------------------------------------------- param roles


def _resolve(schema: dict, dotted: str) -> dict | None:
    node: object = schema
    for segment in dotted.split("."):
        if not isinstance(node, dict):
            return None
        if segment == "*":
            node = node.get("items") if node.get("type") == "array" else None
        else:
            node = node.get("properties", {}).get(segment)
    return node if isinstance(node, dict) else None


ROLES = ("per_record_params", "condition_params", "path_params", "logged_params",
         "literal_params")


@pytest.mark.parametrize("name", NAMES)
def test_param_roles_name_real_properties(name: str) -> None:
    spec = SPECS[name]
    for role in ROLES:
        paths = getattr(spec, role)
        assert len(set(paths)) == len(paths), role
        for dotted in paths:
            sub = _resolve(spec.params_schema, dotted)
            assert sub is not None, f"{name}.{role}: {dotted!r}"
            if role == "condition_params":
                assert "string" in (sub["type"] if isinstance(sub["type"], list)
                                    else [sub["type"]]), dotted
            if role == "path_params":
                assert sub["type"] == "string", dotted


def test_param_roles_as_specified() -> None:
    per_record = {name: SPECS[name].per_record_params for name in NAMES
                  if SPECS[name].per_record_params}
    assert per_record == {
        "data:map": ("template",),
        "data:filter": ("condition",),
        "data:join": ("on.*.template",),
        "data:format": ("format_options.template",),
        "control:assert": ("condition",),
        "test:assert": ("assertions.*.actual",),
        "http:request": ("success_when", "fail_when"),
        "test:producer": ("template",),
        "template:render": ("template",),
    }
    # template:render's template sees its `vars` over the state (a param, not a record)
    scoped = {name: SPECS[name].scope_param for name in NAMES if SPECS[name].scope_param}
    assert scoped == {"template:render": "vars"}
    # what a per-record param of a module without stream input sees over the state
    assert SPECS["test:producer"].per_record_scope["required"] == ["index"]
    assert SPECS["http:request"].per_record_scope is None  # its own summary (the response)
    conditions = {name: set(SPECS[name].condition_params) for name in NAMES
                  if SPECS[name].condition_params}
    assert conditions == {
        "data:filter": {"condition"},
        "control:assert": {"condition"},
        "http:request": {"success_when", "fail_when"},
        "stream:pipeline": {"steps.*.when"},
    }
    paths = {name: set(SPECS[name].path_params) for name in NAMES if SPECS[name].path_params}
    assert paths == {
        **{n: {"path"} for n in L1 if n.startswith("filesystem:")},
        "exec": {"working_dir"},
        "ssh:script": {"script_path"},
        "ssh:upload": {"src"},
        "ssh:download": {"dest"},
        "database:query": {"dsn"},
    }
    # the template is compiled at build time, not passed through as literal text
    assert SPECS["template:render"].literal_params == ()


def test_secret_carrying_params_are_not_logged() -> None:
    never = {
        "exec": "environment", "filesystem:write": "content", "filesystem:manage": "content",
        "connection:write": "data", "http:respond": "body", "http:request": "headers",
        "ssh:connect": "password", "database:query": "dsn",
    }
    for name, param in never.items():
        assert param not in SPECS[name].logged_params, name
    assert "private_key" not in SPECS["ssh:connect"].logged_params
    for name in ("ssh:command", "ssh:script", "ssh:upload", "ssh:download"):
        assert not {"password", "private_key", "passphrase"} & set(SPECS[name].logged_params)
    assert "auth" not in SPECS["http:request"].logged_params
    assert {"command", "args"} <= set(SPECS["exec"].logged_params)


# --------------------------------------------------------------------------- literal samples

CONN = {"connection_id": "c1"}
#: an ssh:* module's own connection
HOST = {"host": "h", "port": 2222, "user": "u", "password": "p", "known_hosts": "kh"}
JOIN_ON = [{"stream": "users", "role": "build", "field": "user_id"},
           {"stream": "logins", "role": "probe", "template": "{{ .uid }}"}]
HANDLER = {"request": {"method": "GET", "path": "/api/users/1"},
           "response": {"status_code": 200, "body": {"name": "Alice"}}}

#: name -> (valid params, invalid params)
SAMPLES: dict[str, tuple[list[dict], list[dict]]] = {
    "exec": (
        [{"command": "date"},
         {"command": "/bin/sh", "args": ["-c", "echo hi"], "environment": ["A=1", "B="],
          "working_dir": "out"},
         {"command": "backup.sh", "environment": ["PG_PASSWORD={{ secret 'db' }}"]}],
        [{}, {"command": ""}, {"command": "ls", "args": "-l"}, {"command": "ls", "args": [1]},
         {"command": "ls", "environment": ["NOEQUALS"]}, {"command": "ls", "shell": True}],
    ),
    "filesystem:read": ([{"path": "config/app.json"}], [{}, {"path": ""}, {"path": 3}]),
    "filesystem:write": (
        [{"path": "a.txt", "content": "x"},
         {"path": "a.txt", "content": "", "mode": "0600", "append": True},
         {"path": "a.txt", "content": "x", "mode": "644"},
         {"path": "a.txt", "content": "x", "mode": 0o644}],
        [{"path": "a.txt"}, {"path": "a.txt", "content": "x", "mode": "0999"},
         {"path": "a.txt", "content": "x", "mode": "rw-r--r--"},
         {"path": "a.txt", "content": "x", "mode": 99999},
         {"path": "a.txt", "content": "x", "append": "yes"}],
    ),
    "filesystem:stat": ([{"path": "artifacts/app.tar.gz"}], [{}, {"path": "x", "follow": 1}]),
    "filesystem:list": ([{"path": "."}, {"path": "logs", "recursive": True, "pattern": "*.l"}],
                        [{}, {"path": ".", "recursive": "no"}]),
    "filesystem:manage": (
        [{"path": "users/alice", "state": "directory", "owner": "alice", "mode": "0700"},
         {"path": "ntp.conf", "state": "present", "content": "server a iburst\n", "owner": 0},
         {"path": "old", "state": "absent", "recursive": True}],
        [{"path": "x"}, {"path": "x", "state": "file"},
         {"path": "x", "state": "directory", "content": "no"},
         {"path": "x", "state": "present", "owner": -1}],
    ),
    "control:wait_for_signal": ([{}, {"context": {"user": "jdoe"}}],
                                [{"context": "x"}, {"token": "t"}]),
    "control:barrier": ([{}], [{"streams": ["a"]}]),
    "control:assert": (
        [{"condition": "{{ .r.status_code }} == 200", "fail_message": "bad"},
         {"condition": True}],
        [{}, {"condition": 1}, {"condition": "x", "message": "m"}],
    ),
    "control:identity": ([{}, {"name": "jdoe", "uid": 1001, "groups": ["users"]}], []),
    "connection:open": (
        [{"network": "tcp", "address": "example.com:80"},
         {"network": "udp", "address": "[::1]:53", "timeout": "1.5s"}],
        [{"network": "tcp"}, {"network": "sctp", "address": "a:1"},
         {"network": "tcp", "address": "example.com"},
         {"network": "tcp", "address": "a:1", "timeout": "5 seconds"}],
    ),
    "connection:listen": ([{"network": "tcp", "address": ":80"}, {"network": "udp",
                                                                     "address": "127.0.0.1:0"}],
                          [{"address": ":8080"}, {"network": "tcp", "address": "8080"}]),
    "connection:read": (
        [CONN, {**CONN, "read_until": "\n", "timeout": "2s", "encoding": "hex"},
         {**CONN, "read_bytes": 16}],
        [{}, {**CONN, "read_bytes": 0}, {**CONN, "read_until": ""},
         {**CONN, "encoding": "utf8"}],
    ),
    "connection:write": ([{**CONN, "data": "PONG\n"}, {**CONN, "data": "aGk=", "encoding": "hex"}],
                         [CONN, {**CONN, "data": 5}]),
    "connection:close": ([CONN], [{}, {"connection_id": ""}]),
    "dns:query": ([{"name": "example.com"}, {"name": "example.com", "type": "MX"},
                   {"name": "example.com", "server": "127.0.0.1:5353", "timeout": "2s"},
                   {"name": "example.com", "server": "[::1]:53"}, {"name": "x", "server": "::1"}],
                  [{}, {"name": "example.com", "type": "a"}, {"name": ""},
                   {"name": "x", "server": "dns.example.com"}, {"name": "x", "timeout": "5"},
                   {"name": "x", "server": "127.0.0.1:"}]),
    "http:listen": ([{}, {"address": ":9090"}, {"address": ":9090", "network": "tcp"}],
                    [{"address": 9090}, {"network": "udp"}, {"port": 9090}]),
    "http:respond": (
        [{"request_id": "r1"},
         {"request_id": "r1", "status_code": 404, "headers": {"x": "y"}, "body": "no"}],
        [{}, {"request_id": "r1", "status_code": 700}, {"request_id": "r1", "headers": {"x": 1}}],
    ),
    "http:request": (
        [{"url": "https://api.example.com/data"},
         {"url": "http://127.0.0.1:8080/x", "method": "POST", "headers": {"a": "b"},
          "query_params": {"page": 2}, "body": "{}", "timeout": "5s", "skip_tls_verify": True,
          "auth": {"basic": {"user": "u", "pass": "p"}}, "cookie_jar": True,
          "success_when": "{{ .status_code }} < 500", "fail_when": False},
         {"url": "https://a/b", "auth": {"bearer": {"token": "t"}},
          "pagination": {"strategy": "next_field", "next_field": "links.next"}},
         {"url": "https://a/b", "pagination": {"strategy": "link_header", "max_pages": 3}}],
        [{}, {"url": "ftp://x"}, {"url": "https://a", "method": "FETCH"},
         {"url": "https://a", "auth": {}},
         {"url": "https://a", "auth": {"bearer": {"token": "t"}, "basic": {"user": "u",
                                                                          "pass": "p"}}},
         {"url": "https://a", "pagination": {"strategy": "next_field"}},
         {"url": "https://a", "timeout": 5}],
    ),
    "ssh:connect": (
        [{"host": "h", "user": "u", "password": "p"},
         {"host": "h", "port": 2222, "user": "u", "private_key": "-----BEGIN...",
          "passphrase": "x", "known_hosts": "kh", "connect_timeout": "3s"},
         {"host": "h", "user": "u", "private_key": "id", "insecure_ignore_host_key": True}],
        [{"host": "h", "user": "u"}, {"host": "h", "user": "u", "password": "p",
                                      "private_key": "k"},
         {"host": "h", "user": "u", "password": "p", "port": 0},
         {"host": "h", "password": "p"}, {"user": "u", "password": "p"},
         {**HOST, "passphrase": "p"}, {**HOST, "insecure_ignore_host_key": True},
         {**HOST, "connection_id": "c1"}],
    ),
    "ssh:command": (
        [{**CONN, "command": "uptime"}, {**HOST, "command": "uptime"},
         {**HOST, "args": ["ls", "-l"], "ok_exit_codes": [0, 1], "timeout": "5s"},
         {"host": "h", "user": "u", "private_key": "k", "passphrase": "p", "command": "x",
          "insecure_ignore_host_key": True, "connect_timeout": "2s"}],
        [CONN, {"command": "uptime"}, {**HOST}, {**HOST, "command": "a", "args": ["b"]},
         {**CONN, **HOST, "command": "a"}, {**CONN, "port": 22, "command": "a"},
         {"host": "h", "user": "u", "command": "a"},
         {"host": "h", "user": "u", "password": "p", "private_key": "k", "command": "a"},
         {**HOST, "passphrase": "p", "command": "a"},
         {**HOST, "insecure_ignore_host_key": True, "command": "a"}],
    ),
    "ssh:script": ([{**CONN, "script_path": "s"}, {**CONN, "script_path": "s", "script_args": []}],
                   [CONN, {**CONN, "script_path": "s.sh", "script_args": "a"}]),
    "ssh:upload": ([{**CONN, "src": "a", "dest": "/tmp/a"}, {**CONN, "src": "a", "dest": "b",
                                                               "mode": "0600"}],
                   [{**CONN, "src": "a"}, {**CONN, "src": "a", "dest": "b", "mode": "x"}]),
    "ssh:download": ([{**CONN, "src": "/etc/hosts", "dest": "hosts"}], [{**CONN, "src": "a"}]),
    "passthrough": ([{}], [{"x": 1}]),
    "data:generate_from_list": ([{"items": [1, 2, 3]}, {"items": [{"a": 1}, "b"]}, {"items": []}],
                                [{}, {"items": {"a": 1}}]),
    "data:parse": (
        [{"content": "a\nb", "format": "text_lines"},
         {"content": "a;b", "format": "csv", "format_options": {"delimiter": ";"}},
         {"content": "x=1", "format": "regex",
          "format_options": {"pattern": "(?P<k>\\w+)=(?P<v>\\d+)"}}],
        [{"content": "x"}, {"content": "x", "format": "xml"}, {"content": "x", "format": "regex"},
         {"content": "x", "format": "csv", "format_options": {"delimiter": ";;"}},
         {"content": "x", "format": "json", "format_options": {"jsonpath": "a"}}],
    ),
    "data:map": ([{"template": "{\"ip\": \"{{ .remote_addr }}\"}"}], [{}, {"template": 1}]),
    "data:filter": ([{"condition": "{{ .attempts }} >= 10"}], [{}, {"condition": ["x"]}]),
    "data:join": (
        [{"join_type": "left", "on": JOIN_ON},
         {"join_type": "inner", "on": JOIN_ON,
          "output": {"merge_strategy": "nested", "nesting_keys": {"users": "u", "logins": "l"}},
          "limits": {"max_build_records": 2, "max_probe_buffer": 10}}],
        [{"join_type": "cross", "on": JOIN_ON}, {"join_type": "left", "on": JOIN_ON[:1]},
         {"join_type": "left", "on": [JOIN_ON[0], {**JOIN_ON[0], "stream": "b"}]},
         {"join_type": "left", "on": [JOIN_ON[1], {**JOIN_ON[1], "stream": "b"}]},
         {"join_type": "left", "on": [JOIN_ON[0], {"stream": "b", "role": "probe"}]},
         {"join_type": "left", "on": [JOIN_ON[0], {**JOIN_ON[1], "field": "f"}]},
         {"join_type": "left", "on": JOIN_ON, "output": {"merge_strategy": "nested"}},
         {"join_type": "left", "on": JOIN_ON, "limits": {"max_build_records": 0}}],
    ),
    "data:aggregate": (
        [{"group_by_fields": ["remote_ip"], "aggregate_fields": [{"name": "n", "op": "count"}],
          "window": "5m"},
         {"aggregate_fields": [{"name": "s", "op": "sum", "source_field": "b"}], "count": 10},
         {"aggregate_fields": [{"name": "n", "op": "count"}]}],  # the whole stream
        [{"aggregate_fields": [{"name": "n", "op": "count"}], "window": "5m", "count": 3},
         {"aggregate_fields": [{"name": "s", "op": "sum"}], "count": 1},
         {"aggregate_fields": [{"name": "s", "op": "median", "source_field": "b"}], "count": 1},
         {"aggregate_fields": [], "count": 1},
         {"aggregate_fields": [{"name": "n", "op": "count"}], "window": "5 min"},
         {"aggregate_fields": [{"name": "n", "op": "count"}], "count": 0}],
    ),
    "data:format": ([{"format": "json"}, {"format": "csv", "format_options": {"headers": ["a"]}},
                     {"format": "text", "format_options": {"template": "{{ .a }}"}}],
                    [{}, {"format": "xml"}, {"format": "csv", "format_options": {"sep": ","}}]),
    "database:query": (
        [{"dsn": "app.db", "query": "SELECT 1"},
         {"driver": "postgresql", "dsn": "postgres://h/db", "query": "SELECT $1",
          "params": [1]},
         {"dsn": ":memory:", "query": "SELECT :id", "params": {"id": 1}},
         {"dsn": "a.db", "query": ["INSERT INTO t VALUES (?)", "SELECT 1"],
          "params": [[1], None], "transaction": True, "timeout": "5s", "unsafe_sql": False}],
        [{"query": "SELECT 1"}, {"dsn": "a", "connection": "b", "query": "SELECT 1"},
         {"dsn": "a"}, {"driver": "mssql", "dsn": "a", "query": "q"},
         {"dsn": "a", "query": "q", "params": "1"}, {"dsn": "a", "query": []},
         {"dsn": "a", "query": "q", "transaction": "yes"}],
    ),
    "template:render": ([{"template": "Hello {{ .name }}", "vars": {"name": "x"}}],
                        [{}, {"template": "x", "vars": []}]),
    "stream:pipeline": (
        [{"steps": [{"id": "read", "uses": "connection:read",
                     "with": {"connection_id": "{{ .connection_id }}"}},
                    {"id": "reply", "uses": "connection:write", "needs": ["read"],
                     "when": "{{ .read.data }} != ''", "register": "out",
                     "with": {"data": "x"}}],
          "concurrency": 4},
         {"steps": [{"id": "s", "uses": "my-org:onboard-developer", "when": True}]}],
        [{}, {"steps": []}, {"steps": [{"uses": "exec"}]},
         {"steps": [{"id": "1bad", "uses": "exec"}]},
         {"steps": [{"id": "a", "uses": "exec", "params": {}}]},
         {"steps": [{"id": "a", "uses": "exec"}], "concurrency": 0}],
    ),
    "test:assert": (
        [{"assertions": [{"actual": "{{ .r.content }}", "equal_to": "hello"},
                         {"actual": 3, "not_equal_to": 4}, {"actual": [1], "contains": 1},
                         {"actual": "x", "is_true": True}, {"actual": None, "is_nil": True},
                         {"actual": "abc", "matches_regex": "^a"}]}],
        [{}, {"assertions": []}, {"assertions": [{"equal_to": 1}]},
         {"assertions": [{"actual": 1}]},
         {"assertions": [{"actual": 1, "equal_to": 1, "contains": 1}]},
         {"assertions": [{"actual": 1, "greater_than": 0}]}],
    ),
    "test:mock_http_server": (
        [{"handlers": [HANDLER]},
         {"handlers": [{"request": {"path": "/"}, "response": {"body": "ok"}}]}],
        [{}, {"handlers": []}, {"handlers": [{"request": {"path": "x"}, "response": {}}]},
         {"handlers": [{"request": {"path": "/"}}]},
         {"handlers": [{**HANDLER, "response": {"status_code": 42}}]}],
    ),
    "test:producer": (
        [{"records": [{"a": 1}, {"a": 2}]}, {"count": 1000000, "template": "{\"n\": 1}"},
         {"records": []}],
        [{}, {"records": [1, 2]}, {"count": 5}, {"template": "{}"},
         {"records": [{"a": 1}], "count": 1}, {"records": [], "count": 1, "template": "{}"},
         {"count": -1, "template": "{}"}],
    ),
}


@pytest.mark.parametrize("name", NAMES)
def test_valid_samples_pass(name: str) -> None:
    assert set(SAMPLES) == set(REQUIRED)
    validator = Draft202012Validator(SPECS[name].params_schema)
    for params in SAMPLES[name][0]:
        errors = [e.message for e in validator.iter_errors(params)]
        assert not errors, (params, errors)


@pytest.mark.parametrize("name", NAMES)
def test_invalid_samples_fail(name: str) -> None:
    validator = Draft202012Validator(SPECS[name].params_schema)
    for params in SAMPLES[name][1]:
        assert not validator.is_valid(params), params


@pytest.mark.parametrize("name", NAMES)
def test_invalid_samples_are_worded_without_a_python_repr(name: str) -> None:
    """Every invalid sample gets an `invalid-value`/`unknown-key` diagnostic that names the key
    or path in words, never jsonschema's message (a repr of the params and the schema)."""
    import json

    from gxo.compiler.diagnostics import Diagnostics
    from gxo.compiler.loader import load_playbook
    from gxo.compiler.params import validate_params

    for params in SAMPLES[name][1]:
        diags = Diagnostics()
        loaded = load_playbook(json.dumps({"params": params}), "pb.yaml", diags)
        node = loaded.root.get("params")  # type: ignore[union-attr]
        validate_params(name, params, node, node, None, diags)
        found = [d for d in diags if d.severity == "error"]
        assert found, params
        for d in found:
            text = d.message + " " + (d.help or "")
            assert not re.search(r"\{'|\['|is not valid under|is valid under|"
                                 r"should not be valid|is a dependency of|does not contain",
                                 text), (params, text)
            assert d.message.startswith(("params", "module ")), d.message


def test_sample_records_match_record_schemas() -> None:
    stat = {"path": "/w/a", "size": 3, "mode": "0644", "is_dir": False,
            "modified_time": "2024-01-01T00:00:00Z"}
    cases = {
        "filesystem:list": stat,
        "connection:listen": {"connection_id": "c", "remote_addr": "127.0.0.1:5000"},
        "http:listen": {"request_id": "r", "method": "POST", "path": "/", "headers": {},
                        "body": "{}", "query_params": {"a": "1"}, "remote_addr": "127.0.0.1:5000"},
    }
    for name, rec in cases.items():
        validator = Draft202012Validator(SPECS[name].record_schema)
        validator.validate(rec)
        assert not validator.is_valid({**rec, "extra": 1})
    Draft202012Validator(SPECS["filesystem:stat"].summary_schema).validate(stat)


# --------------------------------------------------------------------------- helpers, docs, imports


def test_duration_pattern() -> None:
    pattern = re.compile(_schemas.DURATION_PATTERN)
    for ok in ("5s", "1m30s", "250ms", "1.5h", "10us", "3µs", "2ns"):
        assert pattern.match(ok), ok
    for bad in ("", "5", "5 s", "-1s", "1d", "s"):
        assert not pattern.match(bad), bad


def test_is_templated() -> None:
    assert _schemas.is_templated("{{ .n }}")
    assert _schemas.is_templated("Bearer ${TOKEN}")
    assert not _schemas.is_templated("plain")
    assert not _schemas.is_templated(3)


def test_helpers_return_fresh_fragments() -> None:
    a, b = _schemas.duration("d"), _schemas.duration("d")
    assert a == b and a is not b
    # no two modules share a mutable schema object
    seen: dict[int, str] = {}
    for name in NAMES:
        for kind, schema in _schemas_of(SPECS[name]):
            for path, sub in _walk_properties(schema):
                key = id(sub)
                assert key not in seen, f"{name} {kind} {path} shared with {seen[key]}"
                seen[key] = f"{name} {kind} {path}"


def test_generated_docs_are_up_to_date() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_module_docs.py"), "--check"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    index = (ROOT / "docs" / "modules" / "index.md").read_text(encoding="utf-8")
    for name in REQUIRED:
        assert f"[`{name}`]" in index


def test_docs_generation_is_deterministic(tmp_path: Path) -> None:
    script = str(ROOT / "tools" / "gen_module_docs.py")
    outs = []
    for i, seed in enumerate(("0", "1")):
        out = tmp_path / str(i)
        subprocess.run([sys.executable, script, "--out", str(out)], check=True,
                       capture_output=True, env={"PYTHONHASHSEED": seed, "PATH": ""})
        outs.append({p.name: p.read_bytes() for p in sorted(out.glob("*.md"))})
    assert outs[0] == outs[1]
    assert len(outs[0]) == len(_BUILTIN_NAMESPACES) + 1


def test_import_does_not_load_compiler_dependencies() -> None:
    code = (
        "import sys, gxo.stdlib\n"
        "gxo.stdlib.registry()\n"
        "bad = sorted(m for m in ('jsonschema', 'yaml', 'lark', 'networkx', 'jinja2', 'Cython')"
        " if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.strip() == ""
