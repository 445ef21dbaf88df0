"""Dataset manifests: the files of a finished job, each with a presigned download URL."""

from marshmallow import Schema, fields


class DatasetFileSchema(Schema):
    name = fields.String(required=True)
    format = fields.String(required=True)
    records = fields.Integer(allow_none=True, required=True)
    bytes = fields.Integer(required=True)
    sha256 = fields.String(required=True)
    content_type = fields.String(required=True)
    url = fields.String(
        required=True, metadata={"description": "Presigned GET URL; expires (see expires_in)."}
    )


class ManifestSchema(Schema):
    job_id = fields.String(required=True)
    created_at = fields.String(required=True)
    partial = fields.Boolean(required=True, metadata={"description": "True for what a canceled job made."})
    expires_in = fields.Integer(required=True, metadata={"description": "Seconds the URLs stay valid."})
    files = fields.List(fields.Nested(DatasetFileSchema), required=True)
