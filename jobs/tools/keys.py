"""Manage API keys: `python -m jobs.tools.keys create --team T | list | revoke ID` (REDIS_URL)."""

from __future__ import annotations

import argparse
import sys
import time

from jobs.settings import get_settings
from jobs.store import connection
from jobs.store.api_keys import all_keys, create, revoke


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m jobs.tools.keys", description="Manage API keys (REDIS_URL)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create", allow_abbrev=False, help="create a key for a team; prints the secret once")
    c.add_argument("--team", required=True)
    c.add_argument("--name", default="")
    sub.add_parser("list", allow_abbrev=False, help="list keys (never their secrets)")
    v = sub.add_parser("revoke", allow_abbrev=False, help="revoke a key by id")
    v.add_argument("key_id")
    args = parser.parse_args(argv)
    r = connection.connect(get_settings().redis_url)
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
