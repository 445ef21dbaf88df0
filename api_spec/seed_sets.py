"""Seed tasks and seed sets: the paper's seed-task schema and the seed-set resource."""

from marshmallow import RAISE, Schema, fields, validate

from api_spec.common import PageArgsSchema, PageSchema
from jobs.method.fields import Name
from jobs.method.seed_tasks import SeedTaskSchema

SHA256 = validate.Regexp(r"^[0-9a-f]{64}$", error="Not a seed set id (64 lowercase hex digits).")


class SeedSetCreateSchema(Schema):
    """A seed set sent as JSON. Every bad task field is reported, as `tasks[i].field`."""

    class Meta:
        unknown = RAISE

    name = Name(validate=validate.Length(min=1, max=200), metadata={"description": "A label."})
    tasks = fields.List(fields.Nested(SeedTaskSchema), required=True, validate=validate.Length(min=1))


class SeedSetSchema(Schema):
    id = fields.String(required=True, metadata={"description": "sha256 of the canonical task list."})
    name = fields.String(allow_none=True, required=True)
    created_at = fields.DateTime(required=True)
    tasks = fields.Integer(required=True, metadata={"description": "Number of tasks."})
    classification_tasks = fields.Integer(required=True)
    instances = fields.Integer(required=True)
    bytes = fields.Integer(required=True, metadata={"description": "Size of the canonical JSONL."})


class SeedSetPageSchema(PageSchema):
    items = fields.List(fields.Nested(SeedSetSchema), required=True)


class SeedSetListArgsSchema(PageArgsSchema):
    pass


class SeedSetUploadArgsSchema(Schema):
    class Meta:
        unknown = RAISE

    name = Name(validate=validate.Length(min=1, max=200), metadata={"description": "A label."})
