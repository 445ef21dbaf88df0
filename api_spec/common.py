"""Schemas shared by several resources: pages, problems (errors), and strict field types.

Request fields take JSON as it is: no string becomes a number, no 5.5 an integer, no "yes" a flag.
Query strings are text, so their integers are parsed exactly (ASCII digits, nothing else).
"""

import re
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

_CONTROL = re.compile(r"[\x00-\x1f]")
_CONTROL_BUT_TAB_NEWLINE = re.compile(r"[\x00-\x08\x0b-\x1f]")
_QUERY_INTEGER = re.compile(r"-?[0-9]{1,19}")


def _no_control(pattern: re.Pattern[str], allowed: str) -> validate.Validator:
    class NoControl(validate.Validator):
        # NUL and other C0 controls break the files, terminals and tools the text ends up in.
        def __call__(self, value: str) -> str:
            if found := pattern.search(value):
                raise ValidationError(
                    f"Control character U+{ord(found.group()):04X} at position {found.start()} "
                    f"is not allowed{allowed}."
                )
            return value

    return NoControl()


NO_CONTROL = _no_control(_CONTROL, "")
TEXT_CONTROL = _no_control(_CONTROL_BUT_TAB_NEWLINE, " (only tab and newline are)")


class StrictString(fields.String):
    """A string that must really be a string: marshmallow's String would turn 3 into "3"."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class Name(StrictString):
    """A name, id or label: one line of text, no control characters."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validators.insert(0, NO_CONTROL)


class Text(StrictString):
    """Free text (instructions, inputs, outputs): tab and newline allowed, other control characters not."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validators.insert(0, TEXT_CONTROL)


class StrictBoolean(fields.Boolean):
    """Only JSON true/false: "yes" or 1 is more likely a mistake than a flag."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class StrictInteger(fields.Integer):
    """A JSON integer: 5.5, 5.0, "5" and true are refused, never truncated or coerced."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)


class StrictFloat(fields.Float):
    """A JSON number: "0.5" and true are refused (marshmallow's Float would parse the string)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


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
