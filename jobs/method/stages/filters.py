"""The paper's filters. Each returns a rule name (see jobs.method.decisions.RULES) and a detail dict."""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable
from typing import Any

import numpy as np
from prometheus_client import Histogram

from jobs.method.recipe import Recipe
from jobs.method.similarity import ReferenceIndex, SemanticIndex, Similarity

DEDUP_SECONDS = Histogram(
    "selfinstruct_dedup_seconds",
    "Time to find a candidate's nearest pool item (ROUGE-L index)",
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)

Outcome = tuple[str, dict[str, Any]]
Check = Callable[[str], Outcome | None]  # None: the candidate passes this check


def length_check(min_words: int, max_words: int) -> Check:
    def check(text: str) -> Outcome | None:
        words = len(text.split())
        if words < min_words:
            return "too_short", {"words": words}
        if words > max_words:
            return "too_long", {"words": words}
        return None

    return check


def blacklist_check(keywords: tuple[str, ...]) -> Check:
    patterns = [(k, re.compile(rf"\b({re.escape(k)})\b", re.IGNORECASE)) for k in keywords]

    def check(text: str) -> Outcome | None:
        for keyword, pattern in patterns:
            if pattern.search(text):
                return "blacklisted_keyword", {"keyword": keyword}
        return None

    return check


def write_a_program(text: str) -> Outcome | None:
    # the reference lower-cases first: "Write A Program ..." goes too
    return ("write_a_program", {}) if text.lower().startswith("write a program") else None


def starts_with_punctuation(text: str) -> Outcome | None:
    return ("starts_with_punctuation", {}) if text[:1] in string.punctuation else None


def starts_with_non_ascii(text: str) -> Outcome | None:
    return ("starts_with_non_ascii", {}) if not text[:1].isascii() else None


def contamination_check(references: ReferenceIndex) -> Check:
    """Dropped as contaminated: the text overlaps a reference item (ReferenceIndex), named in the detail."""

    def check(text: str) -> Outcome | None:
        if (hit := references.check(text)) is None:
            return None
        source, item_id, reference = references.items[hit.index]
        detail: dict[str, Any] = {
            "reference_set": source,
            "reference_id": item_id,
            "reference_text": reference,
        }
        detail |= {"ngram": hit.ngram} if hit.how == "ngram" else {"score": hit.score}
        return "contaminated", detail

    return check


class InstructionFilter:
    """The stage-1 filters in the paper's order, then the job's reference sets (when it names some),
    then exact and ROUGE-L duplicates against the pool, then (with `semantic`, the recipe's
    semantic_threshold) near-duplicates by meaning: the cosine of embeddings against the pool's.

    Kept candidates must be `add`ed: the pool is seeds, then earlier jobs' kept instructions (read-only,
    `job` names each one's job), then kept machine instructions, in that order. With `semantic`, every
    item comes with its embedding, and so does every candidate that passes `needs_vector`.
    """

    def __init__(
        self,
        config: Recipe,
        index: Similarity,
        references: ReferenceIndex | None = None,
        semantic: SemanticIndex | None = None,
    ):
        self.threshold = config.similarity_threshold
        self.paper_checks: list[Check] = [
            length_check(config.min_words, config.max_words),
            blacklist_check(config.keyword_blacklist),
            write_a_program,
            starts_with_punctuation,
            starts_with_non_ascii,
        ]
        self.checks = [
            *self.paper_checks,
            *([contamination_check(references)] if references is not None else []),
        ]
        self.index = index
        self.semantic = semantic
        self.semantic_threshold = config.semantic_threshold
        self._ids: list[str] = []
        self._texts: list[str] = []
        self._jobs: dict[int, str] = {}  # pool position -> the earlier job it came from
        self._by_text: dict[str, tuple[str, str | None]] = {}

    def add(self, item_id: str, text: str, job: str | None = None, vector: np.ndarray | None = None) -> None:
        if job is not None:
            self._jobs[len(self._texts)] = job
        self.index.add(item_id, text)
        if self.semantic is not None:
            if vector is None:
                raise ValueError("a pool item without its embedding")
            self.semantic.add(vector)
        self._ids.append(item_id)
        self._texts.append(text)
        self._by_text.setdefault(text, (item_id, job))

    def needs_vector(self, text: str) -> bool:
        """Whether a candidate can reach the semantic check (the paper's rules, which need no pool, let
        it through): only those are embedded."""
        return self.semantic is not None and not any(check(text) for check in self.paper_checks)

    def __call__(self, text: str, vector: np.ndarray | None = None) -> Outcome:
        for check in self.checks:
            if outcome := check(text):
                return outcome
        if (same := self._by_text.get(text)) is not None:
            detail: dict[str, Any] = {"nearest_id": same[0], "nearest_text": text, "score": 1.0}
            return "exact_duplicate", detail | ({"nearest_job": same[1]} if same[1] else {})
        with DEDUP_SECONDS.time():
            match = self.index.nearest(text)
        detail = {
            "nearest_id": match.id,
            "nearest_text": None if match.index is None else self._texts[match.index],
            "score": match.score,
        }
        if match.index in self._jobs:
            detail["nearest_job"] = self._jobs[match.index]
        if match.score > self.threshold or self.semantic is None:
            return ("too_similar" if match.score > self.threshold else "kept"), detail
        if vector is None:
            raise ValueError("a candidate without its embedding")
        near = self.semantic.nearest(vector)
        if near.index is None:
            return "kept", detail
        cosine = round(near.cosine, 6)
        assert self.semantic_threshold is not None
        if cosine > self.semantic_threshold:
            same = {
                "nearest_id": self._ids[near.index],
                "nearest_text": self._texts[near.index],
                "cosine": cosine,
            }
            if near.index in self._jobs:
                same["nearest_job"] = self._jobs[near.index]
            return "semantic_duplicate", {**same, "rouge_l": match.score}
        return "kept", {**detail, "cosine": cosine, "cosine_nearest_id": self._ids[near.index]}


def _invalid(inst_input: str, output: str) -> Outcome | None:
    if inst_input == output:
        return "output_equals_input", {}
    if output == "":
        return "empty_output", {}
    if inst_input.strip().endswith(":") or output.strip().endswith(":"):
        return "ends_with_colon", {}
    return None


def filter_instances(
    parsed: list[tuple[str, str]],
    truncated: bool,
    limit: int,
    rng: random.Random,
    contaminated: Check | None = None,
) -> list[Outcome]:
    """One outcome per parsed (input, output), in order, as the reference's stage-4 filtering, with
    `contaminated` (contamination_check) asked of the input, then the output, after the validity rules.

    Note the reference's order: an instance whose output equals its (empty) input counts as
    output_equals_input before empty_output.
    """
    outcomes: list[Outcome | None] = [None] * len(parsed)
    if truncated and parsed:
        outcomes[-1] = ("truncated", {})
    live = [i for i, o in enumerate(outcomes) if o is None]
    for i in live:
        outcomes[i] = _invalid(*parsed[i])
    live = [i for i in live if outcomes[i] is None]
    if contaminated is not None:
        for i in live:
            for name, text in zip(("input", "output"), parsed[i], strict=True):
                if text and (found := contaminated(text)):
                    outcomes[i] = (found[0], {**found[1], "field": name})
                    break
        live = [i for i in live if outcomes[i] is None]

    first_output: dict[str, tuple[int, str]] = {}
    conflict = None
    for i in live:
        inst_input, output = parsed[i]
        if inst_input == "":
            continue
        if inst_input in first_output and first_output[inst_input][1] != output:
            conflict = (first_output[inst_input][0], i)
            break
        first_output.setdefault(inst_input, (i, output))
    if conflict:
        for i in live:
            outcomes[i] = ("conflicting_outputs", {"between": list(conflict)})
        live = []

    seen: dict[tuple[str, str], int] = {}
    unique = []
    for i in live:
        if parsed[i] in seen:
            outcomes[i] = ("duplicate_instance", {"duplicate_of": seen[parsed[i]]})
        else:
            seen[parsed[i]] = i
            unique.append(i)
    chosen = set(rng.sample(unique, min(limit, len(unique))))
    for i in unique:
        outcomes[i] = ("kept", {}) if i in chosen else ("over_limit", {"limit": limit})
    return [o for o in outcomes if o is not None]
