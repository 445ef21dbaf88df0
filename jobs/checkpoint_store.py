"""The service's checkpoint store: a run's checkpoint in Redis beside the job's decision log."""

from __future__ import annotations

import json
from collections.abc import Iterator

from redis import Redis

from jobs import keyspace, retry
from jobs.decision_log import DecisionLog
from jobs.method.checkpoint import Checkpoint
from jobs.method.decisions import Decision


class RedisStore:
    """The checkpoint in Redis beside the job's decision log, committed by one atomic script.

    `part` names a separate checkpoint (an instance-generation chunk) that shares the job's log.
    """

    def __init__(self, redis: Redis, job_id: str, part: str | None = None, retry_seconds: float = 60.0):
        self.redis = redis
        self.log = DecisionLog(redis, job_id)
        self.key = keyspace.checkpoint(job_id, part)
        # A Redis restart must not cost the run: the commit script is idempotent, so retry it.
        self._retry = retry.redis_(retry_seconds)

    def load(self) -> Checkpoint | None:
        raw = self._retry(self.redis.get, self.key)
        return Checkpoint.from_dict(json.loads(raw)) if raw else None

    def commit(self, checkpoint: Checkpoint, decisions: list[Decision]) -> None:
        body = json.dumps(checkpoint.to_dict(), ensure_ascii=False)
        self._retry(self.log.commit, decisions, self.key, body)

    def decisions(self) -> Iterator[Decision]:
        return iter(self.log)
