"""Previews: a few instructions run through every stage at once, to look at before a big job.

A preview's record is a Redis hash (jobs.store.keyspace.preview) that expires PREVIEW_RETENTION_SECONDS after
it was made: its team, request (the recipe as Recipe.to_dict() gives it), state and, once run, its
result (JSON). The API creates it and enqueues
jobs.runner.preview.run_preview on the preview queue (PREVIEW_QUEUE), which only preview workers serve, so
a long generation job never holds one up.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from redis import Redis

from jobs.store import keyspace

STATES = ("queued", "running", "succeeded", "failed")
# HSET on a missing key would make a record without an expiry
_UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


def create(
    r: Redis,
    team: str,
    seed_set_id: str,
    profile: str,
    recipe: dict[str, Any],
    full: int | None,
    ttl: int,
    dedup_against: list[str] | None = None,
    decontaminate_against: list[str] | None = None,
) -> str:
    preview_id = uuid.uuid4().hex
    record = {
        "id": preview_id,
        "team": team,
        "state": "queued",
        "seed_set_id": seed_set_id,
        "profile": profile,
        "recipe": json.dumps(recipe),
        "dedup_against": json.dumps(dedup_against or []),
        "decontaminate_against": json.dumps(decontaminate_against or []),
        "full_num_instructions": "" if full is None else str(full),
        "created_at": str(time.time()),
    }
    pipe = r.pipeline(transaction=True)
    pipe.hset(keyspace.preview(preview_id), mapping=record)
    pipe.expire(keyspace.preview(preview_id), ttl)
    pipe.execute()
    return preview_id


def get(r: Redis, preview_id: str) -> dict[str, Any] | None:
    raw = {k.decode(): v.decode() for k, v in r.hgetall(keyspace.preview(preview_id)).items()}
    if not raw:
        return None
    full = raw.get("full_num_instructions")
    return {
        "id": raw["id"],
        "team": raw["team"],
        "state": raw["state"],
        "seed_set_id": raw["seed_set_id"],
        "profile": raw["profile"],
        "recipe": json.loads(raw["recipe"]),
        "dedup_against": json.loads(raw.get("dedup_against", "[]")),
        "decontaminate_against": json.loads(raw.get("decontaminate_against", "[]")),
        "full_num_instructions": int(full) if full else None,
        "created_at": float(raw["created_at"]),
        "finished_at": float(raw["finished_at"]) if raw.get("finished_at") else None,
        "error": raw.get("error") or None,
        "result": json.loads(raw["result"]) if raw.get("result") else None,
    }


def update(r: Redis, preview_id: str, **fields: Any) -> bool:
    """Set fields of a preview that still exists (an expired one is not brought back)."""
    key = keyspace.preview(preview_id)
    encoded = {k: json.dumps(v) if isinstance(v, dict | list) else str(v) for k, v in fields.items()}
    return bool(r.eval(_UPDATE, 1, key, *[x for kv in encoded.items() for x in kv]))


def wait(r: Redis, preview_id: str, seconds: float) -> dict[str, Any] | None:
    """The preview once it has finished, or as it stands after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        preview = get(r, preview_id)
        if preview is None or preview["state"] in ("succeeded", "failed") or time.monotonic() >= deadline:
            return preview
        time.sleep(0.1)
