"""ROUGE-L dedup of a candidate stream against a pool, as the engine's similarity filter decides it.

    python -m jobs.tools.dedup --pool POOL.jsonl [--threshold 0.7] [--reference] \
        < CANDIDATES.jsonl > DECISIONS.jsonl

POOL and CANDIDATES hold one JSON object a line with string fields `id` and `instruction`.
Candidates are decided in input order and each kept one joins the pool. One output line per
candidate: {"id": ..., "kept": true|false, "score": float, "nearest_id": string or null}; a candidate
is dropped when its best ROUGE-L F-measure against the pool is above the threshold. `--reference`
uses the plain rouge-score scan instead of the index (same output, far slower).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import IO

from jobs.method.similarity import ReferenceScan, RougeLIndex, Similarity


class InputError(ValueError):
    pass


def read_items(stream: IO[str], name: str) -> Iterator[tuple[str, str]]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{name} line {number}: invalid JSON: {e.msg}") from e
        if not isinstance(item, dict):
            raise InputError(f"{name} line {number}: expected a JSON object")
        for key in ("id", "instruction"):
            if not isinstance(item.get(key), str):
                raise InputError(f"{name} line {number}: field {key!r} must be a string")
        yield item["id"], item["instruction"]


def run(
    pool: Iterator[tuple[str, str]],
    candidates: Iterator[tuple[str, str]],
    out: IO[str],
    threshold: float,
    index: Similarity,
) -> int:
    for item_id, text in pool:
        index.add(item_id, text)
    count = 0
    for item_id, text in candidates:
        match = index.nearest(text)
        kept = match.score <= threshold
        out.write(
            json.dumps({"id": item_id, "kept": kept, "score": match.score, "nearest_id": match.id}) + "\n"
        )
        if kept:
            index.add(item_id, text)
        count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m jobs.tools.dedup", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--pool", required=True, help="JSONL of {id, instruction}: the starting pool")
    parser.add_argument("--threshold", type=float, default=0.7, help="drop above this score (default 0.7)")
    parser.add_argument("--reference", action="store_true", help="use the plain rouge-score scan")
    args = parser.parse_args(argv)
    index: Similarity = ReferenceScan() if args.reference else RougeLIndex()
    try:
        with open(args.pool, encoding="utf-8") as pool:
            run(
                read_items(pool, args.pool), read_items(sys.stdin, "stdin"), sys.stdout, args.threshold, index
            )
    except (InputError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
