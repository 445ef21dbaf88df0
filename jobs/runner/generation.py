"""RQ entry points of a generation: the main run, a helper of it, one chunk of instances, and a batch-mode
job's poll.

run_generation does stages 1 and 2 itself, its requests answered by the helpers it asks for
(help_run, jobs.runner.helpers) as well as by its own worker. Instance generation for more than one chunk of
instructions fans out: one RQ job per chunk (each with its own checkpoint, writing to the job's
decision log) and a finalize job (jobs.runner.finalize) that depends on them all.
"""

from __future__ import annotations

import asyncio
import math
import time

import structlog

from jobs.method import transport
from jobs.method.checkpoint import Checkpoint
from jobs.method.engine import execute
from jobs.runner import helpers, queue
from jobs.runner.context import Context, guarded
from jobs.runner.finalize import complete
from jobs.runner.reporter import Reporter
from jobs.store import batches

log = structlog.get_logger(__name__)
MIN_CHUNK = 10


def run_generation(job_id: str) -> None:
    guarded(job_id, _generation)


def _generation(ctx: Context) -> None:
    if not ctx.transition("running", ("queued", "running")):
        return
    if ctx.job.started_at is None:
        ctx.update(started_at=time.time())
        ctx.job.started_at = time.time()
    reporter = Reporter(ctx.r, ctx.job.id, "main")
    run = ctx.run(None, reporter)
    execute(run, until="instances", gate=ctx.gate(), board=helpers.board(ctx))
    # an extension's earlier instructions have their instances already
    ids = [k["id"] for k in run.checkpoint.instructions if k["id"] not in run.checkpoint.instances]
    size = ctx.settings.instance_chunk_size
    # in batch mode the instances are one batch: fanning out would only split it
    if run.checkpoint.stage != "instances" or len(ids) <= size or run.endpoint.mode == "batch":
        execute(run, until="export", gate=ctx.gate(), board=helpers.board(ctx))
        reporter(run.progress(), force=True)
        complete(ctx, run)
        return
    # fan out: one RQ job per chunk, then finalize once all have finished
    reporter({**run.progress(), "stage": "instances", "stage_total": len(ids), "stage_done": 0}, force=True)
    size = chunk_size(len(ids), ctx.settings.instance_chunk_size, ctx.settings.spread_workers)
    chunks = [ids[start : start + size] for start in range(0, len(ids), size)]
    # each chunk's first checkpoint from the one in hand: a chunk that had to load the main checkpoint
    # (52K instructions) would leave the endpoint idle while every worker starts its next chunk
    for index, first in enumerate(_firsts(run.checkpoint, chunks)):
        store = ctx.store(f"chunk{index}")
        if not store.exists():  # a re-run of a main run that fanned out: its chunks may have gone on
            store.commit(first, [])
    # the main checkpoint's deltas folded now, while the chunks' checkpoints are small: left to finalize,
    # they and their snapshot (52K instructions each) met every chunk's instances in Redis
    run.commit()
    ctx.store().fold(run.checkpoint)
    rq_ids = queue.fan_out(ctx.r, ctx.job, chunks, ctx.settings)
    ctx.update(rq_ids=[ctx.job.id, *rq_ids], chunks=len(chunks))
    log.info("instances_fanned_out", chunks=len(chunks))


def chunk_size(instructions: int, most: int, workers: int) -> int:
    """Instructions a chunk: at most INSTANCE_CHUNK_SIZE, and few enough that SPREAD_WORKERS workers get
    two chunks each (a job of 500 on 8 workers: 16 chunks of 32, two rounds of equal chunks, where 10
    of 50 would leave 6 workers idle in the second), but never under MIN_CHUNK."""
    return min(most, max(MIN_CHUNK, math.ceil(instructions / (2 * workers))))


def help_run(job_id: str, helper: str) -> None:
    """A helper's trouble is not the job's: what it held goes back on the board when its leases run out."""
    try:
        ctx = Context(job_id)
        if not ctx.job.terminal:
            helpers.serve(ctx, helper)
    except Exception:
        log.exception("helper_failed")


def generate_chunk(job_id: str, index: int, instruction_ids: list[str]) -> None:
    guarded(job_id, lambda ctx: _chunk(ctx, index, instruction_ids))


def _chunk(ctx: Context, index: int, ids: list[str]) -> None:
    ctx.gives_way = True  # another team's job starts within seconds while a big one's chunks run
    part = f"chunk{index}"
    store = ctx.store(part)
    if not store.exists():  # queued by a main run that did not write its chunks' checkpoints
        main = ctx.store().load()
        assert main is not None, "a chunk runs after stages 1 and 2"
        store.commit(_firsts(main, [ids])[0], [])
    reporter = Reporter(ctx.r, ctx.job.id, part)
    run = ctx.run(part, reporter)
    execute(run, until="export", gate=ctx.gate())
    reporter(run.progress(), force=True)


def _firsts(main: Checkpoint, chunks: list[list[str]]) -> list[Checkpoint]:
    """Each chunk's checkpoint before it starts: its instructions and their labels, in one pass over the
    main checkpoint (a 52K job in chunks of 50 has a thousand of them)."""
    chunk_of = {i: n for n, ids in enumerate(chunks) for i in ids}
    firsts = [Checkpoint(stage="instances") for _ in chunks]
    for kept in main.instructions:
        if (n := chunk_of.get(kept["id"])) is not None:
            firsts[n].instructions.append(kept)
            if kept["id"] in main.classification:
                firsts[n].classification[kept["id"]] = main.classification[kept["id"]]
    return firsts


def poll(job_id: str) -> None:
    """Batch mode: a run waiting on the provider's batches (jobs.method.transport.Waiting) holds no worker.
    Its RQ job ended, committed, after scheduling this: a look at the open batches (a few GETs, not the
    run) that schedules the next one, or queues the main RQ job again once they have all ended, which
    resumes the run from its checkpoint."""
    ctx = Context(job_id)
    if ctx.job.terminal or queue.main_pending(ctx.r, job_id):  # ended, or the run is on its way
        return
    checkpoint = ctx.store().load()
    records = checkpoint.batches if checkpoint else []
    try:
        endpoint = ctx.settings.profiles[ctx.job.profile].keyed()
        if transport.open_batches(records) and all(r["id"] for r in records):
            asyncio.run(transport.refresh(endpoint, records))
            ctx.retry(batches.report, ctx.r, job_id, records, ctx.settings.max_job_events)
    except Exception as e:  # the provider's trouble is no reason to stop looking
        log.warning("batch_poll_failed", error=str(e)[:300])
    if transport.open_batches(records):
        ctx.retry(queue.poll_later, ctx.r, job_id, ctx.settings.batch_poll_seconds, ctx.settings)
    else:
        log.info("batches_ended_resuming")
        ctx.retry(queue.enqueue, ctx.r, ctx.job, ctx.settings)
