"""Schemas shared by several resources."""

from marshmallow import Schema, fields


class PageSchema(Schema):
    """A cursor page: pass `next_cursor` back as `cursor` for the next page; null means the end."""

    next_cursor = fields.String(allow_none=True, required=True)
