"""A run's checkpoint, the Store protocol that keeps it with its decisions atomically, and the local
file store. (The service's Redis store is jobs.checkpoint_store.)

A store commits a checkpoint together with the decisions made since the previous commit: a run
restarted with the same run id resumes from the last commit, so no candidate is lost or repeated.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from jobs.method.decisions import Decision

CHECKPOINT_VERSION = 1


@dataclass
class Checkpoint:
    stage: str = "instructions"  # instructions -> classification -> instances -> export -> done
    next_prompt: int = 0  # stage-1 prompts [0, next_prompt) are fully handled
    # kept machine instructions in pool order: {"id", "text", "prompt", "score", "nearest_id"}
    instructions: list[dict[str, Any]] = field(default_factory=list)
    # instruction id -> {"label": "yes"|"no"|"unparseable", "raw": str}
    classification: dict[str, dict[str, str]] = field(default_factory=dict)
    # instruction id -> kept instances [{"input", "output"}] (present once its response was handled)
    instances: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    decisions: int = 0  # decisions committed so far
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # stage -> rule -> count
    usage: dict[str, Any] | None = None  # jobs.method.llm.Usage.to_dict()
    wasted: dict[str, int] = field(default_factory=lambda: {"requests": 0, "completion_tokens": 0})
    truncated_responses: int = 0
    stop_reason: str | None = None
    elapsed: float = 0.0  # wall seconds over every session of the run
    version: int = CHECKPOINT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        if data.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version {data.get('version')} is not {CHECKPOINT_VERSION}")
        return cls(**data)


class Store(Protocol):
    def load(self) -> Checkpoint | None: ...

    def commit(self, checkpoint: Checkpoint, decisions: list[Decision]) -> None:
        """Persist the decisions and then the checkpoint that counts them, as one step."""
        ...

    def decisions(self) -> Iterator[Decision]: ...


class FileStore:
    """A directory: decisions.jsonl plus checkpoint.json (replaced atomically). For local runs.

    The checkpoint records how many decisions it covers; on load, lines past that count (written
    by a commit that crashed before its checkpoint landed) are cut off.
    """

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._checkpoint = self.dir / "checkpoint.json"
        self._decisions = self.dir / "decisions.jsonl"

    def load(self) -> Checkpoint | None:
        if not self._checkpoint.exists():
            self._decisions.unlink(missing_ok=True)
            return None
        checkpoint = Checkpoint.from_dict(json.loads(self._checkpoint.read_text()))
        self._truncate(checkpoint.decisions)
        return checkpoint

    def _truncate(self, count: int) -> None:
        if not self._decisions.exists():
            return
        with self._decisions.open("rb+") as f:
            for _ in range(count):
                if not f.readline():
                    raise ValueError("decision log is shorter than its checkpoint")
            f.truncate()

    def commit(self, checkpoint: Checkpoint, decisions: list[Decision]) -> None:
        if decisions:
            with self._decisions.open("a", encoding="utf-8") as f:
                f.writelines(json.dumps(d.to_dict(), ensure_ascii=False) + "\n" for d in decisions)
                f.flush()
                os.fsync(f.fileno())
        tmp = self._checkpoint.with_suffix(".tmp")
        tmp.write_text(json.dumps(checkpoint.to_dict(), ensure_ascii=False))
        os.replace(tmp, self._checkpoint)

    def decisions(self) -> Iterator[Decision]:
        if self._decisions.exists():
            with self._decisions.open(encoding="utf-8") as f:
                for line in f:
                    yield Decision.from_dict(json.loads(line))
