"""Semantic deduplication's cost per candidate as the pool grows, and what it drops beyond ROUGE-L.

    .venv/bin/python -m benchmarks.semantic_dedup [--pools 1000 10000 52000] [--candidates 500]
        [--stream 10000] [--threshold 0.9]

The 55K-text stream is embedded by the embedded all-MiniLM-L6-v2 (llama.cpp's server, started here;
the vectors are cached in .run/ by the texts' hash): the time per text is the embedding cost a
candidate adds. Then, for each pool size P, a pool of the stream's first P texts and the next
--candidates texts as candidates: the exact index's time per candidate (SemanticIndex.nearest), side
by side with the ROUGE-L index's on the same pool and candidates (the cost stage 1 pays anyway), and
its answers against a float64 brute force (the same nearest cosine, within float32's rounding; and how
often the very same item, which a near tie in float32 may change). Last, the first
--stream texts through stage 1's filter (InstructionFilter, seeds first) with ROUGE-L alone and with
the semantic rule too: what the latter drops beyond ROUGE-L, with examples.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from jobs.method.endpoint import EmbeddingEndpoint
from jobs.method.recipe import Recipe
from jobs.method.similarity import RougeLIndex, SemanticIndex
from jobs.method.stages.filters import InstructionFilter
from jobs.method.transport import Embedder, Usage
from jobs.tools.embedding_model import EMBEDDING_ALIAS, EmbeddingModel, embedding_model_path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared"))


def texts(n: int) -> list[str]:
    with (SHARED / "data" / "instruction_stream_50k.jsonl").open() as f:
        stream = [json.loads(line)["instruction"] for line in f]
    return stream[:n]


def seeds() -> list[tuple[str, str]]:
    with (SHARED / "data" / "self_instruct_seed_tasks.jsonl").open() as f:
        return [(row["id"], row["instruction"]) for row in map(json.loads, f)]


def embed(endpoint: EmbeddingEndpoint, items: list[str]) -> tuple[np.ndarray, float]:
    """The texts' vectors and the seconds a text took (64 a request, 2 at once), cached by content."""
    key = hashlib.sha256("\n".join([embedding_model_path(), *items]).encode()).hexdigest()[:16]
    cache = ROOT / ".run" / f"bench-embeddings-{key}.npz"
    if cache.exists():
        data = np.load(cache)
        return data["vectors"], float(data["seconds"])

    async def go() -> np.ndarray:
        embedder = Embedder(endpoint, Usage(), 2)
        try:
            return await embedder.embed(items)
        finally:
            await embedder.close()

    start = time.perf_counter()
    vectors = asyncio.run(go())
    seconds = (time.perf_counter() - start) / len(items)
    cache.parent.mkdir(exist_ok=True)
    np.savez(cache, vectors=vectors, seconds=seconds)
    return vectors, seconds


def search_costs(stream: list[str], vectors: np.ndarray, pools: list[int], candidates: int) -> list[dict]:
    rows = []
    for size in pools:
        semantic, rouge = SemanticIndex(), RougeLIndex()
        for i in range(size):
            semantic.add(vectors[i])
            rouge.add(str(i), stream[i])
        queries = range(size, size + candidates)
        t_semantic = t_rouge = 0.0
        exact = same_item = 0
        pool = vectors[:size].astype(np.float64)
        for q in queries:  # one candidate each, alternating: the same machine state for both
            s = time.perf_counter()
            found = semantic.nearest(vectors[q])
            t_semantic += time.perf_counter() - s
            s = time.perf_counter()
            rouge.nearest(stream[q])
            t_rouge += time.perf_counter() - s
            scores = pool @ vectors[q].astype(np.float64)
            best = int(np.argmax(scores))
            # the nearest cosine; an item within float32's rounding of it is as near (a tie in float32)
            assert found.index is not None
            exact += int(
                scores[found.index] >= scores[best] - 1e-6 and abs(found.cosine - scores[best]) < 1e-5
            )
            same_item += int(found.index == best)
        rows.append(
            {
                "pool": size,
                "candidates": candidates,
                "exact": exact,
                "same_item": same_item,
                "semantic_ms": t_semantic / candidates * 1e3,
                "rouge_ms": t_rouge / candidates * 1e3,
                "ratio": t_semantic / t_rouge,
            }
        )
    return rows


def beyond_rouge(stream: list[str], vectors: np.ndarray, seed_vectors: np.ndarray, threshold: float) -> dict:
    """The stream through stage 1's filter, with ROUGE-L alone and with the semantic rule too."""
    out: dict[str, Any] = {}
    for name, recipe in (("rouge", Recipe()), ("semantic", Recipe(semantic_threshold=threshold))):
        semantic = SemanticIndex() if recipe.semantic_threshold is not None else None
        pool = InstructionFilter(recipe, RougeLIndex(), semantic=semantic)
        for (item_id, text), vector in zip(seeds(), seed_vectors, strict=True):
            pool.add(item_id, text, vector=vector)
        rules: Counter[str] = Counter()
        examples = []
        for i, text in enumerate(stream):
            rule, detail = pool(text, vectors[i])
            rules[rule] += 1
            if rule == "kept":
                pool.add(f"s{i}", text, vector=vectors[i])
            elif rule == "semantic_duplicate" and len(examples) < 5:
                examples.append(
                    {"text": text, **{k: detail[k] for k in ("nearest_text", "cosine", "rouge_l")}}
                )
        out[name] = {"rules": dict(rules), **({"examples": examples} if examples else {})}
    return out


def run(
    pools: list[int], candidates: int, stream_size: int, threshold: float, endpoint: EmbeddingEndpoint
) -> dict:
    need = max(max(pools) + candidates, stream_size)
    stream = texts(need)
    seed_texts = [text for _, text in seeds()]
    vectors, per_text = embed(endpoint, stream)
    seed_vectors, _ = embed(endpoint, seed_texts)
    return {
        "embed_ms_per_text": per_text * 1e3,
        "search": search_costs(stream, vectors, pools, candidates),
        "beyond_rouge": beyond_rouge(stream[:stream_size], vectors, seed_vectors, threshold),
        "threshold": threshold,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pools", type=int, nargs="+", default=[1000, 10000, 52000])
    parser.add_argument("--candidates", type=int, default=500)
    parser.add_argument("--stream", type=int, default=10000)
    parser.add_argument("--threshold", type=float, default=0.9)
    args = parser.parse_args()
    with EmbeddingModel(log_file=ROOT / ".run" / "bench-embedding-model.log") as model:
        endpoint = EmbeddingEndpoint(model.base_url, EMBEDDING_ALIAS)
        result = run(args.pools, args.candidates, args.stream, args.threshold, endpoint)
    print(f"embedding: {result['embed_ms_per_text']:.2f} ms a text (64 a request, 2 at once)")
    print("| pool | exact | same item | semantic ms/candidate | ROUGE-L ms/candidate | semantic / ROUGE-L |")
    print("|---|---|---|---|---|---|")
    for row in result["search"]:
        print(
            f"| {row['pool']:,} | {row['exact']}/{row['candidates']} | {row['same_item']} | "
            f"{row['semantic_ms']:.3f} | "
            f"{row['rouge_ms']:.3f} | {row['ratio']:.2f}x |"
        )
    beyond = result["beyond_rouge"]
    print(f"\nthe stream's first {args.stream:,} texts, threshold {args.threshold}:")
    for name in ("rouge", "semantic"):
        print(f"  {name}: {beyond[name]['rules']}")
    for example in beyond["semantic"].get("examples", []):
        near = f"cosine {example['cosine']}, ROUGE-L {example['rouge_l']:.2f}"
        print(f"  - {example['text']!r}\n    ~ {example['nearest_text']!r} ({near})")
    (ROOT / ".run").mkdir(exist_ok=True)
    (ROOT / ".run" / "bench-semantic-dedup.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
