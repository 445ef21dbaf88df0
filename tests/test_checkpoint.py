"""Delta commits: each commit writes only what changed; crashes mid-commit and compactions lose or
repeat nothing, in the file store and in the Redis store (real Redis, killed -9 mid-commit)."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis import Redis
from redis import exceptions as redis_errors

from jobs.method.checkpoint import Checkpoint, FileStore, Store, replay
from jobs.method.decisions import Decision
from jobs.method.engine import execute
from jobs.method.outputs import exports
from jobs.method.recipe import Execution, Recipe
from jobs.method.run import Canceled, Run
from jobs.store import keyspace
from jobs.store.checkpoints import RedisStore
from jobs.store.decision_log import JobGone
from jobs.tools.local_stack import free_port, redis_server
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


def test_a_fold_is_a_load_without_reading_back(tmp_path, redis, fake_llm, seed_tasks, whole):
    """A run's own checkpoint, once committed, is what a load of the store would give; folded into the
    snapshot it leaves no deltas, the load that follows gives it back, and the run resumes from it to
    the same bytes."""
    store = redis_store(redis, uuid.uuid4().hex)
    assert run_once(store(), fake_llm, seed_tasks, tmp_path / "o", stop_after=5) is None
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 9

    held = store()
    run = Run(
        "run-1", seed_tasks, RECIPE, fake_endpoint(fake_llm), held, None, should_stop, execution=EXECUTION
    )
    with pytest.raises(Canceled):
        execute(run)
    run.commit()
    assert redis.llen(held.deltas_key) > 0
    pipe = redis.pipeline()  # what a load would fold, read without compacting
    pipe.hget(held.key, "snapshot")
    pipe.lrange(held.deltas_key, 0, -1)
    snapshot, deltas = pipe.execute()
    loaded = replay(Checkpoint.from_dict(json.loads(snapshot)), [json.loads(d) for d in deltas])
    assert run.checkpoint.to_dict() == loaded.to_dict()
    held.fold(run.checkpoint)
    assert redis.llen(held.deltas_key) == 0
    assert store().load().to_dict() == loaded.to_dict()
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


# --- kill -9 of Redis (AOF, fsync always) in the middle of commits and of a compaction ---


class KillingRedis(Redis):
    """A client of a private Redis that, when armed, kills it (SIGKILL) around its next command: just
    before the command is sent, just after its reply, or after it ran with the reply lost on the way."""

    private: PrivateRedis
    armed: str | None = None

    def execute_command(self, *args, **options):
        point, self.armed = self.armed, None
        if point == "before":
            self.private.crash()
        result = super().execute_command(*args, **options)
        if point in ("after", "reply_lost"):
            self.private.crash()
        if point == "reply_lost":
            raise redis_errors.ConnectionError("Redis died before the reply arrived")
        return result


class PrivateRedis:
    """A redis-server of the test's own, with `appendonly yes` and `appendfsync always`, that a crash
    kills -9 and, with `restart_after_crash`, starts again at once on the same port and directory."""

    def __init__(self, directory: Path):
        self.directory, self.port = directory, free_port()
        self.restart_after_crash = False
        self.crashes = 0
        self.start()
        self.client = KillingRedis.from_url(self.url)
        self.client.private = self

    def start(self) -> None:
        self.server, self.url = redis_server(self.directory, self.port, appendonly=True, appendfsync="always")

    def crash(self) -> None:
        self.server.signal(signal.SIGKILL)
        self.server.proc.wait()
        self.crashes += 1
        if self.restart_after_crash:
            self.start()

    def store(
        self, job_id: str, crash_at: int = 0, point: str = "", retry_seconds: float = 0.0
    ) -> RedisStore:
        """The job's store on the killing client; commit number `crash_at` arms the crash at `point`."""
        client = self.client

        class Crashing(RedisStore):
            crashed_with: list[Decision] | None = None  # the decisions of the commit Redis died in

            def commit(self, checkpoint: Checkpoint, decisions: list[Decision]) -> None:
                if checkpoint.commits + 1 == crash_at:
                    client.armed, self.crashed_with = point, list(decisions)
                super().commit(checkpoint, decisions)

        return Crashing(client, job_id, retry_seconds=retry_seconds)


@pytest.fixture
def private_redis(tmp_path) -> Iterator[PrivateRedis]:
    private = PrivateRedis(tmp_path / "redis")
    yield private
    private.client.close()
    private.server.stop()


def decision_ids(out: Path) -> list[str]:
    return [json.loads(line)["id"] for line in (out / "decisions.jsonl").read_text().splitlines()]


def assert_consistent(store: RedisStore, whole_ids: list[str]) -> Checkpoint:
    """The checkpoint counts exactly the decisions in the log, and those are the uninterrupted run's
    first ones, in order: none lost, none repeated. Returns the (loaded, compacted) checkpoint."""
    checkpoint = store.load()
    assert checkpoint is not None
    logged = [d.id for d in store.decisions()]
    assert checkpoint.decisions == len(logged) == store.log.count()
    assert logged == whole_ids[: len(logged)]
    return checkpoint


CRASH_AT = 2  # of the run's twenty or so: in stage 1, a commit with decisions


@pytest.mark.parametrize("point", ["before", "after"])
def test_redis_killed_mid_commit_then_resumed_byte_identical(
    tmp_path, private_redis, fake_llm, seed_tasks, whole, point
):
    # Redis dies as commit 2 is sent (it never ran) or just after it landed; the run dies with it (no
    # retries). Restarted from its append-only file, the store holds commit 1 or 2 whole, and a new
    # run resumes from it.
    job_id = uuid.uuid4().hex
    private_redis.client.hset(keyspace.job(job_id), "id", job_id)
    crashing = private_redis.store(job_id, crash_at=CRASH_AT, point=point)
    with pytest.raises(redis_errors.ConnectionError):
        run_once(crashing, fake_llm, seed_tasks, tmp_path / "o")
    assert private_redis.crashes == 1 and crashing.crashed_with
    private_redis.start()
    checkpoint = assert_consistent(private_redis.store(job_id), decision_ids(tmp_path / "whole-out"))
    assert checkpoint.commits == (CRASH_AT if point == "after" else CRASH_AT - 1)
    assert run_once(private_redis.store(job_id), fake_llm, seed_tasks, tmp_path / "out") is not None
    assert read_bytes(tmp_path / "out") == whole


@pytest.mark.parametrize("point", ["before", "after", "reply_lost"])
def test_redis_killed_mid_commit_and_back_the_run_carries_on_byte_identical(
    tmp_path, private_redis, fake_llm, seed_tasks, whole, point
):
    # Redis dies around commit 2 and is back at once; the store retries what failed. With the reply
    # lost, commit 2 had landed and is sent again: it must change nothing.
    job_id = uuid.uuid4().hex
    private_redis.client.hset(keyspace.job(job_id), "id", job_id)
    private_redis.restart_after_crash = True
    crashing = private_redis.store(job_id, crash_at=CRASH_AT, point=point, retry_seconds=30)
    run = run_once(crashing, fake_llm, seed_tasks, tmp_path / "out")
    assert run is not None and private_redis.crashes == 1 and crashing.crashed_with
    deltas = private_redis.client.lrange(crashing.deltas_key, 0, -1)
    assert [json.loads(d)["commits"] for d in deltas] == list(range(1, run.checkpoint.commits + 1))
    checkpoint = assert_consistent(private_redis.store(job_id), decision_ids(tmp_path / "whole-out"))
    assert checkpoint.to_dict() == run.checkpoint.to_dict()
    assert read_bytes(tmp_path / "out") == whole


def test_redis_killed_while_a_run_commits_then_resumed_byte_identical(
    tmp_path, private_redis, fake_llm, seed_tasks, whole
):
    # No hook: the run commits on its own thread and Redis is killed from outside once three commits
    # have landed, wherever the run then is.
    job_id = uuid.uuid4().hex
    private_redis.client.hset(keyspace.job(job_id), "id", job_id)
    fake_llm.script.delay = 0.05  # a run of a few seconds, so that the kill lands in its middle
    failure: list[BaseException] = []

    def run() -> None:
        try:
            run_once(private_redis.store(job_id), fake_llm, seed_tasks, tmp_path / "o")
        except BaseException as exc:  # the thread's outcome, checked below
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    watcher = Redis.from_url(private_redis.url)
    try:
        while int(watcher.hget(keyspace.checkpoint(job_id), "commits") or 0) < 3:
            thread.join(0.01)  # polls the commits every 10 ms, or sees the run end
            assert thread.is_alive(), f"the run ended before its third commit: {failure}"
        private_redis.crash()
    finally:
        watcher.close()
        thread.join()
    assert len(failure) == 1 and isinstance(failure[0], redis_errors.ConnectionError), failure
    private_redis.start()
    checkpoint = assert_consistent(private_redis.store(job_id), decision_ids(tmp_path / "whole-out"))
    assert checkpoint.commits >= 3
    assert run_once(private_redis.store(job_id), fake_llm, seed_tasks, tmp_path / "out") is not None
    assert read_bytes(tmp_path / "out") == whole


@pytest.mark.parametrize("point", ["before", "after"])
def test_redis_killed_around_a_compaction_then_resumed_byte_identical(
    tmp_path, private_redis, fake_llm, seed_tasks, whole, point
):
    # Deltas committed, then Redis dies as load() folds them into a snapshot: just before its first
    # write (the compaction script), or just after it. Either way the next load gives the same
    # checkpoint, and nothing the deltas held is lost.
    job_id = uuid.uuid4().hex
    private_redis.client.hset(keyspace.job(job_id), "id", job_id)
    store = private_redis.store
    assert run_once(store(job_id), fake_llm, seed_tasks, tmp_path / "o", stop_after=5) is None
    assert run_once(store(job_id), fake_llm, seed_tasks, tmp_path / "o", stop_after=9) is None  # compacted
    raw = private_redis.client
    snapshot, deltas = raw.hget(store(job_id).key, "snapshot"), raw.lrange(store(job_id).deltas_key, 0, -1)
    assert snapshot and deltas
    expected = replay(Checkpoint.from_dict(json.loads(snapshot)), [json.loads(d) for d in deltas]).to_dict()
    raw.armed = point
    try:
        loaded = store(job_id).load()
    except redis_errors.ConnectionError:
        loaded = None  # Redis died before load() was done with it
    assert private_redis.crashes == 1
    if point == "before":
        assert loaded is None
    elif loaded is not None:  # the compaction's first write landed and load() returned
        assert loaded.to_dict() == expected
    private_redis.start()
    assert assert_consistent(store(job_id), decision_ids(tmp_path / "whole-out")).to_dict() == expected
    assert raw.llen(store(job_id).deltas_key) == 0
    assert run_once(store(job_id), fake_llm, seed_tasks, tmp_path / "out") is not None
    assert read_bytes(tmp_path / "out") == whole
