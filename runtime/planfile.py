"""Open, verify and load a ``.gxp`` plan: every digest (and the signature where asked) is
checked before any of its code runs.

Order (docs/plan-format.md): the file must be exactly a stored zip of the known members, with
nothing before, between or after them, and sizes within the limits of ``gxo.runtime.limits``
(checked from the central directory before any member is read; nothing is ever decompressed); ``SIGNATURE`` is checked against the trusted keys over the members' bytes (fail-closed:
a trusted key makes an unsigned plan a refusal); ``manifest.json`` decodes (msgspec, straight
into the IR) as a plan of this format version and is byte for byte its canonical text (one
re-encode of the decoded plan); ``plan_code.py`` must match the manifest's digest;
``plan/index.json`` pins the bytecode and every ``native/<tag>/index.json`` pins its shards.  Only then is the bytecode
unmarshalled or a native shard loaded.  A failure raises ``PlanRefused``, one line naming the
member (``gxo`` exits 3).  No pickle, no ``eval``; ``cryptography`` is imported only when a
signature is checked.  This module never imports the compiler or its dependencies.
"""

from __future__ import annotations

import base64
import importlib.machinery
import importlib.util
import marshal
import os
import re
import stat
import sys
import struct
import types
import zlib
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
from msgspec import Struct, field

from gxo.runtime.limits import MAX_KEY_FILE_BYTES, MAX_PLAN_BYTES, MAX_PLAN_MEMBER_BYTES, MAX_PLAN_MEMBERS, MAX_PLAN_TOTAL_BYTES
from gxo.runtime.module import GxoError
from gxo.runtime.plan import Plan, PlanFormatError, canonical_json, decode_plan, encode_manifest
from gxo.runtime.support import sha256_hex

MANIFEST = "manifest.json"
PLAN_CODE = "plan_code.py"
PYC = "plan/plan_code.pyc"
PYC_INDEX = "plan/index.json"
SIGNATURE = "SIGNATURE"
REQUIRED = (MANIFEST, PLAN_CODE, PYC_INDEX, PYC)
NATIVE_MEMBER = re.compile(r"^native/([A-Za-z0-9_.+-]+)/(index\.json|shard_[0-9]{3}\.so)$")
PYC_FILENAME = "plan/plan_code.py"  # the file name compiled into the bytecode
BYTECODE_FORMAT = "gxo-bytecode"
NATIVE_FORMAT = "gxo-native"
NATIVE_FUNCTION = re.compile(r"f_[0-9a-f]{16}")  # a shard's functions: named by their body's digest
SIGNATURE_FORMAT = "gxo-signature"
INDEX_FORMAT_VERSION = 1
SIGNATURE_DOMAIN = b"gxo-plan-signature/2\n"
MAX_MEMBERS = MAX_PLAN_MEMBERS
MAX_MEMBER_BYTES = MAX_PLAN_MEMBER_BYTES
MAX_TOTAL_BYTES = MAX_PLAN_TOTAL_BYTES
EXIT_REFUSED = 3


class PlanRefused(GxoError):
    """The plan failed verification; the message is one line naming the member."""

    exit_code = EXIT_REFUSED


class VerifiedPlan(Struct):
    """A plan whose every member has been checked; nothing of it has run yet."""

    path: str
    plan: Plan
    members: dict[str, bytes]
    bytecode_index: dict[str, Any]
    native_indexes: dict[str, dict[str, Any]]  # platform tag -> index
    signed: bool  # carries a SIGNATURE
    signature_checked: bool  # ... verified against a trusted key
    key_id: str | None = None
    digest: str = ""  # sha256 of the manifest member: the plan's identity (a run resumes only with it)


class LoadedPlan(Struct):
    plan: Plan
    functions: dict[str, Callable[..., Any]]
    plan_dir: str  # the folder that holds the .gxp (._gxo.plan_dir)
    native: bool  # the functions come from native shards
    warnings: list[str] = field(default_factory=list)
    signed: bool = False
    signature_checked: bool = False
    digest: str = ""  # sha256 of the manifest member (gxo.runtime.durable.plan_digest for a plan in memory)


# ---------------------------------------------------------------------------------------------
# Shared format helpers (the compiler's emitter uses them too)


def platform_tag() -> str:
    """This interpreter's native tag, e.g. ``cpython-311-x86_64-linux-gnu``."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    tag = suffix.removeprefix(".")
    return tag.rsplit(".", 1)[0]


def canonical_bytes(obj: Any) -> bytes:
    """The member text of a JSON member: canonical pretty JSON, UTF-8."""
    return canonical_json(obj, pretty=True).encode("utf-8")


def signature_message(manifest: bytes, indexes: dict[str, bytes]) -> bytes:
    """What ``SIGNATURE`` signs: the digest of the manifest member's bytes (its canonical text,
    checked byte for byte on reading) and each index's."""
    lines = [f"{MANIFEST} {sha256_hex(manifest)}\n"]
    lines.extend(f"{name} {sha256_hex(indexes[name])}\n" for name in sorted(indexes))
    return SIGNATURE_DOMAIN + "".join(lines).encode("utf-8")


def signed_indexes(members: dict[str, bytes]) -> dict[str, bytes]:
    return {n: b for n, b in members.items() if n == PYC_INDEX or (n.startswith("native/") and n.endswith("/index.json"))}


def key_id(public_raw: bytes) -> str:
    return sha256_hex(public_raw)[:16]


# ---------------------------------------------------------------------------------------------
# Reading


def _strict_json(raw: bytes, member: str, path: str) -> Any:
    """A small JSON member (an index, ``SIGNATURE``): valid JSON, byte for byte its canonical
    text (so no duplicate keys, no NaN, no other spelling)."""
    where = f"{path}: member '{member}'"
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise PlanRefused(f"{where}: not valid JSON (damaged)") from None
    if canonical_bytes(data) != raw:
        raise PlanRefused(f"{where}: not in canonical form (edited or damaged)")
    return data


_LOCAL = struct.Struct("<4s5H3L2H")  # a member's local header (30 bytes)
_CENTRAL = struct.Struct("<4s6H3L5H2L")  # its central directory entry (46 bytes)
_END = struct.Struct("<4s4H2LH")  # the end of central directory record (22 bytes)
_MAX_NAME = 1024  # bytes of a member's name
_UTF8_NAMES = 0x800  # the only general-purpose flag a plan may carry (names are ASCII anyway)


def read_members(path: str) -> dict[str, bytes]:
    """Every member of the plan, CRC-checked.  The format is enforced from the end of central
    directory record and the central directory, read once, before any member is: a zip with
    nothing before, between or after its parts, no comment, no extra fields, no data
    descriptors, every member stored (never compressed) and of a bounded size (limits.py), only
    known names, each once.  No decompression ever happens."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))  # a FIFO would block
    except OSError as exc:
        raise PlanRefused(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return _read_members(fd, path)
    except OSError as exc:
        raise PlanRefused(f"{path}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _read_members(fd: int, path: str) -> dict[str, bytes]:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise PlanRefused(f"{path}: not a regular file")
    size = st.st_size
    if size > MAX_PLAN_BYTES:
        raise PlanRefused(f"{path}: {size:,} bytes: too large for a plan (at most {MAX_PLAN_BYTES:,} bytes)")
    end = os.pread(fd, _END.size, size - _END.size) if size >= _END.size else b""
    if end[:4] != b"PK\x05\x06":
        raise PlanRefused(f"{path}: {_why_no_end(fd, size)}")
    _sig, disk, cd_disk, n_disk, n, cd_size, cd_offset, comment = _END.unpack(end)
    if disk or cd_disk or n_disk != n or comment:
        raise PlanRefused(f"{path}: not a GXO plan (a zip comment or a multi-part zip)")
    if n > MAX_PLAN_MEMBERS:
        raise PlanRefused(f"{path}: too many members ({n}; at most {MAX_PLAN_MEMBERS})")
    dir_end = cd_offset + cd_size
    if dir_end != size - _END.size or cd_size > n * (_CENTRAL.size + _MAX_NAME):
        if dir_end < size - _END.size:
            raise PlanRefused(f"{path}: {size - _END.size - dir_end:,} byte(s) that belong to no member "
                              "(data prepended to the plan or inserted into it)")
        raise PlanRefused(f"{path}: truncated or damaged (its central directory does not fit the file)")
    directory = os.pread(fd, cd_size, cd_offset)
    entries: list[tuple[str, int, int, int, int]] = []  # name, flags, crc, size, local header offset
    seen: set[str] = set()
    pos = at = total = 0
    for _ in range(n):
        if pos + _CENTRAL.size > cd_size:
            raise PlanRefused(f"{path}: truncated or damaged (central directory)")
        (sig, _made, _need, flags, method, _time, _date, crc, csize, usize, name_len, extra_len, comment_len,
         disk_start, _iattr, _eattr, offset) = _CENTRAL.unpack_from(directory, pos)
        raw_name = directory[pos + _CENTRAL.size:pos + _CENTRAL.size + name_len]
        pos += _CENTRAL.size + name_len + extra_len + comment_len
        if sig != b"PK\x01\x02" or pos > cd_size or name_len > _MAX_NAME or disk_start:
            raise PlanRefused(f"{path}: truncated or damaged (central directory)")
        try:
            name = raw_name.decode("ascii")
        except UnicodeDecodeError:
            raise PlanRefused(f"{path}: unknown member {raw_name.decode('utf-8', 'replace')!r}") from None
        if name in seen:
            raise PlanRefused(f"{path}: member '{name}' appears twice")
        seen.add(name)
        if not _known_member(name):
            raise PlanRefused(f"{path}: unknown member '{name}'")
        if method != 0:
            raise PlanRefused(f"{path}: member '{name}' is compressed (method {method}): a plan's members are "
                              "stored, never compressed")
        if flags & ~_UTF8_NAMES:
            raise PlanRefused(f"{path}: member '{name}' has zip flags {flags:#06x} (encrypted, or a data "
                              "descriptor): a plan's members are stored plainly")
        if extra_len or comment_len:
            raise PlanRefused(f"{path}: member '{name}' carries zip extra fields or a comment")
        if usize > MAX_PLAN_MEMBER_BYTES:
            raise PlanRefused(f"{path}: member '{name}' is too large ({usize:,} bytes; at most "
                              f"{MAX_PLAN_MEMBER_BYTES:,})")
        total += usize
        if total > MAX_PLAN_TOTAL_BYTES:
            raise PlanRefused(f"{path}: members too large in total (more than {MAX_PLAN_TOTAL_BYTES:,} bytes)")
        if csize != usize or offset != at:
            raise PlanRefused(f"{path}: member '{name}' is damaged (its place or size in the zip does not fit)")
        entries.append((name, flags, crc, usize, offset))
        at = offset + _LOCAL.size + name_len + usize
    if pos != cd_size:
        raise PlanRefused(f"{path}: truncated or damaged (central directory)")
    if at != cd_offset:
        raise PlanRefused(f"{path}: {abs(cd_offset - at):,} byte(s) that belong to no member (data inserted "
                          "between members)")
    for req in REQUIRED:
        if req not in seen:
            raise PlanRefused(f"{path}: missing member '{req}'")
    body = os.pread(fd, cd_offset, 0) if cd_offset else b""  # every member, in one read
    if len(body) != cd_offset:
        raise PlanRefused(f"{path}: truncated (it changed while being read)")
    view = memoryview(body)
    members: dict[str, bytes] = {}
    for name, flags, crc, usize, offset in entries:
        (sig, _need, lflags, method, _time, _date, lcrc, csize, lsize, name_len, extra_len) = _LOCAL.unpack_from(body, offset)
        start = offset + _LOCAL.size
        if (sig != b"PK\x03\x04" or (lflags, method, lcrc, csize, lsize, extra_len) != (flags, 0, crc, usize, usize, 0)
                or body[start:start + name_len] != name.encode("ascii")):
            raise PlanRefused(f"{path}: member '{name}' is damaged (its local header does not match the directory)")
        data = bytes(view[start + name_len:start + name_len + usize])
        if zlib.crc32(data) != crc:
            raise PlanRefused(f"{path}: member '{name}' is damaged (CRC mismatch)")
        members[name] = data
    return members


def _why_no_end(fd: int, size: int) -> str:
    """Why a file has no end of central directory record in its last 22 bytes (a refusal only)."""
    head = os.pread(fd, 4, 0)
    window = min(size, 65536 + _END.size)
    tail = os.pread(fd, window, size - window) if window else b""
    if tail.rfind(b"PK\x05\x06") >= 0:
        return "bytes after the end of the zip (data appended to the plan, or a zip comment)"
    if head[:2] != b"PK":
        return "not a GXO plan (not a zip file)"
    return "truncated or not a zip file (no end of central directory record)"


def _known_member(name: str) -> bool:
    return name in REQUIRED or name == SIGNATURE or NATIVE_MEMBER.match(name) is not None


# ---------------------------------------------------------------------------------------------
# Verification (no plan code runs here)


def _load_trusted_key(key: Any, label: str = "trusted key") -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, (str, os.PathLike)):
        from gxo.runtime.files import FileProblem, read_limited

        try:
            data = read_limited(os.fspath(key), MAX_KEY_FILE_BYTES, what="key file")
        except FileProblem as exc:
            raise PlanRefused(f"trusted key {os.fspath(key)}: {exc.reason}") from None
        label = os.fspath(key)
    else:
        data = bytes(key)
    try:
        if len(data) == 32:
            return Ed25519PublicKey.from_public_bytes(data)
        loaded = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise PlanRefused(f"{label}: not an Ed25519 public key (PEM)") from None
    if not isinstance(loaded, Ed25519PublicKey):
        raise PlanRefused(f"{label}: not an Ed25519 public key")
    return loaded


TRUSTED_KEYS_ENV = "GXO_TRUSTED_KEYS"
_PEM_BLOCK = re.compile(rb"-----BEGIN PUBLIC KEY-----\r?\n.*?-----END PUBLIC KEY-----", re.S)


def trusted_keys_from_env(environ: Any = None) -> list[Any]:
    """The Ed25519 public keys of the file named by ``$GXO_TRUSTED_KEYS`` (none when unset).

    The file holds one or more PEM public keys as ``gxoc keygen`` writes them (``cat a.pub
    b.pub > trusted``); ``#`` comment lines and blank lines are allowed.  Fail-closed: a file
    that cannot be read, holds no key or anything that is not an Ed25519 key is a refusal."""
    env = os.environ if environ is None else environ
    name = env.get(TRUSTED_KEYS_ENV, "")
    if not name:
        return []
    where = f"{TRUSTED_KEYS_ENV}={name}"
    from gxo.runtime.files import FileProblem, FileTooLarge, read_limited

    try:
        data = read_limited(name, MAX_KEY_FILE_BYTES, what="key file")
    except FileTooLarge:
        raise PlanRefused(f"{where}: too large for a key file (at most {MAX_KEY_FILE_BYTES:,} bytes)") from None
    except FileProblem as exc:
        raise PlanRefused(f"{where}: {exc.reason}") from None
    blocks = list(_PEM_BLOCK.finditer(data))
    rest = _PEM_BLOCK.sub(b"", data)
    for line in rest.splitlines():
        if line.strip() and not line.lstrip().startswith(b"#"):
            raise PlanRefused(f"{where}: unexpected text {line.strip()[:40]!r}: expected PEM public keys "
                              "(-----BEGIN PUBLIC KEY-----) as gxoc keygen writes them")
    if not blocks:
        raise PlanRefused(f"{where}: holds no public key (-----BEGIN PUBLIC KEY-----)")
    keys = []
    for i, m in enumerate(blocks, 1):
        line = data.count(b"\n", 0, m.start()) + 1
        keys.append(_load_trusted_key(m.group(0), f"{where}, key {i} (line {line})"))
    return keys


def _check_signature(path: str, members: dict[str, bytes], manifest: bytes,
                     trusted_keys: Iterable[Any]) -> tuple[bool, bool, str | None]:
    keys = list(trusted_keys)
    raw = members.get(SIGNATURE)
    if raw is None:
        if keys:
            raise PlanRefused(f"{path}: member '{SIGNATURE}' is missing: the plan is unsigned and a trusted key is required")
        return False, False, None
    sig = _strict_json(raw, SIGNATURE, path)
    if (not isinstance(sig, dict) or set(sig) != {"format", "format_version", "algorithm", "key_id", "signature"}
            or sig["format"] != SIGNATURE_FORMAT or sig["format_version"] != INDEX_FORMAT_VERSION
            or sig["algorithm"] != "ed25519" or not isinstance(sig["signature"], str)
            or not isinstance(sig["key_id"], str)):
        raise PlanRefused(f"{path}: member '{SIGNATURE}' is malformed")
    if not keys:
        return True, False, sig["key_id"]
    try:
        signature = base64.b64decode(sig["signature"].encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise PlanRefused(f"{path}: member '{SIGNATURE}' is malformed (bad base64)") from None
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    message = signature_message(manifest, signed_indexes(members))
    for key in keys:
        pub = _load_trusted_key(key)
        try:
            pub.verify(signature, message)
        except InvalidSignature:
            continue
        raw_pub = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return True, True, key_id(raw_pub)
    raise PlanRefused(f"{path}: member '{SIGNATURE}': bad signature (not made by a trusted key over this plan)")


def _check_bytecode_index(path: str, members: dict[str, bytes], plan: Plan) -> dict[str, Any]:
    idx = _strict_json(members[PYC_INDEX], PYC_INDEX, path)
    want = {"format", "format_version", "magic", "cache_tag", "plan_code_sha256", "sha256"}
    if not isinstance(idx, dict) or set(idx) != want or idx["format"] != BYTECODE_FORMAT:
        raise PlanRefused(f"{path}: member '{PYC_INDEX}' is malformed")
    if idx["format_version"] != INDEX_FORMAT_VERSION:
        raise PlanRefused(f"{path}: member '{PYC_INDEX}' has format version {idx['format_version']!r}")
    if idx["plan_code_sha256"] != plan.plan_code_sha256:
        raise PlanRefused(f"{path}: member '{PYC_INDEX}' belongs to another plan_code.py")
    pyc = members[PYC]
    if sha256_hex(pyc) != idx["sha256"]:
        raise PlanRefused(f"{path}: member '{PYC}' does not match its digest (tampered or damaged)")
    if not isinstance(idx["magic"], str) or pyc[:4].hex() != idx["magic"]:
        raise PlanRefused(f"{path}: member '{PYC}' does not carry the magic its index names")
    return idx


def _check_native(path: str, members: dict[str, bytes], plan: Plan) -> dict[str, dict[str, Any]]:
    tags: dict[str, set[str]] = {}
    for name in members:
        m = NATIVE_MEMBER.match(name)
        if m:
            tags.setdefault(m.group(1), set()).add(m.group(2))
    out: dict[str, dict[str, Any]] = {}
    for tag, files in sorted(tags.items()):
        index_name = f"native/{tag}/index.json"
        if "index.json" not in files:
            raise PlanRefused(f"{path}: missing member '{index_name}'")
        idx = _strict_json(members[index_name], index_name, path)
        want = {"format", "format_version", "platform", "cache_tag", "plan_code_sha256", "shards"}
        if not isinstance(idx, dict) or set(idx) != want or idx["format"] != NATIVE_FORMAT:
            raise PlanRefused(f"{path}: member '{index_name}' is malformed")
        if idx["format_version"] != INDEX_FORMAT_VERSION:
            raise PlanRefused(f"{path}: member '{index_name}' has format version {idx['format_version']!r}")
        if idx["platform"] != tag:
            raise PlanRefused(f"{path}: member '{index_name}' names platform {idx['platform']!r}, not {tag!r}")
        if idx["plan_code_sha256"] != plan.plan_code_sha256:
            raise PlanRefused(f"{path}: member '{index_name}' belongs to another plan_code.py")
        shards = idx["shards"]
        if not isinstance(shards, list):
            raise PlanRefused(f"{path}: member '{index_name}' is malformed")
        listed: set[str] = set()
        seen_ids: list[str] = []
        for i, sh in enumerate(shards):
            if (not isinstance(sh, dict) or set(sh) != {"file", "module", "sha256", "functions"}
                    or sh["file"] != f"shard_{i:03d}.so" or not isinstance(sh["module"], str)
                    or not re.fullmatch(r"gxo_shard_[0-9a-f]{20}", sh["module"])
                    or not isinstance(sh["functions"], list) or not sh["functions"]
                    or not all(isinstance(f, str) and NATIVE_FUNCTION.fullmatch(f) for f in sh["functions"])):
                raise PlanRefused(f"{path}: member '{index_name}' is malformed (shard {i})")
            member = f"native/{tag}/{sh['file']}"
            if member not in members:
                raise PlanRefused(f"{path}: missing member '{member}'")
            if sha256_hex(members[member]) != sh["sha256"]:
                raise PlanRefused(f"{path}: member '{member}' does not match its digest (tampered or damaged)")
            listed.add(sh["file"])
            seen_ids.extend(sh["functions"])
        extra = files - listed - {"index.json"}
        if extra:
            raise PlanRefused(f"{path}: unknown member 'native/{tag}/{min(extra)}'")
        if len(set(seen_ids)) != len(seen_ids):
            raise PlanRefused(f"{path}: member '{index_name}' lists a function twice")
        out[tag] = idx
    return out


def verify_members(path: str, members: dict[str, bytes], *, trusted_keys: Iterable[Any] = ()) -> VerifiedPlan:
    raw = members[MANIFEST]
    # the signature covers the member's bytes: checked before anything of the manifest is read
    signed, checked, kid = _check_signature(path, members, raw, trusted_keys)
    try:
        plan = decode_plan(raw)
    except PlanFormatError as exc:
        raise PlanRefused(f"{path}: member '{MANIFEST}': {exc}") from None
    if encode_manifest(plan) != raw:  # one encode of the decoded plan, compared byte for byte
        raise PlanRefused(f"{path}: member '{MANIFEST}': not in canonical form (edited or damaged)")
    if sha256_hex(members[PLAN_CODE]) != plan.plan_code_sha256:
        raise PlanRefused(f"{path}: member '{PLAN_CODE}' does not match the manifest's digest (tampered or damaged)")
    bidx = _check_bytecode_index(path, members, plan)
    nidx = _check_native(path, members, plan)
    return VerifiedPlan(path, plan, members, bidx, nidx, signed, checked, kid, sha256_hex(raw))


def open_plan(path: str, *, trusted_keys: Iterable[Any] = ()) -> VerifiedPlan:
    """Read and verify a plan without running any of its code (``gxoc show``, ``gxoc diff``)."""
    return verify_members(path, read_members(path), trusted_keys=trusted_keys)


# ---------------------------------------------------------------------------------------------
# Loading (only after verification)

_NATIVE_MODULES: dict[str, types.ModuleType] = {}  # shard digest -> loaded module


def _functions_of(mod: Any, wanted: list[str], what: str, path: str) -> dict[str, Callable[..., Any]]:
    table = getattr(mod, "FUNCTIONS", None)
    if not isinstance(table, tuple):
        raise PlanRefused(f"{path}: {what} defines no FUNCTIONS table")
    out: dict[str, Callable[..., Any]] = {}
    for entry in table:
        if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str) and callable(entry[1])):
            raise PlanRefused(f"{path}: {what} has a malformed FUNCTIONS table")
        out[entry[0]] = entry[1]
    if sorted(out) != sorted(wanted):
        raise PlanRefused(f"{path}: {what} does not define exactly this plan's expressions")
    return out


def _load_bytecode(v: VerifiedPlan, warnings: list[str]) -> dict[str, Callable[..., Any]]:
    magic = importlib.util.MAGIC_NUMBER
    pyc = v.members[PYC]
    if pyc[:4] == magic:
        try:
            code = marshal.loads(pyc[4:])
        except (ValueError, EOFError, TypeError):
            raise PlanRefused(f"{v.path}: member '{PYC}' is damaged") from None
        if not isinstance(code, types.CodeType):
            raise PlanRefused(f"{v.path}: member '{PYC}' is not a code object")
        what = f"member '{PYC}'"
    else:
        warnings.append(
            f"{PYC} was compiled for {v.bytecode_index['cache_tag']}, not {sys.implementation.cache_tag}: "
            f"compiling {PLAN_CODE} instead"
        )
        code = compile(v.members[PLAN_CODE].decode("utf-8"), PYC_FILENAME, "exec", dont_inherit=True)
        what = f"member '{PLAN_CODE}'"
    mod = types.ModuleType("gxo_plan_code")
    mod.__file__ = PYC_FILENAME
    _register_source(v)
    exec(code, mod.__dict__)  # noqa: S102 - the verified bytecode of the generated plan code
    return _functions_of(mod, [e.id for e in v.plan.expressions], what, v.path)


def _register_source(v: VerifiedPlan) -> None:
    import linecache

    text = v.members[PLAN_CODE].decode("utf-8", errors="replace")
    linecache.cache[PYC_FILENAME] = (len(text), None, text.splitlines(True), PYC_FILENAME)


def _load_native(v: VerifiedPlan, tag: str, warnings: list[str]) -> dict[str, Callable[..., Any]]:
    """The bytecode's functions, each replaced by its native form where a shard holds it (the
    shards hold the functions evaluated per record or loop item, by name: ``f_<digest>``)."""
    idx = v.native_indexes[tag]
    pure = _load_bytecode(v, warnings)
    names = {getattr(fn, "__name__", None) for fn in pure.values()}
    stray = sorted({f for sh in idx["shards"] for f in sh["functions"]} - names)
    if stray:  # checked before any shard is loaded
        raise PlanRefused(f"{v.path}: member 'native/{tag}/index.json' lists function {stray[0]}, which is not in {PLAN_CODE}")
    functions: dict[str, Callable[..., Any]] = {}
    tmp: str | None = None
    try:
        for sh in idx["shards"]:
            digest = sh["sha256"]
            mod = _NATIVE_MODULES.get(digest)
            if mod is None:
                if tmp is None:
                    tmp = _private_dir("gxo-native-")  # mode 0700
                name = sh["module"]
                so = os.path.join(tmp, name + importlib.machinery.EXTENSION_SUFFIXES[0])
                fd = os.open(so, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o500)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(v.members[f"native/{tag}/{sh['file']}"])
                loader = importlib.machinery.ExtensionFileLoader(name, so)
                spec = importlib.util.spec_from_file_location(name, so, loader=loader)
                if spec is None:
                    raise PlanRefused(f"{v.path}: member 'native/{tag}/{sh['file']}' cannot be loaded")
                try:
                    mod = importlib.util.module_from_spec(spec)
                    loader.exec_module(mod)
                except ImportError as exc:
                    raise PlanRefused(f"{v.path}: member 'native/{tag}/{sh['file']}' does not load: {exc}") from None
                _NATIVE_MODULES[digest] = mod
            functions.update(_functions_of(mod, sh["functions"], f"member 'native/{tag}/{sh['file']}'", v.path))
    finally:
        if tmp is not None:
            _remove_dir(tmp)
    return {eid: functions.get(fn.__name__, fn) for eid, fn in pure.items()}


def _private_dir(prefix: str) -> str:
    """A new folder of mode 0700 in ``$TMPDIR`` (else ``/tmp``), as ``tempfile.mkdtemp`` makes
    one, without importing tempfile (and random: about 2.5 ms of a start); tempfile's own where
    that folder cannot be made."""
    base = os.path.abspath(os.environ.get("TMPDIR") or os.environ.get("TEMP") or os.environ.get("TMP") or "/tmp")
    for _ in range(8):
        path = os.path.join(base, prefix + os.urandom(8).hex())
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue
        except OSError:
            break
    import tempfile

    return tempfile.mkdtemp(prefix=prefix)


def _remove_dir(path: str) -> None:
    """Remove a folder ``_private_dir`` made and the files in it; what cannot be removed stays."""
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        try:
            os.unlink(os.path.join(path, name))
        except OSError:
            pass
    try:
        os.rmdir(path)
    except OSError:
        pass


def load_plan(path: str, *, trusted_keys: Iterable[Any] = (), require_native: bool = False,
              allow_native: bool = True) -> LoadedPlan:
    """Verify ``path`` completely, then load its expression functions.

    Native shards for this interpreter are preferred; shards for another one fall back to the
    bytecode with a warning, or are refused under ``require_native``."""
    v = open_plan(path, trusted_keys=trusted_keys)
    warnings: list[str] = []
    tag = platform_tag()
    use_native = False
    if allow_native or require_native:
        if tag in v.native_indexes:
            use_native = True
        elif require_native:
            if v.native_indexes:
                found = ", ".join(sorted(v.native_indexes))
                raise PlanRefused(f"{path}: member 'native/{found}/index.json': native code for another interpreter ({tag} needed)")
            raise PlanRefused(f"{path}: member 'native/{tag}/index.json' is missing: the plan has no native code (--require-native)")
        elif v.native_indexes:
            warnings.append(
                f"native code built for {', '.join(sorted(v.native_indexes))}, not {tag}: running the bytecode instead"
            )
    functions = _load_native(v, tag, warnings) if use_native else _load_bytecode(v, warnings)
    return LoadedPlan(
        plan=v.plan, functions=functions, plan_dir=os.path.dirname(os.path.abspath(path)), native=use_native,
        warnings=warnings, signed=v.signed, signature_checked=v.signature_checked, digest=v.digest,
    )


def refusal_line(exc: PlanRefused) -> str:
    """The one line ``gxo exec`` prints for a refused plan (exit 3)."""
    return f"gxo: plan refused: {exc}"
