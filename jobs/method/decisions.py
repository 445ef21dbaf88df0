"""Decision records: one per candidate instruction and per candidate instance, kept or dropped, and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

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
        out = asdict(self)
        out["verdict"] = self.verdict
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        return cls(**{k: v for k, v in data.items() if k != "verdict"})
