"""Sealing at rest: AES-256-GCM over every value the durable store writes, when a key is set.

The key is 32 random bytes written in base64: ``GXO_STATE_KEY`` holds it, or a key file named
by ``--state-key-file`` (the file wins over the variable).  Make one with
``head -c 32 /dev/urandom | base64``.  A sealed value is ``nonce (12 random bytes) ||
ciphertext+tag``; its associated data is the row's identity (table, run id, workload, column),
so a value moved to another row, run or column fails to open.  A database records that it is
sealed and a *key check* (a known token sealed with the key), so a wrong or missing key is a
refusal on open, never garbage.

This module imports ``cryptography`` only when a ``Sealer`` is made: a store without a key never
loads it (``gxo exec`` start-up, design.md section 8).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from typing import Any

from gxo.runtime.limits import MAX_STATE_KEY_FILE_BYTES
from gxo.runtime.store.base import StoreRefused

__all__ = ["KEY_BYTES", "KEY_ENV", "Sealer", "load_key_file", "parse_key", "resolve_key"]

KEY_ENV = "GXO_STATE_KEY"
KEY_BYTES = 32
NONCE_BYTES = 12
_CHECK_TOKEN = b"gxo state key check v1"
_CHECK_AAD = b"meta\x1fkey_check"
_MAX_KEY_FILE = MAX_STATE_KEY_FILE_BYTES


def parse_key(text: str | bytes, where: str) -> bytes:
    """The 32-byte key written in base64 in ``text``; ``StoreRefused`` naming ``where`` when it
    is not base64 or not 32 bytes."""
    raw = text.strip() if isinstance(text, bytes) else text.strip().encode("ascii", "replace")
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise StoreRefused(f"{where} is not a state key: not base64 (write 32 random bytes in base64, "
                           "e.g. head -c 32 /dev/urandom | base64)") from None
    if len(key) != KEY_BYTES:
        raise StoreRefused(f"{where} is not a state key: it decodes to {len(key)} bytes, not {KEY_BYTES}")
    return key


def load_key_file(path: str) -> bytes:
    """The key held (in base64) by the file at ``path``."""
    from gxo.runtime.files import FileProblem, FileTooLarge, read_limited

    try:  # a FIFO is refused without blocking
        text = read_limited(path, _MAX_KEY_FILE, what="key file")
    except FileTooLarge:
        raise StoreRefused(f"key file {path} is not a state key: too large") from None
    except FileProblem as exc:
        raise StoreRefused(f"cannot read the key file {path}: {exc.reason.removeprefix('cannot read: ')}") from None
    return parse_key(text, f"key file {path}")


def resolve_key(key_file: str | None = None, environ: Mapping[str, str] | None = None) -> bytes | None:
    """The configured key: ``key_file``'s, else ``GXO_STATE_KEY``'s, else None (no sealing)."""
    if key_file:
        return load_key_file(key_file)
    env = os.environ if environ is None else environ
    text = env.get(KEY_ENV)
    if text is None or not text.strip():
        return None
    return parse_key(text, KEY_ENV)


def row_aad(table: str, run_id: str, workload: str, column: str) -> bytes:
    """The associated data of one stored value: its row's identity."""
    return "\x1f".join((table, run_id, workload, column)).encode("utf-8", "surrogatepass")


class Sealer:
    """AES-256-GCM with one key."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise StoreRefused(f"a state key is {KEY_BYTES} bytes, not {len(key)}")
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead: Any = AESGCM(key)

    def seal(self, plain: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plain, aad)  # type: ignore[no-any-return]

    def open(self, blob: bytes, aad: bytes) -> bytes | None:
        """The plain bytes, or None when ``blob`` does not authenticate (another key, another row,
        or changed)."""
        from cryptography.exceptions import InvalidTag

        if len(blob) < NONCE_BYTES + 16:
            return None
        try:
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)  # type: ignore[no-any-return]
        except InvalidTag:
            return None

    def key_check(self) -> bytes:
        """A fresh key check value for a database sealed with this key."""
        return self.seal(_CHECK_TOKEN, _CHECK_AAD)

    def opens(self, check: bytes) -> bool:
        """Whether ``check`` (a database's key check value) was made with this key."""
        return self.open(check, _CHECK_AAD) == _CHECK_TOKEN
