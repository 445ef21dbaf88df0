"""The Stage protocol: what the engine (jobs.method.engine) iterates over.

Each stage module (bootstrap, classification, instances) is one: a run whose checkpoint stands at the
module's STAGE goes through its run_stage, which sends the stage's requests through `llm`, records its
decisions on the run and commits as it goes. Another way of sending a stage's requests (a provider's
batch API, say) is another LLM, not another stage.
"""

from __future__ import annotations

from typing import Protocol

from jobs.method.llm import LLM
from jobs.method.run import Run


class Stage(Protocol):
    STAGE: str  # the checkpoint stage it runs in (jobs.method.run.STAGE_ORDER)

    async def run_stage(self, run: Run, llm: LLM) -> None: ...
