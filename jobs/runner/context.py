"""What one RQ job of a generation works with, and the guard that turns a run's end into the job's state.

jobs.runner.queue enqueues the entry points (jobs.runner.generation, jobs.runner.finalize) with retries,
so each must be safe to run again: it resumes from its checkpoint.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import redis.exceptions
import structlog
from botocore.exceptions import BotoCoreError, ClientError
from rq import get_current_job

from jobs import retry
from jobs.blobs.artifacts import Artifacts
from jobs.blobs.history import HistoryGone, carried, earlier_instructions, reference_index
from jobs.method.recipe import BEFORE_FIELDS, REQUEST_FIELDS, Execution, Recipe
from jobs.method.run import BudgetReached, Canceled, Run
from jobs.method.seed_tasks import parse_jsonl
from jobs.method.transport import EndpointError, Waiting
from jobs.runner import PREEMPT_SIGNAL, queue
from jobs.runner.reporter import Reporter
from jobs.settings import get_settings
from jobs.store import batches, keyspace, progress
from jobs.store import job as jobs_
from jobs.store.checkpoints import RedisStore
from jobs.store.decision_log import JobGone
from jobs.store.limits import SharedGate

log = structlog.get_logger(__name__)
_preempted = threading.Event()


class Preempted(Exception):
    """The worker is shutting down; the job committed and asks RQ to run it again elsewhere."""


class GaveWay(Exception):
    """A chunk gave its worker to another job's main run that waited for one; committed, it goes back
    on the queue, behind that run, without spending one of its retries."""


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
        self.gives_way = False  # a chunk: it gives its worker to another job's main run waiting for one
        self.gave_way_to: str | None = None
        self._looked = 0.0

    def transition(self, to: str, allowed: tuple[str, ...], **fields: Any) -> bool:
        """Change the job's state; a final one queues the job's webhook (if it has a notify_url)."""
        changed = self.retry(jobs_.transition, self.r, self.job, to, allowed, **fields)
        if changed and to in jobs_.TERMINAL:
            self.retry(queue.notify, self.r, self.job.id, self.settings)
        return changed

    def stopping(self) -> bool:
        """The worker is shutting down, the job was asked to stop, or (a chunk, looked at once a second)
        another job's main run waits for a worker."""
        if _preempted.is_set():
            return True
        try:
            if self.r.hget(keyspace.job(self.job.id), "cancel_requested") == b"true":
                return True
            if self.gives_way and time.monotonic() - self._looked >= 1.0:
                self._looked = time.monotonic()
                self.gave_way_to = queue.give_way(self.r, self.job.id, self.settings)
            return self.gave_way_to is not None
        except redis.exceptions.RedisError:
            return False

    def update(self, **fields: Any) -> None:
        self.retry(jobs_.update, self.r, self.job.id, **fields)

    def gate(self) -> Callable[[], SharedGate]:
        """The job's endpoint's limits, shared with every worker: the gate its run's requests wait at."""
        endpoint, s = self.settings.profiles[self.job.profile].endpoint, self.settings
        return lambda: SharedGate.connect(s.redis_url, endpoint, s.redis_retry_seconds)

    def store(self, part: str | None = None) -> RedisStore:
        s = self.settings
        return RedisStore(self.r, self.job.id, part, s.redis_retry_seconds, s.redis_wait_replicas)

    def run(self, part: str | None, reporter: Reporter | None) -> Run:
        job, settings = self.job, self.settings
        seed_tasks = parse_jsonl(self.artifacts.get_seed_set(job.team, job.seed_set_id))
        profile = settings.profiles[job.profile]
        # a stage-level job's instructions ride in its request, beside the generation parameters
        given = job.config.get("instructions")

        run_id = job.id if part is None else f"{job.id}/{part}"
        me = part or "main"
        cache: dict[str, Any] = {"at": -1.0, "tokens": (0, 0)}

        def spent_elsewhere() -> tuple[int, int]:
            """The other runs' tokens, as they last reported them (read at most once a second)."""
            if time.monotonic() - cache["at"] >= 1.0:
                raw = {k.decode(): v.decode() for k, v in self.r.hgetall(keyspace.job(job.id)).items()}
                cache.update(at=time.monotonic(), tokens=progress.tokens_elsewhere(raw, me))
            return cache["tokens"]

        earlier = job.config.get("dedup_against", []) if part is None else []  # stage 1 only
        extends = job.config.get("extends") if part is None else None
        self.current = Run(
            run_id,
            seed_tasks,
            recipe_of(job),
            profile.keyed(),
            self.store(part),
            reporter,
            self.stopping,
            spent_elsewhere,
            given=given,
            # the operator's profile says how many requests its endpoint takes at once
            execution=Execution(concurrency=profile.concurrency),
            history=lambda: earlier_instructions(self.artifacts, job.team, earlier, settings.work_dir),
            carried=carried(self.artifacts, job.team, extends, settings.work_dir) if extends else None,
            references=lambda: reference_index(
                self.artifacts, job.team, job.config.get("decontaminate_against", []), recipe_of(job)
            ),
            embeddings=profile.keyed_embeddings(),
        )
        self.reporter = reporter
        return self.current


def recipe_of(job: jobs_.Job) -> Recipe:
    """The job's checked recipe; a job queued before records held one has it built from its request
    as given (checked then, as it was when it was submitted)."""
    if job.recipe:
        return Recipe.from_dict(job.recipe)
    return Recipe.build(BEFORE_FIELDS | {k: v for k, v in job.config.items() if k in REQUEST_FIELDS})


def guarded(job_id: str, body: Callable[[Context], None]) -> None:
    """Run `body` for a job that has not finished, turning how it ends into the job's state: a budget
    spent cancels the job (a partial dataset follows), a stop request or a worker's shutdown leaves it
    committed, an endpoint or S3 failure fails it with the reason."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(job_id=job_id)
    _preempted.clear()
    # jobs.runner.worker forwards SIGTERM to the work horse as this signal
    signal.signal(PREEMPT_SIGNAL, lambda signum, frame: _preempted.set())
    ctx = Context(job_id)
    if ctx.job.terminal:
        log.info("job_already_finished", state=ctx.job.state)
        return
    try:
        body(ctx)
    except Waiting as e:  # batch mode: committed; the run resumes once its batches have ended
        _wait(ctx, e)
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
        if ctx.gave_way_to:
            log.info("chunk_gave_way", to=ctx.gave_way_to)
            current = get_current_job()
            if current is not None and current.retries_left is not None:
                current.retries_left += 1  # RQ's retry takes one back: giving way is no failure
            raise GaveWay(f"gave its worker to job {ctx.gave_way_to}") from e
        log.info("job_stopped_on_request")
    except HistoryGone as e:
        log.warning("job_failed", error=str(e))
        ctx.transition("failed", ("queued", "running"), error=str(e))
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


def _wait(ctx: Context, waiting: Waiting) -> None:
    """The run stopped to wait for its batches: report their states, and look again later (the poll:
    jobs.runner.generation.poll)."""
    if ctx.current is not None:
        records = ctx.current.checkpoint.batches
        ctx.retry(batches.report, ctx.r, ctx.job.id, records, ctx.settings.max_job_events)
    after = ctx.settings.batch_poll_seconds if waiting.after is None else waiting.after
    ctx.retry(queue.poll_later, ctx.r, ctx.job.id, after, ctx.settings)
    log.info("job_waiting_for_batches", batches=waiting.batches, poll_in=after)
