"""Stage 1, instruction bootstrapping: prompt with sampled pool instructions, parse, filter, grow the pool.

With the recipe's semantic_threshold, the pool's items are embedded when the stage starts (seeds, earlier
jobs' instructions, what the run kept before a resume), and each answer's candidates as it arrives,
before its turn to be filtered comes."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any

from jobs.method.checkpoint import KeptInstruction
from jobs.method.decisions import Decision
from jobs.method.prompts import chat, parsing
from jobs.method.recipe import paper_decoding
from jobs.method.run import Run
from jobs.method.similarity import RougeLIndex, SemanticIndex
from jobs.method.stages.filters import InstructionFilter
from jobs.method.transport import LLM, Completion, Embedder, ordered

STAGE = "instructions"


async def run_stage(run: Run, llm: LLM) -> None:
    embedder = None
    if run.recipe.semantic_threshold is not None:
        if run.embeddings is None:
            raise ValueError("semantic_threshold needs an embedding endpoint")
        embedder = Embedder(run.embeddings, run.usage, run.execution.concurrency)
    try:
        await _bootstrap(run, llm, embedder)
    finally:
        if embedder is not None:
            await embedder.close()


async def _bootstrap(run: Run, llm: LLM, embedder: Embedder | None) -> None:
    cfg, cp = run.recipe, run.checkpoint
    target = cfg.num_instructions
    seeds = [t for t in run.seed_tasks if t.is_classification] if cfg.classification_only else run.seed_tasks
    seed_texts = [t.instruction for t in seeds]
    # The pool is the prompt's seed instructions plus kept machine instructions, as in the reference;
    # earlier jobs' instructions are read-only (`job`): never sampled into prompts.
    pool = InstructionFilter(cfg, RougeLIndex(), run.references(), SemanticIndex() if embedder else None)
    items = [(task.id, task.instruction, None) for task in seeds]
    items += [(item_id, text, job) for job, item_id, text in run.history()]
    items += [(kept["id"], kept["text"], None) for kept in cp.instructions]
    vectors = await embedder.embed([text for _, text, _ in items]) if embedder else [None] * len(items)
    for (item_id, text, job), vector in zip(items, vectors, strict=True):
        pool.add(item_id, text, job, vector)
    del items, vectors
    machine = [kept["text"] for kept in cp.instructions]
    kept_at = [kept["prompt"] for kept in cp.instructions]  # prompt index of each, non-decreasing
    decoding = cfg.decoding[STAGE]
    if llm.chat and decoding.stop == paper_decoding()[STAGE].stop:
        # the paper's stops end a continued list; a chat reply may open with a preamble and a blank line
        decoding = replace(decoding, stop=())
    parse = chat.instructions if llm.chat else parsing.instructions
    role = {"role": "assistant"} if llm.chat else {}
    embedded: dict[int, dict[str, Any]] = {}  # prompt -> its candidates' embeddings, until handled

    def candidates_of(completion: Completion) -> list[str]:
        candidates = completion.candidates if completion.candidates is not None else parse(completion.text)
        if completion.finish_reason == "length":
            # a continued list is discarded whole, as the reference does; a chat reply's items are
            # whole lines, so only its last (cut) item goes
            return candidates[:-1] if llm.chat else []
        return candidates

    async def with_embeddings(i: int, request: Awaitable[list[Completion]]) -> list[Completion]:
        completions = await request
        assert embedder is not None
        texts = list(dict.fromkeys(t for c in completions for t in candidates_of(c) if pool.needs_vector(t)))
        embedded[i] = dict(zip(texts, await embedder.embed(texts), strict=True))
        return completions

    run.start_stage(target)
    run.stage_done = len(machine)
    rounds = cfg.round_size

    def pool_until(i: int) -> int:
        """Prompt i sees the machine instructions kept by the prompts before this index."""
        return (i // rounds) * rounds if rounds else i - cfg.window + 1

    def stage_tokens() -> int:  # the token budget is the whole job's
        return sum(run.accounting.tokens_spent())

    def expected(i: int, start: int, kept: int) -> float:
        """Instructions kept once the prompts before i are handled, at the yield of the `start` prompts
        that kept `kept`."""
        return kept + (i - start) * max(kept / start if start else 1.0, 0.5)

    wave = {"end": 0}  # in rounds: where the prompts sent together end

    def wave_end(i: int) -> int:
        """The prompts of i's round to send together from i on, decided when every prompt before i is
        handled (so they are the same whoever answers them, in whatever order): up to where enough
        are probably on their way, at least i itself. A round whose first wave fell short sends the
        rest as one more wave (one more batch, in batch mode), not one prompt at a time."""
        end = pool_until(i) + (rounds or 0)
        return next((j for j in range(i + 1, end) if expected(j, i, len(machine)) >= target), end)

    def build(i: int) -> Awaitable[list[Completion]] | None:
        if (i + 1) * decoding.n > cfg.request_budget:
            return None
        if cfg.max_tokens is not None and stage_tokens() >= cfg.max_tokens:
            return None
        if cp.next_prompt < pool_until(i):
            return None  # its round starts once the round before is handled
        if rounds and i >= wave["end"]:
            if i > cp.next_prompt:
                return None  # the wave before is not all handled yet
            wave["end"] = wave_end(i)
        elif not rounds and i > cp.next_prompt and expected(i, cp.next_prompt, len(machine)) >= target:
            return None  # enough is probably on its way; saves wasted requests at the end
        # sample indices, not a copied prefix of the pool (that copy grows with the run); the same
        # draws as sampling the prefix itself
        visible = bisect_left(kept_at, pool_until(i))
        rng = cfg.rng(STAGE, i)
        picks = rng.sample(range(visible), min(cfg.prompt_machine_instructions, visible))
        chosen = [machine[j] for j in picks]
        chosen += rng.sample(seed_texts, min(cfg.prompt_instructions - len(chosen), len(seed_texts)))
        rng.shuffle(chosen)
        if run.carried and (recorded := run.carried.completions(i, decoding.n)) is not None:
            request = _replayed(recorded)  # handled by the run this one extends: no request
        else:
            prompt = run.prompts.instructions(chosen, cfg.classification_only)
            request = llm.complete(prompt, decoding, cfg.derived_seed(STAGE, i), STAGE)
        return with_embeddings(i, request) if embedder else request

    def handle(i: int, completions: list[Completion]) -> bool:
        vectors = embedded.pop(i, {})
        for j, completion in enumerate(completions):
            if completion.finish_reason == "length":
                cp.truncated_responses += 1
            for k, text in enumerate(candidates_of(completion)):
                candidate_id = f"i{i}.{j}.{k}"
                source = {"prompt": i, "completion": j, "position": k, **role}
                if len(machine) >= target:
                    run.record(Decision(candidate_id, "instruction", text, "target_reached", source))
                    continue
                rule, detail = pool(text, vectors.get(text))
                run.record(Decision(candidate_id, "instruction", text, rule, source, detail))
                if rule == "kept":
                    pool.add(candidate_id, text, vector=vectors.get(text))
                    machine.append(text)
                    kept_at.append(i)
                    kept_record: KeptInstruction = {
                        "id": candidate_id,
                        "text": text,
                        "prompt": i,
                        "score": detail["score"],
                        "nearest_id": detail["nearest_id"],
                    }
                    if "nearest_job" in detail:
                        kept_record["nearest_job"] = detail["nearest_job"]
                    cp.instructions.append(kept_record)
        cp.next_prompt = i + 1
        done = len(machine) >= target
        run.handled(progress=len(machine), force=done)
        return done

    if len(machine) < target:
        in_flight = llm.capacity(run.execution.concurrency)
        leftover = await ordered(cp.next_prompt, build, handle, in_flight, rounds or cfg.window)
        _count_waste(run, leftover.finished, leftover.cancelled)
    if len(machine) >= target:
        cp.stop_reason = "target_reached"
    elif cfg.max_tokens is not None and stage_tokens() >= cfg.max_tokens:
        cp.stop_reason = "token_budget"
    else:
        cp.stop_reason = "request_budget"


async def _replayed(recorded: list[list[str]]) -> list[Completion]:
    return [Completion("", None, 0, 0, candidates=candidates) for candidates in recorded]


def _count_waste(run: Run, finished: list[Any], cancelled: int) -> None:
    wasted = run.checkpoint.wasted
    wasted["requests"] += cancelled + sum(len(batch) for batch in finished)
    wasted["completion_tokens"] += sum(c.completion_tokens for batch in finished for c in batch)
