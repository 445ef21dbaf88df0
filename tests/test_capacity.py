"""A Redis near its memory limit (maxmemory with noeviction, as the chart runs it): the API refuses new
work with 503 and Retry-After and starts no job, instead of Redis refusing writes mid-job or being
killed; reads and cancels still go; a write Redis refuses is a 503 too, never a 500. Real Redis."""

from __future__ import annotations

import math
from dataclasses import replace

from rq import Queue

from service import capacity
from service.app import create_app
from tests.test_api import make_seed_set

SEED = {
    "id": "s1",
    "name": "s1",
    "instruction": "Say hello.",
    "instances": [{"input": "", "output": "Hello."}],
    "is_classification": False,
}


def test_new_work_is_refused_with_503_and_no_job_starts(client, redis, settings, api_key) -> None:
    """At 70% of maxmemory, above a 50% REDIS_MEMORY_LIMIT: with room left for what frees it."""
    app = create_app(replace(settings, redis_memory_limit=0.5), configure_logging=False)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {api_key}"
    sid = make_seed_set(client)
    queued = client.post("/v1/jobs", json={"seed_set_id": sid, "num_instructions": 2}).json["id"]
    redis.config_set("maxmemory-policy", "noeviction")
    redis.config_set("maxmemory", int(redis.info("memory")["used_memory"] / 0.7))
    capacity._used["at"] = -math.inf
    try:
        for path, body in (
            ("/v1/jobs", {"seed_set_id": sid, "num_instructions": 2}),
            ("/v1/previews", {"seed_set_id": sid, "num_instructions": 2}),
            (f"/v1/jobs/{queued}/extensions", {"num_instructions": 4}),
            ("/v1/seed-sets", {"name": "more", "tasks": [SEED]}),
        ):
            r = client.post(path, json=body)
            assert r.status_code == 503 and r.headers["Retry-After"] == capacity.RETRY_AFTER, (path, r.json)
            assert "full" in r.json["detail"]
        assert [j["id"] for j in client.get("/v1/jobs").json["items"]] == [queued]  # reads go on
        assert Queue(settings.queue, connection=redis).job_ids == [queued]  # nothing more queued
        assert client.post(f"/v1/jobs/{queued}/cancel").status_code == 202  # a cancel frees room
    finally:
        redis.config_set("maxmemory", 0)
        capacity._used["at"] = -math.inf
    assert client.post("/v1/jobs", json={"seed_set_id": sid, "num_instructions": 2}).status_code == 202


def test_a_write_redis_refuses_is_a_503(client, redis, settings) -> None:
    """Past the limit check (here: a webhook secret, which adds no work), Redis refuses the write: the
    answer is 503 with Retry-After, not a traceback."""
    redis.config_set("maxmemory-policy", "noeviction")
    redis.config_set("maxmemory", max(1, int(redis.info("memory")["used_memory"] * 0.5)))
    try:
        r = client.post("/v1/webhook-secret")
        assert r.status_code == 503 and r.headers["Retry-After"] == capacity.RETRY_AFTER, r.json
    finally:
        redis.config_set("maxmemory", 0)


def test_a_job_redis_refuses_to_queue_fails_at_once_and_frees_its_key(client, redis, monkeypatch) -> None:
    """The record made, the RQ job refused (Redis full, say): the answer is 503, the job fails saying so
    (no job waits for an RQ job that never came), and the same Idempotency-Key makes a new job."""
    from redis.exceptions import OutOfMemoryError

    from jobs.runner import queue

    sid = make_seed_set(client)
    body, key = {"seed_set_id": sid, "num_instructions": 2}, {"Idempotency-Key": "full-1"}
    real = queue.enqueue

    def refused(*args, **kwargs):
        raise OutOfMemoryError("command not allowed when used memory > 'maxmemory'")

    monkeypatch.setattr(queue, "enqueue", refused)
    r = client.post("/v1/jobs", json=body, headers=key)
    assert r.status_code == 503 and r.headers["Retry-After"] == capacity.RETRY_AFTER
    (failed,) = client.get("/v1/jobs").json["items"]
    assert failed["state"] == "failed" and "could not be queued" in failed["error"]
    monkeypatch.setattr(queue, "enqueue", real)
    again = client.post("/v1/jobs", json=body, headers=key)
    assert again.status_code == 202 and again.json["id"] != failed["id"]
