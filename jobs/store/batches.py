"""Batch mode: the last status seen of each of a job's provider batches, so each change is one event."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis import Redis

from jobs.store import events, keyspace


def report(r: Redis, job_id: str, records: Iterable[Any], maxlen: int, part: str = "main") -> None:
    """An event for each batch whose status changed since it was last reported (a batch record of
    jobs.method.checkpoint)."""
    key = keyspace.job_batches(job_id)
    for record in records:
        if not record["id"] or not record["status"]:
            continue
        if r.hget(key, record["id"]) == record["status"].encode():
            continue
        events.emit(
            r,
            job_id,
            "batch",
            maxlen,
            part=part,
            batch_id=record["id"],
            status=record["status"],
            stage=record["stage"],
            round=record["round"],
            attempt=record["attempt"],
            requests=record["requests"],
        )
        r.hset(key, record["id"], record["status"])
