"""A job's decision log in Redis: append-only, with cursor pages that cost O(page) at any depth.

Layout under the job's key (jobs.store.keyspace): `:dec` (hash seq -> decision JSON), `:decid` (hash
decision id -> seq), `:seq` (last seq), and one sorted set per filter (`:dx:<filter>`, seq as
member and score), for stage, verdict, rule, stage+verdict and stage+rule. A page is one
ZRANGEBYSCORE (or, unfiltered, one HMGET of consecutive seqs) plus one HMGET of the bodies.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from redis import Redis

from jobs.method.decisions import Decision
from jobs.store import keyspace

# Appends decisions (skipping ids already logged) and the checkpoint delta (skipped when its commit
# number is not past the last one applied), atomically: a commit replayed after it landed changes
# nothing. Refuses (-1) once the job record is gone (the job was deleted).
# KEYS: checkpoint hash, its deltas list, job record. ARGV: prefix, delta JSON ('' for none), commit
# number, then 5 values a decision.
_COMMIT = """
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
local prefix = ARGV[1]
local added = 0
for i = 4, #ARGV, 5 do
  local id, body, stage, verdict, rule = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if redis.call('HEXISTS', prefix .. ':decid', id) == 0 then
    local seq = redis.call('INCR', prefix .. ':seq')
    redis.call('HSET', prefix .. ':decid', id, seq)
    redis.call('HSET', prefix .. ':dec', seq, body)
    for _, f in ipairs({'s=' .. stage, 'v=' .. verdict, 'r=' .. rule, 's=' .. stage .. '|v=' .. verdict,
                        's=' .. stage .. '|r=' .. rule}) do
      redis.call('ZADD', prefix .. ':dx:' .. f, seq, seq)
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
        self.prefix = keyspace.job(job_id)
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
        args: list[Any] = [self.prefix, delta, number]
        for d in decisions:
            args += [d.id, json.dumps(d.to_dict(), ensure_ascii=False), d.stage, d.verdict, d.rule]
        added = int(self._commit(keys=[checkpoint_key, deltas_key or checkpoint_key, self.prefix], args=args))
        if added < 0:
            raise JobGone(f"job {self.prefix} was deleted")
        return added

    def count(self) -> int:
        return int(self.redis.get(f"{self.prefix}:seq") or 0)

    def bodies(self) -> Iterator[tuple[int, bytes]]:
        """(seq, stored JSON) for every decision, in log order."""
        last = self.count()
        for start in range(1, last + 1, 1000):
            seqs = list(range(start, min(start + 1000, last + 1)))
            for seq, body in zip(seqs, self.redis.hmget(f"{self.prefix}:dec", seqs), strict=True):
                if body is not None:
                    yield seq, body

    def __iter__(self) -> Iterator[Decision]:
        for _, body in self.bodies():
            yield Decision.from_dict(json.loads(body))

    def get(self, decision_id: str) -> bytes | None:
        """One decision's JSON, as stored."""
        seq = self.redis.hget(f"{self.prefix}:decid", decision_id)
        return self.redis.hget(f"{self.prefix}:dec", seq) if seq is not None else None

    def page(
        self,
        stage: str | None = None,
        verdict: str | None = None,
        rule: str | None = None,
        after: int = 0,
        limit: int = 50,
    ) -> tuple[list[bytes], int | None, int]:
        """Decisions after seq `after`, in log order, as stored JSON: (items, last seq if more remain,
        total matching). Bodies go out as they are: a page is never decoded and re-encoded."""
        if rule is not None and verdict is not None and verdict != ("kept" if rule == "kept" else "dropped"):
            return [], None, 0
        parts = [f"s={stage}" if stage else "", f"r={rule}" if rule else (f"v={verdict}" if verdict else "")]
        key = "|".join(p for p in parts if p)
        if not key:
            total = self.count()
            seqs = list(range(after + 1, min(after + limit, total) + 1))
            more = bool(seqs) and seqs[-1] < total
        else:
            index = f"{self.prefix}:dx:{key}"
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrangebyscore(index, f"({after}", "+inf", start=0, num=limit + 1)
            pipe.zcard(index)
            found, total = pipe.execute()
            seqs = [int(s) for s in found[:limit]]
            more = len(found) > limit
        bodies = self.redis.hmget(f"{self.prefix}:dec", seqs) if seqs else []
        return [b for b in bodies if b is not None], (seqs[-1] if more else None), int(total)


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
