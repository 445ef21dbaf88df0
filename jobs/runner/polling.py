"""Batch mode on RQ: a run waiting on the provider's batches (jobs.method.batch.Waiting) holds no worker.
The RQ job that ran it ends, committed, after scheduling a poll; the poll looks at the open batches
(a few GETs, not the run) and schedules the next one, or queues the main RQ job again once they have
all ended, which resumes the run from its checkpoint."""

from __future__ import annotations

import asyncio

import structlog

from jobs.method import batch
from jobs.method.batch import Waiting
from jobs.runner import queue
from jobs.runner.context import Context
from jobs.store import batches

log = structlog.get_logger(__name__)


def wait(ctx: Context, waiting: Waiting) -> None:
    """The run stopped to wait for its batches: report their states, and look again later."""
    run = ctx.current
    if run is not None:
        ctx.retry(batches.report, ctx.r, ctx.job.id, run.checkpoint.batches, ctx.settings.max_job_events)
    after = ctx.settings.batch_poll_seconds if waiting.after is None else waiting.after
    ctx.retry(queue.poll_later, ctx.r, ctx.job.id, after, ctx.settings)
    log.info("job_waiting_for_batches", batches=waiting.batches, poll_in=after)


def poll(job_id: str) -> None:
    ctx = Context(job_id)
    if ctx.job.terminal or queue.main_pending(ctx.r, job_id):  # ended, or the run is on its way
        return
    checkpoint = ctx.store().load()
    records = checkpoint.batches if checkpoint else []
    try:
        endpoint = ctx.settings.profiles[ctx.job.profile].endpoint()
        if batch.open_batches(records) and all(r["id"] for r in records):
            asyncio.run(batch.refresh(endpoint, records))
            ctx.retry(batches.report, ctx.r, job_id, records, ctx.settings.max_job_events)
    except Exception as e:  # the provider's trouble is no reason to stop looking
        log.warning("batch_poll_failed", error=str(e)[:300])
    if batch.open_batches(records):
        ctx.retry(queue.poll_later, ctx.r, job_id, ctx.settings.batch_poll_seconds, ctx.settings)
    else:
        log.info("batches_ended_resuming")
        ctx.retry(queue.enqueue, ctx.r, ctx.job, ctx.settings)


def cancel(ctx: Context) -> None:
    """Cancel a cancelled job's open batches (best effort: its dataset follows either way)."""
    checkpoint = ctx.store().load()
    if not checkpoint or not batch.open_batches(checkpoint.batches):
        return
    try:
        endpoint = ctx.settings.profiles[ctx.job.profile].endpoint()
        cancelled = asyncio.run(batch.cancel(endpoint, checkpoint.batches))
        asyncio.run(batch.refresh(endpoint, checkpoint.batches))
        ctx.retry(batches.report, ctx.r, ctx.job.id, checkpoint.batches, ctx.settings.max_job_events)
        log.info("batches_cancelled", batches=cancelled)
    except Exception as e:
        log.warning("batch_cancel_failed", error=str(e)[:300])
