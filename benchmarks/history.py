"""What `dedup_against` costs: stage-1 filtering with 0, 10K and 52K earlier instructions in the pool.

    .venv/bin/python -m benchmarks.history [--candidates 2000] [--rounds 3]

The earlier instructions are the first N texts of the 55K-text stream (near-duplicates among them
included, which makes the index work harder than a team's deduplicated datasets would); the
candidates are the stream's last --candidates texts. For each N, side by side in one process and
interleaved over --rounds: the time to put the seeds and N earlier instructions into the pool
(once per stage-1 start), the time per candidate through the paper's filters against that pool
(candidates are not added, so every one meets the same pool), and the memory the pool holds.
Prints each N's median against N = 0.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
import tracemalloc
from pathlib import Path

from jobs.method.filters import InstructionFilter
from jobs.method.recipe import Recipe
from jobs.method.seed_tasks import load_file
from jobs.method.similarity import RougeLIndex

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared"))
SIZES = (0, 10_000, 52_000)


def pool_of(seeds: list[tuple[str, str]], earlier: list[str]) -> InstructionFilter:
    pool = InstructionFilter(Recipe(), RougeLIndex())
    for item_id, text in seeds:
        pool.add(item_id, text)
    for n, text in enumerate(earlier):
        pool.add(f"i{n}", text, job="earlier")
    return pool


def measure(seeds: list[tuple[str, str]], earlier: list[str], candidates: list[str]) -> dict[str, float]:
    gc.collect()
    start = time.perf_counter()
    pool = pool_of(seeds, earlier)
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    for text in candidates:
        pool(text)
    per_candidate = (time.perf_counter() - start) / len(candidates)
    return {"load_s": loaded, "ms_per_candidate": per_candidate * 1000}


def memory_mib(seeds: list[tuple[str, str]], earlier: list[str]) -> float:
    """What the pool holds, traced in a pass of its own (tracing slows the timed passes)."""
    gc.collect()
    tracemalloc.start()
    pool = pool_of(seeds, earlier)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del pool
    return held / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    seeds = [(t.id, t.instruction) for t in load_file(ROOT / "data" / "seed_tasks.jsonl")]
    with (SHARED / "data" / "instruction_stream_50k.jsonl").open() as f:
        stream = [json.loads(line)["instruction"] for line in f]
    candidates, history = stream[-args.candidates :], stream[: -args.candidates]
    assert len(history) >= max(SIZES), f"the stream has {len(history)} texts besides the candidates"
    results: dict[int, list[dict[str, float]]] = {n: [] for n in SIZES}
    for _ in range(args.rounds):
        for n in SIZES:
            results[n].append(measure(seeds, history[:n], candidates))
    base = statistics.median(r["ms_per_candidate"] for r in results[0])
    print(f"{args.candidates} candidates, {args.rounds} rounds, medians; {len(seeds)} seed instructions")
    print("| earlier instructions | pool load (s) | ms per candidate | vs none | pool memory (MiB) |")
    print("|---|---|---|---|---|")
    for n in SIZES:
        ms = statistics.median(r["ms_per_candidate"] for r in results[n])
        load = statistics.median(r["load_s"] for r in results[n])
        mib = memory_mib(seeds, history[:n])
        print(f"| {n:,} | {load:.2f} | {ms:.3f} | {ms / base:.2f}x | {mib:.1f} |")


if __name__ == "__main__":
    main()
