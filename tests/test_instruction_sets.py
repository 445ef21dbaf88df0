"""Stage-level runs ("bring your own instructions"): the instruction file's validation, and runs through
the command line and through the API (a real Redis, S3 endpoint and RQ worker; the scripted LLM)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, work
from tests.test_api import make_seed_set

GIVEN = [
    {"id": "colours", "instruction": "Name three colours of the rainbow."},
    {"instruction": "Classify the sentiment of the review as positive or negative."},
    {"id": "poem", "instruction": "Write a haiku about the sea."},
]
BAD = (
    b'{"instruction": "Name three colours."}\n'
    b'{"id": "x", "instruction": "   "}\n'
    b"not json\n"
    b'{"instruction": "Name  three colours.", "extra": 1}\n'
    b'{"id": "x", "instruction": "Another one."}\n'
)
BAD_FAULTS = [
    (2, "instruction", "Must not be blank."),
    (3, "(line)", "invalid JSON"),
    (4, "extra", "Unknown field."),
    (4, "instruction", "duplicate instruction, first at line 1"),
    (5, "id", "duplicate id, first used at line 2"),
]


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "jobs",
        "generate",
        "--seed-tasks",
        str(ROOT / "data/seed_tasks.jsonl"),
        *args,
    ]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_cli_makes_instances_for_exactly_the_given_instructions(fake_llm, tmp_path):
    given = tmp_path / "mine.jsonl"
    given.write_text(_jsonl(GIVEN))
    out = tmp_path / "out"
    done = _cli("--instructions", str(given), "--out", str(out), "--base-url", fake_llm.base_url)
    assert done.returncode == 0, done.stderr
    rows = _lines(out / "instructions.jsonl")
    assert [(r["id"], r["text"]) for r in rows] == [
        ("colours", GIVEN[0]["instruction"]),
        ("line2", GIVEN[1]["instruction"]),
        ("poem", GIVEN[2]["instruction"]),
    ]
    assert all(r["classification"] in ("yes", "no") for r in rows)
    decisions = _lines(out / "decisions.jsonl")
    assert decisions and {d["stage"] for d in decisions} == {"instance"}  # no stage 1
    assert {d["source"]["instruction_id"] for d in decisions} <= {"colours", "line2", "poem"}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["stop_reason"] == "given_instructions" and stats["instructions_kept"] == 3
    assert sum(stats["classification"].values()) == 3
    assert "instruction" not in stats["verdicts"]
    kept = sum(1 for d in decisions if d["rule"] == "kept")
    assert kept == stats["instances_kept"] == sum(r["instances"] for r in rows)
    assert json.loads((out / "run.json").read_text())["config"]["num_instructions"] == 3


def test_a_bad_instruction_file_is_named_line_by_line_and_nothing_runs(fake_llm, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(BAD)
    out = tmp_path / "out"
    done = _cli("--instructions", str(bad), "--out", str(out), "--base-url", fake_llm.base_url)
    assert done.returncode == 2
    for line, field, message in BAD_FAULTS:
        assert f"line {line}: {field}: {message}" in done.stderr, done.stderr
    assert not out.exists()
    assert fake_llm.script.counts.get("requests", 0) == 0


def test_a_job_from_an_instruction_list_through_the_api(client, redis, worker_env):
    sid = make_seed_set(client)
    r = client.post("/v1/jobs", json={"seed_set_id": sid, "instructions": GIVEN, "seed": 3})
    assert r.status_code == 202, r.json
    assert r.json["config"]["instructions"] == 3 and r.json["progress"]["instructions_target"] == 3
    work(redis)
    job = client.get(f"/v1/jobs/{r.json['id']}").json
    assert job["state"] == "succeeded", job
    assert job["progress"]["instructions_kept"] == 3
    page = client.get(f"/v1/jobs/{job['id']}/decisions?limit=500").json
    items = page["items"]
    assert items and {d["stage"] for d in items} == {"instance"}
    assert {d["source"]["instruction_id"] for d in items} <= {"colours", "item2", "poem"}
    report = client.get(f"/v1/jobs/{job['id']}/report").json
    table = {row["statistic"]: row["this_dataset"] for row in report["table1"]}
    assert table["instructions"] == 3
    assert table["instances"] == sum(1 for d in items if d["rule"] == "kept")


def test_an_invalid_instruction_list_is_one_422_and_no_job(client, redis):
    sid = make_seed_set(client)
    listed = [
        {"instruction": "Name three colours."},
        {"id": "x", "instruction": ""},
        "not an object",
        {"instruction": "Name three   colours.", "extra": 1},
        {"id": "x", "instruction": "Another."},
    ]
    r = client.post("/v1/jobs", json={"seed_set_id": sid, "instructions": listed, "num_instructions": 5})
    assert r.status_code == 422
    found = {(e["field"], e["message"]) for e in r.json["errors"]}
    assert found >= {
        ("instructions[1].instruction", "Must not be blank."),
        ("instructions[2]", "must be a JSON object"),
        ("instructions[3].extra", "Unknown field."),
        ("instructions[3].instruction", "duplicate instruction, first at instructions[0]"),
        ("instructions[4].id", "duplicate id, first used at instructions[1]"),
        ("num_instructions", "not with instructions: those are the instructions"),
    }, found
    assert client.get("/v1/jobs").json["items"] == []
    r = client.post("/v1/jobs", json={"seed_set_id": sid})
    assert r.status_code == 422 and r.json["errors"][0]["field"] == "num_instructions"
