"""Schemas shared by several resources: pages, problems (errors), and strict field types.

Request fields take JSON as it is (the strict field types of jobs.method.fields).
Query strings are text, so their integers are parsed exactly (ASCII digits, nothing else).
"""

import re
from typing import Any

from marshmallow import RAISE, Schema, fields, validate

_QUERY_INTEGER = re.compile(r"-?[0-9]{1,19}")


class QueryInteger(fields.Integer):
    """An integer in a query string: ASCII digits with an optional minus, exactly (no 1e3, 10.0, " 10",
    "1_0", "+10" or other scripts' digits, all of which int() or marshmallow would take)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str) and _QUERY_INTEGER.fullmatch(value):
            return super()._deserialize(value, attr, data, **kwargs)
        raise self.make_error("invalid")


class PageSchema(Schema):
    """A cursor page: pass `next_cursor` back as `cursor` for the next page; null means the end."""

    next_cursor = fields.String(allow_none=True, required=True)


LIST_CURSOR = r"^[0-9a-f]{1,14}\.[0-9a-f]{32,64}$"


class PageArgsSchema(Schema):
    class Meta:
        unknown = RAISE

    limit = QueryInteger(
        load_default=50, validate=validate.Range(1, 500), metadata={"description": "Page size."}
    )
    cursor = fields.String(
        validate=validate.Regexp(LIST_CURSOR, error="Not a cursor this API returned."),
        metadata={"description": "`next_cursor` of the previous page."},
    )


class FieldErrorSchema(Schema):
    field = fields.String(required=True, metadata={"description": "Dotted path of the field at fault."})
    message = fields.String(required=True)
    line = fields.Integer(allow_none=True, metadata={"description": "1-based line of an uploaded file."})


class ProblemSchema(Schema):
    """RFC 9457 problem details, served as application/problem+json."""

    type = fields.String(required=True, metadata={"description": "A URI naming the kind of problem."})
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String()
    request_id = fields.String()
    errors = fields.List(fields.Nested(FieldErrorSchema), metadata={"description": "Every field at fault."})
    errors_truncated = fields.Boolean()
