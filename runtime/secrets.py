"""Secrets: where values come from (providers) and how they are kept out of output (Tracker).

Providers answer ``get(name) -> str`` (``SecretNotFound`` when they do not know ``name``) and
``lookup(name) -> str | None``; ``get_secret(name) -> (value, found, error)`` is the checklist's
shape (§2.14).  ``EnvProvider`` reads the environment of ``gxo``; ``FileProvider(dir)`` reads
one file per secret (``/run/secrets/<name>``, Docker and Kubernetes style); ``ChainProvider``
asks several in order.

A ``Tracker`` remembers every resolved value of a run (*taint*) and redacts them from what GXO
writes: ``redact(text)`` replaces each value, and its encoded forms, by ``[REDACTED]``;
``redact_value(obj)`` does the same through dicts and lists without mutating them.
``add_derived(value)`` tracks what an expression computed from a secret: every string of
``MIN_DERIVED`` characters or more inside it (numbers and shorter strings are not tracked).
Keyword redaction of error and log lines (checklist §2.14) is the separate ``redact_keywords``:
it is meant for errors and log lines, never for summaries, where it would mangle the user's
data.  One marker everywhere: ``[REDACTED]``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

from gxo.runtime.module import GxoError

REDACTED = "[REDACTED]"
#: The marker of tracked values; the same as the keyword marker (one marker everywhere).
REDACTED_SECRET = REDACTED
#: Text computed from a secret is tracked from this length on: shorter strings ("a", "yes")
#: would redact innocent text everywhere.
MIN_DERIVED = 4
#: The CLI's default keyword list (checklist §2.14).
DEFAULT_KEYWORDS = ("password", "token", "secret", "apikey", "privatekey", "authorization",
                    "bearer")
_MAX_SECRET_FILE = 1 << 20
#: Alignment cores (see ``encoded_forms``) shorter than this are not used: too likely to match
#: innocent text.
_MIN_CORE = 8


class SecretNotFound(GxoError):
    """A secret that no provider knows."""

    def __init__(self, name: str, where: str = "") -> None:
        self.name = name
        super().__init__(f"secret {name!r} not found" + (f" ({where})" if where else ""))


class SecretProvider:
    """Base of providers: subclasses implement ``lookup`` and ``describe``."""

    def lookup(self, name: str) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__

    def get(self, name: str) -> str:
        value = self.lookup(name)
        if value is None:
            raise SecretNotFound(name, "looked in: " + self.describe())
        return value

    def get_secret(self, name: str) -> tuple[str, bool, Exception | None]:
        try:
            value = self.lookup(name)
        except Exception as exc:  # noqa: BLE001 - the checklist's (value, found, error) shape
            return "", False, exc
        return ("", False, None) if value is None else (value, True, None)


class EnvProvider(SecretProvider):
    """Secrets from the environment (of ``gxo``, or the mapping given)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def lookup(self, name: str) -> str | None:
        return self._environ.get(name)

    def describe(self) -> str:
        return "the environment"


class FileProvider(SecretProvider):
    """One file per secret in ``directory``; the content, less one trailing newline."""

    def __init__(self, directory: str) -> None:
        self.directory = os.path.abspath(directory)

    def describe(self) -> str:
        return f"files in {self.directory}"

    def lookup(self, name: str) -> str | None:
        if not name or "/" in name or "\\" in name or "\x00" in name or name in (".", "..") \
                or ".." in name:
            raise GxoError(f"invalid secret name {name!r} for the file provider (no '/' or '..')")
        base = os.path.realpath(self.directory)
        path = os.path.realpath(os.path.join(base, name))
        # Kubernetes mounts secrets as symlinks into a ..data folder: follow them, but inside.
        if not path.startswith(base + os.sep):
            raise GxoError(f"secret file for {name!r} resolves outside {self.directory}")
        from gxo.runtime.files import FileProblem, FileTooLarge, read_limited

        if not os.path.lexists(path) or os.path.isdir(path):
            return None
        try:  # a FIFO or a device is refused without blocking on it; the size before reading
            data = read_limited(path, _MAX_SECRET_FILE, what="secret file")
        except FileTooLarge:
            raise GxoError(f"the secret file for {name!r} is larger than 1 MiB") from None
        except FileProblem as exc:
            raise GxoError(f"cannot read the secret file for {name!r}: {exc.reason}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise GxoError(f"the secret file for {name!r} is not UTF-8 text") from None
        if text.endswith("\r\n"):
            return text[:-2]
        if text.endswith("\n"):
            return text[:-1]
        return text


class ChainProvider(SecretProvider):
    """Ask each provider in order; the first that knows the name wins."""

    def __init__(self, providers: Iterable[SecretProvider]) -> None:
        self.providers = list(providers)

    def lookup(self, name: str) -> str | None:
        for provider in self.providers:
            value = provider.lookup(name)
            if value is not None:
                return value
        return None

    def describe(self) -> str:
        return ", ".join(p.describe() for p in self.providers) or "no provider"


# --------------------------------------------------------------------------- encodings


def _b64_forms(data: bytes) -> set[str]:
    forms: set[str] = set()
    for enc in (base64.b64encode, base64.urlsafe_b64encode):
        full = enc(data).decode("ascii")
        forms.add(full)
        forms.add(full.rstrip("="))
        # The value inside a longer encoded text ("user:pass" in Basic auth, `echo` adding a
        # newline): its bytes start at one of three alignments; the characters that depend on
        # the value's bits alone are the same whatever surrounds it.
        for k in range(3):
            shifted = enc(b"\x00" * k + data).decode("ascii").rstrip("=")
            start = -(-8 * k // 6)  # ceil
            end = (8 * (k + len(data))) // 6
            core = shifted[start:end]
            if len(core) >= _MIN_CORE:
                forms.add(core)
    return forms


def encoded_forms(value: str) -> set[str]:
    """Every spelling of ``value`` that redaction looks for."""
    data = value.encode("utf-8")
    forms = {value}
    forms.add(json.dumps(value)[1:-1])  # JSON-escaped, ASCII only
    forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
    forms.add(json.dumps(value)[1:-1].replace("/", "\\/"))  # encoders that escape '/'
    forms.add(repr(value)[1:-1])  # Python-escaped, as in messages that use !r
    forms |= _b64_forms(data)
    for q in (quote(value, safe=""), quote(value), quote_plus(value)):
        forms.add(q)
        forms.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), q))
    forms.add(data.hex())
    forms.add(data.hex().upper())
    forms.discard("")
    return forms


# --------------------------------------------------------------------------- tracker

_MARKERS = "(" + re.escape(REDACTED) + ")|"


def _keep_markers(m: re.Match[str]) -> str:
    return m.group(1) or REDACTED


class Tracker:
    """The secret values resolved during one run (or instance), and their redaction."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._forms: tuple[str, ...] = ()  # longest first

    def add(self, value: Any) -> None:
        """Taint ``value`` (empty strings and None are ignored)."""
        if value is None:
            return
        if not isinstance(value, str):
            value = str(value)
        if value == "" or value in self._values:
            return
        with self._lock:
            if value in self._values:
                return
            values = set(self._values)
            values.add(value)
            forms: set[str] = set(self._forms)
            forms |= encoded_forms(value)
            self._forms = tuple(sorted(forms, key=lambda f: (-len(f), f)))
            self._values = values

    def add_derived(self, value: Any) -> None:
        """Taint what an expression computed from a secret: every string of ``MIN_DERIVED``
        characters or more in ``value`` (through lists and map values); numbers, booleans,
        shorter strings and strings already holding the marker stay as they are."""
        if isinstance(value, str):
            # a string holding the marker was redacted already (read from a register): the
            # secret in it is hidden, the text around it is the module's
            if len(value) >= MIN_DERIVED and value not in self._values and REDACTED not in value:
                self.add(value)
        elif isinstance(value, dict):
            for v in value.values():
                self.add_derived(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                self.add_derived(v)

    def __len__(self) -> int:
        return len(self._values)

    def values(self) -> frozenset[str]:
        """The tracked values (a sandboxed worker gets them to redact its own messages)."""
        return frozenset(self._values)

    def __contains__(self, value: object) -> bool:
        return value in self._values

    def redact(self, text: str) -> str:
        """``text`` with every tracked value, in any encoded form, replaced by the marker."""
        forms = self._forms  # one atomic read: add() replaces the tuple, never mutates it
        if not forms or not isinstance(text, str):
            return text
        hits = [form for form in forms if form in text]
        if not hits:
            return text
        # One pass over the text with only the forms present, longest first, so a shorter
        # form never matches inside a longer one; markers already written (text redacted
        # twice) are matched first and kept whole, so redaction is idempotent.
        pattern = _MARKERS + "|".join(map(re.escape, hits))
        return re.sub(pattern, _keep_markers, text)

    def redact_value(self, obj: Any) -> Any:
        """A copy of ``obj`` with every string redacted (dict keys too); ``obj`` is untouched.

        Parts that need no change are shared with ``obj``, not copied.
        """
        if not self._forms:
            return obj
        return self._walk(obj, {})

    def _walk(self, obj: Any, memo: dict[int, Any]) -> Any:
        if isinstance(obj, str):
            return self.redact(obj)
        if isinstance(obj, dict):
            if id(obj) in memo:
                return memo[id(obj)]
            out: dict[Any, Any] = {}
            memo[id(obj)] = out
            for k, v in obj.items():
                out[self._walk(k, memo) if isinstance(k, str) else k] = self._walk(v, memo)
            return out
        if isinstance(obj, (list, tuple)):
            if id(obj) in memo:
                return memo[id(obj)]
            new: list[Any] = []
            memo[id(obj)] = new
            new.extend(self._walk(v, memo) for v in obj)
            return tuple(new) if isinstance(obj, tuple) else new
        return obj

    def would_redact(self, obj: Any) -> bool:
        """Whether ``redact_value(obj)`` changes anything (for the redaction metric/warning)."""
        return self._forms != () and self.redact_value(obj) != obj

    def clear(self) -> None:
        """Forget every value (best effort: Python strings cannot be zeroed)."""
        with self._lock:
            self._values = set()
            self._forms = ()


# --------------------------------------------------------------------------- the plan's secrets

#: ``${NAME}`` (not ``$${``, the literal) and ``secret "NAME"`` / ``secret `NAME```.
_NAMED = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}"
                    r"|\bsecret\s+[\"`]([A-Za-z_][A-Za-z0-9_]*)[\"`]")


def plan_secret_names(plan: Any) -> list[str]:
    """The secret names the tainted expressions of ``plan`` spell out, sorted (a name computed at
    run time, ``secret .name``, is not known before it is read)."""
    names: set[str] = set()
    for e in plan.expressions:
        if e.secret and e.text and ("${" in e.text or "secret" in e.text):
            for m in _NAMED.finditer(e.text):
                names.add(m.group(1) or m.group(2))
    return sorted(names)


def track_plan_secrets(plan: Any, provider: Any, tracker: Tracker) -> None:
    """Track the value of every secret ``plan`` names, before any workload runs.  A secret that
    is not set (or that the provider cannot read) is left alone: reading it fails the
    expression that reads it, as it would have."""
    for name in plan_secret_names(plan):
        value, found, _error = provider.get_secret(name)
        if found:
            tracker.add(value)


# --------------------------------------------------------------------------- keywords


def _keyword_pattern(keywords: Iterable[str]) -> re.Pattern[str]:
    alts = "|".join(re.escape(k) for k in sorted(keywords, key=len, reverse=True))
    # First alternative: a URL query parameter whose name holds a keyword (`?token=`,
    # `&access_token=`): its value alone, up to the next `&`, `#`, space or quote.
    # Second: anywhere else, what follows the keyword (and the rest of its name, `TOKEN_VALUE=`)
    # and a separator, up to the end of the line; a keyword inside a word that no separator
    # follows (a path `/srv/secrets/app`) is not a key.
    return re.compile(
        rf"([?&;][A-Za-z0-9_.~%-]*?(?:{alts})[A-Za-z0-9_.~%-]*=)([^&#;\s\"'<>]+)"
        rf"|({alts})([A-Za-z0-9_-]*[:= \t\"']++)([^\r\n]+)",
        re.IGNORECASE)


_default_pattern: re.Pattern[str] | None = None  # made at the first redaction that needs it (1 ms)


def _keyword_sub(m: re.Match[str]) -> str:
    if m.group(1) is not None:
        return m.group(1) + REDACTED
    return m.group(3) + m.group(4) + REDACTED


def redact_keywords(text: str, keywords: Iterable[str] | None = None) -> str:
    """On each line holding a keyword (any case), what follows it and any ``:``/``=``/space/quote
    characters after it becomes ``[REDACTED]``: ``password=hunter2`` → ``password=[REDACTED]``.
    In a URL's query the value of a parameter named after a keyword is replaced alone:
    ``GET /v1?token=abc&page=2: 401`` → ``GET /v1?token=[REDACTED]&page=2: 401``."""
    global _default_pattern
    if not isinstance(text, str):
        return text
    if keywords is None:
        kws: Iterable[str] = DEFAULT_KEYWORDS
    else:
        kws = tuple(keywords)
        if not kws:
            return text
    lower = text.lower()
    if not any(k.lower() in lower for k in kws):
        return text
    if keywords is None:
        pattern = _default_pattern
        if pattern is None:
            pattern = _default_pattern = _keyword_pattern(DEFAULT_KEYWORDS)
    else:
        pattern = _keyword_pattern(kws)
    return pattern.sub(_keyword_sub, text)
