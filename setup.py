"""Build hooks: only the Cython extensions of the runtime's hot paths live here.

Each entry of ``CYTHON_MODULES`` is a pure-Python module (``runtime/_<name>_cy.py``) that is
compiled when Cython is available; the pure twin is used where no compiled build exists.
``GXO_NO_EXTENSIONS=1`` skips the build; ``GXO_REQUIRE_EXTENSIONS=1`` makes a failed build an
error.  Metadata and dependencies are in ``pyproject.toml``.
"""

import os

from setuptools import setup

CYTHON_MODULES: tuple[str, ...] = ("_state_cy", "_channel_cy", "_records_cy")


def _extensions():
    no_ext = os.environ.get("GXO_NO_EXTENSIONS") == "1"
    require = os.environ.get("GXO_REQUIRE_EXTENSIONS") == "1"
    if no_ext and require:
        raise SystemExit("GXO_NO_EXTENSIONS and GXO_REQUIRE_EXTENSIONS are both set; choose one")
    if no_ext or not CYTHON_MODULES:
        return []
    from Cython.Build import cythonize  # noqa: PLC0415 - build-time only
    from setuptools import Extension

    exts = [
        Extension(f"gxo.runtime.{name}", [f"runtime/{name}.py"], optional=not require)
        for name in CYTHON_MODULES
    ]
    return cythonize(exts, build_dir="build/cython", compiler_directives={"language_level": "3"})


setup(ext_modules=_extensions())
