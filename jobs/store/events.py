"""A job's events: state changes, stage starts and ends, retries, progress, warnings, who cancelled.

One capped Redis stream per job (jobs.store.keyspace.job_events), MAX_JOB_EVENTS long: the oldest go first.
Stream ids are the cursor: they only grow, so a reader that resumes after the last id it saw misses
nothing still kept and sees nothing twice. State changes are written by the same Lua step that makes
them (jobs.store.job), so a killed and resumed worker cannot repeat or lose one. The stream is archived with
the dataset (events.jsonl) and removed with the job (jobs.runner.retention).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from redis import Redis

from jobs.store import keyspace

# KEYS: job record, its events; ARGV: max length, the event (JSON). No record: the job was deleted,
# and its events must not come back.
_EMIT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[1], '*', 'e', ARGV[2])
return 1
"""


def emit(r: Redis, job_id: str, kind: str, maxlen: int, **data: Any) -> None:
    event = json.dumps({"type": kind, "at": round(time.time(), 3), **data}, sort_keys=True)
    r.eval(_EMIT, 2, keyspace.job(job_id), keyspace.job_events(job_id), maxlen, event)


def _decode(entries: list[Any]) -> list[dict[str, Any]]:
    return [{"id": sid.decode(), **json.loads(fields[b"e"])} for sid, fields in entries]


def page(
    r: Redis, job_id: str, after: str | None, limit: int, wait_seconds: float = 0
) -> list[dict[str, Any]]:
    """Up to `limit` events after the cursor `after` (oldest first); with `wait_seconds`, wait that long
    for one when there is none yet (long polling)."""
    key = keyspace.job_events(job_id)
    found = _decode(r.xrange(key, f"({after}" if after else "-", "+", count=limit))
    deadline = time.monotonic() + wait_seconds
    while not found and (left := deadline - time.monotonic()) > 0:
        # blocks of at most a second: well inside the connection's socket timeout
        answer = r.xread({key: after or "0-0"}, count=limit, block=max(1, int(min(left, 1.0) * 1000)))
        found = _decode(answer[0][1]) if answer else []
    return found


def every(r: Redis, job_id: str, batch: int = 1000) -> Iterator[dict[str, Any]]:
    after = None
    while found := page(r, job_id, after, batch):
        yield from found
        after = found[-1]["id"]
