"""Classification identification on held-out labelled tasks: balanced accuracy of each method.

Each split holds some of the seed tasks out (stratified), builds the classification prompt from the
rest as a run would, and scores every held-out task once with log-probabilities: the greedy text gives
the paper's method, the same request's label log-probabilities the others. Requests go one at a time
with a fixed demonstration prefix per split, so llama.cpp's prompt cache evaluates only each tail.

    .venv/bin/python -m benchmarks.classification --splits 3 --held-out 30
    .venv/bin/python -m benchmarks.classification --base-url http://host/v1 --model name

Without --base-url it starts the embedded model with log-probabilities on (logits_all).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from jobs.method import classification as clf
from jobs.method import parsing
from jobs.method.checkpoint import FileStore
from jobs.method.llm import LLM, Endpoint
from jobs.method.prompts import CONTENT_FREE
from jobs.method.recipe import Recipe
from jobs.method.run import Run
from jobs.method.seed_tasks import SeedTask, load_file
from jobs.tools.local_model import MODEL_ALIAS, LocalModel

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("text", "logprobs", "calibrated", "fitted", "always_no", "hindsight")


def split(tasks: list[SeedTask], held_out: int, seed: int) -> tuple[list[SeedTask], list[SeedTask]]:
    """(demonstration seed set, held-out tasks), the held-out ones in the seed set's class ratio."""
    rng = random.Random(seed)
    yes = [t for t in tasks if t.is_classification]
    no = [t for t in tasks if not t.is_classification]
    rng.shuffle(yes)
    rng.shuffle(no)
    n_yes = max(1, round(held_out * len(yes) / len(tasks)))
    held = yes[:n_yes] + no[: held_out - n_yes]
    return [t for t in tasks if t not in held], held


async def one_split(endpoint: Endpoint, tasks: list[SeedTask], held_out: int, seed: int) -> dict[str, Any]:
    seeds, held = split(tasks, held_out, seed)
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(f"bench-{seed}", seeds, Recipe(seed=seed), endpoint, FileStore(tmp))
        llm = LLM(endpoint, 1)
        started = time.monotonic()
        try:
            free = await clf.score_texts(run, llm, list(CONTENT_FREE), "content-free")
            fit = clf.fit_tasks(run)
            fit_pairs = await clf.score_texts(run, llm, [t.instruction for t in fit], "fit")
            answers = []
            for i, task in enumerate(held):
                completion = (await clf._request(run, llm, task.instruction, f"held:{i}", True))[0]
                answers.append((completion.text, completion.top_logprobs))
        finally:
            await llm.close()
    if isinstance(free, str) or isinstance(fit_pairs, str) or any(top is None for _, top in answers):
        raise SystemExit(f"the endpoint gave no log-probabilities: {free if isinstance(free, str) else ''}")
    shift = clf.content_free_shift(free)
    fit_truth = [t.is_classification for t in fit]
    threshold = clf.fit_threshold([y - n - shift for y, n in fit_pairs], fit_truth)
    truth = [t.is_classification for t in held]
    pairs = [clf.label_logprobs(top) for _, top in answers if top]
    margins = [y - n - shift for y, n in pairs]
    predicted = {
        "text": [parsing.classification(text) == "yes" for text, _ in answers],
        "logprobs": [y > n for y, n in pairs],
        "calibrated": [m > 0 for m in margins],
        "fitted": [m > threshold for m in margins],
        "always_no": [False] * len(held),
        # the best threshold on the held-out tasks themselves: a ceiling, not a method
        "hindsight": [m > clf.fit_threshold(margins, truth) for m in margins],
    }
    return {
        "seed": seed,
        "held_out": {"yes": sum(truth), "no": len(truth) - sum(truth)},
        "fit_tasks": {"yes": sum(fit_truth), "no": len(fit_truth) - sum(fit_truth)},
        "shift": round(shift, 4),
        "threshold": round(threshold, 4),
        "balanced_accuracy": {m: round(clf.balanced_accuracy(truth, p), 4) for m, p in predicted.items()},
        "answered_yes": {m: sum(p) for m, p in predicted.items()},
        "requests": len(CONTENT_FREE) + len(fit) + len(held),
        "seconds": round(time.monotonic() - started, 1),
    }


def table(results: list[dict[str, Any]]) -> str:
    head = "| method | " + " | ".join(f"split {r['seed']}" for r in results) + " | mean |"
    lines = [head, "|" + "---|" * (len(results) + 2)]
    for method in METHODS:
        scores = [r["balanced_accuracy"][method] for r in results]
        cells = " | ".join(f"{s:.2f}" for s in scores)
        lines.append(f"| {method} | {cells} | {sum(scores) / len(scores):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seed-tasks", default=str(ROOT / "data" / "seed_tasks.jsonl"))
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--held-out", type=int, default=30)
    parser.add_argument(
        "--base-url", help="an endpoint giving log-probabilities; default: the embedded model"
    )
    parser.add_argument("--model", default=MODEL_ALIAS)
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    tasks = load_file(args.seed_tasks)
    local = (
        None
        if args.base_url
        else LocalModel(log_file=ROOT / ".run" / "bench-classification.log", logprobs=True)
    )
    if local:
        (ROOT / ".run").mkdir(exist_ok=True)
    results = []
    with local or nullcontext():
        endpoint = Endpoint(base_url=args.base_url or local.base_url, model=args.model, timeout=600.0)  # type: ignore[union-attr]
        for seed in range(args.splits):
            result = asyncio.run(one_split(endpoint, tasks, args.held_out, seed))
            print(json.dumps(result), file=sys.stderr, flush=True)
            results.append(result)
    print(table(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
