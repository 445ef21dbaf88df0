"""Does the engine keep the endpoint busy? Job throughput against raw back-to-back throughput.

    .venv/bin/python -m benchmarks.engine [--num-instructions 20] [--concurrency 1] [--rounds 1]
                                          [--base-url URL --model NAME]

Starts the local model (or uses --base-url) and runs a whole job (all stages and the export),
recording every request it sends; then sends the same requests again one after another with a plain
client ("raw"). The machine's speed drifts and jitters (a shared VM), so the phases run in ABBA
order - job, raw, raw, job - per round, and the figure is the job's completion tokens per second
over the raw rate, both summed over their phases. 1.0 means the engine added no idle time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from openai import OpenAI

from jobs.method.checkpoint import FileStore
from jobs.method.endpoint import Endpoint
from jobs.method.engine import execute
from jobs.method.outputs import exports
from jobs.method.recipe import Execution, Recipe
from jobs.method.run import Run
from jobs.method.seed_tasks import load_file
from jobs.method.transport import LLM
from jobs.tools.local_model import MODEL_ALIAS, LocalModel

ROOT = Path(__file__).resolve().parent.parent


def run(
    num_instructions: int,
    concurrency: int,
    seed: int,
    rounds: int,
    base_url: str | None = None,
    model: str = MODEL_ALIAS,
) -> dict[str, Any]:
    """The phases on `base_url` (default: the embedded model, started here). The headline: the job's
    completion tokens per second over the raw rate (`ratio`); the raw phases replay the job's recorded
    requests, so on a deterministic endpoint both make the same completion tokens."""
    seed_tasks = load_file(ROOT / "data" / "seed_tasks.jsonl")
    sent: list[dict[str, Any]] = []
    original = LLM._send

    async def recording_send(self: LLM, prompt: str, params: dict[str, Any], seed: int, n: int) -> Any:
        sent.append({"prompt": prompt, "seed": seed, "n": n, **params})
        return await original(self, prompt, params, seed, n)

    local = None if base_url else LocalModel()
    with local or nullcontext(), tempfile.TemporaryDirectory() as tmp:
        url = base_url or local.base_url  # type: ignore[union-attr]
        endpoint = Endpoint(url, model, timeout=600)
        client = OpenAI(base_url=url, api_key="sk-local", max_retries=0, timeout=600)
        client.completions.create(model=model, prompt="Warm up.", max_tokens=4)  # load, first-use costs
        config = Recipe(num_instructions=num_instructions, seed=seed)
        execution = Execution(concurrency=concurrency)
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
                client.completions.create(model=model, **r).usage.completion_tokens for r in requests
            )
            return tokens, time.perf_counter() - start

        LLM._send = recording_send  # type: ignore[method-assign]
        try:
            phases = [("job", job(0))]
        finally:
            LLM._send = original  # type: ignore[method-assign]
        requests = list(sent)
        phases += [("raw", raw(requests)), ("raw", raw(requests)), ("job", job(1))]
        for n in range(1, rounds):
            phases += [
                ("job", job(2 * n)),
                ("raw", raw(requests)),
                ("raw", raw(requests)),
                ("job", job(2 * n + 1)),
            ]
    rate = {}
    for kind in ("job", "raw"):
        tokens = sum(t for k, (t, _) in phases if k == kind)
        seconds = sum(s for k, (_, s) in phases if k == kind)
        rate[kind] = tokens / seconds
    return {
        "stats": stats,
        "phases": phases,
        "requests": len(requests),
        "job_tok_s": rate["job"],
        "raw_tok_s": rate["raw"],
        "ratio": rate["job"] / rate["raw"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-instructions", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=1, help="1: as the raw phase, one after another")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="rounds of job, raw, raw, job")
    parser.add_argument("--base-url", help="a completions endpoint; default: the embedded model")
    parser.add_argument("--model", default=MODEL_ALIAS)
    args = parser.parse_args()
    result = run(args.num_instructions, args.concurrency, args.seed, args.rounds, args.base_url, args.model)
    stats = result["stats"]
    print(
        json.dumps(
            {k: stats[k] for k in ("verdicts", "classification", "requests", "tokens", "wasted")}, indent=1
        )
    )
    for kind, (tokens, seconds) in result["phases"]:
        print(f"  {kind}: {tokens} completion tokens in {seconds:.1f} s = {tokens / seconds:.2f} tok/s")
    print(
        f"job: {result['requests']} requests a run, {result['job_tok_s']:.2f} tok/s over its phases "
        f"(endpoint busy {stats['endpoint_busy_fraction']:.1%} of the last run); "
        f"raw, the same requests back to back: {result['raw_tok_s']:.2f} tok/s"
    )
    ratio = result["ratio"]
    print(f"ratio job/raw: {ratio:.3f} (target >= 0.95 -> {'met' if ratio >= 0.95 else 'NOT met'})")


if __name__ == "__main__":
    main()
