"""API keys, one team each, stored hashed (sha256); the secret is shown once, at creation.

python -m jobs.tools.keys create --team TEAM [--name NAME]
python -m jobs.tools.keys list
python -m jobs.tools.keys revoke KEY_ID
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from redis import Redis

from jobs.store import keyspace

TEAM = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    id: str
    team: str
    name: str
    created_at: float
    revoked: bool


def create(r: Redis, team: str, name: str = "") -> tuple[ApiKey, str]:
    """A new key for `team`; returns it and the secret (not stored anywhere)."""
    if not TEAM.match(team):
        raise ValueError("team: lowercase letters, digits and dashes, at most 63")
    key_id = secrets.token_hex(6)
    secret = f"sik_{key_id}_{secrets.token_urlsafe(32)}"
    record = ApiKey(key_id, team, name, time.time(), False)
    digest = _digest(secret)
    pipe = r.pipeline()
    pipe.hset(keyspace.api_key(digest), mapping={**record.__dict__, "revoked": 0})
    pipe.hset(keyspace.API_KEYS, key_id, digest)
    pipe.execute()
    return record, secret


def _record(raw: dict[bytes, bytes]) -> ApiKey:
    d = {k.decode(): v.decode() for k, v in raw.items()}
    return ApiKey(d["id"], d["team"], d["name"], float(d["created_at"]), d["revoked"] == "1")


def team_for(r: Redis, secret: str) -> str | None:
    """The team a secret belongs to, or None (unknown or revoked)."""
    raw = r.hgetall(keyspace.api_key(_digest(secret)))
    if not raw:
        return None
    record = _record(raw)
    return None if record.revoked else record.team


def all_keys(r: Redis) -> list[ApiKey]:
    out = []
    for digest in r.hvals(keyspace.API_KEYS):
        raw = r.hgetall(keyspace.api_key(digest.decode()))
        if raw:
            out.append(_record(raw))
    return sorted(out, key=lambda k: k.created_at)


def revoke(r: Redis, key_id: str) -> bool:
    digest = r.hget(keyspace.API_KEYS, key_id)
    if digest is None:
        return False
    r.hset(keyspace.api_key(digest.decode()), "revoked", 1)
    return True
