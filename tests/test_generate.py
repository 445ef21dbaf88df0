"""`python -m jobs generate` (jobs.tools.generate): a run.json runs again to the same dataset, and an
output directory resumes only the recipe it holds (execution settings may change)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

DATA_FILES = ("alpaca.json", "chat.jsonl", "instructions.jsonl", "decisions.jsonl", "README.md")


def _cli(fake_llm, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "jobs", "generate", "--seed-tasks", str(ROOT / "data/seed_tasks.jsonl")]
    cmd += ["--base-url", fake_llm.base_url, "--model", "fake", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_a_run_json_runs_again_to_the_same_dataset(fake_llm, tmp_path: Path) -> None:
    first = tmp_path / "first"
    decoding = json.dumps({"instructions": {"temperature": 0.9}, "instances": {"max_tokens": 200}})
    done = _cli(
        fake_llm,
        *("--num-instructions", "6", "--seed", "4", "--concurrency", "2", "--window", "3"),
        *("--formats", "alpaca", "chat", "--decoding", decoding, "--out", str(first)),
    )
    assert done.returncode == 0, done.stderr
    record = json.loads((first / "run.json").read_text())
    assert record["config"]["window"] == 3 and record["config"]["concurrency"] == 2
    assert record["config"]["decoding"]["instructions"]["temperature"] == 0.9
    again = tmp_path / "again"
    done = _cli(fake_llm, "--run-json", str(first / "run.json"), "--run-id", "first", "--out", str(again))
    assert done.returncode == 0, done.stderr
    for name in DATA_FILES:
        assert (again / name).read_bytes() == (first / name).read_bytes(), name
    assert json.loads((again / "run.json").read_text())["config"] == record["config"]


def test_an_output_directory_resumes_only_its_own_recipe(fake_llm, tmp_path: Path) -> None:
    out = tmp_path / "out"
    base = ("--num-instructions", "3", "--seed", "4", "--out", str(out))
    assert _cli(fake_llm, *base, "--concurrency", "1").returncode == 0
    # another concurrency is the same recipe: the finished run is found and exported again
    same = _cli(fake_llm, *base, "--concurrency", "3")
    assert same.returncode == 0, same.stderr
    other = _cli(fake_llm, "--num-instructions", "3", "--seed", "5", "--out", str(out))
    assert other.returncode == 2 and "holds a different run" in other.stderr
