"""One job in batch mode against the same job online, on the scripted server: batches, rounds, wall time,
requests and cost, and whether the datasets are the same.

The online run carries out the batch job's recipe as recorded (Recipe.for_endpoint: the round size, and
no second instance answers), which is what makes the two datasets the same.

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

from jobs.method.checkpoint import FileStore
from jobs.method.endpoint import Endpoint, cost
from jobs.method.engine import execute
from jobs.method.outputs import exports
from jobs.method.recipe import Execution, Recipe
from jobs.method.run import Run
from jobs.method.seed_tasks import load_file
from jobs.method.transport import Waiting
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
        "cost_usd": round(cost(prompt, completion, PRICES[mode]), 4),
        "tokens": {"prompt": prompt, "completion": completion},
    }


def _cost(row: dict) -> float:
    return cost(row["tokens"]["prompt"], row["tokens"]["completion"], PRICES[row["mode"]])


def run(instructions: int, round_size: int) -> dict:
    """Both runs; the headline: whether the data files are byte-identical, the completions each made,
    and batch over online in wall time and cost."""
    asked = Recipe.build({"num_instructions": instructions, "seed": 7, "round_size": round_size})
    recipe = asked.for_endpoint("batch", "completions")  # what the batch job records and runs
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        online, batch = (one(mode, recipe, out) for mode in ("online", "batch"))
        same = all(
            (out / "online" / "out" / n).read_bytes() == (out / "batch" / "out" / n).read_bytes()
            for n in DATA
        )
    return {
        "online": online,
        "batch": batch,
        "same_dataset": same,
        "wall_ratio": batch["wall_seconds"] / max(online["wall_seconds"], 1e-9),
        "cost_ratio": _cost(batch) / _cost(online),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--instructions", type=int, default=2000)
    parser.add_argument("--round-size", type=int, default=200)
    args = parser.parse_args()
    result = run(args.instructions, args.round_size)
    for mode in ("online", "batch"):
        print(json.dumps(result[mode]))
    print(
        f"same dataset: {result['same_dataset']}; batch/online: wall time {result['wall_ratio']:.2f}x, "
        f"cost {result['cost_ratio']:.2f}x"
    )


if __name__ == "__main__":
    main()
