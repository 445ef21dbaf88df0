"""The engine: the stages in order over one run's checkpoint, resumable at any commit."""

from __future__ import annotations

import asyncio

import structlog

from jobs.method.bootstrap import bootstrap
from jobs.method.checkpoint import Checkpoint
from jobs.method.classification import classify
from jobs.method.instances import generate_instances
from jobs.method.llm import LLM
from jobs.method.run import STAGE_ORDER, Run

log = structlog.get_logger(__name__)


async def _stages(run: Run, until: str) -> None:
    llm = LLM(run.endpoint, run.config.concurrency, run.usage)
    steps = (("instructions", bootstrap), ("classification", classify), ("instances", generate_instances))
    try:
        for stage, step in steps:
            if run.checkpoint.stage == stage and STAGE_ORDER.index(stage) < STAGE_ORDER.index(until):
                await step(run, llm)
                run.advance(STAGE_ORDER[STAGE_ORDER.index(stage) + 1])
    finally:
        await llm.close()


def execute(run: Run, until: str = "export") -> Checkpoint:
    """Run the LLM stages up to (not including) `until`, resuming from the checkpoint."""
    log.info("run_start", run_id=run.run_id, stage=run.checkpoint.stage)
    asyncio.run(_stages(run, until))
    return run.checkpoint
