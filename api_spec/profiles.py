"""LLM endpoint profiles the operator offers (callers pick one by name)."""

from marshmallow import Schema, fields, validate


class ProfileSchema(Schema):
    name = fields.String(required=True)
    model = fields.String(required=True)
    default = fields.Boolean(required=True)
    api = fields.String(
        required=True,
        validate=validate.OneOf(("completions", "chat")),
        metadata={
            "description": "completions: a base model continues text; chat: an instruction-following model."
        },
    )
    structured_output = fields.Boolean(
        required=True, metadata={"description": "Chat replies are constrained to a JSON schema."}
    )
    price_per_million_tokens = fields.Dict(
        keys=fields.String(),
        values=fields.Float(),
        allow_none=True,
        required=True,
        metadata={"description": "{prompt, completion} per million tokens, in `currency`; null: no prices."},
    )
    currency = fields.String(required=True)
    mode = fields.String(
        required=True,
        validate=validate.OneOf(("online", "batch")),
        metadata={
            "description": "online: requests one by one; batch: stages go through the provider's Batch API "
            "(hours, not minutes; cost at the batch prices)."
        },
    )
    embeddings = fields.Dict(
        allow_none=True,
        required=True,
        metadata={
            "description": "The embedding endpoint for `semantic_threshold`: {model, "
            "price_per_million_tokens}; null: the profile offers none."
        },
    )
    batch_price_per_million_tokens = fields.Dict(
        keys=fields.String(),
        values=fields.Float(),
        allow_none=True,
        required=True,
        metadata={"description": "Batch mode's prices; null: the online ones."},
    )
