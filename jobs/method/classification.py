"""Stage 2, classification identification: the few-shot yes/no prompt for each kept instruction."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import replace

from jobs.method import chat, parsing
from jobs.method.llm import LLM, Completion
from jobs.method.run import Run
from jobs.method.window import ordered

STAGE = "classification"


async def classify(run: Run, llm: LLM) -> None:
    cfg, cp = run.config, run.checkpoint
    todo = [kept for kept in cp.instructions if kept["id"] not in cp.classification]
    decoding = cfg.decoding[STAGE]
    schema = chat.schema(STAGE) if llm.structured else None
    if schema:  # room for {"answer": "Yes"}
        decoding = replace(decoding, max_tokens=max(decoding.max_tokens, 16))
    run.start_stage(len(cp.instructions))
    run.stage_done = len(cp.instructions) - len(todo)

    def build(i: int) -> Awaitable[list[Completion]] | None:
        if i >= len(todo):
            return None
        kept = todo[i]
        prompt = run.prompts.classification(kept["text"])
        return llm.complete(prompt, decoding, cfg.derived_seed(STAGE, kept["id"]), STAGE, schema, n=1)

    def handle(i: int, completions: list[Completion]) -> bool:
        raw = completions[0].text
        label = chat.classification(raw, True) if schema else parsing.classification(raw)
        cp.classification[todo[i]["id"]] = {"label": label, "raw": raw}
        run.count("classification", label)
        run.handled()
        return False

    await ordered(0, build, handle, cfg.concurrency, lag=4 * max(cfg.concurrency, cfg.window))


def is_classification(run: Run, instruction_id: str) -> bool:
    """An unparseable answer counts as not classification, as in the reference."""
    return run.checkpoint.classification[instruction_id]["label"] == "yes"
