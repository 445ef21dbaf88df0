"""Decontamination at scale: 50K candidates checked against 100K reference items, the index against
the plain way (every reference item's 13-word runs as tuples in a Python set), side by side.

    .venv/bin/python -m benchmarks.decontamination [--candidates 50000] [--references 100000]

Candidates are the 55K-text stream's first texts; reference items are the rest of it, each also
again with its words shuffled (a fixed seed) until there are enough: real vocabulary and lengths,
few runs shared by chance. Into `--planted` candidates a 13-word run of a random long-enough
reference item is written. Both ways must flag the same candidates (every planted one among them);
the plain way's time over the index's, building and checking (the index also names the item). With
--rouge-sample, that many candidates are also checked with the ROUGE-L rule (threshold 0.7) to time
it per candidate, and --scan-sample of them by rouge-score against every reference item (the paper's
way), side by side: the same nearest score, and the scan's time over the index's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

from jobs.method.similarity import ReferenceIndex, ReferenceScan, tokenize

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared"))
N = 13


def data(
    candidates: int, references: int, planted: int, seed: int = 1
) -> tuple[list[str], list[str], set[int]]:
    """(candidate texts, reference texts, the planted candidates' positions)."""
    with (SHARED / "data" / "instruction_stream_50k.jsonl").open() as f:
        stream = [json.loads(line)["instruction"] for line in f]
    rng = random.Random(seed)
    pool, found = stream[candidates:], list(stream[:candidates])
    refs = []
    while len(refs) < references:
        text = pool[len(refs) % len(pool)]
        if len(refs) >= len(pool):
            words = text.split()
            rng.shuffle(words)
            text = " ".join(words)
        refs.append(text)
    long_enough = [i for i, text in enumerate(refs) if len(tokenize(text)) >= N]
    where = set(rng.sample(range(candidates), planted))
    for i in sorted(where):
        words = tokenize(refs[rng.choice(long_enough)])
        start = rng.randrange(len(words) - N + 1)
        found[i] = f"{found[i]} Also: {' '.join(words[start : start + N])}."
    return found, refs, where


class PlainRuns:
    """The straightforward way: every item's runs as word tuples in one set."""

    def __init__(self) -> None:
        self.runs: set[tuple[str, ...]] = set()

    def add(self, text: str) -> None:
        words = tokenize(text)
        self.runs.update(tuple(words[i : i + N]) for i in range(len(words) - N + 1))

    def check(self, text: str) -> bool:
        words = tokenize(text)
        return any(tuple(words[i : i + N]) in self.runs for i in range(len(words) - N + 1))


def timed(fn):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run(
    candidates: int, references: int, planted: int, rouge_sample: int = 0, scan_sample: int = 0
) -> dict[str, float]:
    texts, refs, where = data(candidates, references, planted)

    def build_index() -> ReferenceIndex:
        index = ReferenceIndex(N, None)
        for i, text in enumerate(refs):
            index.add("bench", str(i), text)
        index.check("warm")  # sorts its table
        return index

    def build_plain() -> PlainRuns:
        plain = PlainRuns()
        for text in refs:
            plain.add(text)
        return plain

    index, index_build = timed(build_index)
    plain, plain_build = timed(build_plain)
    flagged, index_check = timed(lambda: {i for i, text in enumerate(texts) if index.check(text)})
    plain_flagged, plain_check = timed(lambda: {i for i, text in enumerate(texts) if plain.check(text)})
    out = {
        "candidates": candidates,
        "references": references,
        "planted": len(where),
        "planted_found": len(where & flagged),
        "flagged": len(flagged),
        "same_as_plain": flagged == plain_flagged,
        "index_build_s": index_build,
        "index_check_s": index_check,
        "plain_build_s": plain_build,
        "plain_check_s": plain_check,
        "ratio": (plain_build + plain_check) / (index_build + index_check),
    }
    if rouge_sample:
        rouge = ReferenceIndex(0, 0.7)
        _, rouge_build = timed(lambda: [rouge.add("bench", str(i), text) for i, text in enumerate(refs)])
        sample = texts[:rouge_sample]
        hits, rouge_check = timed(lambda: sum(rouge.check(text) is not None for text in sample))
        out |= {"rouge_build_s": rouge_build, "rouge_ms_per_candidate": 1000 * rouge_check / len(sample)}
        out |= {"rouge_sample": len(sample), "rouge_flagged": hits}
    if rouge_sample and scan_sample:
        scan = ReferenceScan()
        for i, text in enumerate(refs):
            scan.add(str(i), text)
        same, scan_s, index_s = 0, 0.0, 0.0
        for text in texts[:scan_sample]:  # one candidate each way in turn
            expected, took = timed(lambda text=text: scan.nearest(text))
            scan_s += took
            got, took = timed(lambda text=text: rouge.rouge.nearest(text))  # type: ignore[union-attr]
            index_s += took
            same += expected.score == got.score
        out |= {"scan_sample": scan_sample, "scan_same": same, "scan_ratio": scan_s / index_s}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--candidates", type=int, default=50_000)
    parser.add_argument("--references", type=int, default=100_000)
    parser.add_argument("--planted", type=int, default=500)
    parser.add_argument("--rouge-sample", type=int, default=2000)
    parser.add_argument("--scan-sample", type=int, default=3)
    args = parser.parse_args(argv)
    r = run(args.candidates, args.references, args.planted, args.rouge_sample, args.scan_sample)
    print(f"{r['candidates']} candidates against {r['references']} reference items, {N}-word runs")
    print(f"planted {r['planted']}, found {r['planted_found']}; flagged {r['flagged']} in all")
    print(f"same candidates flagged as the plain way: {r['same_as_plain']}")
    print(f"index: build {r['index_build_s']:.2f} s, check {r['index_check_s']:.2f} s")
    print(f"plain: build {r['plain_build_s']:.2f} s, check {r['plain_check_s']:.2f} s")
    print(f"ratio (plain / index, build + check): {r['ratio']:.2f}x")
    if "rouge_build_s" in r:
        print(
            f"ROUGE-L rule (0.7): build {r['rouge_build_s']:.2f} s, {r['rouge_ms_per_candidate']:.2f} ms a "
            f"candidate over {r['rouge_sample']} ({r['rouge_flagged']} flagged)"
        )
    if "scan_ratio" in r:
        print(
            f"rouge-score scan of every reference item, {r['scan_sample']} candidates side by side: "
            f"same nearest score {r['scan_same']}/{r['scan_sample']}, "
            f"ratio (scan / index) {r['scan_ratio']:.0f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
