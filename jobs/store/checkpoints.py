"""The service's checkpoint store: a run's checkpoint in Redis beside the job's decision log.

Per checkpoint, a hash (snapshot JSON and the number of the last commit applied) and a list of the
deltas committed since the snapshot (jobs.method.checkpoint explains deltas). A commit is one script
that appends the decisions and the delta; loading folds the deltas into a new snapshot.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import structlog
from redis import Redis

from jobs import retry
from jobs.method.checkpoint import Checkpoint, replay
from jobs.method.decisions import Decision
from jobs.store import keyspace
from jobs.store.decision_log import DecisionLog

log = structlog.get_logger(__name__)
WAIT_MS = 1000  # how long a commit waits for its replicas before going on, with a warning

# Replace the snapshot and drop the deltas it absorbed, in one step. KEYS: hash, deltas list.
# ARGV: snapshot JSON, how many deltas (from the head of the list) it includes.
_COMPACT = """
redis.call('HSET', KEYS[1], 'snapshot', ARGV[1])
redis.call('LTRIM', KEYS[2], tonumber(ARGV[2]), -1)
"""


class RedisStore:
    """The checkpoint in Redis beside the job's decision log, committed by one atomic script.

    `part` names a separate checkpoint (an instance-generation chunk) that shares the job's log.
    """

    def __init__(
        self,
        redis: Redis,
        job_id: str,
        part: str | None = None,
        retry_seconds: float = 60.0,
        replicas: int = 0,
    ):
        """`replicas`: a commit waits until this many replicas have it (WAIT, at most a second), so that
        a failover to one of them loses no commit the run went on from (REDIS_WAIT_REPLICAS)."""
        self.redis = redis
        self.replicas = replicas
        self.log = DecisionLog(redis, job_id)
        self.key = keyspace.checkpoint(job_id, part)
        self.deltas_key = keyspace.checkpoint_deltas(job_id, part)
        self._compact = redis.register_script(_COMPACT)
        # A Redis restart must not cost the run: the commit script is idempotent, so retry it.
        self._retry = retry.redis_(retry_seconds)

    def load(self) -> Checkpoint | None:
        return self._retry(self._load)

    def exists(self) -> bool:
        return bool(self._retry(self.redis.exists, self.key, self.deltas_key))

    def _load(self) -> Checkpoint | None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hget(self.key, "snapshot")
        pipe.lrange(self.deltas_key, 0, -1)
        snapshot, deltas = pipe.execute()
        if snapshot is None and not deltas:
            return None
        checkpoint = Checkpoint.from_dict(json.loads(snapshot)) if snapshot else Checkpoint()
        checkpoint = replay(checkpoint, [json.loads(d) for d in deltas])
        if deltas:
            body = json.dumps(checkpoint.to_dict(), ensure_ascii=False)
            self._compact(keys=[self.key, self.deltas_key], args=[body, len(deltas)])
        return checkpoint

    def fold(self, checkpoint: Checkpoint) -> None:
        """Make `checkpoint`, the run's own with every entry committed, the snapshot, and drop the deltas
        it includes: a load's compaction, without reading them back."""
        body = json.dumps(checkpoint.to_dict(), ensure_ascii=False)
        count = self._retry(self.redis.llen, self.deltas_key)
        self._retry(self._compact, keys=[self.key, self.deltas_key], args=[body, count])

    def commit(self, checkpoint: Checkpoint, decisions: list[Decision]) -> None:
        number = checkpoint.commits + 1
        body = json.dumps(checkpoint.delta(number), ensure_ascii=False)
        self._retry(self.log.commit, decisions, self.key, body, self.deltas_key, number)
        if self.replicas and self._retry(self.redis.wait, self.replicas, WAIT_MS) < self.replicas:
            log.warning("commit_not_replicated", replicas=self.replicas, commit=number)
        checkpoint.committed(number)

    def decisions(self) -> Iterator[Decision]:
        return iter(self.log)
