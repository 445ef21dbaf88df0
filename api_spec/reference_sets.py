"""Reference sets: what a job's instructions and instances must not overlap (decontamination)."""

from marshmallow import RAISE, Schema, fields, validate

from api_spec.common import PageArgsSchema, PageSchema
from jobs.method.fields import Name

MAX_REFERENCE_SETS = 20  # named by one job
REFERENCE_SET_ID = validate.Regexp(
    r"^[0-9a-f]{64}$", error="Not a reference set id (64 lowercase hex digits)."
)


class ReferenceSetSchema(Schema):
    id = fields.String(required=True, metadata={"description": "sha256 of the canonical item list."})
    name = fields.String(allow_none=True, required=True)
    created_at = fields.DateTime(required=True)
    items = fields.Integer(required=True, metadata={"description": "Number of items."})
    bytes = fields.Integer(required=True, metadata={"description": "Size of the canonical JSONL."})


class ReferenceSetPageSchema(PageSchema):
    items = fields.List(fields.Nested(ReferenceSetSchema), required=True)


class ReferenceSetListArgsSchema(PageArgsSchema):
    pass


class ReferenceSetUploadArgsSchema(Schema):
    class Meta:
        unknown = RAISE

    name = Name(validate=validate.Length(min=1, max=200), metadata={"description": "A label."})


def decontaminate_against_field() -> fields.List:
    """A new field each time (schemas sharing one would share its description's objects)."""
    return fields.List(
        fields.String(validate=REFERENCE_SET_ID),
        validate=validate.Length(1, MAX_REFERENCE_SETS),
        metadata={
            "description": "Reference sets of the team (POST /v1/reference-sets) the job's data must not "
            "overlap: an instruction or an instance (its input, then its output) sharing a run of "
            "`contamination_ngram` words with an item, or whose ROUGE-L against one is above "
            "`contamination_threshold`, is dropped with rule `contaminated`, the item named in its "
            "decision's detail."
        },
    )
