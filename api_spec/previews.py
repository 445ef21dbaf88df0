"""Previews: a job's body run on a few instructions, answered within a minute."""

from marshmallow import RAISE, Schema, fields, validate

from api_spec.common import QueryInteger
from api_spec.jobs import MAX_INSTRUCTIONS, CostSchema, JobCreateSchema, dedup_against_field
from api_spec.reference_sets import decontaminate_against_field
from jobs.method.fields import StrictInteger

PREVIEW_STATES = ("queued", "running", "succeeded", "failed")


class PreviewCreateSchema(JobCreateSchema):
    """The body of a job; `num_instructions` is the preview's (the operator caps it). A preview ends in
    its answer: it takes no notify_url, and it waits for no worker of the generation queue (no priority)."""

    class Meta(JobCreateSchema.Meta):
        exclude = ("notify_url", "priority", "push_to_hub")

    num_instructions = StrictInteger(
        load_default=5,
        validate=validate.Range(1, 1000),
        metadata={"description": "Instructions to preview; default 5, at most PREVIEW_MAX_INSTRUCTIONS."},
    )
    dedup_against = dedup_against_field()
    decontaminate_against = decontaminate_against_field()
    full_num_instructions = StrictInteger(
        validate=validate.Range(1, MAX_INSTRUCTIONS),
        metadata={"description": "The size of the job being considered: its tokens and cost are estimated."},
    )


class PreviewArgsSchema(Schema):
    class Meta:
        unknown = RAISE

    wait = QueryInteger(
        validate=validate.Range(0, 600),
        metadata={
            "description": "Seconds to wait for the result before answering 202 (default and ceiling: the "
            "operator's PREVIEW_WAIT_SECONDS)."
        },
    )


class PreviewResultSchema(Schema):
    candidates = fields.List(
        fields.Dict(),
        required=True,
        metadata={
            "description": "Every candidate instruction's decision: rule, verdict, detail (nearest pool item "
            "and ROUGE-L score), and the nearest item's text."
        },
    )
    kept = fields.List(
        fields.Dict(),
        required=True,
        metadata={
            "description": "Kept instructions: classification answer, instances, dropped instances (each "
            "with its rule); with the LLM judge, each instance's judge_score and judge_rationale."
        },
    )
    tokens = fields.Dict(required=True)
    requests = fields.Integer(required=True)
    cost = fields.Nested(CostSchema, allow_none=True, required=True)
    estimate = fields.Dict(
        allow_none=True,
        required=True,
        metadata={
            "description": "Tokens and cost per kept instruction, `once` (what a job spends whatever its "
            "size: classification_method auto's requests), and for `full_num_instructions` (the "
            "preview's rate times it, plus `once`; null: nothing was kept): `cost` in the profile's "
            "`mode`, `cost_by_mode` both "
            "online and through the provider's Batch API (at the profile's batch prices). With "
            "`semantic_threshold`, `embedding_tokens` per instruction and for the full job, priced at "
            "the embedding endpoint's price. A preview always runs online."
        },
    )
    stop_reason = fields.String(allow_none=True, required=True)
    seconds = fields.Float(required=True)


class PreviewSchema(Schema):
    id = fields.String(required=True)
    state = fields.String(required=True, validate=validate.OneOf(PREVIEW_STATES))
    seed_set_id = fields.String(required=True)
    profile = fields.String(required=True)
    num_instructions = fields.Integer(required=True)
    full_num_instructions = fields.Integer(allow_none=True, required=True)
    created_at = fields.DateTime(required=True)
    finished_at = fields.DateTime(allow_none=True, required=True)
    expires_at = fields.DateTime(required=True)
    error = fields.String(allow_none=True, required=True)
    result = fields.Nested(PreviewResultSchema, allow_none=True, required=True)
