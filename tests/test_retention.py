"""Retention: a finished job keeps only its record in Redis and serves its decisions from the S3
archive; deleted and expired jobs answer 410 and leave nothing in S3 (real Redis, S3, RQ worker)."""

from __future__ import annotations

import json
import urllib.request

import pytest

from jobs.blobs.artifacts import Artifacts
from jobs.runner import retention
from jobs.settings import get_settings
from jobs.store import job as jobs_
from jobs.store import keyspace
from jobs.store.decision_log import DecisionLog
from tests.conftest import wait_until, work
from tests.test_api import make_seed_set, run_job
from tests.test_auth import as_team


def objects(settings, team: str, job_id: str) -> list[str]:
    found = Artifacts(settings).s3.list_objects_v2(
        Bucket=settings.s3_bucket, Prefix=f"teams/{team}/jobs/{job_id}/"
    )
    return [o["Key"] for o in found.get("Contents", [])]


def job_keys(redis, job_id: str) -> set[str]:
    return {k.decode() for k in redis.scan_iter(match=keyspace.job(job_id) + "*")}


def walk(client, job_id: str, query: str, limit: int = 3) -> tuple[list[dict], list[int], int | None]:
    """Every page of a filter, following the cursors: the items, each page's size, the last total."""
    items, sizes, cursor = [], [], None
    while True:
        url = f"/v1/jobs/{job_id}/decisions?limit={limit}{query}" + (f"&cursor={cursor}" if cursor else "")
        r = client.get(url)
        assert r.status_code == 200, r.json
        items += r.json["items"]
        sizes.append(len(r.json["items"]))
        cursor = r.json["next_cursor"]
        if cursor is None:
            return items, sizes, r.json["total"]


def test_a_finished_job_serves_its_decisions_from_the_archive(client, redis, settings, worker_env):
    job = run_job(client, redis, make_seed_set(client), num_instructions=8)
    assert job["state"] == "succeeded"
    # Redis holds the record and its capped event stream only; the log and checkpoints are in S3
    assert job_keys(redis, job["id"]) == {keyspace.job(job["id"]), keyspace.job_events(job["id"])}
    assert f"teams/alpha/jobs/{job['id']}/archive/decisions.sqlite" in objects(settings, "alpha", job["id"])
    url = client.get(f"/v1/jobs/{job['id']}/dataset/decisions.jsonl").headers["Location"]
    exported = [json.loads(line) for line in urllib.request.urlopen(url).read().decode().splitlines()]
    rules = {d["rule"] for d in exported}
    assert {"kept", "too_similar"} <= rules or len(rules) > 2
    filters = [
        ("", lambda d: True),
        ("&stage=instruction", lambda d: d["stage"] == "instruction"),
        ("&verdict=dropped", lambda d: d["verdict"] == "dropped"),
        ("&stage=instance&verdict=kept", lambda d: d["stage"] == "instance" and d["verdict"] == "kept"),
        *((f"&rule={r}", lambda d, r=r: d["rule"] == r) for r in sorted(rules)),
        ("&rule=kept&verdict=dropped", lambda d: False),
    ]
    for query, keep in filters:
        items, _, total = walk(client, job["id"], query)
        expected = [d for d in exported if keep(d)]
        assert total == len(expected) == len(items), query
        assert sorted(items, key=lambda d: d["id"]) == sorted(expected, key=lambda d: d["id"]), query
    one = exported[-1]
    assert client.get(f"/v1/jobs/{job['id']}/decisions/{one['id']}").json == one
    assert client.get(f"/v1/jobs/{job['id']}/decisions/nope").status_code == 404


def test_a_page_read_while_its_job_is_archived_comes_from_the_archive(
    client, redis, settings, worker_env, monkeypatch
):
    """The reader saw the job running, then the archiver moved its log to S3 and purged Redis while the
    page was read: the archive answers, not the emptied Redis log."""
    job = run_job(client, redis, make_seed_set(client), num_instructions=4)
    kept = client.get(f"/v1/jobs/{job['id']}/decisions", query_string={"rule": "kept"}).json
    one = kept["items"][0]
    assert kept["total"] >= 4
    jobs_.update(redis, job["id"], archived=False)  # as the reader found it
    for name in ("page", "get"):
        real = getattr(DecisionLog, name)

        def flipped(self, *args, real=real, **kwargs):
            out = real(self, *args, **kwargs)  # its log is gone already
            jobs_.update(redis, job["id"], archived=True)  # the archiver flips the record meanwhile
            return out

        monkeypatch.setattr(DecisionLog, name, flipped)
    again = client.get(f"/v1/jobs/{job['id']}/decisions", query_string={"rule": "kept"}).json
    assert again == kept
    jobs_.update(redis, job["id"], archived=False)
    assert client.get(f"/v1/jobs/{job['id']}/decisions/{one['id']}").json == one


def test_delete_removes_everything_is_idempotent_and_not_for_other_teams(
    app, client, redis, settings, worker_env
):
    seed_set_id = make_seed_set(client)
    job = run_job(client, redis, seed_set_id, num_instructions=4)
    other = run_job(client, redis, seed_set_id, num_instructions=3)
    assert objects(settings, "alpha", job["id"])
    beta = as_team(app, redis, "beta")
    assert beta.delete(f"/v1/jobs/{job['id']}").status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 200
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert objects(settings, "alpha", job["id"]) == []
    assert job_keys(redis, job["id"]) == {keyspace.job_gone(job["id"])}
    for path in ("", "/decisions", "/dataset"):
        r = client.get(f"/v1/jobs/{job['id']}{path}")
        assert r.status_code == 410 and r.mimetype == "application/problem+json", path
    assert beta.get(f"/v1/jobs/{job['id']}").status_code == 404  # 410 only tells the owner
    assert beta.delete(f"/v1/jobs/{job['id']}").status_code == 404
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert [j["id"] for j in client.get("/v1/jobs").json["items"]] == [other["id"]]
    assert client.get(f"/v1/jobs/{other['id']}/decisions").json["total"] > 0


def test_deleting_a_queued_job_cancels_it_and_nothing_comes_back(client, redis, settings, worker_env):
    r = client.post("/v1/jobs", json={"seed_set_id": make_seed_set(client), "num_instructions": 4})
    job_id = r.json["id"]
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
    work(redis)  # the worker finds nothing to run
    assert objects(settings, "alpha", job_id) == []
    assert job_keys(redis, job_id) == {keyspace.job_gone(job_id)}
    assert client.get(f"/v1/jobs/{job_id}").status_code == 410
    assert redis.hget(keyspace.JOBS_BY_STATE, "canceled") in (None, b"0")


def test_a_job_past_its_retention_answers_410_and_the_sweep_removes_it(
    app, client, redis, settings, worker_env, monkeypatch
):
    kept_for = 8  # seconds: the checks of a job not yet due run well within it
    monkeypatch.setenv("JOB_RETENTION_SECONDS", str(kept_for))
    get_settings.cache_clear()
    job = run_job(client, redis, make_seed_set(client), num_instructions=3)
    assert (
        job["state"] == "succeeded"
        and 0 < redis.ttl(keyspace.job(job["id"])) <= kept_for + jobs_.RECORD_GRACE_SECONDS
    )
    assert retention.sweep(redis, Artifacts(settings)) == 0  # not due yet
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 200
    # due, before any sweep ran: 410 (a job still served kept_for + 30 s after it finished was kept)
    wait_until(
        lambda: client.get(f"/v1/jobs/{job['id']}").status_code == 410,
        timeout=kept_for + 30,
        interval=0.2,
        what="the retention to end",
    )
    assert objects(settings, "alpha", job["id"])
    assert retention.sweep(redis, Artifacts(settings), get_settings()) == 1
    assert objects(settings, "alpha", job["id"]) == []
    assert job_keys(redis, job["id"]) == {keyspace.job_gone(job["id"])}
    assert client.get(f"/v1/jobs/{job['id']}/decisions").status_code == 410
    assert as_team(app, redis, "beta").get(f"/v1/jobs/{job['id']}").status_code == 404
    assert redis.zcard(keyspace.EXPIRING) == 0


@pytest.mark.parametrize("chunks", [1, 3])
def test_fanned_out_job_leaves_only_its_record(client, redis, settings, worker_env, monkeypatch, chunks):
    monkeypatch.setenv("INSTANCE_CHUNK_SIZE", "3" if chunks > 1 else "1000")
    get_settings.cache_clear()
    job = run_job(client, redis, make_seed_set(client), num_instructions=8)
    assert job["state"] == "succeeded"
    assert (int(redis.hget(keyspace.job(job["id"]), "chunks") or 0) > 1) == (chunks > 1)
    assert job_keys(redis, job["id"]) == {keyspace.job(job["id"]), keyspace.job_events(job["id"])}
    # the record itself does not grow with the number of chunks: their counters are folded
    fields = {k.decode() for k in redis.hkeys(keyspace.job(job["id"]))}
    assert not any(f.startswith(("p:chunk", "t:chunk")) for f in fields) and "rq_ids" not in fields
    assert len(jobs_.get(redis, job["id"]).rq_ids) == (1 + chunks + 1 if chunks > 1 else 1)
    stats_url = client.get(f"/v1/jobs/{job['id']}/dataset/stats.json").headers["Location"]
    stats = json.loads(urllib.request.urlopen(stats_url).read())
    assert job["progress"]["instances_kept"] == stats["instances_kept"] > 0
    assert job["progress"]["instructions_kept"] == stats["instructions_kept"] == 8
