"""LLM endpoint profiles the operator offers (callers pick one by name)."""

from marshmallow import Schema, fields


class ProfileSchema(Schema):
    name = fields.String(required=True)
    model = fields.String(required=True)
    default = fields.Boolean(required=True)
