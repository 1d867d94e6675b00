"""GXO standard library: module declarations (name, layer, lifecycles, schemas) and, later, code.

``registry()`` returns every declared module by name: the built-in namespaces of this package
plus third-party modules registered through the ``gxo.modules`` entry-point group.  This package
is imported by both the compiler and the runtime, so it holds plain data only (no jsonschema).
"""

from gxo.stdlib._spec import ModuleSpec, registry

__all__ = ["ModuleSpec", "registry"]
