"""``stream:*``: composition of modules into a per-record sub-DAG (checklist 1.7, design.md §3)."""

from __future__ import annotations

from gxo.stdlib import _schemas as s
from gxo.stdlib._spec import ModuleSpec

_STEP = s.obj(
    {
        "id": s.identifier("Step id; later steps and templates read its output as .<id>."),
        "uses": s.string("Module the step runs.", pattern=s.MODULE_REF_PATTERN),
        "with": s.open_object(
            "The module's params (templated; checked against that module's params schema)."
        ),
        "needs": s.array(
            s.identifier("Id of an earlier step."),
            "Explicit predecessors; without needs a step follows the step before it.",
            uniqueItems=True,
        ),
        "when": s.condition(
            "Condition; a false step is skipped and its id stays undefined for the steps "
            "after it."
        ),
        "register": s.identifier("Also expose the step's output under this name."),
    },
    "One step of the sub-DAG.",
    required=("id", "uses"),
)

PIPELINE = ModuleSpec(
    name="stream:pipeline",
    layer="X",
    description="Run a sub-DAG of module steps over each incoming record or event.",
    # design.md §10: run_once and event_driven (the handler of every event-driven example).
    lifecycles=("run_once", "event_driven"),
    params_schema=s.params(
        {
            "steps": s.array(_STEP, "The steps, in order.", minItems=1),
            "concurrency": s.integer(
                "Records processed at once by the per-record (non data-plane) steps.",
                minimum=1,
                default=1,
            ),
        },
        required=("steps",),
    ),
    summary_schema=s.summary(
        {
            "records_processed": s.integer(
                "Records (or the one event) that went through the pipeline.", minimum=0
            ),
            "steps": {
                "type": "object",
                "additionalProperties": {},
                "description": "Step id to that step's output (its summary; for a per-record "
                "step, of the last record).",
            },
        }
    ),
    # Records of its last data-plane step, when it ends in one; typed by the compiler.
    record_schema=s.open_record(),
    # Under event_driven the event is its input; under run_once it reads stream inputs when
    # given, else runs its steps once.
    stream_input="optional",
    # Step `with` values are per-record or not depending on the step's module (design.md §4),
    # and are checked against that module's own spec (per-record, condition, path, logged
    # params), so the pipeline itself declares none of them except the steps' `when`.
    condition_params=("steps.*.when",),
    # The sub-DAG's shape must be known at compile time.
    literal_params=("steps.*.id", "steps.*.uses", "steps.*.needs", "steps.*.register"),
)

MODULES: tuple[ModuleSpec, ...] = (PIPELINE,)


# The code is in ``_pipeline`` (the runner of one pipeline and its helpers).
from gxo.stdlib.stream._pipeline import StreamPipeline  # noqa: E402

CODE = {"stream:pipeline": StreamPipeline}
