"""What a job reads back before it runs: earlier jobs' datasets (their kept instructions, a job's
`dedup_against`, and what an extension takes over from the job it extends: jobs.method.lineage), and the
reference sets its data must not overlap (`decontaminate_against`)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from jobs.blobs.artifacts import Artifacts
from jobs.method.lineage import Carried
from jobs.method.recipe import Recipe
from jobs.method.similarity import ReferenceIndex


class HistoryGone(Exception):
    """An earlier job's dataset was deleted (or its retention ended) before this job read it."""


class ReferenceSetGone(HistoryGone):
    """A reference set the job names was deleted before the job read it."""


def _local(artifacts: Artifacts, team: str, job_id: str, name: str, directory: str, why: str) -> Path:
    """A dataset file of an earlier job, downloaded into `directory`."""
    path = Path(directory) / name
    try:
        artifacts.download_dataset_file(team, job_id, name, path)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
            raise
        raise HistoryGone(f"the dataset of job {job_id} ({why}) is gone") from e
    return path


def _records(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            yield json.loads(line)


def earlier_instructions(
    artifacts: Artifacts, team: str, job_ids: list[str], work_dir: str
) -> Iterator[tuple[str, str, str]]:
    """The kept instructions of a team's earlier jobs, (job id, instruction id, text) in the order the
    jobs are given: each job's instructions.jsonl is read line by line from a local copy, one job at a
    time, so no dataset is held in memory."""
    for earlier in job_ids:
        with tempfile.TemporaryDirectory(dir=work_dir, prefix="history-") as tmp:
            for kept in _records(
                _local(artifacts, team, earlier, "instructions.jsonl", tmp, "dedup_against")
            ):
                yield earlier, kept["id"], kept["text"]


def carried(artifacts: Artifacts, team: str, job_id: str, work_dir: str) -> Carried:
    """What an extension takes over from the job it extends, read from that job's dataset."""
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="lineage-") as tmp:
        decisions = _local(artifacts, team, job_id, "decisions.jsonl", tmp, "extends")
        instructions = _local(artifacts, team, job_id, "instructions.jsonl", tmp, "extends")
        return Carried.read(job_id, _records(decisions), _records(instructions))


def reference_index(artifacts: Artifacts, team: str, ids: list[str], recipe: Recipe) -> ReferenceIndex | None:
    """The named sets' items in one ReferenceIndex with the recipe's rules (None: no set, or no rule)."""
    if not ids or (not recipe.contamination_ngram and recipe.contamination_threshold is None):
        return None
    out = ReferenceIndex(recipe.contamination_ngram, recipe.contamination_threshold)
    for sha in ids:
        try:
            data = artifacts.get_reference_set(team, sha)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
                raise
            raise ReferenceSetGone(f"the reference set {sha} is gone") from e
        for line in data.splitlines():
            item = json.loads(line)
            out.add(sha, item["id"], item["text"])
    return out
