"""The engine: the stages in order over one run's checkpoint, resumable at any commit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

import structlog

from jobs.method import transport
from jobs.method.checkpoint import Checkpoint
from jobs.method.run import STAGE_ORDER, Run
from jobs.method.stages import bootstrap, classification, instances

log = structlog.get_logger(__name__)


class Stage(Protocol):
    """What the engine iterates over: each stage module (jobs.method.stages) is one. A run whose
    checkpoint stands at the module's STAGE goes through its run_stage, which sends the stage's requests
    through `llm`, records its decisions on the run and commits as it goes. Another way of sending a
    stage's requests (a provider's batch API, say) is another transport, not another stage."""

    STAGE: str  # the checkpoint stage it runs in (jobs.method.run.STAGE_ORDER)

    async def run_stage(self, run: Run, llm: transport.LLM) -> None: ...


STAGES: tuple[Stage, ...] = (bootstrap, classification, instances)


# Makes the gate a run's requests wait at, inside the run's event loop (None: no shared limits).
GateFactory = Callable[[], transport.Gate]
# Makes the board a run's requests are spread through, inside its event loop (None: not spread).
BoardFactory = Callable[[], transport.Board]


async def _stages(run: Run, until: str, gate: GateFactory | None, board: BoardFactory | None) -> None:
    cp = run.checkpoint
    book = transport.BatchBook(run.run_id, cp.batches, cp.batch_totals, run.commit)
    shared = gate() if gate else None
    spread = board() if board and run.endpoint.mode == "online" else None
    llm = transport.connect(run.endpoint, run.execution.concurrency, run.usage, book, shared, spread)
    finished = False
    try:
        for stage in STAGES:
            at = STAGE_ORDER.index(stage.STAGE)
            if run.checkpoint.stage == stage.STAGE and at < STAGE_ORDER.index(until):
                await stage.run_stage(run, llm)
                run.advance(STAGE_ORDER[at + 1])
        finished = True
    finally:
        await llm.close(finished)
        if shared is not None:
            await shared.close()


def execute(
    run: Run, until: str = "export", gate: GateFactory | None = None, board: BoardFactory | None = None
) -> Checkpoint:
    """Run the LLM stages up to (not including) `until`, resuming from the checkpoint, each request
    waiting its turn at the gate `gate` makes (limits shared with other runs) and, online, answered
    by every worker that helps through the board `board` makes. In batch mode it raises
    jobs.method.transport.Waiting while the provider has the run's requests: call it again later."""
    log.info("run_start", run_id=run.run_id, stage=run.checkpoint.stage)
    asyncio.run(_stages(run, until, gate, board))
    return run.checkpoint
