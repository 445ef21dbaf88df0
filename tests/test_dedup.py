"""The dedup command: the index and the reference scan print the same decisions on real text."""

import json
import subprocess
import sys

import pytest

from tests.conftest import DATA, SHARED

STREAM = SHARED / "data" / "instruction_stream_50k.jsonl"


def dedup(pool, candidates: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.tools.dedup", "--pool", str(pool), *args],
        input=candidates,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def seed_pool(tmp_path_factory):
    path = tmp_path_factory.mktemp("dedup") / "pool.jsonl"
    with open(DATA / "seed_tasks.jsonl") as f:
        rows = [json.loads(line) for line in f]
    path.write_text(
        "".join(json.dumps({"id": r["id"], "instruction": r["instruction"]}) + "\n" for r in rows)
    )
    return path


@pytest.mark.slow
def test_index_and_reference_agree_on_the_stream(seed_pool):
    with open(STREAM) as f:
        sample = "".join(next(f) for _ in range(300))
    fast = dedup(seed_pool, sample)
    slow = dedup(seed_pool, sample, "--reference")
    assert fast.returncode == slow.returncode == 0, fast.stderr + slow.stderr
    lines = fast.stdout.splitlines()
    assert len(lines) == 300
    assert fast.stdout == slow.stdout
    decisions = [json.loads(line) for line in lines]
    assert {d["kept"] for d in decisions} == {True, False}  # the sample exercises both verdicts
    assert all(d["kept"] == (d["score"] <= 0.7) for d in decisions)


def test_threshold_option_and_null_nearest(seed_pool):
    candidates = '{"id": "a", "instruction": "zzqx wwvy"}\n{"id": "b", "instruction": "zzqx wwvy"}\n'
    out = dedup(seed_pool, candidates, "--threshold", "0.99")
    assert out.returncode == 0
    assert [json.loads(line) for line in out.stdout.splitlines()] == [
        {"id": "a", "kept": True, "score": 0.0, "nearest_id": None},
        {"id": "b", "kept": False, "score": 1.0, "nearest_id": "a"},
    ]


def test_bad_input_names_the_line(seed_pool):
    out = dedup(seed_pool, '{"id": "a", "instruction": "ok text"}\n{"id": 3, "instruction": "x"}\n')
    assert out.returncode == 2
    assert "stdin line 2: field 'id' must be a string" in out.stderr
