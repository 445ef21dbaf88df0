"""The RQ entry point that ends a generation: merge the chunks, export, upload to S3, archive.

A canceled job's partial dataset is exported here too, from whatever its checkpoints hold.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

import structlog

from jobs.method import batch, exports
from jobs.method.llm import Usage
from jobs.method.run import Run
from jobs.runner import queue, retention
from jobs.runner.context import Context, guarded
from jobs.store import batches, events, keyspace

log = structlog.get_logger(__name__)


def finalize(job_id: str, partial: bool = False) -> None:
    """Merge the chunks (if any), export, upload the files and then the manifest.

    `partial`: a canceled job's dataset, from whatever its checkpoints hold."""

    def body(ctx: Context) -> None:
        if ctx.job.state == "running":
            complete(ctx)

    ctx = Context(job_id)
    if not partial and ctx.job.state == "succeeded" and not ctx.job.archived:  # retried after the transition
        ctx.retry(queue.notify, ctx.r, job_id, ctx.settings)  # in case the run ended before it could
        _archive(ctx)
        return
    if not partial:
        guarded(job_id, body)
        return
    try:
        if ctx.job.state == "canceled" and not ctx.job.archived:
            _cancel_batches(ctx)
            complete(ctx, partial=True)
    finally:  # a canceled job's webhook follows its partial dataset, or the failure to make one
        ctx.retry(queue.notify, ctx.r, job_id, ctx.settings)


def complete(ctx: Context, run: Run | None = None, partial: bool = False) -> None:
    """Merge the chunks into the main run (`run`, when still in hand), export, upload, then succeed
    and archive; a complete dataset needs instances for every kept instruction."""
    run = run or ctx.run(None, None)
    cp = run.checkpoint
    chunks = int(ctx.retry(ctx.r.hget, keyspace.job(ctx.job.id), "chunks") or 0)
    for index in range(chunks):
        part = ctx.store(f"chunk{index}").load()
        if part is None:
            continue
        cp.merge(part)
        run.usage.merge(Usage.from_dict(part.usage) if part.usage else Usage())
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
        records = exports.export(run, Path(tmp), partial=partial)
        records["events.jsonl"] = _write_events(ctx, Path(tmp) / "events.jsonl")
        extends = ctx.job.config.get("extends")
        ctx.artifacts.upload_dataset(ctx.job.team, ctx.job.id, Path(tmp), records, partial, extends)
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


def _cancel_batches(ctx: Context) -> None:
    """Batch mode: cancel a cancelled job's open batches (best effort: its dataset follows either way)."""
    checkpoint = ctx.store().load()
    if not checkpoint or not batch.open_batches(checkpoint.batches):
        return
    try:
        endpoint = ctx.settings.profiles[ctx.job.profile].endpoint()
        cancelled = asyncio.run(batch.cancel(endpoint, checkpoint.batches))
        ctx.retry(batches.report, ctx.r, ctx.job.id, checkpoint.batches, ctx.settings.max_job_events)
        log.info("batches_cancelled", batches=cancelled)
    except Exception as e:
        log.warning("batch_cancel_failed", error=str(e)[:300])
