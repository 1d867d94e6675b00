"""Build hooks: only the Cython extensions of the runtime's hot paths live here.

Each entry of ``CYTHON_MODULES`` is a pure-Python module (``runtime/_<name>_cy.py``) that is
compiled when Cython is available; the pure twin is used where no compiled build exists.
``GXO_NO_EXTENSIONS=1`` skips the build; ``GXO_REQUIRE_EXTENSIONS=1`` makes a failed build an
error.  Metadata and dependencies are in ``pyproject.toml``.

The sandbox launcher ``gxo-sandbox-exec`` (``runtime/sandbox/launch.c``, a small C program
that sets no_new_privs, loads a seccomp filter and execs) is linked here too, next to
``gxo/runtime/sandbox/``; it needs only a C compiler.  Without it ``gxo`` refuses plans that
start child processes (exit 3) rather than run them unsandboxed.
"""

import os

from setuptools import setup
from setuptools.command.build_ext import build_ext

LAUNCHER_SOURCE = "runtime/sandbox/launch.c"
LAUNCHER_NAME = "gxo-sandbox-exec"


class BuildWithLauncher(build_ext):
    """build_ext, plus the sandbox launcher program (in place for an editable install)."""

    def run(self) -> None:
        super().run()
        self._build_launcher()

    def _build_launcher(self) -> None:
        from setuptools._distutils.ccompiler import new_compiler
        from setuptools._distutils.sysconfig import customize_compiler

        if self.inplace:
            out_dir = os.path.join("runtime", "sandbox")
        else:
            out_dir = os.path.join(self.build_lib, "gxo", "runtime", "sandbox")
        os.makedirs(out_dir, exist_ok=True)
        cc = new_compiler()
        customize_compiler(cc)
        try:
            objs = cc.compile([LAUNCHER_SOURCE], output_dir=os.path.join(self.build_temp, "launcher"),
                              extra_postargs=["-O2"])
            try:  # static: no dynamic loader at each spawn (measured: a few hundred us less)
                cc.link_executable(objs, LAUNCHER_NAME, output_dir=out_dir, extra_postargs=["-static"])
            except Exception:  # noqa: BLE001 - no static libc on this machine
                cc.link_executable(objs, LAUNCHER_NAME, output_dir=out_dir)
        except Exception as exc:  # noqa: BLE001 - distutils' CompileError, LinkError, missing cc
            if os.environ.get("GXO_REQUIRE_EXTENSIONS") == "1":
                raise
            print(f"warning: the sandbox launcher was not built ({exc}); gxo will refuse plans with exec")

    def get_outputs(self):
        outs = super().get_outputs()
        if not self.inplace:
            outs.append(os.path.join(self.build_lib, "gxo", "runtime", "sandbox", LAUNCHER_NAME))
        return outs

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


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildWithLauncher})
