"""Secret providers, taint tracking and redaction in every encoding."""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
import time
from urllib.parse import quote, quote_plus

import pytest
from gxo.runtime.module import GxoError
from gxo.runtime.secrets import (
    REDACTED,
    REDACTED_SECRET,
    ChainProvider,
    EnvProvider,
    FileProvider,
    SecretNotFound,
    Tracker,
    encoded_forms,
    redact_keywords,
)

SECRET = "s3cr3t/Päss+wörd=&?\"quoted\"\\end"


# --------------------------------------------------------------------------- providers


def test_env_provider():
    p = EnvProvider({"API_TOKEN": "abc"})
    assert p.get("API_TOKEN") == "abc"
    assert p.lookup("NOPE") is None
    assert p.get_secret("API_TOKEN") == ("abc", True, None)
    assert p.get_secret("NOPE") == ("", False, None)
    with pytest.raises(SecretNotFound, match="'NOPE' not found.*environment"):
        p.get("NOPE")
    assert isinstance(SecretNotFound("x"), GxoError)


def test_env_provider_reads_process_env(monkeypatch):
    monkeypatch.setenv("GXO_TEST_SECRET_X", "v1")
    assert EnvProvider().get("GXO_TEST_SECRET_X") == "v1"


def test_file_provider(tmp_path):
    (tmp_path / "db_password").write_text("hunter2\n")
    (tmp_path / "raw").write_bytes(b"no-newline")
    (tmp_path / "crlf").write_bytes(b"two\r\n")
    (tmp_path / "multi").write_text("line1\nline2\n\n")
    p = FileProvider(str(tmp_path))
    assert p.get("db_password") == "hunter2"
    assert p.get("raw") == "no-newline"
    assert p.get("crlf") == "two"
    assert p.get("multi") == "line1\nline2\n"  # one trailing newline only
    assert p.lookup("missing") is None
    with pytest.raises(SecretNotFound, match=f"files in {tmp_path}"):
        p.get("missing")


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "..", ".", "", "x..y", "a\x00b"])
def test_file_provider_rejects_bad_names(tmp_path, name):
    with pytest.raises(GxoError, match="invalid secret name"):
        FileProvider(str(tmp_path)).lookup(name)


def test_file_provider_kubernetes_symlinks_inside_ok_outside_refused(tmp_path):
    data = tmp_path / "..data_2024"
    data.mkdir()
    (data / "token").write_text("k8s-token")
    os.symlink("..data_2024/token", tmp_path / "token")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.write_text("nope")
    os.symlink(str(outside), tmp_path / "escape")
    p = FileProvider(str(tmp_path))
    assert p.get("token") == "k8s-token"
    with pytest.raises(GxoError, match="outside"):
        p.get("escape")


def test_file_provider_limits(tmp_path):
    (tmp_path / "big").write_bytes(b"x" * ((1 << 20) + 1))
    (tmp_path / "bin").write_bytes(b"\xff\xfe")
    p = FileProvider(str(tmp_path))
    with pytest.raises(GxoError, match="larger than 1 MiB"):
        p.get("big")
    with pytest.raises(GxoError, match="not UTF-8"):
        p.get("bin")
    os.mkfifo(tmp_path / "fifo")  # refused at once, never waited on
    with pytest.raises(GxoError, match="cannot read the secret file for 'fifo'"):
        p.get("fifo")


def test_chain_provider_order(tmp_path):
    (tmp_path / "A").write_text("from-file")
    (tmp_path / "B").write_text("file-b")
    chain = ChainProvider([EnvProvider({"A": "from-env"}), FileProvider(str(tmp_path))])
    assert chain.get("A") == "from-env"
    assert chain.get("B") == "file-b"
    with pytest.raises(SecretNotFound, match="environment, files in"):
        chain.get("C")


# --------------------------------------------------------------------------- tracker


def _encodings(value: str) -> dict[str, str]:
    data = value.encode()
    return {
        "raw": value,
        "b64": base64.b64encode(data).decode(),
        "b64-nopad": base64.b64encode(data).decode().rstrip("="),
        "b64url": base64.urlsafe_b64encode(data).decode(),
        "b64url-nopad": base64.urlsafe_b64encode(data).decode().rstrip("="),
        "quote": quote(value, safe=""),
        "quote-default": quote(value),
        "quote_plus": quote_plus(value),
        "hex": binascii.hexlify(data).decode(),
        "HEX": binascii.hexlify(data).decode().upper(),
        "json": json.dumps(value)[1:-1],
        "json-unicode": json.dumps(value, ensure_ascii=False)[1:-1],
        "json-doc": json.dumps({"password_field": value}),
        "repr": repr(value),
    }


@pytest.mark.parametrize("secret", [SECRET, "plainsecretvalue", "abc123!@#", "ü" * 7,
                                    "line1\nline2\ttab"])
def test_redact_every_encoding(secret):
    t = Tracker()
    t.add(secret)
    for name, form in _encodings(secret).items():
        text = f"before {form} after"
        out = t.redact(text)
        assert out.startswith("before ") and out.endswith(" after") or name in ("json-doc",
                                                                                "repr")
        assert REDACTED_SECRET in out, name
        assert form not in out or form == "", name
        assert secret not in out


@pytest.mark.parametrize("prefix", ["", "a", "ab", "abc", "user:", "Authorization "])
@pytest.mark.parametrize("suffix", ["", "\n", "x", "yz", "!!!"])
def test_redact_base64_of_text_holding_the_secret(prefix, suffix):
    # base64 of a longer text depends on the secret's alignment: "user:pass" for Basic auth,
    # `echo $S | base64` with its newline, ...
    t = Tracker()
    t.add("correct-horse-battery")
    for enc in (base64.b64encode, base64.urlsafe_b64encode):
        whole = enc(f"{prefix}correct-horse-battery{suffix}".encode()).decode()
        out = t.redact(f"[{whole}]")
        assert REDACTED_SECRET in out, (prefix, suffix, whole)
        # what remains is at most a few characters on each side
        assert len(out.replace(REDACTED_SECRET, "")) <= len(prefix + suffix) * 2 + 10


def test_redact_longest_first_and_marker_not_mangled():
    t = Tracker()
    t.add("RED")  # also inside the marker text itself
    t.add("REDACTED-longer")
    out = t.redact("x REDACTED-longer y RED z")
    assert out == f"x {REDACTED_SECRET} y {REDACTED_SECRET} z"


def test_overlapping_secrets():
    t = Tracker()
    t.add("abcdefgh")
    t.add("defghijk")
    out = t.redact("abcdefghijk")
    assert "abcdefgh" not in out and "defghijk" not in out


def test_empty_and_none_ignored():
    t = Tracker()
    t.add("")
    t.add(None)
    assert len(t) == 0
    assert t.redact("anything") == "anything"
    t.add(12345678)
    assert "12345678" in t
    assert t.redact("n=12345678") == f"n={REDACTED_SECRET}"


def test_redact_value_recursive_without_mutation():
    t = Tracker()
    t.add("tok-123456")
    original = {
        "stdout": "the token is tok-123456",
        "lines": ["a", "tok-123456", {"deep": ("x", "tok-123456")}],
        "tok-123456": 1,
        "n": 5,
        "none": None,
        "flag": True,
    }
    snapshot = json.dumps(original, sort_keys=True, default=list)
    out = t.redact_value(original)
    assert json.dumps(original, sort_keys=True, default=list) == snapshot  # untouched
    assert out["stdout"] == f"the token is {REDACTED_SECRET}"
    assert out["lines"][1] == REDACTED_SECRET
    assert out["lines"][2]["deep"] == ("x", REDACTED_SECRET)
    assert REDACTED_SECRET in out and "tok-123456" not in out
    assert out["n"] == 5 and out["none"] is None and out["flag"] is True
    assert "tok-123456" not in json.dumps(out, default=list)
    assert t.would_redact(original)
    assert not t.would_redact({"clean": ["x"]})


def test_redact_value_cycles():
    t = Tracker()
    t.add("cyclesecret")
    a: list = ["cyclesecret"]
    a.append(a)
    out = t.redact_value(a)
    assert out[0] == REDACTED_SECRET and out[1] is out


def test_no_secret_fast_path():
    t = Tracker()
    obj = {"a": ["b"]}
    assert t.redact_value(obj) is obj
    text = "x" * 1_000_000
    assert t.redact(text) is text
    t.add("a-secret-value")
    assert t.redact(text) is text  # tracked but absent: unchanged, the same object
    started = time.perf_counter()
    for _ in range(10_000):
        t.redact("an ordinary log line of moderate length, nothing to see here")
    assert time.perf_counter() - started < 1.0


def test_tracker_thread_safe():
    t = Tracker()
    values = [f"secret-value-{i:04d}" for i in range(200)]

    def worker(chunk):
        for v in chunk:
            t.add(v)
            assert v not in t.redact(f"x {v} y")

    threads = [threading.Thread(target=worker, args=(values[i::8],)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(t) == 200
    text = " ".join(values)
    assert "secret-value" not in t.redact(text)


def test_clear():
    t = Tracker()
    t.add("forget-me-now")
    t.clear()
    assert t.redact("forget-me-now") == "forget-me-now"


def test_encoded_forms_have_no_empty_string():
    assert "" not in encoded_forms("x")


# --------------------------------------------------------------------------- keywords


@pytest.mark.parametrize("line,expected", [
    ("password=hunter2", "password=[REDACTED]"),
    ("DB_PASSWORD: hunter2 rest", "DB_PASSWORD: [REDACTED]"),
    ('{"token": "abc"}', '{"token": "[REDACTED]'),
    ("Authorization: Bearer abc.def", "Authorization: [REDACTED]"),
    ("using bearer xyz", "using bearer [REDACTED]"),
    ("apikey 42", "apikey [REDACTED]"),
    ("PrivateKey='k'", "PrivateKey='[REDACTED]"),
    ("the secret is out", "the secret [REDACTED]"),
    ("nothing here", "nothing here"),
    ("password:", "password:"),  # nothing after the keyword: unchanged
])
def test_redact_keywords(line, expected):
    assert redact_keywords(line) == expected


def test_redact_keywords_per_line_and_marker_kept():
    text = f"ok line\ntoken=abc\nvalue {REDACTED_SECRET} stays\nlast"
    expected = f"ok line\ntoken={REDACTED}\nvalue {REDACTED_SECRET} stays\nlast"
    assert redact_keywords(text) == expected


def test_redact_keywords_custom_list():
    assert redact_keywords("pin=1234 password=x", ["pin"]) == "pin=[REDACTED]"
    assert redact_keywords("password=x", []) == "password=x"


def test_redact_keywords_never_crosses_lines():
    assert redact_keywords("password:\nnext line") == "password:\nnext line"
    assert redact_keywords("token = \r\nx") == "token = \r\nx"


def test_redaction_is_idempotent():
    t = Tracker()
    t.add("RED")
    t.add("ACTED")
    once = t.redact("a RED b ACTED c [REDACTED] d")
    assert once == f"a {REDACTED_SECRET} b {REDACTED_SECRET} c [REDACTED] d"
    assert t.redact(once) == once
    assert t.redact_value({"k": once}) == {"k": once}


@pytest.mark.parametrize("line,expected", [
    ("GET https://api.example.com/v1/items?token=abc123&page=2: 401 Unauthorized",
     "GET https://api.example.com/v1/items?token=[REDACTED]&page=2: 401 Unauthorized"),
    ("POST /v1?page=2&access_token=abc%2F123#frag failed", "POST /v1?page=2&access_token=[REDACTED]#frag failed"),
    ("url 'https://h/x?apiKey=k1' returned 500", "url 'https://h/x?apiKey=[REDACTED]' returned 500"),
    ("https://h/x?token=[REDACTED]&page=2", "https://h/x?token=[REDACTED]&page=2"),  # already redacted
])
def test_redact_keywords_in_a_url_query_replace_the_value_only(line, expected):
    assert redact_keywords(line) == expected
    assert redact_keywords(expected) == expected


def test_one_marker_everywhere():
    t = Tracker()
    t.add("tok-12345678")
    assert REDACTED == REDACTED_SECRET == "[REDACTED]"
    assert t.redact("a tok-12345678 b") == "a [REDACTED] b"
    assert redact_keywords("password=x") == "password=[REDACTED]"


@pytest.mark.parametrize("line,expected", [
    ("MY_TOKEN_VALUE=abc rest", "MY_TOKEN_VALUE=[REDACTED]"),
    ("command /srv/secrets/bin/app exited with code 3", "command /srv/secrets/bin/app exited with code 3"),
    ("tokens/x.txt: not found", "tokens/x.txt: not found"),
])
def test_redact_keywords_needs_a_key_not_a_word_inside_a_path(line, expected):
    assert redact_keywords(line) == expected
