"""Seed tasks and seed sets: the paper's seed-task schema and the seed-set resource."""

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from api_spec.common import Name, PageArgsSchema, PageSchema, StrictBoolean, Text

# Limits on one seed task; the set-level limits live in jobs.settings.
MAX_INSTRUCTION_CHARS = 2_000
MAX_FIELD_CHARS = 10_000
MAX_INSTANCES_PER_TASK = 50
SHA256 = validate.Regexp(r"^[0-9a-f]{64}$", error="Not a seed set id (64 lowercase hex digits).")


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("Must not be blank.")


class InstanceSchema(Schema):
    input = Text(required=True, validate=validate.Length(max=MAX_FIELD_CHARS))
    output = Text(required=True, validate=validate.Length(min=1, max=MAX_FIELD_CHARS))


class SeedTaskSchema(Schema):
    """One seed task, as in the paper's `seed_tasks.jsonl` (also accepts its user-oriented set)."""

    id = Name(required=True, validate=validate.Length(min=1, max=200))
    name = Name(validate=validate.Length(max=200))
    # a field validator, not a schema one, so that a blank instruction is reported with the other fields
    instruction = Text(
        required=True, validate=[validate.Length(min=1, max=MAX_INSTRUCTION_CHARS), _not_blank]
    )
    instances = fields.List(
        fields.Nested(InstanceSchema),
        required=True,
        validate=validate.Length(min=1, max=MAX_INSTANCES_PER_TASK),
    )
    is_classification = StrictBoolean(load_default=False, dump_default=False)
    motivation_app = Name(validate=validate.Length(max=200))


class GivenInstructionSchema(Schema):
    """One instruction of a stage-level run: instances are made for it as it is (no stage 1)."""

    class Meta:
        unknown = RAISE

    id = Name(
        validate=validate.Length(min=1, max=200),
        metadata={"description": "Default: `line<N>` in a file, `item<N>` in a list (1-based)."},
    )
    instruction = Text(
        required=True, validate=[validate.Length(min=1, max=MAX_INSTRUCTION_CHARS), _not_blank]
    )


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
