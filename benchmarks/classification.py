"""Classification identification on held-out labelled tasks: balanced accuracy of each method.

A run's answer for a task depends only on its prompt, the demonstration prefix plus the task. So for
each of a few demonstration draws (a run's seed picks 12 classification and 19 other seed tasks), every
seed task outside the demonstrations and the content-free inputs are scored once with that prefix (the
greedy text and the first token's log-probabilities), cached in a JSON file. Each split then holds 40
of those tasks out, stratified in the seed set's class ratio (6 classification, 34 others), fits every
method on the seed tasks outside the split only, and scores the held-out ones from the cache. Held-out
tasks are never among their own prefix's demonstrations or a method's fit set.

    .venv/bin/python -m benchmarks.classification --cache /tmp/clf-cache.json --splits 30
    .venv/bin/python -m benchmarks.classification --base-url http://host/v1 --model name

Without --base-url it starts the embedded model (llama-server, which gives log-probabilities);
LOCAL_MODEL_THREADS sets its threads.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from jobs.method.checkpoint import FileStore
from jobs.method.endpoint import Endpoint
from jobs.method.prompts import parsing
from jobs.method.prompts.layouts import CONTENT_FREE, one_line
from jobs.method.recipe import Recipe
from jobs.method.run import Run
from jobs.method.seed_tasks import SeedTask, load_file
from jobs.method.stages import classification as clf
from jobs.method.transport import LLM
from jobs.tools.local_model import MODEL_ALIAS, LocalModel

ROOT = Path(__file__).resolve().parent.parent
HELD_OUT = 40


def demo_run(tasks: list[SeedTask], demo_seed: int, tmp: str, endpoint: Endpoint) -> Run:
    return Run(f"bench-{demo_seed}", tasks, Recipe(seed=demo_seed), endpoint, FileStore(tmp))


def shown(run: Run) -> set[str]:
    prefix = run.prompts.classification_prefix
    return {t.id for t in run.seed_tasks if f"Task: {one_line(t.instruction)}\n" in prefix}


async def score_draw(
    endpoint: Endpoint, tasks: list[SeedTask], demo_seed: int, entry: dict[str, Any], save: Callable[[], None]
) -> None:
    """Fills `entry` (one demonstration draw's cache) with every missing answer: text and top tokens."""
    with tempfile.TemporaryDirectory() as tmp:
        run = demo_run(tasks, demo_seed, tmp, endpoint)
        demos = shown(run)
        prefix_hash = hashlib.sha256(run.prompts.classification_prefix.encode()).hexdigest()[:16]
        if entry.get("prefix") != prefix_hash:
            entry.clear()
            entry.update(prefix=prefix_hash, demos=sorted(demos), content_free={}, answers={})
        llm = LLM(endpoint, 1)
        try:
            todo = [(f"cf:{i}", text, entry["content_free"]) for i, text in enumerate(CONTENT_FREE)]
            todo += [(t.id, t.instruction, entry["answers"]) for t in tasks if t.id not in demos]
            for key, text, into in todo:
                if key in into:
                    continue
                completion = (await clf._request(run, llm, text, f"bench:{key}", True))[0]
                if completion.top_logprobs is None:
                    raise SystemExit("the endpoint gave no log-probabilities")
                into[key] = {"text": completion.text, "top": completion.top_logprobs}
                save()
        finally:
            await llm.close()


def stratified(pool: list[SeedTask], n_yes: int, n: int, rng: random.Random) -> list[SeedTask]:
    yes = [t for t in pool if t.is_classification]
    no = [t for t in pool if not t.is_classification]
    return rng.sample(yes, n_yes) + rng.sample(no, n - n_yes)


def pair(answer: dict[str, Any]) -> tuple[float, float]:
    return clf.label_logprobs(answer["top"])


def prior_threshold(margins: Sequence[float], rate: float) -> float:
    """The threshold under which a share 1 - rate of these margins falls (Yes for the top `rate`)."""
    ordered = sorted(margins, reverse=True)
    n = max(1, round(rate * len(ordered)))
    return (ordered[n - 1] + ordered[n]) / 2 if n < len(ordered) else ordered[-1] - 1.0


def predict(
    tasks: list[SeedTask], entry: dict[str, Any], held: list[SeedTask], demo_seed: int
) -> tuple[dict[str, list[bool]], str]:
    """Every method's answers for the held-out tasks, each fitted only on the seed tasks outside them,
    and the method auto chose on those seed tasks (its answers are that method's)."""
    held_ids = {t.id for t in held}
    seeds = [t for t in tasks if t.id not in held_ids]  # the run's seed set
    unseen = [t for t in seeds if t.id not in entry["demos"]]
    shift = clf.content_free_shift([pair(a) for a in entry["content_free"].values()])

    def margin(t: SeedTask) -> float:
        yes, no = pair(entry["answers"][t.id])
        return yes - no - shift

    fit = clf.pick_fit_tasks(unseen, Recipe(seed=demo_seed).rng(clf.STAGE, "fit"))
    threshold = clf.fit_threshold([margin(t) for t in fit], [t.is_classification for t in fit])
    rate = sum(t.is_classification for t in seeds) / len(seeds)
    prior = prior_threshold([margin(t) for t in unseen], rate)
    knn = clf.SeedNeighbours(seeds)
    knn_threshold = knn.fit_threshold()
    margins = [margin(t) for t in held]
    truth = [t.is_classification for t in held]
    said = [parsing.classification(entry["answers"][t.id]["text"]) == "yes" for t in fit]
    free = [pair(a) for a in entry["content_free"].values()]
    chosen = clf.select(seeds, fit, said, [pair(entry["answers"][t.id]) for t in fit], free)["selection"][
        "chosen"
    ]
    out = {
        "text": [parsing.classification(entry["answers"][t.id]["text"]) == "yes" for t in held],
        "logprobs": [m + shift > 0 for m in margins],
        "calibrated": [m > 0 for m in margins],
        "fitted": [m > threshold for m in margins],
        "prior": [m > prior for m in margins],
        "knn": [knn.score(t.instruction)[0] > knn_threshold for t in held],
        "always_no": [False] * len(held),
        # the best threshold on the held-out margins themselves: a ceiling, not a method
        "hindsight": [m > clf.fit_threshold(margins, truth) for m in margins]
        if len(set(truth)) > 1
        else truth,
    }
    return {**out, "auto": out[chosen]}, chosen


def evaluate(
    tasks: list[SeedTask], cache: dict[str, Any], splits: int, held_out: int
) -> list[dict[str, Any]]:
    """Split j draws its held-out tasks (seed j) from outside demonstration draw j mod the draws."""
    n_yes = round(held_out * sum(t.is_classification for t in tasks) / len(tasks))
    draws = sorted(cache, key=int)
    out = []
    for j in range(splits):
        d = draws[j % len(draws)]
        pool = [t for t in tasks if t.id not in cache[d]["demos"]]
        held = stratified(pool, n_yes, held_out, random.Random(j))
        truth = [t.is_classification for t in held]
        predicted, chosen = predict(tasks, cache[d], held, int(d))
        out.append(
            {
                "split": j,
                "demonstrations": int(d),
                "held_out": [t.id for t in held],
                "auto_chose": chosen,
                "balanced_accuracy": {m: clf.balanced_accuracy(truth, p) for m, p in predicted.items()},
                "confusion": {m: clf.confusion(truth, p) for m, p in predicted.items()},
            }
        )
    return out


def leave_one_out(tasks: list[SeedTask], cache: dict[str, Any]) -> dict[str, Any]:
    """Each task outside a draw's demonstrations held out alone; answers pooled over tasks and draws."""
    truth: list[bool] = []
    predicted: dict[str, list[bool]] = {}
    for d, entry in cache.items():
        for t in tasks:
            if t.id in entry["demos"]:
                continue
            truth.append(t.is_classification)
            for m, p in predict(tasks, entry, [t], int(d))[0].items():
                predicted.setdefault(m, []).extend(p)
    predicted.pop("hindsight")
    return {m: clf.confusion(truth, p) for m, p in predicted.items()}


def spread(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each method's balanced accuracy over the splits: mean, sd, min and max."""
    out = {}
    for m in results[0]["balanced_accuracy"]:
        scores = [r["balanced_accuracy"][m] for r in results]
        sd = statistics.stdev(scores) if len(scores) > 1 else 0.0
        out[m] = {"mean": statistics.mean(scores), "sd": sd, "min": min(scores), "max": max(scores)}
    return out


def summary(results: list[dict[str, Any]], loo: dict[str, Any] | None) -> str:
    lines = [
        "| method | mean | sd | min | max |" + (" leave-one-out |" if loo else ""),
        "|---|---|---|---|---|" + ("---|" if loo else ""),
    ]
    for m, s in spread(results).items():
        row = f"| {m} | " + " | ".join(f"{s[k]:.3f}" for k in ("mean", "sd", "min", "max")) + " |"
        if loo and m in loo:  # balanced accuracy rounded to 4 places
            c = loo[m]
            row += f" {c['balanced_accuracy']:.3f} (tp {c['tp']} fn {c['fn']} tn {c['tn']} fp {c['fp']}) |"
        elif loo:
            row += " |"
        lines.append(row)
    return "\n".join(lines)


def per_split(results: list[dict[str, Any]]) -> str:
    methods = list(results[0]["confusion"])
    lines = ["| split | demos | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for r in results:
        cells = [
            "{tp} {fn} {tn} {fp}".format(**r["confusion"][m]) + f" ({r['balanced_accuracy'][m]:.2f})"
            for m in methods
        ]
        lines.append(f"| {r['split']} | {r['demonstrations']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(
    tasks: list[SeedTask],
    cache_path: Path,
    demo_seeds: int,
    splits: int,
    held_out: int = HELD_OUT,
    base_url: str | None = None,
    model: str = MODEL_ALIAS,
) -> dict[str, Any]:
    """Scores what the cache lacks (on `base_url`, default the embedded model), then evaluates. The
    headline: every method's balanced accuracy over the splits (`spread`) and left one out."""
    cache: dict[str, Any] = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    cache_path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        cache_path.write_text(json.dumps(cache))

    draws = [str(d) for d in range(demo_seeds)]
    complete = all(
        d in cache and len(cache[d]["answers"]) + len(cache[d]["demos"]) == len(tasks) for d in draws
    )
    if not complete:
        local = None if base_url else LocalModel(log_file=ROOT / ".run" / "bench-classification.log")
        (ROOT / ".run").mkdir(exist_ok=True)
        with local or nullcontext():
            url = base_url or local.base_url  # type: ignore[union-attr]
            endpoint = Endpoint(base_url=url, model=model, timeout=600.0)
            for d in draws:
                asyncio.run(score_draw(endpoint, tasks, int(d), cache.setdefault(d, {}), save))
                print(f"draw {d}: {len(cache[d]['answers'])} tasks scored", file=sys.stderr, flush=True)
    scored = {d: cache[d] for d in draws}
    results = evaluate(tasks, scored, splits, held_out)
    loo = leave_one_out(tasks, scored)
    return {"draws": scored, "splits": results, "leave_one_out": loo, "spread": spread(results)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seed-tasks", default=str(ROOT / "data" / "seed_tasks.jsonl"))
    parser.add_argument("--demo-seeds", type=int, default=3, help="demonstration draws (run seeds 0..N-1)")
    parser.add_argument("--splits", type=int, default=30, help="random held-out splits in all")
    parser.add_argument("--held-out", type=int, default=HELD_OUT)
    parser.add_argument("--cache", default=str(ROOT / ".run" / "classification-cache.json"))
    parser.add_argument(
        "--base-url", help="an endpoint giving log-probabilities; default: the embedded model"
    )
    parser.add_argument("--model", default=MODEL_ALIAS)
    parser.add_argument("--out", help="also write the per-split results as JSON here")
    args = parser.parse_args(argv)
    tasks = load_file(args.seed_tasks)
    result = run(
        tasks, Path(args.cache), args.demo_seeds, args.splits, args.held_out, args.base_url, args.model
    )
    results, loo = result["splits"], result["leave_one_out"]
    print(
        f"balanced accuracy over {args.splits} splits of {args.held_out} held-out seed tasks, "
        f"{args.demo_seeds} demonstration draws"
    )
    print(summary(results, loo))
    chosen = Counter(r["auto_chose"] for r in results)
    print("\nauto chose: " + ", ".join(f"{m} in {n} splits" for m, n in chosen.most_common()))
    print("\nper split: tp fn tn fp (balanced accuracy)")
    print(per_split(results))
    if args.out:
        Path(args.out).write_text(json.dumps({"splits": results, "leave_one_out": loo}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
