"""Seed sets: the paper's files load as they are; bad input is reported line by line, all at once."""

import json

import pytest

from jobs.method.seed_tasks import SeedSetError, content_hash, load_file, parse_jsonl, parse_records
from tests.conftest import DATA, SHARED


@pytest.mark.parametrize(
    ("path", "tasks", "classification", "instances"),
    [
        (SHARED / "data" / "self_instruct_seed_tasks.jsonl", 175, 26, 175),
        (SHARED / "data" / "user_oriented_instructions.jsonl", 252, 0, 252),
        (DATA / "seed_tasks.jsonl", 175, 26, 175),
        (DATA / "user_oriented_instructions.jsonl", 252, 0, 252),
    ],
)
def test_the_papers_files_load_as_they_are(path, tasks, classification, instances):
    loaded = load_file(path)
    assert len(loaded) == tasks
    assert sum(t.is_classification for t in loaded) == classification
    assert sum(len(t.instances) for t in loaded) == instances


def test_every_bad_line_and_field_is_reported():
    good = {"id": "a", "instruction": "Say hi.", "instances": [{"input": "", "output": "Hi"}]}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({"id": 7, "instruction": " ", "instances": [{"input": "", "output": ""}], "extra": 1}),
        json.dumps({**good, "is_classification": "yes"}),
        json.dumps(good),  # duplicate id
        "[1, 2]",
    ]
    data = "\n".join(lines).encode() + b"\n\xff\xfe\n"
    with pytest.raises(SeedSetError) as caught:
        parse_jsonl(data)
    got = {(e.line, e.field) for e in caught.value.errors}
    assert got == {
        (2, "(line)"),
        (3, "id"),
        (3, "instruction"),  # blank, reported with the task's other faults
        (3, "instances[0].output"),
        (3, "extra"),
        (4, "is_classification"),
        (4, "id"),  # a duplicate of line 1, reported with the task's other fault
        (5, "id"),
        (6, "(line)"),
        (7, "(line)"),
    }
    messages = {(e.line, e.field): e.message for e in caught.value.errors}
    assert messages[(5, "id")] == "duplicate id, first used at line 1"
    assert messages[(7, "(line)")].startswith("invalid UTF-8")
    assert messages[(3, "extra")] == "Unknown field."


def test_blank_instruction_deep_nesting_and_limits():
    with pytest.raises(SeedSetError) as caught:
        parse_jsonl(b'{"id": "a", "instruction": "   ", "instances": [{"input": "", "output": "x"}]}\n')
    assert caught.value.errors[0].field == "instruction"
    with pytest.raises(SeedSetError) as caught:
        parse_jsonl(b"[" * 100_000 + b"]" * 100_000)
    assert "nested too deeply" in caught.value.errors[0].message
    many = b"".join(
        json.dumps({"id": str(i), "instruction": "x y", "instances": [{"input": "", "output": "o"}]}).encode()
        + b"\n"
        for i in range(4)
    )
    with pytest.raises(SeedSetError, match="more than 3 tasks"):
        parse_jsonl(many, max_tasks=3)
    with pytest.raises(SeedSetError, match="no tasks"):
        parse_jsonl(b"\n\n")


def test_json_records_report_task_index_and_hash_is_canonical():
    with pytest.raises(SeedSetError) as caught:
        parse_records([{"id": "a", "instruction": "x", "instances": []}])
    assert caught.value.errors[0].field == "tasks[0].instances" and caught.value.errors[0].line is None
    tasks = load_file(DATA / "seed_tasks.jsonl")
    # the same tasks, sent as a JSON body with keys in another order, hash the same
    records = [dict(reversed(list(t.to_dict().items()))) for t in tasks]
    assert content_hash(parse_records(records)) == content_hash(tasks)
    assert content_hash(tasks[:-1]) != content_hash(tasks)
