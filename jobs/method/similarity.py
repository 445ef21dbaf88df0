"""ROUGE-L similarity against the pool: the reference scan and an exact index with the same answers.

Semantics are rouge-score's `RougeScorer(["rougeL"], use_stemmer=False).score(candidate, pool_item)`
F-measure, as the paper calls it: the candidate is the target (recall side), the pool item the
prediction (precision side). `nearest()` returns the best score over the pool and the earliest pool
item reaching it; a score of 0.0 comes with no item.

The index never approximates. ROUGE-L's F-measure equals 2*lcs/(m+n), and the LCS of two token lists
is at most their multiset overlap, so 2*overlap/(m+n) bounds every pool item's score from above. The
overlaps come from an inverted index in one vectorised pass; exact LCS (rapidfuzz, bit-parallel) is
computed in decreasing bound order and stops once no remaining bound can reach the best score found.
"""

from __future__ import annotations

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
# Exact LCS per first round; later rounds grow 4x. A first probe runs once the postings read reach
# _PROBE_VOLUME, so that a good best score lets the frequent tokens' postings be skipped.
_PROBE = 8
_PROBE_VOLUME = 512


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
        self.items = array("i")
        self.counts = array("i")


class RougeLIndex:
    """Exact, incremental ROUGE-L nearest-neighbour index; memory is linear in the pool."""

    def __init__(self) -> None:
        self._vocab: dict[str, int] = {}
        self._postings: list[_Postings] = []
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
        token_ids = []
        for token in tokenize(text):
            tid = self._vocab.get(token)
            if tid is None:
                tid = self._vocab[token] = len(self._postings)
                self._postings.append(_Postings())
            token_ids.append(tid)
        for tid, count in Counter(token_ids).items():
            postings = self._postings[tid]
            postings.items.append(index)
            postings.counts.append(count)
        self._ids.append(item_id)
        self._seqs.append(self._encode(token_ids))
        self._lengths.append(len(token_ids))

    def nearest(self, text: str) -> Match:
        tokens = tokenize(text)
        n = len(tokens)
        pool = len(self._ids)
        vocab = self._vocab
        # Tokens the pool has never seen match nothing: dropping them leaves every LCS unchanged.
        known = [vocab[t] for t in tokens if t in vocab]
        if not n or not pool or not known:
            return NO_MATCH
        counts = Counter(known)
        postings = self._postings
        rare_first = sorted(counts, key=lambda tid: len(postings[tid].items))
        query = self._encode(known)
        lengths = np.frombuffer(self._lengths, dtype=np.int32)
        overlap = np.zeros(pool, dtype=np.int32)
        seen: list[np.ndarray] = []
        volume, tail = 0, len(known)
        best = _Best()

        for tid in rare_first:
            if volume >= _PROBE_VOLUME and not best.evaluated:
                found = self._discovered(seen, overlap, volume)
                self._evaluate(found, overlap, tail, n, lengths, query, best, limit=_PROBE)
            # A pool item sharing none of the tokens read so far overlaps the query in at most `tail`
            # tokens, so it scores at most 2*tail/(tail+n): once that is below the best, stop looking.
            if 2.0 * tail / (tail + n) < best.score - _EPS:
                break
            items = np.frombuffer(postings[tid].items, dtype=np.int32)
            count = counts[tid]
            if count == 1:
                overlap[items] += 1
            else:
                overlap[items] += np.minimum(np.frombuffer(postings[tid].counts, dtype=np.int32), count)
            seen.append(items)
            volume += items.size
            tail -= count
        self._evaluate(self._discovered(seen, overlap, volume), overlap, tail, n, lengths, query, best)
        if best.index < 0 or best.score == 0.0:
            return NO_MATCH
        return Match(best.score, best.index, self._ids[best.index])

    @staticmethod
    def _discovered(seen: list[np.ndarray], overlap: np.ndarray, volume: int) -> np.ndarray:
        if volume * 8 < overlap.size:
            return np.unique(np.concatenate(seen))
        return np.flatnonzero(overlap)

    def _evaluate(
        self,
        items: np.ndarray,
        overlap: np.ndarray,
        tail: int,
        n: int,
        lengths: np.ndarray,
        query: str | list[int],
        best: _Best,
        limit: int | None = None,
    ) -> None:
        """Exact scores for `items`, highest bound first, until no bound can reach the best."""
        item_lengths = lengths[items]
        bound = 2.0 * np.minimum(overlap[items] + tail, np.minimum(item_lengths, n)) / (item_lengths + n)
        alive = np.flatnonzero(bound >= best.score - _EPS)
        chunk = _PROBE
        while alive.size:
            if alive.size > chunk:
                top = np.argpartition(-bound[alive], chunk)[:chunk]
                pick, alive = alive[top], np.delete(alive, top)
            else:
                pick, alive = alive, alive[:0]
            picked = items[pick]
            lcs = process.cdist(
                [query], [self._seqs[i] for i in picked.tolist()], scorer=LCSseq.similarity, dtype=np.int32
            )[0]
            self.lcs_computed += picked.size
            scores = _fmeasures(lcs, n, item_lengths[pick])
            top_score = float(scores.max())
            if top_score >= best.score:
                first = int(picked[scores == top_score].min())
                if top_score > best.score or first < best.index or best.index < 0:
                    best.score, best.index = top_score, first
            best.evaluated = True
            if limit is not None:
                return
            alive = alive[bound[alive] >= best.score - _EPS]
            chunk *= 4


class _Best:
    __slots__ = ("evaluated", "index", "score")

    def __init__(self) -> None:
        self.score, self.index, self.evaluated = 0.0, -1, False


def _fmeasures(lcs: np.ndarray, candidate_len: int, pool_lens: np.ndarray) -> np.ndarray:
    """fmeasure() element-wise: the same IEEE operations in the same order, so the same floats."""
    precision = lcs / pool_lens
    recall = lcs / candidate_len
    total = precision + recall
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = 2 * precision * recall / total
    return np.where(total > 0, scores, 0.0)
