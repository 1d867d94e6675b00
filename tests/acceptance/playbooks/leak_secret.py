"""A child that leaks $SECRET in every encoding (the redaction tests run it through exec).

Usage: leak_secret.py MODE, MODE one of: ``out`` (print every form to stdout and stderr, exit
0); ``fail:NAME,NAME...`` (the same, then a last stderr line holding the named forms, which
exec quotes in its error message, exit 3); ``cut`` (exit 3 with a last stderr line so long
that exec's 500-character cut falls inside the hex form).
"""

import base64
import hashlib
import json
import os
import sys
from urllib.parse import quote, quote_plus

secret = os.environ["SECRET"]
data = secret.encode()
forms = {
    "raw": secret,
    "b64": base64.b64encode(data).decode(),
    "b64url": base64.urlsafe_b64encode(data).decode().rstrip("="),
    "b64_basic_auth": base64.b64encode(b"user:" + data).decode(),
    "b64_with_newline": base64.b64encode(data + b"\n").decode(),
    "url": quote(secret, safe=""),
    "url_plus": quote_plus(secret),
    "hex": data.hex(),
    "HEX": data.hex().upper(),
    "hex_in_dump": (b"\x01\x02" + data + b"\x03").hex(),
    "json": json.dumps(secret)[1:-1],
    "json_utf8": json.dumps(secret, ensure_ascii=False)[1:-1],
    "json_doc": json.dumps({"password": secret}),
}
print("sha256=" + hashlib.sha256(data).hexdigest())
for name, form in forms.items():
    print(f"{name}: {form}")
    print(f"stderr {name}={form}", file=sys.stderr)
mode = sys.argv[1]
if mode.startswith("fail:"):
    print("fatal: " + " ".join(forms[n] for n in mode[5:].split(",")), file=sys.stderr)
    sys.exit(3)
if mode == "cut":
    print("fatal: " + "x" * (470 - len("fatal: ")) + " " + forms["hex"], file=sys.stderr)
    sys.exit(3)
