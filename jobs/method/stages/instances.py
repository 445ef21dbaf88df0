"""Stage 3, instance generation and filtering: output-first for classification, input-first otherwise;
then, when the recipe asks for the LLM judge, the judge's score for every instance the filters kept.

With the judge the stage goes in two passes: generation puts what the filters kept in the checkpoint's
`unjudged`, and the judge pass decides them. A batch-mode run sends each pass as its own batch round,
the first one's answers committed before the second goes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any

from jobs.method.decisions import Decision
from jobs.method.prompts import chat, judge, parsing
from jobs.method.recipe import Decoding
from jobs.method.run import Run
from jobs.method.stages.classification import is_classification
from jobs.method.stages.filters import contamination_check, filter_instances
from jobs.method.transport import LLM, Completion, ordered

STAGE = "instances"
# How a second answer is sampled (benchmarks/instances.py measured it against other ways)
AGAIN = {"temperature": 0.7, "top_p": 0.9}


async def run_stage(run: Run, llm: LLM, instruction_ids: list[str] | None = None) -> None:
    """Generate and filter instances for every kept instruction (or the given ones) not done yet."""
    cfg, cp = run.recipe, run.checkpoint
    wanted = set(instruction_ids) if instruction_ids is not None else None
    tasks = [k for k in cp.instructions if wanted is None or k["id"] in wanted]
    judged = cfg.judge_threshold is not None
    todo = [k for k in tasks if k["id"] not in cp.instances and k["id"] not in cp.unjudged]
    decoding = cfg.decoding[STAGE]
    run.start_stage(len(tasks) * (2 if judged else 1))  # with the judge, each task is handled twice
    run.stage_done = len(tasks) - len(todo) + sum(1 for k in tasks if k["id"] in cp.instances and judged)
    references = run.references() if todo else None
    contaminated = contamination_check(references) if references is not None else None

    def build(i: int) -> Awaitable[list[Completion]] | None:
        if i >= len(todo):
            return None
        kept = todo[i]
        classification = is_classification(run, kept["id"])
        prompt = run.prompts.instances(kept["text"], classification)
        schema = chat.schema(STAGE, classification) if llm.structured else None
        first = llm.complete(prompt, decoding, cfg.derived_seed(STAGE, kept["id"]), STAGE, schema, n=1)
        if not cfg.instance_followup:
            return first
        seed = cfg.derived_seed(STAGE, kept["id"], "followup")
        return _asked_again(llm, prompt, classification, decoding, seed, first)

    def handle(i: int, completions: list[Completion]) -> bool:
        task_id = todo[i]["id"]
        completion = completions[-1]  # the last answer: the one a truncation can have cut
        role = {"role": "assistant"} if llm.chat else {}
        source = {"instruction_id": task_id, "position": -1, **role}
        classification = is_classification(run, task_id)
        if llm.chat:
            answers = [chat.instances(completion.text, classification, llm.structured)]
        else:
            answers = [parsing.instances(answer.text, classification) for answer in completions]
        parsed = [instance for answer in answers for instance in answer]
        # only the last answer can be cut, and then only its own last instance is
        truncated = completion.finish_reason == "length" and bool(answers[-1])
        kept: list[dict[str, str]] = []
        if not parsed:
            run.record(Decision(f"{task_id}:x", "instance", completion.text, "unparseable", source))
        rng = cfg.rng(STAGE, task_id)
        outcomes = filter_instances(parsed, truncated, cfg.max_instances_per_task, rng, contaminated)
        for k, ((inst_input, output), (rule, detail)) in enumerate(zip(parsed, outcomes, strict=True)):
            if "duplicate_of" in detail:
                detail = {"duplicate_of": f"{task_id}:{detail['duplicate_of']}"}
            if "between" in detail:
                detail = {"between": [f"{task_id}:{b}" for b in detail["between"]]}
            if rule == "kept" and judged:  # decided by the judge pass
                kept.append({"position": k, "input": inst_input, "output": output})
                continue
            where = {"instruction_id": task_id, "position": k, **role}
            run.record(Decision(f"{task_id}:{k}", "instance", output, rule, where, detail, input=inst_input))
            if rule == "kept":
                kept.append({"input": inst_input, "output": output})
        if judged:
            cp.unjudged[task_id] = kept  # type: ignore[assignment]
        else:
            cp.instances[task_id] = kept  # type: ignore[assignment]
        run.handled()
        return False

    concurrency = llm.capacity(run.execution.concurrency)
    await ordered(0, build, handle, concurrency, lag=4 * max(concurrency, cfg.window))
    if judged:
        await _judge(run, llm, tasks)


async def _judge(run: Run, llm: LLM, tasks: list[dict[str, Any]]) -> None:
    """The judge pass: score the unjudged instances of each task not judged yet, keep those at or above
    the threshold."""
    cfg, cp = run.recipe, run.checkpoint
    threshold = cfg.judge_threshold
    assert threshold is not None
    # (the task's place in the stage's tasks, which a resume lists the same: it makes request seeds)
    todo = [(n, k) for n, k in enumerate(tasks) if k["id"] not in cp.instances]
    structured = llm.structured
    decoding = judge.CHAT_DECODING if llm.chat else judge.DECODING
    if llm.reasoning:  # its reasoning counts against the cap before it writes a word of the verdict
        decoding = replace(decoding, max_tokens=judge.REASONING_MAX_TOKENS)
    schema = judge.SCHEMA if structured else None

    def build(i: int) -> Awaitable[list[Completion]] | None:
        if i >= len(todo):
            return None
        place, task = todo[i]
        asked = []
        for item in cp.unjudged[task["id"]]:
            args = (task["text"], item["input"], item["output"])
            prompt = judge.chat_messages(*args, structured) if llm.chat else judge.completion_prompt(*args)
            # a seed unique in the run (a batch request's id is its stage and seed)
            seed = place * 10_000 + item["position"]
            asked.append(llm.complete(prompt, decoding, seed, judge.STAGE, schema, n=1))
        return _joined(asked)

    def handle(i: int, completions: list[Completion]) -> bool:
        task_id = todo[i][1]["id"]
        kept = []
        role = {"role": "assistant"} if llm.chat else {}
        for item, completion in zip(cp.unjudged[task_id], completions, strict=True):
            verdict = judge.read(completion.text, structured, continued=not llm.chat)
            run.count(judge.STAGE, "unscored" if verdict.score is None else str(verdict.score))
            rule = "judge_low_score" if verdict.score is not None and verdict.score < threshold else "kept"
            detail = {"judge_score": verdict.score, "judge_rationale": verdict.rationale}
            k, inst_input, output = item["position"], item["input"], item["output"]
            where = {"instruction_id": task_id, "position": k, **role}
            run.record(Decision(f"{task_id}:{k}", "instance", output, rule, where, detail, inst_input))
            if rule == "kept":
                kept.append({"input": inst_input, "output": output})
        cp.instances[task_id] = kept  # type: ignore[assignment]
        run.handled()
        return False

    concurrency = llm.capacity(run.execution.concurrency)
    await ordered(0, build, handle, concurrency, lag=4 * max(concurrency, cfg.window))


async def _joined(asked: list[Awaitable[list[Completion]]]) -> list[Completion]:
    return [answer for answers in await asyncio.gather(*asked) for answer in answers]


async def _asked_again(
    llm: LLM,
    prompt: str,
    classification: bool,
    decoding: Decoding,
    seed: int,
    first: Awaitable[list[Completion]],
) -> list[Completion]:
    """The answer, and when it ended on its own after a single instance, a second answer to the same
    prompt, sampled (AGAIN: temperature and top_p) with another seed: small base models write one
    example a task whatever the demonstrations show. The two answers' instances are filtered together."""
    answer = (await first)[0]
    if answer.finish_reason != "stop" or len(parsing.instances(answer.text, classification)) != 1:
        return [answer]
    again = replace(decoding, **AGAIN)
    return [answer, (await llm.complete(prompt, again, seed, STAGE, None, n=1))[0]]
