"""ROUGE-L similarity against the pool: the reference scan and an exact index with the same answers;
the n-gram index of reference sets (decontamination); and the pool's embeddings (SemanticIndex).

Semantics are rouge-score's `RougeScorer(["rougeL"], use_stemmer=False).score(candidate, pool_item)`
F-measure, as the paper calls it: the candidate is the target (recall side), the pool item the
prediction (precision side). `nearest()` returns the best score over the pool and the earliest pool
item reaching it; a score of 0.0 comes with no item.

The index never approximates. ROUGE-L's F-measure equals 2*lcs/(m+n), and the LCS of two token lists
is at most their multiset overlap, so 2*overlap/(m+n) bounds every pool item's score from above. Every
pool item's overlap with the query is counted in a byte vector: frequent tokens (a share of the pool)
also keep a byte per pool item, added as whole vectors, and the other tokens' postings are scattered
in one call. The item sharing the most tokens is scored first; since sharing x tokens allows at most
2x/(x+n), only items sharing enough tokens to reach that score are bounded, and exact LCS (rapidfuzz,
bit-parallel) is computed in decreasing bound order until no remaining bound can reach the best score.
"""

from __future__ import annotations

import itertools
import re
from array import array
from collections import Counter
from typing import NamedTuple, Protocol

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq
from rouge_score import rouge_scorer

# rouge_score.tokenize: lower-case, every run outside [a-z0-9] separates, empty tokens dropped.
_TOKEN = re.compile(r"[a-z0-9]+")
# Bound slack: bounds and scores are floats; never prune an item within this of the best score.
_EPS = 1e-9
# Exact LCS per first round; later rounds grow 4x.
_ROUND = 8
# Up to this many exact scores are computed one by one: numpy's fixed costs outweigh a short loop.
_FEW = 32
# A token also gets byte vectors, a byte per pool item, once it is in this share of the pool (and this
# many items): past about pool/20 postings, adding a vector is cheaper than scattering the postings.
_DENSE_SHARE = 1 / 16
_DENSE_MIN = 64
# Those byte vectors have room for this many pool items at first, doubling when full.
_MIN_CAPACITY = 1024


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def fmeasure(lcs: int, candidate_len: int, pool_len: int) -> float:
    """rouge_score's _score_lcs + scoring.fmeasure, operation for operation (same float)."""
    if not candidate_len or not pool_len:
        return 0.0
    precision = lcs / pool_len
    recall = lcs / candidate_len
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


class Match(NamedTuple):
    score: float
    index: int | None  # position in the pool, in insertion order
    id: str | None


NO_MATCH = Match(0.0, None, None)


class Similarity(Protocol):
    """What the engine's similarity filter needs; items join in the order they are kept."""

    def add(self, item_id: str, text: str) -> None: ...

    def nearest(self, text: str) -> Match: ...

    def __len__(self) -> int: ...


class ReferenceScan:
    """The paper's way: rouge-score against every pool item (about 50 us a pair)."""

    def __init__(self) -> None:
        self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        self._ids: list[str] = []
        self._texts: list[str] = []

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, item_id: str, text: str) -> None:
        self._ids.append(item_id)
        self._texts.append(text)

    def nearest(self, text: str) -> Match:
        best, best_index = 0.0, None
        for index, item in enumerate(self._texts):
            score = self._scorer.score(text, item)["rougeL"].fmeasure
            if score > best:
                best, best_index = score, index
        if best_index is None:
            return NO_MATCH
        return Match(float(best), best_index, self._ids[best_index])


class _Postings:
    __slots__ = ("counts", "items")

    def __init__(self) -> None:
        self.items = array("q")  # int64: numpy indexes with these without converting them
        self.counts = array("i")


class _Dense:
    """A frequent token's postings as one byte per pool slot: whether each item has the token, and how
    often (saturated at 255). Bytearrays take single-byte writes cheaply; the arrays view them."""

    __slots__ = ("counts", "counts_array", "present", "present_array")

    def __init__(self, capacity: int) -> None:
        self.present = bytearray(capacity)
        self.counts = bytearray(capacity)
        self.present_array = np.frombuffer(self.present, dtype=np.uint8)
        self.counts_array = np.frombuffer(self.counts, dtype=np.uint8)


class RougeLIndex:
    """Exact, incremental ROUGE-L nearest-neighbour index; memory is linear in the pool."""

    def __init__(self) -> None:
        self._vocab: dict[str, int] = {}
        self._postings: list[_Postings] = []
        self._dense: dict[int, _Dense] = {}  # frequent tokens, `_capacity` slots each
        self._capacity = 0
        self._ids: list[str] = []
        self._seqs: list[str | list[int]] = []
        self._lengths = array("i")
        self.lcs_computed = 0  # exact LCS evaluations, for benchmarks

    def __len__(self) -> int:
        return len(self._ids)

    @staticmethod
    def _encode(token_ids: list[int]) -> str | list[int]:
        # One code point per token lets rapidfuzz run its bit-parallel LCS on plain strings.
        if token_ids and max(token_ids) >= 0x110000:
            return token_ids
        return "".join(map(chr, token_ids))

    def add(self, item_id: str, text: str) -> None:
        index = len(self._ids)
        if index == self._capacity:
            self._grow()
        token_ids = []
        for token in tokenize(text):
            tid = self._vocab.get(token)
            if tid is None:
                tid = self._vocab[token] = len(self._postings)
                self._postings.append(_Postings())
            token_ids.append(tid)
        promote_at = max(_DENSE_MIN, (index + 1) * _DENSE_SHARE)
        for tid, count in Counter(token_ids).items():
            postings = self._postings[tid]
            postings.items.append(index)
            postings.counts.append(count)
            dense = self._dense.get(tid)
            if dense is not None:
                dense.present[index] = 1
                dense.counts[index] = min(count, 255)
            elif len(postings.items) >= promote_at:
                self._dense[tid] = self._densify(postings)
        self._ids.append(item_id)
        self._seqs.append(self._encode(token_ids))
        self._lengths.append(len(token_ids))

    def _densify(self, postings: _Postings) -> _Dense:
        dense = _Dense(self._capacity)
        items = np.frombuffer(postings.items, dtype=np.int64)
        dense.present_array[items] = 1
        dense.counts_array[items] = np.minimum(np.frombuffer(postings.counts, dtype=np.int32), 255)
        return dense

    def _grow(self) -> None:
        # Doubling keeps add() amortised O(tokens). Tokens that fell below half the share go back to
        # postings only, so the byte vectors stay within a constant factor of the postings' size.
        old, self._capacity = self._capacity, max(_MIN_CAPACITY, 2 * self._capacity)
        keep = len(self._ids) * _DENSE_SHARE / 2
        grown = {}
        for tid, dense in self._dense.items():
            if len(self._postings[tid].items) >= keep:
                grown[tid] = _Dense(self._capacity)
                grown[tid].present[:old] = dense.present
                grown[tid].counts[:old] = dense.counts
        self._dense = grown

    def nearest(self, text: str) -> Match:
        tokens = tokenize(text)
        n = len(tokens)
        pool = len(self._ids)
        # Tokens the pool has never seen match nothing: dropping them leaves every LCS unchanged.
        known = [tid for tid in map(self._vocab.get, tokens) if tid is not None]
        if not n or not pool or not known:
            return NO_MATCH
        query = self._encode(known)
        overlap = self._overlaps(Counter(known), pool)
        # A first best score from the (first) item sharing the most tokens. An item sharing x tokens
        # scores at most 2x/(x+n), so only those sharing `need` or more can still reach it.
        best = _Best()
        self._score(np.argmax(overlap, keepdims=True), n, query, best)
        found = np.flatnonzero(overlap >= max(1, _need(best.score, n)))
        self._evaluate(found, overlap, n, query, best)
        if best.score == 0.0:
            return NO_MATCH
        return Match(best.score, best.index, self._ids[best.index])

    def _overlaps(self, counts: Counter[int], pool: int) -> np.ndarray:
        """Each pool item's multiset overlap with the query's token counts."""
        dense = self._dense
        postings = self._postings
        # An overlap is at most the query's length: a byte each, unless the query is that long.
        overlap = np.zeros(pool, dtype=np.uint8 if counts.total() < 256 else np.int32)
        shared: np.ndarray | None = None
        once: list[np.ndarray] = []
        for tid, count in counts.items():
            frequent = dense.get(tid)
            if frequent is not None and count < 256:
                if count == 1:
                    np.add(overlap, frequent.present_array[:pool], out=overlap)
                else:
                    if shared is None:
                        shared = np.empty(pool, dtype=np.uint8)
                    shared.fill(count)  # a minimum against an array is far faster than against a scalar
                    np.minimum(frequent.counts_array[:pool], shared, out=shared)
                    np.add(overlap, shared, out=overlap)
                continue
            items = np.frombuffer(postings[tid].items, dtype=np.int64)
            if count == 1:
                once.append(items)
            else:
                shared_counts = np.minimum(np.frombuffer(postings[tid].counts, dtype=np.int32), count)
                np.add.at(overlap, items, shared_counts.astype(overlap.dtype))
        if once:
            # One unbuffered add for them all: an item may be in several of the lists.
            np.add.at(overlap, np.concatenate(once), overlap.dtype.type(1))
        return overlap

    def _evaluate(
        self, items: np.ndarray, overlap: np.ndarray, n: int, query: str | list[int], best: _Best
    ) -> None:
        """Exact scores for `items`, highest bound first, until no bound can reach the best."""
        # An overlap is at most min(m, n), so this is 2*min(overlap, m, n)/(m+n).
        bound = 2.0 * overlap[items] / (np.frombuffer(self._lengths, dtype=np.int32)[items] + n)
        alive = np.flatnonzero(bound >= best.score - _EPS)
        chunk = _ROUND
        while alive.size:
            # Rounds of the highest bounds, until the rest fits in about two rounds.
            if alive.size > 2 * chunk:
                pick = alive[np.argpartition(bound[alive], alive.size - chunk)[alive.size - chunk :]]
            else:
                pick = alive
            self._score(items[pick], n, query, best)
            if pick is alive:
                return
            bound[pick] = -1.0  # scored
            alive = alive[bound[alive] >= best.score - _EPS]
            chunk *= 4

    def _score(self, items: np.ndarray, n: int, query: str | list[int], best: _Best) -> None:
        """Exact scores of `items` into `best`: the highest, and the earliest item on a tie."""
        self.lcs_computed += items.size
        seqs, lengths = self._seqs, self._lengths
        if items.size <= _FEW:
            for index in items.tolist():
                score = fmeasure(LCSseq.similarity(query, seqs[index]), n, lengths[index])
                if score > best.score or (score == best.score and index < best.index):
                    best.score, best.index = score, index
            return
        pool_lens = np.frombuffer(lengths, dtype=np.int32)[items]
        lcs = process.cdist(
            [query], [seqs[i] for i in items.tolist()], scorer=LCSseq.similarity, dtype=np.int32
        )
        scores = _fmeasures(lcs[0], n, pool_lens)
        top_score = float(scores.max())
        if top_score >= best.score:
            first = int(items[scores == top_score].min())
            if top_score > best.score or first < best.index:
                best.score, best.index = top_score, first


def _need(score: float, n: int) -> int:
    """The fewest shared tokens x whose highest possible bound, 2x/(x+n), reaches `score` less the slack.
    Computed with the bounds' own float expression, so no item whose bound reaches it is left out."""
    target = score - _EPS
    if target <= 0:
        return 0
    x = max(0, int(target * n / (2 - target)) - 1)
    while 2.0 * x / (x + n) < target:
        x += 1
    return x


class _Best:
    __slots__ = ("index", "score")

    def __init__(self) -> None:
        self.score, self.index = 0.0, -1


def _fmeasures(lcs: np.ndarray, candidate_len: int, pool_lens: np.ndarray) -> np.ndarray:
    """fmeasure() element-wise: the same IEEE operations in the same order, so the same floats."""
    precision = lcs / pool_lens
    recall = lcs / candidate_len
    total = precision + recall
    scores = np.zeros_like(total)
    np.divide(2 * precision * recall, total, out=scores, where=total > 0)
    return scores


class Overlap(NamedTuple):
    """A text's overlap with a reference item: `how` is "ngram" (the shared run of words in `ngram`) or
    "rouge_l" (its ROUGE-L F-measure in `score`)."""

    index: int  # the reference item, in the order added
    how: str
    ngram: str | None = None
    score: float | None = None


class ReferenceIndex:
    """Texts a job's data must not contain (evaluation prompts, a benchmark's questions): a text overlaps
    an item when they share a run of `n` words (rouge-score's tokens: lower-cased, alphanumeric) or, with
    a `threshold`, when its ROUGE-L F-measure against the item is above it (RougeLIndex, exact).

    Every n-word run of every item is kept by its hash (the first item holding it): a text's runs are
    looked up one by one, and a hit is confirmed word for word; one that is not (a hash collision) is
    looked for in every item, so a collision never drops a match nor makes one. Items shorter than `n`
    words can only be matched by ROUGE-L. `n` 0: no n-gram rule."""

    def __init__(self, n: int, threshold: float | None = None):
        self.n = n
        self.threshold = threshold
        self.rouge = RougeLIndex() if threshold is not None else None
        self._runs: dict[int, int] = {}  # hash of a run of n words -> the first item holding it
        self.items: list[tuple[str, str, str]] = []  # (reference set, item id, text), in the order added

    def __len__(self) -> int:
        return len(self.items)

    def _hashes(self, words: list[str]) -> list[int]:
        n = self.n
        return [hash(tuple(words[i : i + n])) for i in range(len(words) - n + 1)] if n else []

    def add(self, source: str, item_id: str, text: str) -> None:
        index = len(self.items)
        self.items.append((source, item_id, text))
        for h in self._hashes(tokenize(text)):
            self._runs.setdefault(h, index)
        if self.rouge is not None:
            self.rouge.add(item_id, text)

    def _holds(self, item: int, run: list[str]) -> bool:
        theirs = tokenize(self.items[item][2])
        return any(theirs[j : j + self.n] == run for j in range(len(theirs) - self.n + 1))

    def check(self, text: str) -> Overlap | None:
        """The first overlap found (n-gram runs in the text's order, then ROUGE-L), or None."""
        words = tokenize(text)
        runs = self._runs
        for i, h in enumerate(self._hashes(words)):
            if (item := runs.get(h)) is not None:
                run = words[i : i + self.n]
                # the item the hash names, else (a collision: never seen with 64-bit hashes) any item
                for j in itertools.chain((item,), range(len(self.items))):
                    if self._holds(j, run):
                        return Overlap(j, "ngram", ngram=" ".join(run))
        if self.rouge is not None and len(self.rouge):
            match = self.rouge.nearest(text)
            if match.index is not None and match.score > self.threshold:  # type: ignore[operator]
                return Overlap(match.index, "rouge_l", score=match.score)
        return None


# --- near-duplicates by meaning ---


class Nearest(NamedTuple):
    index: int | None  # pool position; None: the pool is empty
    cosine: float


class SemanticIndex:
    """The pool's embeddings, for semantic deduplication beside ROUGE-L: the exact nearest item by cosine.

    Vectors are unit length (jobs.method.transport's Embedder), so a cosine is a dot product; the pool
    is one float32 matrix, grown by doubling (from _MIN_CAPACITY rows), and a query is one
    matrix-vector product over it: exact, at a cost per candidate linear in the pool
    (benchmarks/semantic_dedup.py measures it up to the paper's 52K). Ties go to the earliest item, as
    ROUGE-L's do."""

    def __init__(self) -> None:
        self._matrix: np.ndarray | None = None
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, vector: np.ndarray) -> None:
        if self._matrix is None:
            self._matrix = np.empty((_MIN_CAPACITY, vector.shape[0]), dtype=np.float32)
        elif self._size == len(self._matrix):
            grown = np.empty((2 * len(self._matrix), self._matrix.shape[1]), dtype=np.float32)
            grown[: self._size] = self._matrix
            self._matrix = grown
        self._matrix[self._size] = vector
        self._size += 1

    def nearest(self, vector: np.ndarray) -> Nearest:
        if self._matrix is None or not self._size:
            return Nearest(None, 0.0)
        if vector.shape[0] != self._matrix.shape[1]:
            raise ValueError(
                f"a {vector.shape[0]}-dimension vector against a {self._matrix.shape[1]}-dimension pool"
            )
        scores = self._matrix[: self._size] @ vector
        best = int(np.argmax(scores))
        return Nearest(best, float(scores[best]))
