"""Plan verification: every way of damaging a ``.gxp`` is refused before any code runs.

``tampered_variants`` is shared with the ``gxo exec`` tests (exit 3 for each variant):
``from test_plan_tamper import make_plan, tampered_variants``.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from gxo.compiler.emit import build_plan, emit_gxp, sign_members, zip_bytes
from gxo.compiler.pipeline import check_source
from gxo.runtime import planfile as F
from gxo.runtime.plan import canonical_json
from gxo.runtime.planfile import PlanRefused, load_plan, open_plan, refusal_line

PLAYBOOK = b"""name: tamper
schemaVersion: "1.0.0"
vars:
  who: world
workloads:
  - name: greet
    lifecycle: {policy: run_once}
    process:
      module: exec
      params:
        command: echo
        args: ["hello {{ .who }}", "{{ len .who }}"]
    register: greeted
  - name: check
    lifecycle: {policy: run_once}
    process:
      module: control:assert
      params:
        condition: '{{ .greeted.exit_code }} == 0'
"""


def make_plan(folder: Path, *, name: str = "plan.gxp", key=None, playbook: bytes = PLAYBOOK) -> Path:
    """A small valid plan (bytecode only; signed when ``key`` is an Ed25519 private key)."""
    result = check_source(playbook, "playbook.yaml")
    assert not result.diags.has_errors
    out = folder / name
    emit_gxp(str(out), build_plan(result, source_bytes=playbook), signing_key=key)
    return out


def read_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def rewrite(path: Path, out: Path, members: dict[str, bytes]) -> Path:
    """A well-formed zip (valid CRCs) with the given members: only our digests can tell."""
    out.write_bytes(zip_bytes(members))
    return out


def flip_raw(path: Path, out: Path, member: str) -> Path:
    """Flip one byte inside ``member``'s data in the zip file itself (its CRC no longer fits)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    # local header: 30 bytes + name + extra, then the data
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.file_size // 2] ^= 0x01
    out.write_bytes(bytes(data))
    return out


def flip_byte(name: str, data: bytes) -> bytes:
    """``data`` with one bit flipped near its middle; in a JSON member, in a structural character
    (a flip inside a value can give another valid plan, which only a signature can tell:
    ``test_consistent_edit_without_signature_is_caught_only_by_signature``)."""
    b = bytearray(data)
    at = len(b) // 2
    if name.endswith(".json") or name == F.SIGNATURE:
        at = next(i for i in range(at, len(b)) if b[i] in b'{}[]:,"')
    b[at] ^= 0x01
    return bytes(b)


def tampered_variants(plan: Path, out_dir: Path) -> list[tuple[str, Path]]:
    """(label, path) of damaged copies of ``plan``: each must be refused (``gxo exec`` exit 3)."""
    members = read_members(plan)
    out: list[tuple[str, Path]] = []
    for name in sorted(members):
        safe = name.replace("/", "_")
        out.append((f"raw-flip:{name}", flip_raw(plan, out_dir / f"raw-{safe}.gxp", name)))
        changed = dict(members)
        changed[name] = flip_byte(name, changed[name])
        out.append((f"flip:{name}", rewrite(plan, out_dir / f"flip-{safe}.gxp", changed)))
    raw = plan.read_bytes()
    for cut in (0, 10, len(raw) // 2, len(raw) - 1):
        p = out_dir / f"trunc-{cut}.gxp"
        p.write_bytes(raw[:cut])
        out.append((f"truncated:{cut}", p))
    missing = dict(members)
    del missing[F.PYC]
    out.append(("missing:pyc", rewrite(plan, out_dir / "missing.gxp", missing)))
    extra = dict(members, **{"evil.py": b"print('pwned')\n"})
    out.append(("unknown-member", rewrite(plan, out_dir / "extra.gxp", extra)))
    foreign = io.BytesIO()
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("hello.txt", "not a plan")
    (out_dir / "foreign.gxp").write_bytes(foreign.getvalue())
    out.append(("foreign-zip", out_dir / "foreign.gxp"))
    (out_dir / "text.gxp").write_text("name: not a plan\n")
    out.append(("not-a-zip", out_dir / "text.gxp"))
    # the zip itself must be exactly the plan: nothing before or after it, nothing compressed
    (out_dir / "appended.gxp").write_bytes(raw + b"JUNK\n")
    out.append(("appended", out_dir / "appended.gxp"))
    (out_dir / "prepended.gxp").write_bytes(b"JUNK\n" + raw)
    out.append(("prepended", out_dir / "prepended.gxp"))
    for label, compression in (("deflated", zipfile.ZIP_DEFLATED), ("bzip2", zipfile.ZIP_BZIP2)):
        packed = io.BytesIO()
        with zipfile.ZipFile(packed, "w", compression=compression) as zf:
            for name in sorted(members):
                zf.writestr(name, members[name])
        (out_dir / f"{label}.gxp").write_bytes(packed.getvalue())
        out.append((label, out_dir / f"{label}.gxp"))
    commented = io.BytesIO(raw)
    with zipfile.ZipFile(commented, "a") as zf:
        zf.comment = b"hello"
    (out_dir / "comment.gxp").write_bytes(commented.getvalue())
    out.append(("zip-comment", out_dir / "comment.gxp"))
    return out


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    return make_plan(tmp_path)


@pytest.fixture
def keypair(tmp_path: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pub = tmp_path / "key.pub"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, pub


def test_valid_plan_loads(plan: Path) -> None:
    loaded = load_plan(str(plan))
    assert sorted(loaded.functions) == ["e0", "e1", "e2"]
    assert loaded.functions["e0"]({"who": "gxo"}, None) == "hello gxo"
    assert loaded.native is False and loaded.warnings == []
    assert loaded.plan_dir == str(plan.parent)


def test_every_tampered_variant_is_refused(plan: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "bad"
    out_dir.mkdir()
    variants = tampered_variants(plan, out_dir)
    assert len(variants) > 15
    for label, path in variants:
        with pytest.raises(PlanRefused) as info:
            load_plan(str(path))
        msg = str(info.value)
        assert "\n" not in msg, label
        assert path.name in msg or "member" in msg, (label, msg)
        assert refusal_line(info.value).startswith("gxo: plan refused: ")


@pytest.mark.parametrize("member", [F.MANIFEST, F.PLAN_CODE, F.PYC, F.PYC_INDEX])
def test_rewritten_member_names_the_member(plan: Path, tmp_path: Path, member: str) -> None:
    members = read_members(plan)
    members[member] = flip_byte(member, members[member])
    with pytest.raises(PlanRefused, match=member.replace(".", r"\.")):
        load_plan(str(rewrite(plan, tmp_path / "x.gxp", members)))


def test_consistent_edit_without_signature_is_caught_only_by_signature(plan: Path, tmp_path: Path, keypair) -> None:
    key, pub = keypair
    signed = make_plan(tmp_path, name="signed.gxp", key=key)
    assert load_plan(str(signed), trusted_keys=[str(pub)]).signature_checked
    # rewrite plan_code.py and fix every digest: only the signature can tell
    members = read_members(signed)
    code = members[F.PLAN_CODE].replace(b"hello ", b"HELLO ")
    manifest = json.loads(members[F.MANIFEST])
    manifest["plan_code_sha256"] = F.sha256_hex(code)
    members[F.PLAN_CODE] = code
    members[F.MANIFEST] = F.canonical_bytes(manifest)
    pyc = members[F.PYC][:4] + __import__("marshal").dumps(compile(code.decode(), F.PYC_FILENAME, "exec"))
    members[F.PYC] = pyc
    idx = json.loads(members[F.PYC_INDEX])
    idx.update(sha256=F.sha256_hex(pyc), plan_code_sha256=F.sha256_hex(code))
    members[F.PYC_INDEX] = F.canonical_bytes(idx)
    forged = rewrite(signed, tmp_path / "forged.gxp", members)
    assert load_plan(str(forged)).functions["e0"]({"who": "x"}, None) == "HELLO x"  # no key: accepted
    with pytest.raises(PlanRefused, match="bad signature"):
        load_plan(str(forged), trusted_keys=[str(pub)])


def test_unsigned_with_trusted_key_is_refused(plan: Path, keypair) -> None:
    _, pub = keypair
    with pytest.raises(PlanRefused, match="unsigned"):
        load_plan(str(plan), trusted_keys=[str(pub)])


def test_wrong_key_is_refused(tmp_path: Path, keypair) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    _, pub = keypair
    other = make_plan(tmp_path, name="other.gxp", key=Ed25519PrivateKey.generate())
    with pytest.raises(PlanRefused, match="bad signature"):
        load_plan(str(other), trusted_keys=[str(pub)])
    assert load_plan(str(other)).signed  # without a trusted key the signature is not checked


def test_signature_covers_indexes(tmp_path: Path, keypair) -> None:
    key, pub = keypair
    signed = make_plan(tmp_path, name="s.gxp", key=key)
    members = read_members(signed)
    del members[F.SIGNATURE]
    members[F.SIGNATURE] = sign_members({k: v for k, v in members.items() if k != F.PYC_INDEX} | {
        F.PYC_INDEX: members[F.PYC_INDEX] + b""}, key)
    assert load_plan(str(rewrite(signed, tmp_path / "ok.gxp", members)), trusted_keys=[pub.read_bytes()]).signature_checked
    idx = json.loads(members[F.PYC_INDEX])
    idx["cache_tag"] = "cpython-00"
    members[F.PYC_INDEX] = F.canonical_bytes(idx)
    with pytest.raises(PlanRefused, match="bad signature"):
        load_plan(str(rewrite(signed, tmp_path / "bad.gxp", members)), trusted_keys=[str(pub)])


def test_non_canonical_manifest_is_refused(plan: Path, tmp_path: Path) -> None:
    members = read_members(plan)
    members[F.MANIFEST] = canonical_json(json.loads(members[F.MANIFEST])).encode()  # compact, not pretty
    with pytest.raises(PlanRefused, match="'manifest.json': not in canonical form"):
        load_plan(str(rewrite(plan, tmp_path / "x.gxp", members)))
    # a default written out where the canonical text leaves it out (format 3)
    data = json.loads(read_members(plan)[F.MANIFEST])
    data["workloads"][0]["needs"] = []
    members[F.MANIFEST] = F.canonical_bytes(data)
    with pytest.raises(PlanRefused, match="'manifest.json': not in canonical form"):
        load_plan(str(rewrite(plan, tmp_path / "y.gxp", members)))


def test_unknown_manifest_field_and_version_are_refused(plan: Path, tmp_path: Path) -> None:
    members = read_members(plan)
    data = json.loads(members[F.MANIFEST])
    for change, pattern in (({"extra": 1}, "unknown field"), ({"format_version": 99}, "version 99")):
        bad = dict(members, **{F.MANIFEST: F.canonical_bytes({**data, **change})})
        with pytest.raises(PlanRefused, match=pattern):
            load_plan(str(rewrite(plan, tmp_path / "x.gxp", bad)))


def test_foreign_bytecode_falls_back_to_source(plan: Path, tmp_path: Path) -> None:
    members = read_members(plan)
    pyc = b"\x00\x00\r\n" + members[F.PYC][4:]
    idx = json.loads(members[F.PYC_INDEX])
    idx.update(magic=pyc[:4].hex(), sha256=F.sha256_hex(pyc), cache_tag="cpython-00")
    members.update({F.PYC: pyc, F.PYC_INDEX: F.canonical_bytes(idx)})
    loaded = load_plan(str(rewrite(plan, tmp_path / "x.gxp", members)))
    assert loaded.functions["e1"]({"who": "abc"}, None) == load_plan(str(plan)).functions["e1"]({"who": "abc"}, None)
    assert any("cpython-00" in w for w in loaded.warnings)


def test_open_plan_runs_no_code(plan: Path) -> None:
    v = open_plan(str(plan))
    assert v.plan.name == "tamper" and not v.signed and v.native_indexes == {}


def test_runtime_loader_imports_no_compiler(plan: Path) -> None:
    code = (
        "import sys\n"
        "from gxo.runtime.planfile import load_plan\n"
        f"lp = load_plan({str(plan)!r})\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('lark','yaml','jsonschema','networkx','jinja2','Cython','cryptography') "
        "or m.startswith('gxo.compiler')]\n"
        "assert not bad, bad\n"
        "print(sorted(lp.functions))\n"
    )
    proc = subprocess.run(check=False, args=[sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr
    assert "e0" in proc.stdout


def test_signature_is_over_the_manifest_members_bytes(tmp_path: Path, keypair) -> None:
    """The signed message names the digest of ``manifest.json`` as stored (its canonical pretty
    text), so verifying never re-serialises the manifest."""
    from cryptography.hazmat.primitives import serialization

    key, pub = keypair
    members = read_members(make_plan(tmp_path, name="s.gxp", key=key))
    sig = json.loads(members[F.SIGNATURE])
    message = F.signature_message(members[F.MANIFEST], F.signed_indexes(members))
    assert f"manifest.json {F.sha256_hex(members[F.MANIFEST])}\n".encode() in message
    public = serialization.load_pem_public_key(pub.read_bytes())
    public.verify(__import__("base64").b64decode(sig["signature"]), message)  # raises when not
    # the same manifest in another key order: the signature no longer fits, and unsigned it is
    # not the canonical text
    data = json.loads(members[F.MANIFEST])
    data = dict(reversed(list(data.items())))
    members[F.MANIFEST] = json.dumps(data, indent=2, ensure_ascii=False).encode() + b"\n"
    with pytest.raises(PlanRefused, match="bad signature"):
        load_plan(str(rewrite(tmp_path / "s.gxp", tmp_path / "x.gxp", members)), trusted_keys=[str(pub)])
    del members[F.SIGNATURE]
    with pytest.raises(PlanRefused, match="not in canonical form"):
        load_plan(str(rewrite(tmp_path / "s.gxp", tmp_path / "y.gxp", members)))


@pytest.mark.parametrize(("edit", "pattern"), [
    (lambda m: m["workloads"][0].update(deps=[]), r"manifest\.workloads\[0\]: .*unknown field 'deps'"),
    (lambda m: m["workloads"][0].update(index="0"), r"manifest\.workloads\[0\]\.index: Expected 'int', got 'str'"),
    (lambda m: m["workloads"][1].pop("span"), r"manifest\.workloads\[1\]: .*missing required field 'span'"),
    (lambda m: m["edges"][0].update(source="nobody"), r"edges: nobody -> check names an unknown workload"),
    (lambda m: m["workloads"][1].update(name="greet"), r"the name 'greet' appears twice"),
    (lambda m: m.update(format="other"), r"not a GXO plan \(format 'other'\)"),
])
def test_manifest_is_decoded_strictly(plan: Path, tmp_path: Path, edit, pattern: str) -> None:
    """Types, unknown and missing fields are checked by the decoder with the field's path; the
    edges are checked against the workloads (each edge is stored once, on the plan)."""
    members = read_members(plan)
    data = json.loads(members[F.MANIFEST])
    edit(data)
    members[F.MANIFEST] = F.canonical_bytes(data)
    with pytest.raises(PlanRefused, match=pattern) as info:
        load_plan(str(rewrite(plan, tmp_path / "x.gxp", members)))
    assert str(info.value).startswith(f"{tmp_path / 'x.gxp'}: member 'manifest.json': ")


@pytest.mark.parametrize(("edit", "pattern"), [
    (lambda raw: raw + b"JUNK\n", "bytes after the end of the zip"),
    (lambda raw: b"JUNK\n" + raw, "5 byte\\(s\\) that belong to no member"),
    (lambda raw: raw + b"\0" * 70000, "truncated or not a zip file"),
])
def test_junk_around_a_signed_plan_is_refused_even_with_its_trusted_key(tmp_path: Path, keypair, edit,
                                                                        pattern: str) -> None:
    """The signature covers the members, not the file: the format itself refuses what the zip
    reader would skip (a prepended stub, appended data)."""
    key, pub = keypair
    signed = make_plan(tmp_path, name="signed.gxp", key=key)
    assert load_plan(str(signed), trusted_keys=[str(pub)]).signature_checked
    bad = tmp_path / "bad.gxp"
    bad.write_bytes(edit(signed.read_bytes()))
    with pytest.raises(PlanRefused, match=pattern) as info:
        load_plan(str(bad), trusted_keys=[str(pub)])
    assert str(info.value).startswith(f"{bad}: ")


def _patch_directory(raw: bytes, member: str, **fields: int) -> bytes:
    """``raw`` with ``member``'s central directory entry changed (offsets of its 46-byte header)."""
    at = {"method": 10, "compressed": 20, "size": 24}
    data = bytearray(raw)
    pos = data.index(b"PK\x01\x02")
    while True:
        name_len, extra_len, comment_len = struct.unpack_from("<3H", data, pos + 28)
        if data[pos + 46:pos + 46 + name_len].decode() == member:
            break
        pos = data.index(b"PK\x01\x02", pos + 46 + name_len + extra_len + comment_len)
    for field_name, value in fields.items():
        size = 2 if field_name == "method" else 4
        data[pos + at[field_name]:pos + at[field_name] + size] = value.to_bytes(size, "little")
    return bytes(data)


@pytest.mark.parametrize(("fields", "pattern"), [
    ({"size": F.MAX_MEMBER_BYTES + 1, "compressed": F.MAX_MEMBER_BYTES + 1},
     r"member 'plan_code\.py' is too large \(268,435,457 bytes"),
    ({"method": 12}, r"member 'plan_code\.py' is compressed \(method 12\)"),
    ({"size": 10**6}, r"member 'plan_code\.py' is damaged"),
])
def test_member_sizes_and_methods_are_checked_from_the_central_directory(plan: Path, tmp_path: Path, fields,
                                                                         pattern: str) -> None:
    bad = tmp_path / "bad.gxp"
    bad.write_bytes(_patch_directory(plan.read_bytes(), F.PLAN_CODE, **fields))
    with pytest.raises(PlanRefused, match=pattern):
        open_plan(str(bad))


def test_plan_limits_live_in_one_place() -> None:
    from gxo.runtime import limits

    assert (F.MAX_MEMBERS, F.MAX_MEMBER_BYTES, F.MAX_TOTAL_BYTES) == (
        limits.MAX_PLAN_MEMBERS, limits.MAX_PLAN_MEMBER_BYTES, limits.MAX_PLAN_TOTAL_BYTES)
    assert limits.MAX_PLAN_BYTES > limits.MAX_PLAN_TOTAL_BYTES


def test_plan_reader_does_not_import_zipfile(plan: Path) -> None:
    """The format is read from the zip's own records (no decompressor is ever reached)."""
    code = (f"import sys\nfrom gxo.runtime.planfile import open_plan\nopen_plan({str(plan)!r})\n"
            "assert not {'zipfile', 'bz2', 'lzma'} & set(sys.modules), sorted(sys.modules)\n")
    proc = subprocess.run(check=False, args=[sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_sha256_hex_small_and_large() -> None:
    """Small data through the interpreter's built-in SHA-256, large through OpenSSL's: the same
    digests as hashlib's."""
    import hashlib

    for data in (b"", b"abc", os.urandom(1000), os.urandom((1 << 20) - 1), os.urandom((1 << 20) + 7)):
        assert F.sha256_hex(data) == hashlib.sha256(data).hexdigest()


def test_the_native_shards_folder_is_private_and_removed(tmp_path: Path, monkeypatch) -> None:
    """Shards are copied for loading into a new 0700 folder of $TMPDIR (``_private_dir``,
    without tempfile), which ``_remove_dir`` removes with what it holds."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    path = F._private_dir("gxo-native-")
    assert os.path.dirname(path) == str(tmp_path) and os.path.basename(path).startswith("gxo-native-")
    assert os.stat(path).st_mode & 0o777 == 0o700
    assert F._private_dir("gxo-native-") != path
    Path(path, "x.so").write_bytes(b"x")
    F._remove_dir(path)
    assert not os.path.exists(path)
