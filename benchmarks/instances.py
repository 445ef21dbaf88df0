"""Instances per instruction on the embedded model: ways of asking for more, side by side.

    .venv/bin/python -m benchmarks.instances --instructions out/demo/instructions.jsonl \\
        [--demo-seeds 1,2,3] [--server llama-server|llama-cpp-python] [--base-url URL --model NAME]

For the kept instructions of a run (its instructions.jsonl: text and classification answer), and for
each draw of the instance demonstrations (a run's seed), every task's instance prompt is asked once
as stage 3 asks it (the recipe's decoding, the engine's requests). The strategies then differ only
in what they ask next, so they are compared on the same first answers (llama.cpp decoding several
requests together is not quite deterministic, and separate runs would differ by that noise):
- one: the paper's single request (temperature 0, 300 tokens);
- tokens: 600 tokens: an answer cut at 300 goes on for 300 more (at temperature 0, what one request
  of 600 would write);
- continue: an answer that ends on its own after a single label or example goes back once with the
  next one's opening (`Class label:`, `Example 2`) for the model to complete;
- resample: what the engine ships (`instance_followup`): an answer that ends on its own after a
  single instance is asked again, sampled (temperature 0.7, top_p 0.9) with another seed, and the
  two answers' instances are filtered together;
- hybrid: continue where the answer can be continued, resample where it cannot (a lone `Output:`).
Every strategy's instances are filtered as stage 4 does. Per strategy: kept instances per
instruction (mean and sd over the draws; classification and other tasks apart), the share of parsed
instances the filters drop, requests and completion tokens. `--server llama-cpp-python` asks the
embedded server before llama-server instead (one request at a time; it needs
`pip install -c constraints.txt "llama-cpp-python[server]"`); `--base-url` asks a running
completions endpoint (4 requests in flight).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks.servers import LlamaCppPython
from jobs.method.endpoint import Endpoint
from jobs.method.prompts import parsing
from jobs.method.prompts.layouts import Prompts
from jobs.method.recipe import Recipe
from jobs.method.seed_tasks import load_file
from jobs.method.stages.filters import filter_instances
from jobs.method.stages.instances import STAGE, _asked_again
from jobs.method.transport import LLM, Completion
from jobs.tools.local_model import MODEL_ALIAS, PARALLEL, REQUEST_OPTIONS, LocalModel

ROOT = Path(__file__).resolve().parent.parent
STRATEGIES = ("one", "tokens", "continue", "resample", "hybrid")


def continuation(answer: str, classification: bool) -> str | None:
    """A one-instance answer followed by the next one's opening (a second label, or `Example 2`) for
    the model to complete; None for a lone `Output:`, which has no next input to write."""
    if classification:
        return f"{answer.rstrip()}\nClass label:"
    if "Example" in answer:
        return f"{answer.rstrip()}\nExample 2\n"
    return None


async def answers(llm: LLM, recipe: Recipe, prompts: Prompts, task: dict[str, Any]) -> dict[str, Any]:
    """One task: its first answer, then what each strategy asks next. Per strategy: (the parsed
    instances, whether the last answer was cut, the requests and completion tokens it added)."""
    classification = task["classification"] == "yes"
    prompt = prompts.instances(task["text"], classification)
    decoding = recipe.decoding[STAGE]

    def parse(text: str) -> list[tuple[str, str]]:
        return parsing.instances(text, classification)

    first = (await llm.complete(prompt, decoding, recipe.derived_seed(STAGE, task["id"]), STAGE))[0]
    again = recipe.derived_seed(STAGE, task["id"], "followup")
    cut = first.finish_reason == "length"
    single = not cut and len(parse(first.text)) == 1
    out: dict[str, Any] = {"one": (parse(first.text), cut, 0, 0), "first_tokens": first.completion_tokens}
    out["tokens"] = out["one"]
    if cut:
        more = (await llm.complete(prompt + first.text, decoding, again, STAGE))[0]
        out["tokens"] = (
            parse(first.text + more.text),
            more.finish_reason == "length",
            1,
            more.completion_tokens,
        )
    out["continue"] = out["resample"] = out["hybrid"] = out["one"]
    if not single:
        return out

    async def given() -> list[Completion]:
        return [first]

    # what the engine ships (instance_followup): the same prompt again, sampled
    second = (await _asked_again(llm, prompt, classification, decoding, again, given()))[-1]
    parsed = parse(first.text) + parse(second.text)
    cut = second.finish_reason == "length" and bool(parse(second.text))  # as stage 4 reads it
    out["resample"] = out["hybrid"] = (parsed, cut, 1, second.completion_tokens)
    if opening := continuation(first.text, classification):
        more = (await llm.complete(prompt + opening, decoding, again, STAGE))[0]
        out["continue"] = out["hybrid"] = (
            parse(opening + more.text),
            more.finish_reason == "length",
            1,
            more.completion_tokens,
        )
    return out


async def measure(
    endpoint: Endpoint, tasks: list[dict[str, Any]], seed: int, concurrency: int
) -> dict[str, Any]:
    recipe = Recipe(seed=seed)
    prompts = Prompts(load_file(ROOT / "data" / "seed_tasks.jsonl"), seed, recipe.demo_chars)
    llm = LLM(endpoint, concurrency)
    try:
        got = await asyncio.gather(*(answers(llm, recipe, prompts, t) for t in tasks))
    finally:
        await llm.close()
    result = {}
    for strategy in STRATEGIES:
        kept: dict[bool, list[int]] = {True: [], False: []}
        parsed_total, drops, requests, tokens = 0, Counter(), 0, 0
        for task, answer in zip(tasks, got, strict=True):
            parsed, cut, extra_requests, extra_tokens = answer[strategy]
            rng = recipe.rng(STAGE, task["id"])
            outcomes = filter_instances(parsed, cut, recipe.max_instances_per_task, rng)
            kept[task["classification"] == "yes"].append(sum(rule == "kept" for rule, _ in outcomes))
            parsed_total += len(parsed)
            drops.update(rule for rule, _ in outcomes if rule != "kept")
            requests += 1 + extra_requests
            tokens += answer["first_tokens"] + extra_tokens
        both = kept[True] + kept[False]
        result[strategy] = {
            "kept": sum(both) / len(both),
            "classification": sum(kept[True]) / max(1, len(kept[True])),
            "other": sum(kept[False]) / max(1, len(kept[False])),
            "dropped": sum(drops.values()) / max(1, parsed_total),
            "drops": dict(drops),
            "requests": requests,
            "tokens": tokens,
        }
    return result


def run(
    tasks: list[dict[str, Any]],
    seeds: list[int],
    server: str = "llama-server",
    base_url: str | None = None,
    model: str = MODEL_ALIAS,
) -> dict[str, list[dict[str, Any]]]:
    """Every strategy's figures, one entry per demonstration draw, on `base_url` (default: the server
    named, started here). The headline: kept instances per instruction, the drop rate, requests and
    tokens of each strategy."""
    if base_url:
        server_cm: Any = nullcontext(SimpleNamespace(base_url=base_url))
        concurrency = PARALLEL
    elif server == "llama-server":
        server_cm, concurrency = LocalModel(log_file=ROOT / ".run" / "bench-instances.log"), PARALLEL
    else:
        server_cm, concurrency = LlamaCppPython(logits_all=False), 1
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in STRATEGIES}
    with server_cm as served:
        endpoint = Endpoint(served.base_url, model, timeout=600, **REQUEST_OPTIONS)
        for seed in seeds:
            for strategy, got in asyncio.run(measure(endpoint, tasks, seed, concurrency)).items():
                results[strategy].append(got)
                print(json.dumps({"seed": seed, "strategy": strategy, **got}), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--instructions", required=True, help="a run's instructions.jsonl")
    parser.add_argument("--demo-seeds", default="1,2,3", help="runs' seeds: draws of the demonstrations")
    parser.add_argument("--server", choices=("llama-server", "llama-cpp-python"), default="llama-server")
    parser.add_argument("--base-url", help="a completions endpoint instead of starting --server")
    parser.add_argument("--model", default=MODEL_ALIAS)
    args = parser.parse_args()
    tasks = [json.loads(line) for line in Path(args.instructions).read_text().splitlines()]
    seeds = [int(s) for s in args.demo_seeds.split(",")]
    results = run(tasks, seeds, args.server, args.base_url, args.model)
    n = sum(t["classification"] == "yes" for t in tasks)
    print(f"\n{len(tasks)} instructions ({n} classification), {len(seeds)} demonstration draws: mean (sd)")
    print("| strategy | kept / instruction | classification | other | dropped | requests | tokens |")
    print("|---|---|---|---|---|---|---|")
    for strategy, runs in results.items():

        def cell(key: str, digits: int = 2, runs: list[dict[str, Any]] = runs) -> str:
            values = [r[key] for r in runs]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.mean(values):.{digits}f} ({sd:.{digits}f})"

        print(
            f"| {strategy} | {cell('kept')} | {cell('classification')} | {cell('other')} | {cell('dropped')} "
            f"| {cell('requests', 0)} | {cell('tokens', 0)} |"
        )


if __name__ == "__main__":
    main()
