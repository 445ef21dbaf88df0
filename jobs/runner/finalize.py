"""The RQ entry point that ends a generation: merge the chunks, export, upload to S3, archive.

A canceled job's partial dataset is exported here too, from whatever its checkpoints hold.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

from jobs.blobs import hub
from jobs.method import transport
from jobs.method.outputs import exports
from jobs.method.run import Run
from jobs.runner import queue, retention
from jobs.runner.context import Context, guarded
from jobs.runner.reporter import Reporter
from jobs.store import batches, events, keyspace

log = structlog.get_logger(__name__)
# How long a canceled batch-mode job waits for the provider to end its batches (OpenAI's cancelling
# takes up to 10 minutes) before its partial dataset goes out without what they answered.
CANCEL_WAIT_SECONDS = 24 * 3600


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
            settled = _settle_batches(ctx)
            if settled is None:  # its batches are still cancelling; the webhook follows the dataset
                ctx.retry(queue.finalize_later, ctx.r, job_id, ctx.settings.batch_poll_seconds, ctx.settings)
                return
            run = ctx.run(None, None)
            if settled:  # the job's tokens and cost with what its batches answered
                Reporter(ctx.r, job_id, "main")(run.progress(), force=True)
            complete(ctx, run, partial=True)
    except BaseException:
        ctx.retry(queue.notify, ctx.r, job_id, ctx.settings)
        raise
    ctx.retry(queue.notify, ctx.r, job_id, ctx.settings)  # after its partial dataset


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
        run.usage.merge(transport.Usage.from_dict(part.usage) if part.usage else transport.Usage())
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
        if not partial and (target := ctx.job.config.get("push_to_hub")):
            _push(ctx, Path(tmp), target)
    if partial:
        ctx.update(dataset=True)
    elif not ctx.transition("succeeded", ("running",), dataset=True, stage="done"):
        return
    log.info("job_finished", partial=partial, records=records)
    _archive(ctx)


def _push(ctx: Context, folder: Path, target: dict[str, Any]) -> None:
    """The dataset to the job's Hub repository; a failure is the job's warning, not its end."""
    settings, repo_id = ctx.settings, target["repo_id"]
    token = os.environ.get(settings.hub_token_env or "", "")
    try:
        if not token:
            raise hub.HubError(f"no Hub token in ${settings.hub_token_env}")
        message = f"selfinstruct job {ctx.job.id}"
        pushed = hub.push(folder, repo_id, target.get("private", True), token, settings.hub_endpoint, message)
    except hub.HubError as e:
        log.warning("hub_push_failed", repo_id=repo_id, error=str(e))
        ctx.retry(
            events.emit, ctx.r, ctx.job.id, "hub", settings.max_job_events, repo_id=repo_id, error=str(e)
        )
        warning = f"the dataset was not pushed to {repo_id}: {e}"
        ctx.retry(events.emit, ctx.r, ctx.job.id, "warning", settings.max_job_events, message=warning)
        return
    log.info("hub_pushed", **pushed)
    ctx.retry(events.emit, ctx.r, ctx.job.id, "hub", settings.max_job_events, **pushed)


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


def _settle_batches(ctx: Context) -> bool | None:
    """Batch mode: cancel a canceled job's open batches, follow them until the provider says each has
    ended, then count what they answered before they stopped (the provider bills it), so the partial
    dataset's stats and the job's cost hold it. None: some are still cancelling, look again later;
    else whether anything was counted. Best effort: the provider's trouble, or a day without an end,
    does not hold the dataset back."""
    store = ctx.store()
    checkpoint = store.load()
    if not checkpoint or all(r["counted"] or not r["id"] for r in checkpoint.batches):
        return False
    records = checkpoint.batches
    endpoint = ctx.settings.profiles[ctx.job.profile].keyed()
    try:
        cancelled = asyncio.run(transport.cancel(endpoint, records))
        if cancelled:
            log.info("batches_cancelled", batches=cancelled)
        ctx.retry(batches.report, ctx.r, ctx.job.id, records, ctx.settings.max_job_events)
        waited = time.time() - (ctx.job.finished_at or time.time())
        if transport.open_batches(records) and waited < CANCEL_WAIT_SECONDS:
            store.commit(checkpoint, [])
            return None
        usage = transport.Usage.from_dict(checkpoint.usage) if checkpoint.usage else transport.Usage()

        def commit() -> None:
            checkpoint.usage = usage.to_dict()
            store.commit(checkpoint, [])

        book = transport.BatchBook(ctx.job.id, records, checkpoint.batch_totals, commit)
        asyncio.run(transport.settle(endpoint, usage, book))
        log.info("batches_settled", requests=sum(usage.requests.values()))
        return True
    except Exception as e:
        log.warning("batch_cancel_failed", error=str(e)[:300])
        return False
