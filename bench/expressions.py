"""Expression benchmark: a GXO-compiled template next to a pre-compiled Jinja2 template.

design.md §10: "The expression benchmark's baseline is a pre-compiled Jinja2 Template.render of
the same template".  Both are compiled once, outside the timing; each op renders the template
against the same data.  Prints ns/op for Jinja2, GXO's pure-Python ``plan_code`` and, when
Cython and a C compiler are available, the Cython-compiled ``plan_code``; and the ratios
(goal: GXO at least 40x faster than Jinja2).

    python bench/expressions.py [--seconds 1.0] [--no-cython] [--show-code]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import timeit
from typing import Any

import jinja2
from gxo.compiler.codegen import CodegenItem, render_plan_code
from gxo.compiler.expr.parser import parse_template
from gxo.runtime.exprlib import BasicContext

# text + fields + a pipe + an if
GXO_TEMPLATE = (
    "deploy {{ .app.name }} {{ .app.version | upper }} to {{ .env }}"
    "{{ if .app.replicas }} with {{ .app.replicas }} replicas{{ end }} by {{ .user }}"
)
JINJA_TEMPLATE = (
    "deploy {{ app.name }} {{ app.version | upper }} to {{ env }}"
    "{% if app.replicas %} with {{ app.replicas }} replicas{% endif %} by {{ user }}"
)
DATA: dict[str, Any] = {
    "app": {"name": "billing", "version": "v1.4.2", "replicas": 3},
    "env": "production",
    "user": "alice",
}
EXPECTED = "deploy billing V1.4.2 to production with 3 replicas by alice"


def plan_code() -> str:
    tree, errors = parse_template(GXO_TEMPLATE)
    assert tree is not None and not errors, errors
    item = CodegenItem(id="e0", tree=tree, native=False, as_text=True,
                       source="bench/expressions.py:1:1 params.message of 'bench'")
    return render_plan_code([item], header="bench/expressions.py")


def bench(stmt: str, env: dict[str, Any], seconds: float) -> float:
    """Best-of-5 ns per execution of ``stmt`` (no lambda in between: timeit's own loop)."""
    timer = timeit.Timer(stmt, globals=env)
    n, dt = timer.autorange()
    n = max(1, int(n * seconds / 5 / max(dt, 1e-9)))
    return min(timer.repeat(repeat=5, number=n)) / n * 1e9


def build_cython(code: str, workdir: str) -> Any:
    """``code`` compiled with Cython (-O1) as module ``plan_code_bench``; None when it fails."""
    path = os.path.join(workdir, "plan_code_bench.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(code)
    setup = os.path.join(workdir, "setup.py")
    with open(setup, "w", encoding="utf-8") as f:
        f.write(
            "from setuptools import setup, Extension\n"
            "from Cython.Build import cythonize\n"
            "setup(ext_modules=cythonize([Extension('plan_code_bench', ['plan_code_bench.py'],"
            " extra_compile_args=['-O1'])], compiler_directives={'language_level': '3'},"
            " quiet=True))\n")
    r = subprocess.run([sys.executable, setup, "build_ext", "--inplace", "-q"], cwd=workdir,
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        print("cython build failed:", r.stderr[-2000:], file=sys.stderr)
        return None
    so = [n for n in os.listdir(workdir) if n.startswith("plan_code_bench") and n.endswith(".so")]
    if not so:
        return None
    spec = importlib.util.spec_from_file_location("plan_code_bench", os.path.join(workdir, so[0]))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    ap.add_argument("--no-cython", action="store_true", help="skip the Cython build")
    ap.add_argument("--show-code", action="store_true", help="print the generated plan_code.py")
    args = ap.parse_args()

    jt = jinja2.Environment(autoescape=False).from_string(JINJA_TEMPLATE)
    assert jt.render(**DATA) == EXPECTED, jt.render(**DATA)

    code = plan_code()
    if args.show_code:
        print(code)
    ns: dict[str, Any] = {}
    exec(compile(code, "plan/plan_code.py", "exec"), ns)  # noqa: S102 - our generated module
    e0 = dict(ns["FUNCTIONS"])["e0"]
    ctx = BasicContext({}, {})
    assert e0(DATA, ctx) == EXPECTED, e0(DATA, ctx)

    print(f"template: {GXO_TEMPLATE}")
    env = {"jt": jt, "e0": e0, "D": DATA, "c": ctx}
    t_jinja = bench("jt.render(D)", env, args.seconds)
    print(f"jinja2 Template.render   {t_jinja:9.0f} ns/op")
    t_pure = bench("e0(D, c)", env, args.seconds)
    print(f"gxo plan_code (pure)     {t_pure:9.0f} ns/op   {t_jinja / t_pure:5.1f}x jinja2")
    if not args.no_cython:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                mod = build_cython(code, tmp)
            except ImportError as e:  # Cython not installed
                print(f"cython: not available ({e})")
                mod = None
            if mod is not None:
                cy_e0 = dict(mod.FUNCTIONS)["e0"]
                assert cy_e0(DATA, ctx) == EXPECTED
                t_cy = bench("e0(D, c)", {**env, "e0": cy_e0}, args.seconds)
                print(f"gxo plan_code (cython)   {t_cy:9.0f} ns/op   {t_jinja / t_cy:5.1f}x jinja2")
    print("goal: >= 40x jinja2")


if __name__ == "__main__":
    main()
