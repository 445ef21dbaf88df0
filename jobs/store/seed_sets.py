"""Seed sets: content-addressed, per team; the tasks in S3, a summary record in Redis.

The id is the sha256 of the canonical JSONL (jobs.method.seed_tasks.canonical_jsonl), so the same tasks
uploaded twice, as a file or a JSON body, are recognised as one set.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis import Redis

from jobs.blobs.artifacts import Artifacts
from jobs.method.seed_tasks import SeedTask, canonical_jsonl, content_hash
from jobs.store import keyspace


@dataclass(frozen=True)
class SeedSet:
    id: str
    name: str | None
    created_at: float
    tasks: int
    classification_tasks: int
    instances: int
    bytes: int


class InUse(Exception):
    def __init__(self, jobs: list[str]):
        self.jobs = jobs
        super().__init__(f"the seed set is used by {len(jobs)} unfinished job(s)")


_DELETE = """
if redis.call('SCARD', KEYS[2]) > 0 then return -1 end
local gone = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return gone
"""


def create(
    r: Redis, artifacts: Artifacts, team: str, tasks: list[SeedTask], name: str | None
) -> tuple[SeedSet, bool]:
    """Store the set (the object first, then the record); returns it and whether it is new."""
    sha = content_hash(tasks)
    existing = get(r, team, sha)
    if existing:
        return existing, False
    data = canonical_jsonl(tasks)
    artifacts.put_seed_set(team, sha, data)
    record = SeedSet(
        id=sha,
        name=name,
        created_at=time.time_ns() // 1000 / 1_000_000,  # exact in cursors
        tasks=len(tasks),
        classification_tasks=sum(t.is_classification for t in tasks),
        instances=sum(len(t.instances) for t in tasks),
        bytes=len(data),
    )
    fields = {k: v for k, v in record.__dict__.items() if v is not None}
    pipe = r.pipeline()
    pipe.hset(keyspace.seed_set(team, sha), mapping=fields)
    pipe.zadd(keyspace.team_seed_sets(team), {sha: record.created_at})
    pipe.execute()
    return record, True


def get(r: Redis, team: str, sha: str) -> SeedSet | None:
    raw = {k.decode(): v.decode() for k, v in r.hgetall(keyspace.seed_set(team, sha)).items()}
    if not raw:
        return None
    return SeedSet(
        id=raw["id"],
        name=raw.get("name"),
        created_at=float(raw["created_at"]),
        tasks=int(raw["tasks"]),
        classification_tasks=int(raw["classification_tasks"]),
        instances=int(raw["instances"]),
        bytes=int(raw["bytes"]),
    )


def page(
    r: Redis, team: str, after: tuple[float, str] | None, limit: int
) -> tuple[list[SeedSet], tuple | None]:
    """Newest first; `after` is the (created_at, id) of the previous page's last set."""
    return newest_first(r, keyspace.team_seed_sets(team), after, limit, lambda sha: get(r, team, sha))


def newest_first(
    r: Redis, listing: str, after: tuple[float, str] | None, limit: int, fetch: Callable[[str], Any]
) -> tuple[list[Any], tuple | None]:
    """A page of the records a sorted set lists by creation time, newest first (`fetch` reads one by
    id; None: gone); `after` is the (created_at, id) of the previous page's last record."""
    upper = "+inf" if after is None else after[0]
    rows = r.zrevrangebyscore(listing, upper, "-inf", start=0, num=limit + 200, withscores=True)
    found: list[Any] = []
    for raw_id, score in rows:
        sha = raw_id.decode()
        if after is not None and (score, sha) >= after:
            continue
        if (record := fetch(sha)) is not None:
            found.append(record)
        if len(found) > limit:
            break
    more = len(found) > limit
    found = found[:limit]
    return found, ((found[-1].created_at, found[-1].id) if more and found else None)


def delete(r: Redis, artifacts: Artifacts, team: str, sha: str) -> bool:
    """False when there was no such set; raises InUse while unfinished jobs use it."""
    users = keyspace.seed_set_users(team, sha)
    result = r.eval(_DELETE, 3, keyspace.seed_set(team, sha), users, keyspace.team_seed_sets(team), sha)
    if result == -1:
        raise InUse(sorted(m.decode() for m in r.smembers(users)))
    if result:
        artifacts.delete_seed_set(team, sha)
    return bool(result)
