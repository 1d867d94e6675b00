"""``template:*`` (L5): rendering text."""

from __future__ import annotations

from gxo.stdlib import _schemas as s
from gxo.stdlib._spec import ModuleSpec

RENDER = ModuleSpec(
    name="template:render",
    layer="L5",
    description="Render a template with extra variables into text.",
    params_schema=s.params(
        {
            "template": s.template_text(
                "Template text, literal in the playbook (compiled ahead of time); it sees the "
                "state and `vars` at the top of the scope."
            ),
            "vars": s.open_object("Extra variables, at the top of the template's scope."),
        },
        required=("template",),
    ),
    summary_schema=s.summary({"rendered": s.string("The rendered text.")}),
    # The template itself must be literal: it is compiled at build time, never parsed at run
    # time (design.md §4), so a templated template cannot be allowed.
    literal_params=("template",),
    # The rendered text is the summary: both inputs end up in it.
    logged_params=("template", "vars"),
    # Pure, non-blocking and bounded like control:identity.
    inline=True,
)

MODULES: tuple[ModuleSpec, ...] = (RENDER,)
