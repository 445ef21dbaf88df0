"""Strict marshmallow field types for the method's inputs (seed tasks, instructions) and the API's.

Fields take JSON as it is: no string becomes a number, no 5.5 an integer, no "yes" a flag; text holds no
control characters that break the files, terminals and tools it ends up in.
"""

import re
from typing import Any

from marshmallow import ValidationError, fields, validate

_CONTROL = re.compile(r"[\x00-\x1f]")
_CONTROL_BUT_TAB_NEWLINE = re.compile(r"[\x00-\x08\x0b-\x1f]")


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
