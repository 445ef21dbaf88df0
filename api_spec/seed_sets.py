"""Seed tasks and seed sets: the paper's seed-task schema and the seed-set resource."""

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from api_spec.common import PageArgsSchema, PageSchema

# Limits on one seed task; the set-level limits live in jobs.settings.
MAX_INSTRUCTION_CHARS = 2_000
MAX_FIELD_CHARS = 10_000
MAX_INSTANCES_PER_TASK = 50
SHA256 = validate.Regexp(r"^[0-9a-f]{64}$", error="Not a seed set id (64 lowercase hex digits).")


class StrictString(fields.String):
    """A string that must really be a string: marshmallow's String would turn 3 into "3"."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class StrictBoolean(fields.Boolean):
    """Only JSON true/false: "yes" or 1 is more likely a mistake than a flag."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class InstanceSchema(Schema):
    input = StrictString(required=True, validate=validate.Length(max=MAX_FIELD_CHARS))
    output = StrictString(required=True, validate=validate.Length(min=1, max=MAX_FIELD_CHARS))


class SeedTaskSchema(Schema):
    """One seed task, as in the paper's `seed_tasks.jsonl` (also accepts its user-oriented set)."""

    id = StrictString(required=True, validate=validate.Length(min=1, max=200))
    name = StrictString(validate=validate.Length(max=200))
    instruction = StrictString(required=True, validate=validate.Length(min=1, max=MAX_INSTRUCTION_CHARS))
    instances = fields.List(
        fields.Nested(InstanceSchema),
        required=True,
        validate=validate.Length(min=1, max=MAX_INSTANCES_PER_TASK),
    )
    is_classification = StrictBoolean(load_default=False, dump_default=False)
    motivation_app = StrictString(validate=validate.Length(max=200))

    @validates_schema
    def _instruction_not_blank(self, data, **kwargs):
        if "instruction" in data and not data["instruction"].strip():
            raise ValidationError("Must not be blank.", "instruction")


class SeedSetCreateSchema(Schema):
    """A seed set sent as JSON. Every bad task field is reported, as `tasks[i].field`."""

    class Meta:
        unknown = RAISE

    name = StrictString(validate=validate.Length(min=1, max=200), metadata={"description": "A label."})
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

    name = StrictString(validate=validate.Length(min=1, max=200), metadata={"description": "A label."})
