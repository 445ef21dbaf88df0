"""RQ entry points: run a generation job, generate one chunk of instances, finalize into S3.

run_generation does stages 1 and 2 itself. Instance generation for more than one chunk of
instructions fans out: one RQ job per chunk (each with its own checkpoint, writing to the job's
decision log) and a finalize job that depends on them all, merges, exports and uploads.

jobs.queue enqueues these (by dotted name) with retries, so each must be safe to run again: it
resumes from its checkpoint.
"""

from __future__ import annotations

import json
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis.exceptions
import structlog
from botocore.exceptions import BotoCoreError, ClientError
from redis import Redis
from rq import get_current_job

from jobs import events, keyspace, queue, retention, retry
from jobs import job as jobs_
from jobs.artifacts import Artifacts
from jobs.checkpoint_store import RedisStore
from jobs.decision_log import JobGone
from jobs.method.checkpoint import Checkpoint
from jobs.method.engine import execute
from jobs.method.llm import EndpointError, Usage
from jobs.method.recipe import GenerationConfig
from jobs.method.run import BudgetReached, Canceled, Run
from jobs.method.seed_tasks import parse_jsonl
from jobs.settings import get_settings
from jobs.worker import PREEMPT_SIGNAL

log = structlog.get_logger(__name__)
_preempted = threading.Event()


class Preempted(Exception):
    """The worker is shutting down; the job committed and asks RQ to run it again elsewhere."""


class Reporter:
    """Writes a run's progress into the job hash, at most twice a second, and its events; best effort.

    Each run of a job (the main one, each chunk) writes its own absolute counters under its `part`
    name, and readers sum them: a resumed run picks up from its checkpoint without double counting.
    The main run reports stage starts and ends; every run reports retries, refused parameters and,
    every PROGRESS_EVENT_SECONDS, its progress (jobs.events).
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
        names = [n for n in jobs_.PROGRESS if n != "stage_total" and (self.main or n != "instructions_kept")]
        fields: dict[str, Any] = {f"p:{self.part}:{n}": int(progress[n]) for n in names}
        for kind in ("prompt", "completion"):  # per stage, for the job's cost by stage
            for stage, n in progress.get(f"{kind}_by_stage", {}).items():
                fields[f"t:{self.part}:{stage}:{kind}"] = int(n)
        if (
            progress.get("dropped", {}) != self.dropped
        ):  # one field a refused parameter, whichever part saw it
            fields.update({f"w:{name}": reason for name, reason in progress["dropped"].items()})
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
            counters = {n: int(progress[n]) for n in jobs_.PROGRESS if n in progress}
            self._emit("progress", part=self.part, **counters)


class Context:
    """What one RQ job works with; Redis calls retried through a restart."""

    def __init__(self, job_id: str):
        self.settings = get_settings()
        self.r = queue.connect(self.settings)
        self.retry = retry.redis_(self.settings.redis_retry_seconds)
        self.artifacts = Artifacts(self.settings, patient=True)
        job = self.retry(jobs_.get, self.r, job_id)
        if job is None:
            raise LookupError(f"no job {job_id}")
        self.job: jobs_.Job = job
        self.current: Run | None = None  # the run in hand, and its reporter
        self.reporter: Reporter | None = None

    def transition(self, to: str, allowed: tuple[str, ...], **fields: Any) -> bool:
        return self.retry(jobs_.transition, self.r, self.job, to, allowed, **fields)

    def update(self, **fields: Any) -> None:
        self.retry(jobs_.update, self.r, self.job.id, **fields)

    def store(self, part: str | None = None) -> RedisStore:
        return RedisStore(self.r, self.job.id, part, self.settings.redis_retry_seconds)

    def run(self, part: str | None, reporter: Reporter | None) -> Run:
        job, settings = self.job, self.settings
        seed_tasks = parse_jsonl(self.artifacts.get_seed_set(job.team, job.seed_set_id))
        profile = settings.profiles[job.profile]
        # the operator's profile says how many requests its endpoint takes at once
        # a stage-level job's instructions ride in its request, beside the generation parameters
        given = job.config.get("instructions")
        fields = {k: v for k, v in job.config.items() if k != "instructions"}
        config = GenerationConfig.from_dict({**fields, "concurrency": profile.concurrency})

        def should_stop() -> bool:
            if _preempted.is_set():
                return True
            try:
                return self.r.hget(keyspace.job(job.id), "cancel_requested") == b"true"
            except redis.exceptions.RedisError:
                return False

        run_id = job.id if part is None else f"{job.id}/{part}"
        me = part or "main"
        cache: dict[str, Any] = {"at": -1.0, "tokens": (0, 0)}

        def spent_elsewhere() -> tuple[int, int]:
            """The other runs' tokens, as they last reported them (read at most once a second)."""
            if time.monotonic() - cache["at"] >= 1.0:
                raw = self.r.hgetall(keyspace.job(job.id))
                totals = [0, 0]
                for name, value in raw.items():
                    key = name.decode().split(":")
                    if len(key) == 3 and key[0] == "p" and key[1] != me and key[2].endswith("_tokens"):
                        totals[key[2] == "completion_tokens"] += int(value)
                cache.update(at=time.monotonic(), tokens=(totals[0], totals[1]))
            return cache["tokens"]

        self.current = Run(
            run_id,
            seed_tasks,
            config,
            profile.endpoint(),
            self.store(part),
            reporter,
            should_stop,
            spent_elsewhere,
            given=given,
        )
        self.reporter = reporter
        return self.current


def _guarded(job_id: str, body: Callable[[Context], None]) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(job_id=job_id)
    _preempted.clear()
    # jobs.worker forwards SIGTERM to the work horse as this signal
    signal.signal(PREEMPT_SIGNAL, lambda signum, frame: _preempted.set())
    ctx = Context(job_id)
    if ctx.job.terminal:
        log.info("job_already_finished", state=ctx.job.state)
        return
    try:
        body(ctx)
    except JobGone:
        log.info("job_deleted_while_running")
    except BudgetReached as e:  # stops like a cancel: the whole job, with a partial dataset
        log.info("job_budget_reached", reason=e.reason)
        if ctx.reporter and ctx.current:  # the status shows the tokens the stop was decided on
            ctx.reporter(ctx.current.progress(), force=True)
        current = get_current_job()
        job = ctx.retry(jobs_.get, ctx.r, ctx.job.id) or ctx.job  # running now: a partial dataset follows
        queue.cancel(ctx.r, job, ctx.settings, reason=e.reason, spare=current.id if current else None)
    except Canceled as e:
        if _preempted.is_set():
            log.info("job_preempted")
            raise Preempted("the worker is shutting down; the job resumes on another one") from e
        log.info("job_stopped_on_request")
    except EndpointError as e:
        log.warning("job_failed", error=str(e))
        if ctx.reporter and ctx.current:  # the retries that came to nothing, as events before the failure
            ctx.reporter(ctx.current.progress(), force=True)
        ctx.transition("failed", ("queued", "running"), error=f"LLM endpoint: {e}")
    except (BotoCoreError, ClientError) as e:  # after S3_RETRY_SECONDS of retries
        log.warning("job_failed", error=str(e)[:300])
        ctx.transition(
            "failed", ("queued", "running"), error=f"object store (S3) unavailable: {str(e)[:200]}"
        )
    except Exception as e:
        log.exception("job_failed")
        ctx.transition(
            "failed", ("queued", "running"), error=f"internal error ({type(e).__name__}); see worker logs"
        )
        raise


def run_generation(job_id: str) -> None:
    _guarded(job_id, _generation)


def _generation(ctx: Context) -> None:
    if not ctx.transition("running", ("queued", "running")):
        return
    if ctx.job.started_at is None:
        ctx.update(started_at=time.time())
        ctx.job.started_at = time.time()
    reporter = Reporter(ctx.r, ctx.job.id, "main")
    run = ctx.run(None, reporter)
    execute(run, until="instances")
    ids = [k["id"] for k in run.checkpoint.instructions]
    size = ctx.settings.instance_chunk_size
    if run.checkpoint.stage != "instances" or len(ids) <= size:
        execute(run, until="export")
        reporter(run.progress(), force=True)
        _finalize(ctx, run)
        return
    # fan out: one RQ job per chunk, then finalize once all have finished
    reporter({**run.progress(), "stage": "instances", "stage_total": len(ids), "stage_done": 0}, force=True)
    chunks = [ids[start : start + size] for start in range(0, len(ids), size)]
    rq_ids = queue.fan_out(ctx.r, ctx.job.id, chunks, ctx.settings)
    ctx.update(rq_ids=[ctx.job.id, *rq_ids], chunks=len(chunks))
    log.info("instances_fanned_out", chunks=len(chunks))


def generate_chunk(job_id: str, index: int, instruction_ids: list[str]) -> None:
    _guarded(job_id, lambda ctx: _chunk(ctx, index, instruction_ids))


def _chunk(ctx: Context, index: int, ids: list[str]) -> None:
    part = f"chunk{index}"
    store = ctx.store(part)
    if store.load() is None:
        main = ctx.store().load()
        assert main is not None, "a chunk runs after stages 1 and 2"
        wanted = set(ids)
        first = Checkpoint(
            stage="instances",
            instructions=[k for k in main.instructions if k["id"] in wanted],
            classification={i: c for i, c in main.classification.items() if i in wanted},
        )
        store.commit(first, [])
    reporter = Reporter(ctx.r, ctx.job.id, part)
    run = ctx.run(part, reporter)
    execute(run, until="export")
    reporter(run.progress(), force=True)


def finalize(job_id: str, partial: bool = False) -> None:
    """Merge the chunks (if any), export, upload the files and then the manifest.

    `partial`: a canceled job's dataset, from whatever its checkpoints hold."""

    def body(ctx: Context) -> None:
        if ctx.job.state == "running":
            _finalize(ctx)

    ctx = Context(job_id)
    if not partial and ctx.job.state == "succeeded" and not ctx.job.archived:  # retried after the transition
        _archive(ctx)
        return
    if not partial:
        _guarded(job_id, body)
        return
    if ctx.job.state == "canceled" and not ctx.job.archived:
        _finalize(ctx, partial=True)


def _finalize(ctx: Context, run: Run | None = None, partial: bool = False) -> None:
    run = run or ctx.run(None, None)
    cp = run.checkpoint
    chunks = int(ctx.retry(ctx.r.hget, keyspace.job(ctx.job.id), "chunks") or 0)
    for index in range(chunks):
        part = ctx.store(f"chunk{index}").load()
        if part is None:
            continue
        cp.instances.update(part.instances)
        for stage, counts in part.counts.items():
            merged = cp.counts.setdefault(stage, {})
            for rule, n in counts.items():
                merged[rule] = merged.get(rule, 0) + n
        usage = Usage.from_dict(part.usage) if part.usage else Usage()
        run.usage.requests.update(usage.requests)
        run.usage.prompt_tokens.update(usage.prompt_tokens)
        run.usage.completion_tokens.update(usage.completion_tokens)
        run.usage.errors.update(usage.errors)
        run.usage.retries += usage.retries
        run.usage.busy_seconds += usage.busy_seconds
        cp.truncated_responses += part.truncated_responses
    missing = [k["id"] for k in cp.instructions if k["id"] not in cp.instances]
    if missing and not partial:
        ctx.transition("failed", ("running",), error=f"{len(missing)} instructions have no instances")
        return
    if not partial:
        cp.stage = "export"
    stop_reason = ctx.retry(ctx.r.hget, keyspace.job(ctx.job.id), "stop_reason")
    if stop_reason:  # a budget stopped the job, in whichever of its runs
        cp.stop_reason = stop_reason.decode()
    run.set_elapsed(time.time() - (ctx.job.started_at or ctx.job.created_at))
    with tempfile.TemporaryDirectory(dir=ctx.settings.work_dir) as tmp:
        records = run.export(Path(tmp), partial=partial)
        records["events.jsonl"] = _write_events(ctx, Path(tmp) / "events.jsonl")
        ctx.artifacts.upload_dataset(ctx.job.team, ctx.job.id, Path(tmp), records, partial)
    if partial:
        ctx.update(dataset=True)
    elif not ctx.transition("succeeded", ("running",), dataset=True, stage="done"):
        return
    log.info("job_finished", partial=partial, records=records)
    _archive(ctx)


def _write_events(ctx: Context, path: Path) -> int:
    """The job's events so far, archived with its dataset."""
    count = 0
    with path.open("w", encoding="utf-8") as f:
        for event in ctx.retry(lambda: list(events.every(ctx.r, ctx.job.id))):
            f.write(json.dumps(event, ensure_ascii=False) + "\n")
            count += 1
    return count


def _archive(ctx: Context) -> None:
    """The dataset is in S3: move the decisions there too, then sweep jobs whose retention ended."""
    moved = ctx.retry(
        retention.archive, ctx.r, ctx.artifacts, ctx.job.team, ctx.job.id, ctx.settings.work_dir
    )
    log.info("decisions_archived", decisions=moved)
    try:
        retention.sweep(ctx.r, ctx.artifacts, ctx.settings)
    except Exception:  # the next finalize sweeps again
        log.exception("sweep_failed")
