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
from typing import Any

from jobs.method.recipe import Recipe
from jobs.method.seed_tasks import load_file
from jobs.method.similarity import RougeLIndex
from jobs.method.stages.filters import InstructionFilter

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


def run(
    seeds: list[tuple[str, str]],
    stream: list[str],
    candidates: int,
    rounds: int,
    sizes: tuple[int, ...] = SIZES,
) -> dict[str, Any]:
    """A row per pool size: medians of the load time and the time per candidate, that time over the
    empty pool's (`vs_none`, the headline), and the pool's memory."""
    tried, history = stream[-candidates:], stream[:-candidates]
    assert len(history) >= max(sizes), f"the stream has {len(history)} texts besides the candidates"
    results: dict[int, list[dict[str, float]]] = {n: [] for n in sizes}
    for _ in range(rounds):
        for n in sizes:
            results[n].append(measure(seeds, history[:n], tried))
    base = statistics.median(r["ms_per_candidate"] for r in results[sizes[0]])
    rows = []
    for n in sizes:
        ms = statistics.median(r["ms_per_candidate"] for r in results[n])
        rows.append(
            {
                "earlier": n,
                "load_s": statistics.median(r["load_s"] for r in results[n]),
                "ms_per_candidate": ms,
                "vs_none": ms / base,
                "memory_mib": memory_mib(seeds, history[:n]),
            }
        )
    return {"candidates": len(tried), "rounds": rounds, "seeds": len(seeds), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    seeds = [(t.id, t.instruction) for t in load_file(ROOT / "data" / "seed_tasks.jsonl")]
    with (SHARED / "data" / "instruction_stream_50k.jsonl").open() as f:
        stream = [json.loads(line)["instruction"] for line in f]
    result = run(seeds, stream, args.candidates, args.rounds)
    print(f"{args.candidates} candidates, {args.rounds} rounds, medians; {len(seeds)} seed instructions")
    print("| earlier instructions | pool load (s) | ms per candidate | vs none | pool memory (MiB) |")
    print("|---|---|---|---|---|")
    for row in result["rows"]:
        print(
            f"| {row['earlier']:,} | {row['load_s']:.2f} | {row['ms_per_candidate']:.3f} | "
            f"{row['vs_none']:.2f}x | {row['memory_mib']:.1f} |"
        )


if __name__ == "__main__":
    main()
