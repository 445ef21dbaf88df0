"""Verify a webhook the service sent (Standard Webhooks: https://www.standardwebhooks.com/).

    from client.webhooks import InvalidWebhook, verify

    try:
        event = verify(secret, request.headers, request.get_data())  # the body's bytes, as received
    except InvalidWebhook as e:
        return str(e), 400

The signature covers "{webhook-id}.{webhook-timestamp}.{body}"; a timestamp further than `tolerance`
seconds from now is refused, so that a captured delivery cannot be replayed later. Standard library
only, like the rest of what a receiver needs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_SECONDS = 300


class InvalidWebhook(Exception):
    """The delivery is not from the holder of the secret, or is stale; the message says what failed."""


def _key(secret: str) -> bytes:
    try:  # the prefix is optional, as in the spec's reference libraries
        return base64.b64decode(secret.strip().removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise InvalidWebhook("the secret is not whsec_ and base64") from None


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> Any:
    """The event, if `body` and `headers` (any letter case) carry a valid signature by `secret` and a
    timestamp within `tolerance` seconds of `now` (0: any timestamp); raises InvalidWebhook otherwise."""
    given = {name.lower(): value for name, value in headers.items()}
    missing = [n for n in ("webhook-id", "webhook-timestamp", "webhook-signature") if not given.get(n)]
    if missing:
        raise InvalidWebhook(f"missing header {', '.join(missing)}")
    msg_id, stamp = given["webhook-id"].strip(), given["webhook-timestamp"].strip()
    if not stamp.isascii() or not stamp.isdigit():
        raise InvalidWebhook(f"webhook-timestamp is not a whole number of seconds: {stamp[:40]!r}")
    age = (time.time() if now is None else now) - int(stamp)
    if tolerance and abs(age) > tolerance:
        when = "old" if age > 0 else "in the future"
        raise InvalidWebhook(
            f"the timestamp is {abs(age):.0f} s {when}, beyond the {tolerance:g} s tolerance"
        )
    digest = hmac.new(_key(secret), f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    expected = base64.b64encode(digest).decode()
    for candidate in given["webhook-signature"].split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            break
    else:
        raise InvalidWebhook("no signature matches this secret (another secret, or the body was changed)")
    try:
        event = json.loads(body)
    except ValueError:
        raise InvalidWebhook("the body is signed but is not JSON") from None
    return event


def read_headers(text: str) -> dict[str, str]:
    """Headers as a JSON object, or as `Name: value` lines (a request line or blank lines aside)."""
    stripped = text.strip()
    if stripped.startswith("{"):
        data = json.loads(stripped)
        return {str(k): str(v) for k, v in data.items()}
    found = {}
    for line in stripped.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() and " " not in name.strip():
            found[name.strip()] = value.strip()
    return found
