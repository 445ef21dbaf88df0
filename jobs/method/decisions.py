"""Decision records: one per candidate instruction and per candidate instance, kept or dropped, and why;
and their text search (`Query`).

A query is its words; a decision matches when every word begins some word of its text or input,
case-insensitively ("classif" finds "Classify this"); a query of no words finds nothing. Words are
runs of letters, digits and combining marks, after NFKC normalisation and case folding. `words` is
the one tokenizer: a running job's log is scanned with it (jobs.store.decision_log), and a finished
job's FTS5 index holds its output (jobs.blobs.decision_archive), so both give the same answers.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import regex

from jobs.method.vocabulary import STAGE_RULES

Stage = Literal["instruction", "instance"]
Verdict = Literal["kept", "dropped"]


@dataclass
class Decision:
    """`source` says where the candidate came from: {"prompt", "completion", "position"} for an
    instruction (its place in the parsed response), {"instruction_id", "position"} for an instance
    (-1: the response as a whole). `input` is set for instances only."""

    id: str
    stage: Stage
    text: str
    rule: str
    source: dict[str, Any]
    detail: dict[str, Any] = field(default_factory=dict)
    input: str | None = None

    def __post_init__(self) -> None:
        if self.rule not in STAGE_RULES[self.stage]:
            raise ValueError(f"unknown rule {self.rule!r} for stage {self.stage!r}")

    @property
    def verdict(self) -> Verdict:
        return "kept" if self.rule == "kept" else "dropped"

    def to_dict(self) -> dict[str, Any]:
        """Shallow (it is serialised, not kept): dataclasses.asdict's deep copy was 20x the time, and a
        run writes a record for every candidate."""
        out = {name: getattr(self, name) for name in _FIELDS}
        out["verdict"] = self.verdict
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        return cls(**{k: v for k, v in data.items() if k != "verdict"})


_FIELDS = tuple(f.name for f in fields(Decision))

# the decisions one text-query page of a running job reads at most: a page costs the same however
# rare the words are, and its cursor says where the next page reads on
SCAN = 5000
_WORD = regex.compile(r"[\p{L}\p{N}\p{M}]+")


def words(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def searchable(body: bytes | str) -> str:
    """A stored decision's words, text then input, joined by spaces: what a query is matched against."""
    d = json.loads(body)
    return " ".join(words(d["text"]) + words(d.get("input") or ""))


class Query:
    """A text search: its words, each asked for as the start of a word of a decision's text or input."""

    def __init__(self, text: str):
        self.terms = list(dict.fromkeys(words(text)))  # unique, in the order given

    def matches(self, body: bytes | str) -> bool:
        """Whether a stored decision (its JSON) has every term as the start of one of its words."""
        if not self.terms:
            return False
        # a term starts a word where " term" occurs in " word word ...": one C-speed scan a term
        joined = " " + searchable(body)
        return all(f" {t}" in joined for t in self.terms)

    def fts(self) -> str:
        """The FTS5 MATCH expression: each term a quoted prefix, all required. Terms are letters and
        digits only, so nothing in them is FTS5 syntax."""
        return " AND ".join(f'"{t}"*' for t in self.terms)
