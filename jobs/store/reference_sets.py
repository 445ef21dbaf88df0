"""Reference sets: what a job's data must not contain (a team's evaluation prompts, a benchmark's
questions); content-addressed per team like seed sets, the items in S3, a summary record in Redis.

A job names them in `decontaminate_against`; deleting one is refused while an unfinished job of the team
names it (a job that finds it gone all the same fails, saying so).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

from redis import Redis

from jobs.blobs.artifacts import Artifacts
from jobs.store import job as jobs_
from jobs.store import keyspace
from jobs.store.seed_sets import newest_first


@dataclass(frozen=True)
class ReferenceSet:
    id: str
    name: str | None
    created_at: float
    items: int
    bytes: int


class InUse(Exception):
    def __init__(self, jobs: list[str]):
        self.jobs = jobs
        super().__init__(f"the reference set is named by {len(jobs)} unfinished job(s)")


def canonical_jsonl(items: list[dict[str, str]]) -> bytes:
    """One {"id", "text"} line an item, in order: the same items give the same bytes."""
    return "".join(json.dumps(i, ensure_ascii=False, sort_keys=True) + "\n" for i in items).encode()


def create(
    r: Redis, artifacts: Artifacts, team: str, items: list[dict[str, str]], name: str | None
) -> tuple[ReferenceSet, bool]:
    """Store the set (the object first, then the record); returns it and whether it is new."""
    data = canonical_jsonl(items)
    sha = hashlib.sha256(data).hexdigest()
    if (existing := get(r, team, sha)) is not None:
        return existing, False
    artifacts.put_reference_set(team, sha, data)
    record = ReferenceSet(sha, name, time.time_ns() // 1000 / 1_000_000, len(items), len(data))
    pipe = r.pipeline()
    pipe.hset(
        keyspace.reference_set(team, sha), mapping={k: v for k, v in record.__dict__.items() if v is not None}
    )
    pipe.zadd(keyspace.team_reference_sets(team), {sha: record.created_at})
    pipe.execute()
    return record, True


def get(r: Redis, team: str, sha: str) -> ReferenceSet | None:
    raw = {k.decode(): v.decode() for k, v in r.hgetall(keyspace.reference_set(team, sha)).items()}
    if not raw:
        return None
    return ReferenceSet(
        raw["id"], raw.get("name"), float(raw["created_at"]), int(raw["items"]), int(raw["bytes"])
    )


def page(
    r: Redis, team: str, after: tuple[float, str] | None, limit: int
) -> tuple[list[ReferenceSet], tuple | None]:
    """Newest first; `after` is the (created_at, id) of the previous page's last set."""
    return newest_first(r, keyspace.team_reference_sets(team), after, limit, lambda sha: get(r, team, sha))


def users(r: Redis, team: str, sha: str) -> list[str]:
    """The team's unfinished jobs that name the set."""
    out = []
    for raw in r.smembers(keyspace.active_jobs(team)):
        job = jobs_.get(r, raw.decode())
        if job is not None and sha in job.config.get("decontaminate_against", []):
            out.append(job.id)
    return sorted(out)


def delete(r: Redis, artifacts: Artifacts, team: str, sha: str) -> bool:
    """False when there was no such set; raises InUse while unfinished jobs name it."""
    if get(r, team, sha) is None:
        return False
    if named := users(r, team, sha):
        raise InUse(named)
    pipe = r.pipeline()
    pipe.delete(keyspace.reference_set(team, sha))
    pipe.zrem(keyspace.team_reference_sets(team), sha)
    gone = pipe.execute()[0]
    if gone:
        artifacts.delete_reference_set(team, sha)
    return bool(gone)
