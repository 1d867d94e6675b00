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
                "Template text, literal in the playbook: `gxoc` compiles it (a wrong name or "
                "field is a check error at its line and column) and the run never parses it. "
                "It sees the state with `vars` at the top of the scope; a value an action "
                "reads is inserted as text, never parsed as a template. A template file is "
                "not accepted: its text would only be known at run time."
            ),
            "vars": s.open_object(
                "Extra variables, at the top of the template's scope (over the state); their "
                "own templates see the state. A literal map is typed at check time."),
        },
        required=("template",),
    ),
    summary_schema=s.summary({"rendered": s.string(
        "The rendered text. A secret the template read is redacted ([REDACTED]) in the events "
        "and logs that show it.")}),
    # The template is the playbook's literal text, compiled at build time and never parsed at
    # run time (design.md section 4): the kernel hands it over as a function, which the code
    # calls with `vars` laid over the state (a value that an action reads is inserted as text,
    # never parsed as a template).
    per_record_params=("template",),
    scope_param="vars",
    # The rendered text is the summary: both inputs end up in it.
    logged_params=("template", "vars"),
    # Pure, non-blocking and bounded like control:identity.
    inline=True,
)

MODULES: tuple[ModuleSpec, ...] = (RENDER,)


# --------------------------------------------------------------------------- code
#
# Module code (design.md §8): inline, a plain bounded function.


class Render:
    """``template:render``: call the compiled template with ``vars`` over the state."""

    name = "template:render"

    def perform(self, ctx, params):
        from gxo.runtime.exprlib import text
        from gxo.runtime.module import ValidationError
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        p.check_allowed(params, ("template", "vars"), self.name)
        if "template" not in params:
            raise ValidationError("missing required parameter 'template'")
        template = params["template"]
        extra = params.get("vars")
        if extra is None:
            extra = {}
        if not isinstance(extra, dict):
            raise ValidationError(f"parameter 'vars' must be a map, got {p.kind(extra)}")
        if callable(template):
            try:
                value = template(extra)
            except ValidationError:
                raise
            except Exception as exc:  # noqa: BLE001 - an expression error names its place
                raise ValidationError(f"the template could not be rendered: {exc}") from None
        elif isinstance(template, str):
            value = template  # text without any action: nothing to render
        else:
            raise ValidationError(f"parameter 'template' must be a string, got {p.kind(template)}")
        return {"rendered": value if isinstance(value, str) else text(value)}


CODE = {"template:render": Render}
