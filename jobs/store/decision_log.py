"""A job's decision log in Redis: append-only, with cursor pages that cost O(page) at any depth.

Its keys (jobs.store.keyspace): decision JSON by seq, seq by decision id, the last seq, and one sorted
set of seqs per filter (stage, verdict, rule, stage+verdict and stage+rule). A page is one
ZRANGEBYSCORE (or, unfiltered, one HMGET of consecutive seqs) plus one HMGET of the bodies. A text
query has no index here: it reads the bodies in order, at most SCAN of them a page (see `page`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from redis import Redis

from jobs.method.decisions import SCAN, Decision, Query
from jobs.store import keyspace

# Appends decisions (skipping ids already logged) and the checkpoint delta (skipped when its commit
# number is not past the last one applied), atomically: a commit replayed after it landed changes
# nothing. Refuses (-1) once the job record is gone (the job was deleted).
# KEYS: checkpoint hash, its deltas list, job record, the log's bodies, ids and last seq. ARGV: the
# filter indexes' key prefix, delta JSON ('' for none), commit number, then 7 values a decision: id,
# body and the names of the 5 filters it is in.
_COMMIT = """
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
local added = 0
for i = 4, #ARGV, 7 do
  local id, body = ARGV[i], ARGV[i + 1]
  if redis.call('HEXISTS', KEYS[5], id) == 0 then
    local seq = redis.call('INCR', KEYS[6])
    redis.call('HSET', KEYS[5], id, seq)
    redis.call('HSET', KEYS[4], seq, body)
    for f = i + 2, i + 6 do
      redis.call('ZADD', ARGV[1] .. ARGV[f], seq, seq)
    end
    added = added + 1
  end
end
if ARGV[2] ~= '' and tonumber(redis.call('HGET', KEYS[1], 'commits') or '0') < tonumber(ARGV[3]) then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  redis.call('HSET', KEYS[1], 'commits', ARGV[3])
end
return added
"""


class JobGone(Exception):
    """The job was deleted while it ran: nothing more is written for it."""


class DecisionLog:
    def __init__(self, redis: Redis, job_id: str):
        self.redis = redis
        self.job_id = job_id
        self.bodies_key = keyspace.decisions(job_id)
        self._commit = redis.register_script(_COMMIT)

    def commit(
        self,
        decisions: list[Decision],
        checkpoint_key: str,
        delta: str,
        deltas_key: str = "",
        number: int = 0,
    ) -> int:
        """Append the decisions and checkpoint delta number `number`; returns the decisions added."""
        job_id = self.job_id
        args: list[Any] = [keyspace.decision_indexes(job_id), delta, number]
        for d in decisions:
            args += [d.id, json.dumps(d.to_dict(), ensure_ascii=False)]
            args += keyspace.decision_filters(d.stage, d.verdict, d.rule)
        keys = [checkpoint_key, deltas_key or checkpoint_key, keyspace.job(job_id), self.bodies_key]
        keys += [keyspace.decision_ids(job_id), keyspace.decision_seq(job_id)]
        added = int(self._commit(keys=keys, args=args))
        if added < 0:
            raise JobGone(f"job {job_id} was deleted")
        return added

    def count(self) -> int:
        return int(self.redis.get(keyspace.decision_seq(self.job_id)) or 0)

    def bodies(self) -> Iterator[tuple[int, bytes]]:
        """(seq, stored JSON) for every decision, in log order."""
        last = self.count()
        for start in range(1, last + 1, 1000):
            seqs = list(range(start, min(start + 1000, last + 1)))
            for seq, body in zip(seqs, self.redis.hmget(self.bodies_key, seqs), strict=True):
                if body is not None:
                    yield seq, body

    def __iter__(self) -> Iterator[Decision]:
        for _, body in self.bodies():
            yield Decision.from_dict(json.loads(body))

    def get(self, decision_id: str) -> bytes | None:
        """One decision's JSON, as stored."""
        seq = self.redis.hget(keyspace.decision_ids(self.job_id), decision_id)
        return self.redis.hget(self.bodies_key, seq) if seq is not None else None

    def page(
        self,
        stage: str | None = None,
        verdict: str | None = None,
        rule: str | None = None,
        after: int = 0,
        limit: int = 50,
        text: Query | None = None,
    ) -> tuple[list[bytes], int | None, int | None]:
        """Decisions after seq `after`, in log order, as stored JSON: (items, last seq if more remain,
        total matching). Bodies go out as they are: a page is never decoded and re-encoded."""
        if rule is not None and verdict is not None and verdict != ("kept" if rule == "kept" else "dropped"):
            return [], None, 0
        if text is not None and not text.terms:
            return [], None, 0
        key = keyspace.decision_filter(stage, verdict, rule)
        if text is not None:
            return self._search(key, text, after, limit)
        if not key:
            total = self.count()
            seqs = list(range(after + 1, min(after + limit, total) + 1))
            more = bool(seqs) and seqs[-1] < total
        else:
            index = keyspace.decision_index(self.job_id, key)
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrangebyscore(index, f"({after}", "+inf", start=0, num=limit + 1)
            pipe.zcard(index)
            found, total = pipe.execute()
            seqs = [int(s) for s in found[:limit]]
            more = len(found) > limit
        bodies = self.redis.hmget(self.bodies_key, seqs) if seqs else []
        return [b for b in bodies if b is not None], (seqs[-1] if more else None), int(total)

    def _search(self, key: str, text: Query, after: int, limit: int) -> tuple[list[bytes], int | None, None]:
        """Read the filter's decisions after `after` in order until `limit` match or SCAN are read. The
        cursor is the last match, or the last decision read when SCAN ran out: a page may hold
        fewer than `limit` (none, even) while the log goes on. The total is unknown (None)."""
        index = keyspace.decision_index(self.job_id, key) if key else None
        last = self.count() if index is None else 0  # unfiltered, the seqs run 1 to the last
        found: list[tuple[int, bytes]] = []
        read, at = 0, after
        while read < SCAN:
            batch = min(500, SCAN - read)
            if index is not None:
                seqs = [int(s) for s in self.redis.zrangebyscore(index, f"({at}", "+inf", start=0, num=batch)]
            else:
                seqs = list(range(at + 1, min(at + batch, last) + 1))
            if not seqs:
                return [body for _, body in found], None, None
            for seq, body in zip(seqs, self.redis.hmget(self.bodies_key, seqs), strict=True):
                read += 1
                at = seq
                if body is not None and text.matches(body):
                    found.append((seq, body))
                    if len(found) > limit:
                        return [body for _, body in found[:limit]], found[limit - 1][0], None
        # read SCAN without finishing: go on from the last decision read, if the log has more
        more = self.redis.zcount(index, f"({at}", "+inf") > 0 if index is not None else at < last
        return [body for _, body in found], at if more else None, None


@dataclass(frozen=True)
class Cursor:
    """Opaque to callers: the last seq of the previous page."""

    seq: int

    def encode(self) -> str:
        return f"d{self.seq:x}"

    @classmethod
    def decode(cls, text: str | None) -> Cursor:
        """`d` and the seq in hex (the API's schema checks the form)."""
        if not text:
            return cls(0)
        if not text.startswith("d") or not all(c in "0123456789abcdef" for c in text[1:]) or len(text) < 2:
            raise ValueError("not a decision cursor")
        return cls(int(text[1:], 16))
