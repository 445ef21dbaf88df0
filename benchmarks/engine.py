"""Does the engine keep the endpoint busy? Job throughput against raw back-to-back throughput.

    .venv/bin/python -m benchmarks.engine [--num-instructions 20] [--concurrency 1] [--rounds 1]

Starts the local model and runs a whole job (all stages and the export), recording every request it
sends; then sends the same requests again one after another with a plain client ("raw"). The
machine's speed drifts and jitters (a shared VM), so the phases run in ABBA order - job, raw, raw,
job - per round, and the figure is the job's completion tokens per second over the raw rate, both
summed over their phases. 1.0 means the engine added no idle time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from openai import OpenAI

from jobs.method import exports
from jobs.method.checkpoint import FileStore
from jobs.method.engine import execute
from jobs.method.llm import LLM, Endpoint
from jobs.method.recipe import Execution, Recipe
from jobs.method.run import Run
from jobs.method.seed_tasks import load_file
from jobs.tools.local_model import MODEL_ALIAS, LocalModel

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-instructions", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=1, help="1: as the raw phase, one after another")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="rounds of job, raw, raw, job")
    args = parser.parse_args()
    seed_tasks = load_file(ROOT / "data" / "seed_tasks.jsonl")
    sent: list[dict[str, Any]] = []
    original = LLM._send

    async def recording_send(self: LLM, prompt: str, params: dict[str, Any], seed: int, n: int) -> Any:
        sent.append({"prompt": prompt, "seed": seed, "n": n, **params})
        return await original(self, prompt, params, seed, n)

    with LocalModel() as model, tempfile.TemporaryDirectory() as tmp:
        endpoint = Endpoint(model.base_url, MODEL_ALIAS, timeout=600)
        client = OpenAI(base_url=model.base_url, api_key="sk-local", max_retries=0, timeout=600)
        client.completions.create(model=MODEL_ALIAS, prompt="Warm up.", max_tokens=4)  # load, first-use costs
        config = Recipe(num_instructions=args.num_instructions, seed=args.seed)
        execution = Execution(concurrency=args.concurrency)
        stats: dict[str, Any] = {}

        def job(n: int) -> tuple[int, float]:
            state = FileStore(Path(tmp) / f"state-{n}")
            run = Run(f"bench-{n}", seed_tasks, config, endpoint, state, execution=execution)
            start = time.perf_counter()
            execute(run)
            exports.export(run, Path(tmp) / f"out-{n}")
            seconds = time.perf_counter() - start
            stats.update(exports.stats(run))
            return stats["tokens"]["completion"], seconds

        def raw(requests: list[dict[str, Any]]) -> tuple[int, float]:
            start = time.perf_counter()
            tokens = sum(
                client.completions.create(model=MODEL_ALIAS, **r).usage.completion_tokens for r in requests
            )
            return tokens, time.perf_counter() - start

        LLM._send = recording_send  # type: ignore[method-assign]
        phases = [("job", job(0))]
        LLM._send = original  # type: ignore[method-assign]
        requests = list(sent)
        phases += [("raw", raw(requests)), ("raw", raw(requests)), ("job", job(1))]
        for n in range(1, args.rounds):
            phases += [
                ("job", job(2 * n)),
                ("raw", raw(requests)),
                ("raw", raw(requests)),
                ("job", job(2 * n + 1)),
            ]

    print(
        json.dumps(
            {k: stats[k] for k in ("verdicts", "classification", "requests", "tokens", "wasted")}, indent=1
        )
    )
    for kind, (tokens, seconds) in phases:
        print(f"  {kind}: {tokens} completion tokens in {seconds:.1f} s = {tokens / seconds:.2f} tok/s")
    rate = {}
    for kind in ("job", "raw"):
        tokens = sum(t for k, (t, _) in phases if k == kind)
        seconds = sum(s for k, (_, s) in phases if k == kind)
        rate[kind] = tokens / seconds
    print(
        f"job: {len(requests)} requests a run, {rate['job']:.2f} tok/s over its phases "
        f"(endpoint busy {stats['endpoint_busy_fraction']:.1%} of the last run); "
        f"raw, the same requests back to back: {rate['raw']:.2f} tok/s"
    )
    ratio = rate["job"] / rate["raw"]
    print(f"ratio job/raw: {ratio:.3f} (target >= 0.95 -> {'met' if ratio >= 0.95 else 'NOT met'})")


if __name__ == "__main__":
    main()
