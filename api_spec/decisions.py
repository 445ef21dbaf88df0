"""Decision records: for every candidate, kept or dropped, by which rule, against what."""

from marshmallow import Schema, fields, validate

from api_spec.common import PageArgsSchema, PageSchema
from jobs.method.vocabulary import DECISION_STAGES as STAGES
from jobs.method.vocabulary import RULES, VERDICTS


class DecisionSchema(Schema):
    id = fields.String(required=True, metadata={"description": "Stable id of the candidate."})
    stage = fields.String(required=True, validate=validate.OneOf(STAGES))
    text = fields.String(
        required=True, metadata={"description": "The instruction, or the instance's output."}
    )
    input = fields.String(allow_none=True, required=True, metadata={"description": "Instances only."})
    verdict = fields.String(required=True, validate=validate.OneOf(VERDICTS))
    rule = fields.String(required=True, validate=validate.OneOf(list(RULES)))
    detail = fields.Dict(
        required=True,
        metadata={
            "description": "Rule-specific: for too_similar and kept instructions, nearest_id, nearest_text "
            "and score (ROUGE-L F-measure); keyword; duplicate_of; ..."
        },
    )
    source = fields.Dict(
        required=True,
        metadata={"description": "{prompt, completion, position} or {instruction_id, position}."},
    )


class DecisionPageSchema(PageSchema):
    items = fields.List(fields.Nested(DecisionSchema), required=True)
    total = fields.Integer(required=True, metadata={"description": "Decisions matching the filters so far."})


class DecisionListArgsSchema(PageArgsSchema):
    cursor = fields.String(
        validate=validate.Regexp(r"^d[0-9a-f]{1,15}$", error="Not a cursor this API returned."),
        metadata={"description": "`next_cursor` of the previous page."},
    )
    stage = fields.String(validate=validate.OneOf(STAGES))
    verdict = fields.String(validate=validate.OneOf(VERDICTS))
    rule = fields.String(validate=validate.OneOf(list(RULES)))


class RuleSchema(Schema):
    name = fields.String(required=True)
    stage = fields.String(required=True)
    description = fields.String(required=True)
