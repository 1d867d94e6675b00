"""Phase ``emit``: render the plan's code and write the deterministic ``.gxp`` zip.

Members (design.md section 10, docs/plan-format.md): ``manifest.json`` (canonical pretty JSON),
``plan_code.py``, ``plan/index.json`` + ``plan/plan_code.pyc`` (this interpreter's bytecode,
pinned by its index so that the manifest stays platform-independent), optional
``native/<tag>/index.json`` + ``native/<tag>/shard_NNN.so`` and optional ``SIGNATURE``.
Entries are sorted, stored uncompressed (zlib builds differ between machines), dated
1980-01-01 with mode 0644 and no extra fields, so the same inputs give the same bytes.
"""

from __future__ import annotations

import base64
import importlib.util
import marshal
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from gxo.runtime import planfile as F
from gxo.runtime.plan import Plan, check_finite, encode_manifest

FIXED_DATE = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o644


@dataclass
class BuiltPlan:
    plan: Plan
    code: str  # plan_code.py
    items: list[Any]  # the code generator's items (native shards are rendered from them)
    header: str
    functions: list[Any] = field(default_factory=list)  # codegen.Function, distinct, in order of first use


@dataclass
class NativeMembers:
    tag: str
    index: bytes
    shards: list[bytes] = field(default_factory=list)


def code_header(plan: Plan) -> str:
    """The first lines of ``plan_code.py``: no paths beyond the base name, no time.  Native
    shards carry no header (nothing of the playbook but their functions)."""
    return (
        f"Plan {plan.name!r}, compiled by gxoc {plan.compiler_version} from {plan.source.path} "
        f"(sha256 {plan.source.sha256[:16]}).\n"
    )


def build_plan(result: Any, *, channel_buffer_size: int | None = None, source_bytes: bytes | None = None) -> BuiltPlan:
    """lower + render: the finished plan IR (its ``plan_code_sha256`` set) and its code."""
    from gxo.compiler.codegen import functions_of, render_plan_code
    from gxo.compiler.lower import lower

    plan, items = lower(result, channel_buffer_size=channel_buffer_size, source_bytes=source_bytes)
    header = code_header(plan)
    functions = functions_of(items)
    code = render_plan_code(items, header=header, functions=functions)
    plan = msgspec.structs.replace(plan, plan_code_sha256=F.sha256_hex(code.encode("utf-8")))
    return BuiltPlan(plan, code, items, header, functions)


def manifest_bytes(plan: Plan) -> bytes:
    """``manifest.json``: the canonical text ``gxo exec`` checks byte for byte."""
    check_finite(plan, "manifest")
    return encode_manifest(plan)


def bytecode(code: str) -> bytes:
    """This interpreter's magic + marshalled code object of ``plan_code.py``."""
    obj = compile(code, F.PYC_FILENAME, "exec", dont_inherit=True, optimize=0)
    return importlib.util.MAGIC_NUMBER + marshal.dumps(obj)


def bytecode_index(plan: Plan, pyc: bytes) -> bytes:
    return F.canonical_bytes({
        "format": F.BYTECODE_FORMAT,
        "format_version": F.INDEX_FORMAT_VERSION,
        "magic": pyc[:4].hex(),
        "cache_tag": sys.implementation.cache_tag,
        "plan_code_sha256": plan.plan_code_sha256,
        "sha256": F.sha256_hex(pyc),
    })


def members_of(built: BuiltPlan, native: NativeMembers | None = None) -> dict[str, bytes]:
    """The plan's members: manifest, ``plan_code.py`` with its bytecode and index, and the
    native members when given (see :func:`with_native`)."""
    code = built.code.encode("utf-8")
    pyc = bytecode(built.code)
    members = {
        F.MANIFEST: manifest_bytes(built.plan),
        F.PLAN_CODE: code,
        F.PYC: pyc,
        F.PYC_INDEX: bytecode_index(built.plan, pyc),
    }
    return with_native(members, native)


def with_native(members: dict[str, bytes], native: NativeMembers | None) -> dict[str, bytes]:
    """``members`` plus the native index and shards of one platform."""
    members = dict(members)
    if native is not None:
        members[f"native/{native.tag}/index.json"] = native.index
        for i, so in enumerate(native.shards):
            members[f"native/{native.tag}/shard_{i:03d}.so"] = so
    return members


def load_signing_key(path: str) -> Any:
    """An Ed25519 private key from a PEM file (``gxoc keygen``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from gxo.runtime.files import FileProblem, read_limited
    from gxo.runtime.limits import MAX_KEY_FILE_BYTES

    try:
        data = read_limited(path, MAX_KEY_FILE_BYTES, what="key file")
    except FileProblem as exc:
        raise ValueError(str(exc)) from None
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")  # noqa: TRY004 - reported as a bad --sign value
    return key


def sign_members(members: dict[str, bytes], private_key: Any) -> bytes:
    """The ``SIGNATURE`` member for ``members``."""
    from cryptography.hazmat.primitives import serialization

    message = F.signature_message(members[F.MANIFEST], F.signed_indexes(members))
    raw_pub = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return F.canonical_bytes({
        "format": F.SIGNATURE_FORMAT,
        "format_version": F.INDEX_FORMAT_VERSION,
        "algorithm": "ed25519",
        "key_id": F.key_id(raw_pub),
        "signature": base64.b64encode(private_key.sign(message)).decode("ascii"),
    })


def zip_bytes(members: dict[str, bytes]) -> bytes:
    """The deterministic zip of ``members``."""
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED, allowZip64=False) as zf:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3  # unix, so the mode below is read as one
            info.external_attr = (0o100000 | FILE_MODE) << 16
            info.extra = b""
            info.comment = b""
            zf.writestr(info, members[name])
    return buf.getvalue()


def write_gxp(path: str, members: dict[str, bytes]) -> None:
    """Write the zip atomically (a reader never sees half a plan), only to a new path or over a
    regular file: ``gxo.runtime.files.FileProblem`` for a device, a FIFO, a link, a directory."""
    from gxo.runtime.files import write_output

    write_output(path, zip_bytes(members), option="-o", mode=0o644)


def emit_gxp(path: str, built: BuiltPlan, *, native: NativeMembers | None = None,
             signing_key: Any = None, members: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """Write ``built`` (with its native shards and signature, if any) to ``path``; ``members``:
    :func:`members_of` ``built`` without native members, when already made."""
    members = members_of(built, native) if members is None else with_native(members, native)
    if signing_key is not None:
        members[F.SIGNATURE] = sign_members(members, signing_key)
    write_gxp(path, members)
    return members


def native_items(built: BuiltPlan) -> Sequence[Any]:
    return built.items
