"""Room in Redis for new work. With `maxmemory` and `noeviction` (the chart's Redis), a full Redis
refuses writes rather than dropping keys or being killed; before it gets there, the API refuses what
would add work (a job, an extension, a preview, a seed set) with 503 and Retry-After, and starts no job.
Reads, cancels and deletes still go through: they free room."""

from __future__ import annotations

import math
import time

from flask import request

from service.context import services
from service.errors import problem

RETRY_AFTER = "30"
# the POSTs that add work
ADDS_WORK = {"jobs.Jobs", "jobs.JobExtensions", "previews.Previews", "seed-sets.SeedSets"}
_used = {"at": -math.inf, "share": 0.0}  # Redis's used share of maxmemory, read at most once a second


def used_share() -> float:
    """used_memory over maxmemory (0 without a maxmemory, or when Redis evicts keys to make room: it is
    then always near full, and a write never fails for want of room)."""
    now = time.monotonic()
    if now - _used["at"] >= 1.0:
        info = services().redis.info("memory")
        maximum = int(info.get("maxmemory") or 0)
        refuses = info.get("maxmemory_policy", "noeviction") == "noeviction"
        _used.update(at=now, share=int(info["used_memory"]) / maximum if maximum and refuses else 0.0)
    return _used["share"]


def check() -> None:
    """Refuse a request that adds work while Redis is above REDIS_MEMORY_LIMIT of its maxmemory."""
    limit = services().settings.redis_memory_limit
    if request.method != "POST" or request.endpoint not in ADDS_WORK or not limit:
        return
    share = used_share()
    if share >= limit:
        detail = f"the job store (Redis) is {share:.0%} full; try again when running jobs have finished"
        problem(503, detail, Retry_After=RETRY_AFTER)
