"""A run's progress, written into its job's record and events as it goes; best effort."""

from __future__ import annotations

import time
from typing import Any

import redis.exceptions
import structlog
from redis import Redis

from jobs.settings import get_settings
from jobs.store import events, keyspace
from jobs.store import progress as fields_

log = structlog.get_logger(__name__)


class Reporter:
    """Writes a run's progress into the job hash, at most twice a second, and its events; best effort.

    Each run of a job (the main one, each chunk) writes its own absolute counters under its `part`
    name, and readers sum them: a resumed run picks up from its checkpoint without double counting.
    The main run reports stage starts and ends; every run reports retries, refused parameters and,
    every PROGRESS_EVENT_SECONDS, its progress (jobs.store.events), with its rate-limit waits once any.
    """

    def __init__(self, r: Redis, job_id: str, part: str):
        self.r, self.job_id, self.part = r, job_id, part
        self.main = part == "main"
        settings = get_settings()
        self.maxlen, self.every = settings.max_job_events, settings.progress_event_seconds
        # a resumed main run goes on in the stage the job record names: that start was reported
        stage = r.hget(keyspace.job(job_id), "stage") if self.main else None
        self.stage: str | None = stage.decode() if stage else None
        self.last = self.last_event = 0.0
        self.dropped: dict[str, str] = {}
        self.seen: dict[str, Any] | None = None  # errors and refusals already reported as events

    def __call__(self, progress: dict[str, Any], force: bool = False) -> None:
        now = time.monotonic()
        new_stage = progress["stage"] != self.stage
        if not (new_stage or force) and now - self.last < 0.5:
            return
        fields: dict[str, Any] = fields_.fields(self.part, progress, self.main)
        if progress.get("dropped", {}) != self.dropped:
            fields.update(fields_.refusals(progress["dropped"]))
        if self.main and new_stage:
            fields.update(
                stage=progress["stage"], stage_started_at=time.time(), stage_total=progress["stage_total"]
            )
        try:
            self.r.hset(keyspace.job(self.job_id), mapping=fields)
            self._events(progress, new_stage, now)
        except redis.exceptions.RedisError as e:  # progress is advisory; the checkpoint is what counts
            log.warning("progress_not_saved", error=str(e))
            return
        self.last, self.stage = now, progress["stage"]
        self.dropped = dict(progress.get("dropped", {}))

    def _emit(self, kind: str, **data: Any) -> None:
        events.emit(self.r, self.job_id, kind, self.maxlen, **data)

    def _events(self, progress: dict[str, Any], new_stage: bool, now: float) -> None:
        errors, dropped = dict(progress.get("errors", {})), dict(progress.get("dropped", {}))
        if self.seen is None:  # this process's first report: what a resumed run saw before was reported
            self.seen = {"errors": errors, "dropped": dropped}
        retried = {k: n - self.seen["errors"].get(k, 0) for k, n in errors.items()}
        if retried := {k: n for k, n in retried.items() if n > 0}:
            self._emit("retry", part=self.part, attempts=sum(retried.values()), reasons=retried)
        for name in sorted(set(dropped) - set(self.seen["dropped"])):
            self._emit("warning", part=self.part, message=f"parameter {name} dropped: {dropped[name]}")
        self.seen = {"errors": errors, "dropped": dropped}
        if self.main and new_stage:
            if self.stage is not None:
                self._emit("stage_ended", stage=self.stage)
                kept, target = progress["instructions_kept"], progress["instructions_target"]
                if self.stage == "instructions" and kept < target:
                    self._emit(
                        "warning", message=f"stage instructions ended short of its target: {kept} of {target}"
                    )
            if progress["stage"] not in ("export", "done"):
                self._emit("stage_started", stage=progress["stage"], total=progress["stage_total"])
        if now - self.last_event >= self.every:
            self.last_event = now
            counters: dict[str, Any] = {n: int(progress[n]) for n in fields_.COUNTERS if n in progress}
            if progress.get("rate_limit_waits"):  # requests this run held back for a rate limit's reset
                counters.update(
                    rate_limit_waits=progress["rate_limit_waits"],
                    rate_limit_seconds=progress["rate_limit_seconds"],
                )
            self._emit("progress", part=self.part, **counters)
