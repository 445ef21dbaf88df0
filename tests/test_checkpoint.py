"""Delta commits: each commit writes only what changed; crashes mid-commit and compactions lose or
repeat nothing, in the file store and in the Redis store (real Redis)."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from jobs.method import exports
from jobs.method.checkpoint import FileStore, Store
from jobs.method.engine import execute
from jobs.method.recipe import Execution, Recipe
from jobs.method.run import Canceled, Run
from jobs.store import keyspace
from jobs.store.checkpoints import RedisStore
from jobs.store.decision_log import JobGone
from tests.conftest import fake_endpoint
from tests.test_engine import read_bytes

RECIPE = Recipe(num_instructions=14, seed=5)
EXECUTION = Execution(concurrency=3, checkpoint_every=2)


def run_once(store: Store, server, seed_tasks, out: Path, stop_after: int | None = None) -> Run | None:
    """Run (or resume) into `store`; exported into `out` when it finishes, None when it stopped."""
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return stop_after is not None and calls["n"] > stop_after

    endpoint = fake_endpoint(server)
    run = Run("run-1", seed_tasks, RECIPE, endpoint, store, None, should_stop, execution=EXECUTION)
    try:
        execute(run)
    except Canceled:
        return None
    exports.export(run, out)
    return run


@pytest.fixture
def whole(tmp_path, fake_llm, seed_tasks) -> dict[str, bytes]:
    run = run_once(FileStore(tmp_path / "whole"), fake_llm, seed_tasks, tmp_path / "whole-out")
    assert run is not None
    return read_bytes(tmp_path / "whole-out")


def test_each_commit_writes_only_what_is_new(tmp_path, fake_llm, seed_tasks):
    run = run_once(FileStore(tmp_path / "s"), fake_llm, seed_tasks, tmp_path / "out")
    cp = run.checkpoint
    deltas = [json.loads(line) for line in (tmp_path / "s" / "deltas.jsonl").read_text().splitlines()]
    assert len(deltas) == cp.commits > 5
    assert [d["commits"] for d in deltas] == list(range(1, cp.commits + 1))
    # every kept instruction, classification answer and instance list is written exactly once
    assert [k for d in deltas for k in d["instructions"]] == cp.instructions
    assert [i for d in deltas for i in d["classification"]] == list(cp.classification)
    assert [i for d in deltas for i in d["instances"]] == list(cp.instances)
    # so a late commit is no bigger than an early one, however much the run holds
    sizes = [len(json.dumps(d)) for d in deltas]
    assert max(sizes[-3:]) < sum(len(json.dumps(k)) for k in cp.instructions)
    # a reload replays the deltas into the same state, then compacts them
    again = FileStore(tmp_path / "s").load()
    assert again.to_dict() == cp.to_dict()
    assert (tmp_path / "s" / "deltas.jsonl").stat().st_size == 0


def test_a_torn_delta_is_ignored_and_the_run_resumes_byte_identical(tmp_path, fake_llm, seed_tasks, whole):
    state = tmp_path / "parts"
    assert run_once(FileStore(state), fake_llm, seed_tasks, tmp_path / "o", stop_after=9) is None
    lines = (state / "deltas.jsonl").read_text().splitlines(keepends=True)
    committed = FileStore(state)._read_deltas()[-1]["decisions"]
    # a crash mid-commit: the decisions reached the log, the delta only half its line
    decision_lines = (state / "decisions.jsonl").read_text().splitlines(keepends=True)
    with (state / "decisions.jsonl").open("a") as f:
        f.writelines(decision_lines[-3:])
    with (state / "deltas.jsonl").open("a") as f:
        f.write(lines[-1][: len(lines[-1]) // 2])
    loaded = FileStore(state).load()
    assert loaded.decisions == committed == len((state / "decisions.jsonl").read_text().splitlines())
    assert run_once(FileStore(state), fake_llm, seed_tasks, tmp_path / "parts-out") is not None
    assert read_bytes(tmp_path / "parts-out") == whole


def test_resume_across_compactions_and_a_crash_inside_one(tmp_path, fake_llm, seed_tasks, whole):
    state = tmp_path / "parts"
    assert run_once(FileStore(state), fake_llm, seed_tasks, tmp_path / "o", stop_after=5) is None
    assert run_once(FileStore(state), fake_llm, seed_tasks, tmp_path / "o", stop_after=9) is None  # compacted
    # a crash after the new snapshot landed but before the deltas it absorbed were dropped
    deltas = (state / "deltas.jsonl").read_bytes()
    assert deltas
    before = FileStore(state).load()
    (state / "deltas.jsonl").write_bytes(deltas)
    after = FileStore(state).load()
    assert after.to_dict() == before.to_dict()
    assert run_once(FileStore(state), fake_llm, seed_tasks, tmp_path / "parts-out") is not None
    assert read_bytes(tmp_path / "parts-out") == whole


def redis_store(redis, job_id: str) -> Callable[[], RedisStore]:
    redis.hset(keyspace.job(job_id), "id", job_id)  # a commit needs its job's record
    return lambda: RedisStore(redis, job_id, retry_seconds=0)


def test_redis_store_resumes_across_compactions_byte_identical(tmp_path, redis, fake_llm, seed_tasks, whole):
    store = redis_store(redis, uuid.uuid4().hex)
    assert run_once(store(), fake_llm, seed_tasks, tmp_path / "o", stop_after=5) is None
    assert redis.llen(store().deltas_key) > 0
    loaded = store().load()  # compacts: a snapshot, no deltas left
    assert redis.llen(store().deltas_key) == 0 and redis.hget(store().key, "snapshot")
    assert store().load().to_dict() == loaded.to_dict()
    assert run_once(store(), fake_llm, seed_tasks, tmp_path / "o", stop_after=9) is None
    assert run_once(store(), fake_llm, seed_tasks, tmp_path / "out") is not None
    assert read_bytes(tmp_path / "out") == whole


def test_redis_commit_replayed_after_it_landed_counts_once(tmp_path, redis, fake_llm, seed_tasks):
    store = redis_store(redis, uuid.uuid4().hex)
    assert run_once(store(), fake_llm, seed_tasks, tmp_path / "o", stop_after=7) is None
    s = store()
    last = redis.lindex(s.deltas_key, -1)
    number = json.loads(last)["commits"]
    decisions = list(s.decisions())
    pending = redis.llen(s.deltas_key)
    # the client lost the reply and sends the same commit again (jobs.retry does so)
    assert s.log.commit(decisions[-2:], s.key, last.decode(), s.deltas_key, number) == 0
    assert redis.llen(s.deltas_key) == pending and len(list(s.decisions())) == len(decisions)
    before = s.load()  # compacts: the snapshot now covers `number`
    assert s.log.commit(decisions[-2:], s.key, last.decode(), s.deltas_key, number) == 0
    assert redis.llen(s.deltas_key) == 0
    after = store().load()
    assert after.to_dict() == before.to_dict() and after.decisions == len(decisions)


def test_a_deleted_job_takes_no_more_commits(tmp_path, redis, fake_llm, seed_tasks):
    job_id = uuid.uuid4().hex
    store = redis_store(redis, job_id)
    assert run_once(store(), fake_llm, seed_tasks, tmp_path / "o", stop_after=3) is None
    redis.delete(keyspace.job(job_id))
    with pytest.raises(JobGone):
        run_once(store(), fake_llm, seed_tasks, tmp_path / "o")


def test_file_store_without_a_snapshot_replays_from_the_first_delta(tmp_path, fake_llm, seed_tasks, whole):
    state = tmp_path / "parts"
    assert run_once(FileStore(state), fake_llm, seed_tasks, tmp_path / "o", stop_after=4) is None
    assert not (state / "checkpoint.json").exists()
    copy = tmp_path / "copy"
    shutil.copytree(state, copy)
    assert run_once(FileStore(copy), fake_llm, seed_tasks, tmp_path / "copy-out") is not None
    assert read_bytes(tmp_path / "copy-out") == whole
