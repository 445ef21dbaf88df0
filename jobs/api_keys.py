"""API keys, one team each, stored hashed (sha256); the secret is shown once, at creation.

python -m jobs.api_keys create --team TEAM [--name NAME]
python -m jobs.api_keys list
python -m jobs.api_keys revoke KEY_ID
"""

from __future__ import annotations

import argparse
import hashlib
import re
import secrets
import sys
import time
from dataclasses import dataclass

from redis import Redis

from jobs import keyspace
from jobs.settings import get_settings

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m jobs.api_keys", description="Manage API keys (REDIS_URL)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create", allow_abbrev=False, help="create a key for a team; prints the secret once")
    c.add_argument("--team", required=True)
    c.add_argument("--name", default="")
    sub.add_parser("list", allow_abbrev=False, help="list keys (never their secrets)")
    v = sub.add_parser("revoke", allow_abbrev=False, help="revoke a key by id")
    v.add_argument("key_id")
    args = parser.parse_args(argv)
    r = Redis.from_url(get_settings().redis_url)
    if args.command == "create":
        try:
            record, secret = create(r, args.team, args.name)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"key {record.id} for team {record.team}; the secret (shown only now):\n{secret}")
    elif args.command == "list":
        for k in all_keys(r):
            created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(k.created_at))
            state = "REVOKED" if k.revoked else "active"
            print(f"{k.id}  team={k.team}  name={k.name or '-'}  created={created}Z  {state}")
    elif not revoke(r, args.key_id):
        print(f"error: no key {args.key_id}", file=sys.stderr)
        return 1
    else:
        print(f"revoked {args.key_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
