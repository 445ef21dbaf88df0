"""Cursors for newest-first listings: the last item's creation time (microseconds, hex) and id."""

from __future__ import annotations


def encode(position: tuple[float, str] | None) -> str | None:
    if position is None:
        return None
    return f"{round(position[0] * 1_000_000):x}.{position[1]}"


def decode(cursor: str | None) -> tuple[float, str] | None:
    """The schema's pattern has already checked the form (see api_spec.common.LIST_CURSOR)."""
    if not cursor:
        return None
    micros, _, ident = cursor.partition(".")
    return int(micros, 16) / 1_000_000, ident
