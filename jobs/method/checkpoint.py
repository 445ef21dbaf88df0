"""A run's checkpoint, the Store protocol that keeps it with its decisions atomically, and the local
file store. (The service's Redis store is jobs.store.checkpoints.)

A store commits a checkpoint together with the decisions made since the previous commit: a run
restarted with the same run id resumes from the last commit, so no candidate is lost or repeated.

A commit writes a delta, not the whole state: the instructions, classification answers and instances
added since the previous commit, plus the small fields (stage, counters, usage). Its cost does not grow
with the run. Each delta carries its commit number; loading applies, to the last compacted snapshot,
the deltas numbered after it, then compacts them into a new snapshot. A delta with a number the
snapshot already covers (a crash between writing a snapshot and dropping the deltas it absorbed, or a
commit retried after it landed) is skipped, so nothing is counted twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from itertools import islice
from pathlib import Path
from typing import Any, NotRequired, Protocol, TypedDict

from jobs.method.decisions import Decision

CHECKPOINT_VERSION = 2
_READABLE = (1, 2)  # a version-1 checkpoint is a snapshot at commit 0
_GROWING = ("instructions", "classification", "instances", "unjudged")


def _tail(d: dict[str, Any], count: int) -> dict[str, Any]:
    """The last `count` entries of a dict in insertion order, in O(count)."""
    return dict(reversed(list(islice(reversed(d.items()), count))))


class KeptInstruction(TypedDict):
    """A kept instruction, in pool order: made in stage 1 (with its prompt and nearest pool item at the
    time) or given by a stage-level run."""

    id: str
    text: str
    prompt: NotRequired[int]  # the stage-1 prompt it came from
    score: NotRequired[float]  # ROUGE-L against its nearest pool item
    nearest_id: NotRequired[str | None]
    nearest_job: NotRequired[str]  # the nearest item is an earlier job's (dedup_against)
    given: NotRequired[bool]  # true: from the job's instruction list, not stage 1


class ClassificationAnswer(TypedDict):
    """Stage 2's answer for one instruction (jobs.method.stages.classification.decide)."""

    label: str  # yes, no or unparseable
    raw: str | None  # the model's text; None: not asked (a method that reads no answer, knn)
    asked: NotRequired[bool]  # false: the model was not asked
    method: NotRequired[str]  # text, logprobs, calibrated, fitted or knn
    fallback: NotRequired[str]  # why the text decided instead of the method asked for
    shift: NotRequired[float]  # content-free calibration
    threshold: NotRequired[float]
    logprob_yes: NotRequired[float]
    logprob_no: NotRequired[float]
    margin: NotRequired[float]  # log P(Yes) - log P(No) - shift


class BatchRecord(TypedDict):
    """One batch of the provider's Batch API, recorded before each step that makes it (a crash at any
    point resumes it without a second submission: jobs.method.transport.batch)."""

    round: int  # requests that went out together; a round's retries are its later attempts
    digest: str  # of the round's request ids: tells a round's retry from the next round
    stage: str
    attempt: int  # 0, then 1 for what the first attempt left unanswered
    part: int  # a round too big for one file goes as several
    requests: int
    filename: str
    file: str | None  # the uploaded input file's id
    id: str | None  # the batch's id
    status: str | None
    output: str | None  # output and error file ids, once it ended
    errors: str | None
    counted: bool  # its answers' usage is in the checkpoint's


class InstanceRecord(TypedDict):
    input: str
    output: str


class UnjudgedInstance(TypedDict):
    """An instance the filters kept, waiting for the LLM judge (jobs.method.stages.instances)."""

    position: int  # in its response: its decision's id is <instruction id>:<position>
    input: str
    output: str


@dataclass
class Checkpoint:
    """`instructions`, `classification`, `instances` and `unjudged` only grow (entries are added, never
    replaced or removed): that is what lets a commit write only their new entries."""

    stage: str = "instructions"  # instructions -> classification -> instances -> export -> done
    next_prompt: int = 0  # stage-1 prompts [0, next_prompt) are fully handled
    instructions: list[KeptInstruction] = field(default_factory=list)
    classification: dict[str, ClassificationAnswer] = field(default_factory=dict)  # by instruction id
    # instruction id -> its kept instances (present once its response was handled)
    instances: dict[str, list[InstanceRecord]] = field(default_factory=dict)
    # with the LLM judge: instruction id -> the instances its filters kept, before the judge scored them
    unjudged: dict[str, list[UnjudgedInstance]] = field(default_factory=dict)
    decisions: int = 0  # decisions committed so far
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # stage -> rule -> count
    usage: dict[str, Any] | None = None  # jobs.method.transport.usage.Usage.to_dict()
    wasted: dict[str, int] = field(default_factory=lambda: {"requests": 0, "completion_tokens": 0})
    truncated_responses: int = 0
    stop_reason: str | None = None
    elapsed: float = 0.0  # wall seconds over every session of the run
    # batch mode (jobs.method.transport.batch): the current round's batches, and how many rounds and batches
    # the run has made in all
    batches: list[BatchRecord] = field(default_factory=list)
    calibration: dict[str, Any] | None = None  # stage 2's, once made (jobs.method.stages.classification)
    batch_totals: dict[str, int] = field(default_factory=dict)
    commits: int = 0  # number of the last commit this state includes
    version: int = CHECKPOINT_VERSION

    def __post_init__(self) -> None:
        self._instances_seen = self._instances_kept = 0
        self._saved = (0,) * len(_GROWING)  # nothing persisted yet; a store's load() marks what it read

    def to_dict(self) -> dict[str, Any]:
        """The whole state (a snapshot); no copies, so serialise it before changing the checkpoint."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        if data.get("version") not in _READABLE:
            raise ValueError(f"checkpoint version {data.get('version')} is not {CHECKPOINT_VERSION}")
        return cls(**{**data, "version": CHECKPOINT_VERSION})

    def merge(self, part: Checkpoint) -> None:
        """Take in a chunk's instances and counts (a fanned-out job's parts, at its end); the usage
        merges separately (jobs.method.transport.usage.Usage.merge)."""
        self.instances.update(part.instances)
        for stage, counts in part.counts.items():
            merged = self.counts.setdefault(stage, {})
            for rule, n in counts.items():
                merged[rule] = merged.get(rule, 0) + n
        self.truncated_responses += part.truncated_responses

    # --- deltas ---

    def mark_saved(self) -> None:
        """Everything so far is persisted: the next delta starts from here."""
        self._saved = tuple(len(getattr(self, name)) for name in _GROWING)

    def delta(self, commit: int) -> dict[str, Any]:
        """Commit number `commit`: the entries added since mark_saved() and every small field."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _GROWING}
        out["commits"] = commit
        n_instructions, n_classification, n_instances, n_unjudged = self._saved
        out["instructions"] = self.instructions[n_instructions:]
        out["classification"] = _tail(self.classification, len(self.classification) - n_classification)
        out["instances"] = _tail(self.instances, len(self.instances) - n_instances)
        if n_unjudged < len(self.unjudged):  # a judged run's only: other runs' deltas read as before
            out["unjudged"] = _tail(self.unjudged, len(self.unjudged) - n_unjudged)
        return out

    def apply(self, delta: dict[str, Any]) -> None:
        """Replay one delta (the next commit number) onto this state."""
        if delta.get("version") not in _READABLE or delta["commits"] != self.commits + 1:
            raise ValueError(f"checkpoint delta {delta.get('commits')} does not follow commit {self.commits}")
        self.instructions.extend(delta["instructions"])
        self.classification.update(delta["classification"])
        self.instances.update(delta["instances"])
        self.unjudged.update(delta.get("unjudged", {}))
        for f in fields(self):
            if f.name not in _GROWING and f.name != "version" and f.name in delta:  # older deltas lack some
                setattr(self, f.name, delta[f.name])

    def committed(self, commit: int) -> None:
        """The store persisted delta number `commit`."""
        self.commits = commit
        self.mark_saved()

    def instances_kept(self) -> int:
        """Kept instances so far, counting only the entries added since the last call."""
        new = len(self.instances) - self._instances_seen
        self._instances_kept += sum(len(v) for v in _tail(self.instances, new).values())
        self._instances_seen = len(self.instances)
        return self._instances_kept


def replay(snapshot: Checkpoint, deltas: list[dict[str, Any]]) -> Checkpoint:
    """The snapshot with the deltas numbered after it applied, in order."""
    for delta in deltas:
        if delta["commits"] > snapshot.commits:
            snapshot.apply(delta)
    snapshot.mark_saved()
    return snapshot


class Store(Protocol):
    def load(self) -> Checkpoint | None: ...

    def commit(self, checkpoint: Checkpoint, decisions: list[Decision]) -> None:
        """Persist the decisions and then the checkpoint's delta that counts them, as one step."""
        ...

    def decisions(self) -> Iterator[Decision]: ...


def _fsync_append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


class FileStore:
    """A directory: decisions.jsonl, deltas.jsonl (one line a commit) and checkpoint.json (the
    compacted snapshot, replaced atomically). For local runs.

    A commit appends its decisions, then its delta line. On load, a last delta line cut short by a
    crash is dropped, and decision lines past the count the last whole delta records are cut off.
    """

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._checkpoint = self.dir / "checkpoint.json"
        self._deltas = self.dir / "deltas.jsonl"
        self._decisions = self.dir / "decisions.jsonl"

    def load(self) -> Checkpoint | None:
        if not self._checkpoint.exists() and not self._deltas.exists():
            self._decisions.unlink(missing_ok=True)
            return None
        snapshot = (
            Checkpoint.from_dict(json.loads(self._checkpoint.read_text()))
            if self._checkpoint.exists()
            else Checkpoint()
        )
        checkpoint = replay(snapshot, self._read_deltas())
        self._compact(checkpoint)
        self._truncate(checkpoint.decisions)
        return checkpoint

    def _read_deltas(self) -> list[dict[str, Any]]:
        """The whole delta lines; a torn last line (a crash mid-commit) ends the list, and the
        compaction that follows drops it from the file."""
        deltas = []
        if self._deltas.exists():
            with self._deltas.open("rb") as f:
                for line in f:
                    try:
                        deltas.append(json.loads(line))
                    except ValueError:
                        break
        return deltas

    def _compact(self, checkpoint: Checkpoint) -> None:
        """Fold the deltas into a new snapshot. A crash between the two steps leaves deltas that the
        snapshot already covers: their commit numbers say so and replay() skips them."""
        if not self._deltas.exists() or not self._deltas.stat().st_size:
            return
        tmp = self._checkpoint.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(checkpoint.to_dict(), f, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._checkpoint)
        os.truncate(self._deltas, 0)

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
            _fsync_append(
                self._decisions,
                "".join(json.dumps(d.to_dict(), ensure_ascii=False) + "\n" for d in decisions),
            )
        number = checkpoint.commits + 1
        _fsync_append(self._deltas, json.dumps(checkpoint.delta(number), ensure_ascii=False) + "\n")
        checkpoint.committed(number)

    def decisions(self) -> Iterator[Decision]:
        if self._decisions.exists():
            with self._decisions.open(encoding="utf-8") as f:
                for line in f:
                    yield Decision.from_dict(json.loads(line))
