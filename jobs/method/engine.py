"""The engine: the stages in order over one run's checkpoint, resumable at any commit."""

from __future__ import annotations

import asyncio

import structlog

from jobs.method import bootstrap, classification, instances
from jobs.method.batch import BatchLLM
from jobs.method.checkpoint import Checkpoint
from jobs.method.llm import LLM
from jobs.method.run import STAGE_ORDER, Run
from jobs.method.stage import Stage

log = structlog.get_logger(__name__)

STAGES: tuple[Stage, ...] = (bootstrap, classification, instances)


async def _stages(run: Run, until: str) -> None:
    cp = run.checkpoint
    llm = (
        BatchLLM(run.endpoint, run.usage, run.run_id, cp.batches, cp.batch_totals, run.commit)
        if run.endpoint.mode == "batch"
        else LLM(run.endpoint, run.execution.concurrency, run.usage)
    )
    try:
        for stage in STAGES:
            at = STAGE_ORDER.index(stage.STAGE)
            if run.checkpoint.stage == stage.STAGE and at < STAGE_ORDER.index(until):
                await stage.run_stage(run, llm)
                run.advance(STAGE_ORDER[at + 1])
    finally:
        await llm.close()


def execute(run: Run, until: str = "export") -> Checkpoint:
    """Run the LLM stages up to (not including) `until`, resuming from the checkpoint. In batch mode it
    raises jobs.method.batch.Waiting while the provider has the run's requests: call it again later."""
    log.info("run_start", run_id=run.run_id, stage=run.checkpoint.stage)
    asyncio.run(_stages(run, until))
    return run.checkpoint
