"""``dns:*`` (L3): name resolution."""

from __future__ import annotations

from gxo.stdlib import _schemas as s
from gxo.stdlib._spec import ModuleSpec

RECORD_TYPES = ("A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT", "CAA")

QUERY = ModuleSpec(
    name="dns:query",
    layer="L3",
    description="Resolve DNS records of a name.",
    params_schema=s.params(
        {
            "name": s.nonempty("Name to resolve (for PTR: the address or its reverse name)."),
            "type": s.enum("Record type.", RECORD_TYPES, default="A"),
        },
        required=("name",),
    ),
    summary_schema=s.summary(
        {
            "answers": s.string_list(
                "Answers in the resolver's order, each in its presentation form (an MX answer "
                "as \"10 mail.example.com.\").",
                "One answer.",
            ),
        },
        dry_run=True,
    ),
    logged_params=("name", "type"),  # logged and sent to the resolver in clear
)

MODULES: tuple[ModuleSpec, ...] = (QUERY,)
