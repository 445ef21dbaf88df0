"""One job in batch mode against the same job online, on the scripted server: batches, rounds, wall time,
requests and cost, and whether the datasets are the same.

    .venv/bin/python -m benchmarks.batch [--instructions 2000] [--round-size 200]

Both runs go in this process on the scripted OpenAI-compatible server (tests/fake_llm.py), with a
FileStore checkpoint. The batch run is resumed after each wait at once, as a worker's poll would be
once the provider's batches had ended (a real provider takes minutes to hours: the wall time here is
the service's own work, not the provider's). Cost is at OpenAI's gpt-4o-mini prices, online and batch
(half), per million tokens: the scripted server counts a token a word.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from jobs.method import cost, exports
from jobs.method.batch import Waiting
from jobs.method.checkpoint import FileStore
from jobs.method.engine import execute
from jobs.method.llm import Endpoint
from jobs.method.recipe import Execution, Recipe
from jobs.method.run import Run
from jobs.method.seed_tasks import load_file
from tests.fake_llm import FakeLLM, Script

ROOT = Path(__file__).resolve().parent.parent
PRICES = {"online": (0.15, 0.60), "batch": (0.075, 0.30)}
DATA = ("finetune.jsonl", "instructions.jsonl", "decisions.jsonl", "alpaca.json", "chat.jsonl")


def one(mode: str, recipe: Recipe, tmp: Path) -> dict:
    script = Script(logprobs="top")
    with FakeLLM(script) as server:
        endpoint = Endpoint(server.base_url, "fake", timeout=30.0, mode=mode, prices=PRICES[mode])
        seeds = load_file(ROOT / "data" / "seed_tasks.jsonl")
        started, waits = time.monotonic(), 0
        while True:
            run = Run(mode, seeds, recipe, endpoint, FileStore(tmp / mode / "state"), execution=Execution(4))
            try:
                execute(run)
                break
            except Waiting:
                waits += 1
        exports.export(run, tmp / mode / "out")
        wall = time.monotonic() - started
    usage = run.usage
    prompt, completion = sum(usage.prompt_tokens.values()), sum(usage.completion_tokens.values())
    return {
        "mode": mode,
        "wall_seconds": round(wall, 1),
        "resumes": waits,
        "batches": run.checkpoint.batch_totals.get("batches", 0),
        "rounds": run.checkpoint.batch_totals.get("rounds", 0),
        "http_requests": len(script.answers),
        "completions": sum(usage.requests.values()),
        "instructions": len(run.checkpoint.instructions),
        "cost_usd": round(cost.amount(prompt, completion, PRICES[mode]), 4),
        "tokens": {"prompt": prompt, "completion": completion},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--instructions", type=int, default=2000)
    parser.add_argument("--round-size", type=int, default=200)
    args = parser.parse_args()
    recipe = Recipe.build({"num_instructions": args.instructions, "seed": 7, "round_size": args.round_size})
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        rows = [one(mode, recipe, out) for mode in ("online", "batch")]
        same = all(
            (out / "online" / "out" / n).read_bytes() == (out / "batch" / "out" / n).read_bytes()
            for n in DATA
        )
    for row in rows:
        print(json.dumps(row))
    online, batch = rows
    wall = batch["wall_seconds"] / online["wall_seconds"]
    spent = batch["cost_usd"] / online["cost_usd"]
    print(f"same dataset: {same}; batch/online: wall time {wall:.2f}x, cost {spent:.2f}x")


if __name__ == "__main__":
    main()
