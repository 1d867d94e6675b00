"""``greet:hello``: an example GXO module shipped as a plugin (docs/modules/plugins.md).

The declaration (``MODULES``) is plain data that ``gxoc`` reads to check playbooks: the params
and summary schemas give the types of ``params`` and of the registered value.  The code
(``CODE``) is what ``gxo`` runs.  Keep imports at the top cheap: the compiler imports this
module to read the declarations; heavy imports belong inside ``perform``.
"""

from __future__ import annotations

from gxo.runtime.module import Context, ValidationError
from gxo.stdlib import ModuleSpec

HELLO = ModuleSpec(
    name="greet:hello",
    layer="X",
    description="Build a greeting for a name (an example plugin module).",
    params_schema={
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "description": "Who to greet."},
            "greeting": {"type": "string", "default": "Hello", "description": "The word of greeting."},
            "shout": {"type": "boolean", "default": False, "description": "Upper-case the message."},
        },
        "required": ["name"],
        "additionalProperties": False,
    },
    summary_schema={
        "type": "object",
        "properties": {
            "message": {"type": "string", "description": "The greeting, e.g. 'Hello, world!'."},
            "length": {"type": "integer", "description": "The message's length in characters."},
        },
        "required": ["message", "length"],
        "additionalProperties": False,
    },
    logged_params=("name", "greeting"),  # both show up in the summary
)

MODULES = [HELLO]


class Hello:
    """The code of ``greet:hello``: a plain function, run in a worker thread by the kernel."""

    name = "greet:hello"

    def perform(self, ctx: Context, params: dict) -> dict:
        name = params.get("name")
        if not isinstance(name, str) or not name:
            raise ValidationError("greet:hello needs a non-empty 'name'")
        message = f"{params.get('greeting', 'Hello')}, {name}!"
        if params.get("shout", False):
            message = message.upper()
        ctx.logger.info("greeted", name=name)
        return {"message": message, "length": len(message)}


CODE = {"greet:hello": Hello}
