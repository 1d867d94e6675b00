"""Stand-in for the ``cython`` module where Cython is not installed (a base install).

The ``runtime/_*_cy.py`` modules are written in Cython's pure-Python mode; uncompiled, they
import ``cython`` only for ``cython.compiled`` and for decorators and type names that mean
nothing to the interpreter.  Cython itself ships such a shadow module, but Cython is a
build-time dependency only, so this file provides the subset the runtime uses.  Keep it in
step with the names the ``*_cy.py`` modules use (the pure-twin test imports them through it).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")

IS_SHIM = True

#: read by each module's ``_is_compiled()``
compiled = False

# C types, as the Python types they stand for
int = builtins.int
bint = builtins.bool
long = builtins.int
longlong = builtins.int
Py_ssize_t = builtins.int
size_t = builtins.int
float = builtins.float
double = builtins.float
void = Any


def _no_op(fn: _T) -> _T:
    return fn


# decorators without arguments
cclass = _no_op  # cdef class
cfunc = _no_op  # cdef function
ccall = _no_op  # cpdef function
inline = _no_op
final = _no_op


def _no_op_factory(*_args: Any, **_kwargs: Any) -> Callable[[_T], _T]:
    return _no_op


# decorators with arguments (compiler directives and exception specs)
locals = _no_op_factory
exceptval = _no_op_factory
boundscheck = _no_op_factory
wraparound = _no_op_factory
nonecheck = _no_op_factory
cdivision = _no_op_factory
annotation_typing = _no_op_factory
binding = _no_op_factory


def declare(_type: Any = None, value: Any = None, **_kwargs: Any) -> Any:
    return value


def cast(_type: Any, value: _T, *, typecheck: bool = False) -> _T:
    return value
