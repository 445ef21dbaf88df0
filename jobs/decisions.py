"""Decision records: one per candidate instruction and per candidate instance, kept or dropped, and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Stage = Literal["instruction", "instance"]
Verdict = Literal["kept", "dropped"]

# The closed set of rules. `kept` is the only rule whose verdict is kept.
RULES: dict[str, str] = {
    "kept": "passed every filter",
    # instruction stage, in the order the filters run
    "too_short": "3 words or fewer (whitespace split)",
    "too_long": "more than 150 words",
    "blacklisted_keyword": "contains a blacklisted keyword as a whole word (detail.keyword)",
    "write_a_program": 'starts with "Write a program"',
    "starts_with_punctuation": "first character is ASCII punctuation",
    "starts_with_non_ascii": "first character is not ASCII",
    "exact_duplicate": "the same text is already in the pool (detail.nearest_id)",
    "too_similar": "ROUGE-L F-measure above the threshold against a pool item (detail.nearest_*, score)",
    "target_reached": "the run had kept enough instructions before this candidate was considered",
    # instance stage
    "unparseable": "no instance could be parsed from the response (text is the raw response)",
    "truncated": "the last instance of a response cut off by the length limit",
    "empty_output": "the output is empty",
    "output_equals_input": "the output equals the input",
    "ends_with_colon": "the input or output ends with a colon (usually cut off)",
    "conflicting_outputs": "two instances of the task share an input but not the output: all dropped",
    "duplicate_instance": "the same input and output already kept for the task (detail.duplicate_of)",
    "over_limit": "more instances than the per-task limit; a random sample is kept",
}
STAGE_RULES: dict[str, tuple[str, ...]] = {
    "instruction": (
        "kept",
        "too_short",
        "too_long",
        "blacklisted_keyword",
        "write_a_program",
        "starts_with_punctuation",
        "starts_with_non_ascii",
        "exact_duplicate",
        "too_similar",
        "target_reached",
    ),
    "instance": (
        "kept",
        "unparseable",
        "truncated",
        "empty_output",
        "output_equals_input",
        "ends_with_colon",
        "conflicting_outputs",
        "duplicate_instance",
        "over_limit",
    ),
}


@dataclass
class Decision:
    """`source` says where the candidate came from: {"prompt", "completion"} for an instruction,
    {"instruction_id"} for an instance. `input` is set for instances only."""

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
        out = asdict(self)
        out["verdict"] = self.verdict
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        return cls(**{k: v for k, v in data.items() if k != "verdict"})
