"""A Cython process that warms up once and then compiles shard modules on request.

Cython spends about a second before its first module (building its lexer, declaring the
builtins), then some 40 ms per shard.  ``gxoc build`` starts this process before it reads the
playbook, so the warm-up runs on another core while the front end works, and one process
compiles every shard of the build.  Protocol: the parent writes one JSON line per request,
``{"folder": ..., "modules": [...]}``; for each module, compiled from ``<folder>/<module>.py`` to
``<module>.c``, the worker answers a line ``ok <module>`` or ``error <module>`` (Cython's
messages go to stderr).  End of input ends the process.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

FLAGS = {"language_level": 3, "c_line_in_traceback": False}
#: plain builtin functions instead of binding function objects: with no C line numbers in
#: tracebacks, a third less C for the compiler; no difference measured in call time
DIRECTIVES = {"binding": False}


def _compile(path: str, module: str) -> bool:
    from Cython.Compiler import Main

    options = Main.CompilationOptions(Main.default_options, compiler_directives=dict(DIRECTIVES), **FLAGS)
    options.output_file = os.path.splitext(path)[0] + ".c"
    try:
        result = Main.compile_single(path, options, full_module_name=module)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as this module's failure
        print(f"{module}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return False
    return result.num_errors == 0 and os.path.exists(options.output_file)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="gxo-cython-") as tmp:  # the warm-up
        path = os.path.join(tmp, "gxo_warmup.py")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("def f(s, c):\n    return s['a']\n\n\nFUNCTIONS = (('f', f),)\n")
        _compile(path, "gxo_warmup")
    for line in sys.stdin:
        request = json.loads(line)
        for module in request["modules"]:
            ok = _compile(os.path.join(request["folder"], module + ".py"), module)
            sys.stdout.write(f"{'ok' if ok else 'error'} {module}\n")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
