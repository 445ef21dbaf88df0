"""Earlier jobs' kept instructions, read back from their datasets (a job's `dedup_against`)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

from botocore.exceptions import ClientError

from jobs.blobs.artifacts import Artifacts


class HistoryGone(Exception):
    """An earlier job's dataset was deleted (or its retention ended) before this job read it."""


def earlier_instructions(
    artifacts: Artifacts, team: str, job_ids: list[str], work_dir: str
) -> Iterator[tuple[str, str, str]]:
    """The kept instructions of a team's earlier jobs, (job id, instruction id, text) in the order the
    jobs are given: each job's instructions.jsonl is read line by line from a local copy, one job at a
    time, so no dataset is held in memory."""
    for earlier in job_ids:
        with tempfile.TemporaryDirectory(dir=work_dir, prefix="history-") as tmp:
            path = Path(tmp) / "instructions.jsonl"
            try:
                artifacts.download_dataset_file(team, earlier, "instructions.jsonl", path)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
                    raise
                raise HistoryGone(f"the dataset of job {earlier} (dedup_against) is gone") from e
            with path.open(encoding="utf-8") as lines:
                for line in lines:
                    kept = json.loads(line)
                    yield earlier, kept["id"], kept["text"]
