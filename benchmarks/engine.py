"""Does the engine keep the endpoint busy? Job throughput against raw back-to-back throughput.

    .venv/bin/python -m benchmarks.engine [--num-instructions 20] [--concurrency 2]

Starts the local model, runs a whole job (all stages and the export) while recording every request
it sends, then sends the same requests again one after another with a plain client. Prints the
job's completion tokens per second over the replay's: 1.0 means the engine added no idle time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from openai import OpenAI

from jobs.config import GenerationConfig
from jobs.engine import Run, execute
from jobs.llm import LLM, Endpoint
from jobs.local_model import MODEL_ALIAS, LocalModel
from jobs.seed_tasks import load_file
from jobs.state import FileStore

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-instructions", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    seed_tasks = load_file(ROOT / "data" / "seed_tasks.jsonl")
    sent: list[dict[str, Any]] = []
    original = LLM._send

    async def recording_send(self: LLM, prompt: str, params: dict[str, Any], seed: int, n: int) -> Any:
        sent.append({"prompt": prompt, "seed": seed, "n": n, **params})
        return await original(self, prompt, params, seed, n)

    LLM._send = recording_send  # type: ignore[method-assign]
    with LocalModel() as model, tempfile.TemporaryDirectory() as tmp:
        endpoint = Endpoint(model.base_url, MODEL_ALIAS, timeout=600)
        client = OpenAI(base_url=model.base_url, api_key="sk-local", max_retries=0, timeout=600)
        client.completions.create(model=MODEL_ALIAS, prompt="Warm up.", max_tokens=4)  # load, first-use costs

        config = GenerationConfig(
            num_instructions=args.num_instructions, seed=args.seed, concurrency=args.concurrency
        )
        run = Run("bench", seed_tasks, config, endpoint, FileStore(Path(tmp) / "state"))
        start = time.perf_counter()
        execute(run)
        run.export(Path(tmp) / "out")
        job_seconds = time.perf_counter() - start
        stats = run.stats()
        job_tokens = stats["tokens"]["completion"]

        start = time.perf_counter()
        replay_tokens = 0
        for request in sent:
            response = client.completions.create(model=MODEL_ALIAS, **request)
            replay_tokens += response.usage.completion_tokens
        replay_seconds = time.perf_counter() - start

    job_rate, raw_rate = job_tokens / job_seconds, replay_tokens / replay_seconds
    print(
        json.dumps(
            {k: stats[k] for k in ("verdicts", "classification", "requests", "tokens", "wasted")}, indent=1
        )
    )
    print(
        f"job: {len(sent)} requests, {job_tokens} completion tokens in {job_seconds:.1f} s "
        f"= {job_rate:.2f} tok/s "
        f"(endpoint busy {stats['endpoint_busy_fraction']:.1%} of the run)"
    )
    print(
        f"raw: the same {len(sent)} requests back to back, {replay_tokens} tokens in {replay_seconds:.1f} s "
        f"= {raw_rate:.2f} tok/s"
    )
    ratio = job_rate / raw_rate
    print(f"ratio job/raw: {ratio:.3f} (target >= 0.95 -> {'met' if ratio >= 0.95 else 'NOT met'})")


if __name__ == "__main__":
    main()
