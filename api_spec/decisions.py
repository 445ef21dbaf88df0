"""Decision records: for every candidate, kept or dropped, by which rule, against what."""

from marshmallow import Schema, fields, validate

from api_spec.common import PageArgsSchema, PageSchema
from jobs.method.decisions import SCAN
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
    total = fields.Integer(
        required=True,
        allow_none=True,
        metadata={
            "description": "Decisions matching the filters so far; null for a text query (`q`) while the "
            "job runs, whose pages read the log in bounded steps instead of counting it."
        },
    )


class DecisionListArgsSchema(PageArgsSchema):
    cursor = fields.String(
        validate=validate.Regexp(r"^d[0-9a-f]{1,15}$", error="Not a cursor this API returned."),
        metadata={"description": "`next_cursor` of the previous page."},
    )
    stage = fields.String(validate=validate.OneOf(STAGES))
    verdict = fields.String(validate=validate.OneOf(VERDICTS))
    rule = fields.String(validate=validate.OneOf(list(RULES)))
    q = fields.String(
        validate=validate.Length(1, 200),
        metadata={
            "description": "Text search: decisions whose text or input has every word of `q` (a run "
            "of letters, digits and combining marks) as the start of one of its words, case-insensitively; "
            "no query syntax; no word finds nothing. While the job runs a page reads at "
            f"most {SCAN:,} decisions, so it may hold fewer items than `limit` (none, even) and still have a "
            "`next_cursor`: follow it to read on."
        },
    )


class RuleSchema(Schema):
    name = fields.String(required=True)
    stage = fields.String(required=True)
    description = fields.String(required=True)
