"""``control:*`` (L1): flow-control primitives of the kernel."""

from __future__ import annotations

from gxo.stdlib import _schemas as s
from gxo.stdlib._spec import ModuleSpec

WAIT_FOR_SIGNAL = ModuleSpec(
    name="control:wait_for_signal",
    layer="L1",
    description="Pause the workflow instance until `gxo ctl resume` delivers a payload.",
    params_schema=s.params(
        {
            "context": s.open_object(
                "Data stored with the paused state for approvers (shown by `gxo ctl get "
                "workflow`)."
            ),
        }
    ),
    summary_schema=s.summary(
        {
            "resume_token": s.string("Single-use token that resumes this instance."),
            "resume_payload": s.any_value(
                "After the resume: the payload it delivered (also at ._gxo.resume_payload)."
            ),
        },
        optional=("resume_payload",),
        dry_run=True,
    ),
    # The context is stored durably, shown by `gxo ctl get` and audited.
    logged_params=("context",),
)

BARRIER = ModuleSpec(
    name="control:barrier",
    layer="L1",
    description="Fan-in stage sync: complete once every stream input has ended successfully.",
    params_schema=s.params(),
    summary_schema=s.summary(
        {
            "synchronized_streams": s.string_list(
                "Names of the producers waited for, in stream_inputs order.",
                "A producer workload's name.",
            ),
        }
    ),
    stream_input="required",  # it drains its inputs and ignores the records
)

ASSERT = ModuleSpec(
    name="control:assert",
    layer="L1",
    description="Fail the workload when a condition is falsy (run-time validation).",
    params_schema=s.params(
        {
            "condition": s.condition(
                "Condition expression; with stream inputs it is evaluated once per record "
                "(record fields at the top of the scope), otherwise once against the state."
            ),
            "fail_message": s.string("Message of the failure when the condition is falsy."),
        },
        required=("condition",),
    ),
    summary_schema=s.summary(
        {
            "condition_met": s.const_true("Always true: a falsy condition fails the workload."),
            "evaluated_value": s.any_value("The value the condition evaluated to."),
        }
    ),
    # Reads stream inputs when given (asserting per record), drains nothing otherwise.
    stream_input="optional",
    per_record_params=("condition",),
    condition_params=("condition",),
    # evaluated_value echoes the condition's value; fail_message goes into the error.
    logged_params=("condition", "fail_message"),
    inline=True,
)

IDENTITY = ModuleSpec(
    name="control:identity",
    layer="L1",
    description="No-op: the summary is exactly the params map.",
    params_schema={
        "type": "object",
        "additionalProperties": True,
        "description": "Any map; it becomes the summary unchanged.",
    },
    summary_schema={"type": "object", "description": "Exactly the params map."},
    # Every param is echoed: the compiler treats all of them as logged (summary_from_params),
    # so logged_params stays empty rather than naming properties that do not exist.
    summary_from_params=True,
    inline=True,
)

MODULES: tuple[ModuleSpec, ...] = (WAIT_FOR_SIGNAL, BARRIER, ASSERT, IDENTITY)


# --------------------------------------------------------------------------- code
#
# Module code (design.md §8).  Both run inline in the scheduler step: plain, bounded functions.


class Assert:
    """``control:assert``: the kernel evaluates ``condition`` and passes its value here."""

    name = "control:assert"

    def perform(self, ctx, params):
        from gxo.runtime.exprlib import text, truthy
        from gxo.runtime.module import ValidationError
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        if "condition" not in params:
            raise ValidationError("missing required parameter 'condition'")
        value = params["condition"]
        fail_message = p.opt_str(params, "fail_message")
        if not truthy(value):
            if fail_message:
                raise ValidationError(fail_message)
            try:
                shown = text(value)
            except Exception:  # noqa: BLE001 - only for the message
                shown = repr(value)
            if shown == "":
                shown = '""'
            raise ValidationError(f"assertion failed: the condition is {shown} (falsy)")
        return {"condition_met": True, "evaluated_value": value}


class Identity:
    """``control:identity``: the summary is exactly the params map."""

    name = "control:identity"

    def perform(self, ctx, params):
        return dict(params) if isinstance(params, dict) else {}


class Barrier:
    """``control:barrier``: wait until every stream input has ended; a failed input fails it."""

    name = "control:barrier"

    async def perform(self, ctx, params):
        from gxo.runtime.streams import inputs_of

        inputs = inputs_of(ctx)
        await inputs.drain()  # raises UpstreamFailed when a producer failed
        return {"synchronized_streams": inputs.names}


CODE = {"control:assert": Assert, "control:identity": Identity, "control:barrier": Barrier}
