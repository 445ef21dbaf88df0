"""The embedded model behind two servers, side by side: llama.cpp's own `llama-server` (the embedded
default since it won this comparison) and llama-cpp-python's (the default before, the baseline).

    .venv/bin/pip install -c constraints.txt "llama-cpp-python[server]"   # the baseline, ~4 min build
    .venv/bin/python -m benchmarks.servers [--llama-server PATH] [--rounds 3] [--servers NAME ...]

Per server, one at a time on the machine, rounds interleaved, medians:
- ms per classification request with log-probabilities: the stage-2 prompt over 20 seed tasks
  (max_tokens 3, temperature 0, the top 5 log-probabilities), and whether the engine can read the
  labels' log-probabilities from the answer;
- stage-1 completion tokens per second, with 1 and with 4 requests in parallel: the instruction
  prompt, 128 tokens each, temperature 0.7.

llama-server runs as the service starts it (jobs.tools.local_model), or the binary given. llama-cpp-python
runs as the service used to start it, with `logits_all` on for log-probabilities and off (its
default, where log-probabilities are refused). `--servers llama-server` runs llama-server's side alone,
without llama-cpp-python installed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from openai.types import Completion

from jobs.method.prompts.layouts import Prompts
from jobs.method.seed_tasks import load_file
from jobs.method.stages.classification import label_logprobs
from jobs.method.transport.client import _top_logprobs
from jobs.tools.local_model import MODEL_ALIAS, LocalModel, model_path

ROOT = Path(__file__).resolve().parent.parent


class LlamaCppPython(LocalModel):
    """llama-cpp-python's server, started as the service started it before llama-server: one request
    at a time, log-probabilities only with logits_all (logits for every prompt position)."""

    def __init__(self, logits_all: bool):
        super().__init__()
        self.logits_all = logits_all

    def command(self) -> list[str]:
        options = {
            "--model": model_path(),
            "--model_alias": MODEL_ALIAS,
            "--host": "127.0.0.1",
            "--port": str(self.port),
            "--n_ctx": str(self.n_ctx),
            "--n_threads": "2",
            "--interrupt_requests": "False",
            "--logits_all": str(self.logits_all),
            "--verbose": "False",
        }
        return [sys.executable, "-m", "llama_cpp.server", *(x for pair in options.items() for x in pair)]


class LlamaServer(LocalModel):
    """The embedded server with another llama-server binary."""

    def __init__(self, binary: str):
        super().__init__()
        self.binary = binary

    def command(self) -> list[str]:
        return [self.binary, *super().command()[1:]]


def complete(base_url: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.post(f"{base_url}/completions", json={"model": MODEL_ALIAS, **body}, timeout=600)
    answer.raise_for_status()
    return answer.json()


def classification(base_url: str, prompts: list[str]) -> tuple[float, float]:
    """ms per request, and the share of answers whose label log-probabilities the engine can read."""
    readable = 0
    started = time.monotonic()
    for prompt in prompts:
        body = complete(base_url, {"prompt": prompt, "max_tokens": 3, "temperature": 0, "logprobs": 5})
        top = _top_logprobs(Completion.model_validate(body).choices[0], False)
        readable += top is not None and label_logprobs(top)[0] > -50
    return 1000 * (time.monotonic() - started) / len(prompts), readable / len(prompts)


def generation(base_url: str, prompt: str, parallel: int, requests: int = 4, tokens: int = 128) -> float:
    """Completion tokens per second over `requests` stage-1 requests of `tokens`, `parallel` at a time."""

    def one(seed: int) -> int:
        body = {"prompt": prompt, "max_tokens": tokens, "temperature": 0.7, "top_p": 0.5, "seed": seed}
        return int(complete(base_url, body)["usage"]["completion_tokens"])

    started = time.monotonic()
    with ThreadPoolExecutor(parallel) as pool:
        tokens = sum(pool.map(one, range(requests)))
    return tokens / (time.monotonic() - started)


SERVERS = ("llama-cpp-python, logits_all", "llama-cpp-python", "llama-server")


def starters(names: Sequence[str], llama_server: str | None = None) -> dict[str, Callable[[], Any]]:
    """How to start each named server (a context manager with `base_url`)."""
    every: dict[str, Callable[[], Any]] = {
        "llama-cpp-python, logits_all": lambda: LlamaCppPython(logits_all=True),
        "llama-cpp-python": lambda: LlamaCppPython(logits_all=False),
        "llama-server": lambda: LlamaServer(llama_server) if llama_server else LocalModel(),
    }
    return {name: every[name] for name in names}


def run(
    servers: dict[str, Callable[[], Any]],
    rounds: int,
    tasks: int = 20,
    requests: int = 4,
    tokens: int = 128,
) -> dict[str, dict[str, float]]:
    """Per server, medians over the rounds: ms per classification request over `tasks` seed tasks, the
    share of answers whose label log-probabilities the engine reads (the headline: 1.00 for a server
    that gives them), and stage-1 tokens per second over `requests` requests of `tokens`, 1 and 4 at
    a time."""
    seed_tasks = load_file(ROOT / "data" / "seed_tasks.jsonl")
    prompts = Prompts(seed_tasks, 0, 4_000)
    clf = [prompts.classification(t.instruction) for t in seed_tasks[-tasks:]]
    stage1 = prompts.instructions([t.instruction for t in seed_tasks[:8]], False)
    results: dict[str, dict[str, list[float]]] = {name: {} for name in servers}
    for round_ in range(rounds):
        for name, make in servers.items():
            with make() as server:
                got = results[name]
                complete(server.base_url, {"prompt": "Warm up.", "max_tokens": 4})
                if name != "llama-cpp-python":  # refuses log-probabilities without logits_all
                    ms, readable = classification(server.base_url, clf)
                    got.setdefault("classification_ms", []).append(ms)
                    got.setdefault("readable", []).append(readable)
                for parallel in (1, 4):
                    got.setdefault(f"tok_s_{parallel}", []).append(
                        generation(server.base_url, stage1, parallel, requests, tokens)
                    )
            print(f"round {round_ + 1}: {name}: {json.dumps({k: round(v[-1], 2) for k, v in got.items()})}")
    return {name: {k: statistics.median(v) for k, v in got.items()} for name, got in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--llama-server", help="a llama-server binary (default: the embedded one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=SERVERS,
        default=list(SERVERS),
        metavar="NAME",
        help=f"the servers to compare, of: {'; '.join(map(repr, SERVERS))} (default: all three)",
    )
    args = parser.parse_args()
    results = run(starters(list(dict.fromkeys(args.servers)), args.llama_server), args.rounds)
    print("\n| server | classification ms/request | label log-probabilities read | stage-1 tok/s: 1 | 4 |")
    print("|---|---|---|---|---|")
    for name, med in results.items():
        ms, readable = med.get("classification_ms", float("nan")), med.get("readable", float("nan"))
        print(f"| {name} | {ms:.0f} | {readable:.2f} | {med['tok_s_1']:.1f} | {med['tok_s_4']:.1f} |")


if __name__ == "__main__":
    main()
