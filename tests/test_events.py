"""A job's events: in order and exactly once across a killed worker, capped, paged, long-polled through
gunicorn, archived with the dataset and removed with the job."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import httpx
import pytest

from client.__main__ import main as cli
from jobs.runner.worker import ABANDONED_BOUND
from jobs.settings import Profile, get_settings
from jobs.store import events as events_
from jobs.store import keyspace
from jobs.tools.local_stack import gunicorn
from tests.conftest import work
from tests.fake_llm import FakeLLM, Script
from tests.test_api import _file_url, make_seed_set
from tests.test_faults import (
    env_for,
    finish,
    horse_of,
    read,
    started_by,
    two_workers_one_busy,
    wait_until,
)


def all_events(client, job_id: str, limit: int = 7) -> list[dict]:
    """Every event, page by page."""
    out, cursor = [], None
    while True:
        page = client.get(
            f"/v1/jobs/{job_id}/events?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        ).json
        out += page["items"]
        if not page["items"]:
            return out
        cursor = page["next_cursor"]


def kinds(events: list[dict], kind: str, key: str) -> list:
    return [e["data"][key] for e in events if e["type"] == kind]


@pytest.mark.slow
def test_events_in_order_across_a_worker_kill_through_gunicorn(
    client, redis, settings, worker_env, fake_llm, spawn, tmp_path, api_key, capsys
):
    sid = make_seed_set(client)
    fake_llm.script.delay = 0.3
    api, url = gunicorn(env_for(settings), tmp_path / "gunicorn.log")
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=40)
    try:
        job_id, busy, name, _ = two_workers_one_busy(client, redis, settings, spawn, sid)
        first = http.get(f"/v1/jobs/{job_id}/events").json()
        assert kinds(first["items"], "state", "state") == ["queued", "running"]
        horse = horse_of(busy)
        busy.signal(signal.SIGKILL)
        os.kill(horse, signal.SIGKILL)
        wait_until(
            lambda: started_by(redis, job_id) not in (name,), timeout=ABANDONED_BOUND + 30, what="resume"
        )
        # follow by long polling through gunicorn, from the cursor the first page ended at
        followed, cursor, polls, waits = list(first["items"]), first["next_cursor"], 0, []
        while True:
            started = time.monotonic()
            page = http.get(f"/v1/jobs/{job_id}/events", params={"cursor": cursor, "follow": "true"})
            assert page.status_code == 200, page.text
            page = page.json()
            waits.append(time.monotonic() - started)
            followed += page["items"]
            cursor, polls = page["next_cursor"] or cursor, polls + 1
            if page["done"]:
                break
            assert page["items"], "a long poll answers with an event or waits its whole time"
        assert finish(client, job_id)["state"] == "succeeded"
        assert max(waits) < 25  # each poll ended when an event came, not at the time limit
        capsys.readouterr()
        assert cli(["--url", url, "--api-key", api_key, "logs", job_id, "--follow"]) == 0
        event_line = re.compile(r"^\d\d:\d\d:\d\d (state|stage_started|stage_ended|progress|retry|warning) ")
        printed = [line for line in capsys.readouterr().out.splitlines() if event_line.match(line)]
        assert len(printed) == len(all_events(client, job_id))
        assert [line.split(None, 3)[2] for line in printed if " state " in line] == [
            "-",
            "queued",
            "running",
        ]
    finally:
        http.close()
        api.stop()
    ids = [e["id"] for e in followed]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-")))) and len(set(ids)) == len(ids)
    assert followed == all_events(client, job_id)  # following and paging see the same events
    # a state change is written once, in the step that makes it: the resumed run adds none
    assert kinds(followed, "state", "state") == ["queued", "running", "succeeded"]
    assert kinds(followed, "stage_started", "stage") == ["instructions", "classification", "instances"]
    assert kinds(followed, "stage_ended", "stage") == ["instructions", "classification", "instances"]
    archived = [
        json.loads(line) for line in read(settings, "alpha", job_id, "events.jsonl").decode().splitlines()
    ]
    flat = [{"id": e["id"], "type": e["type"], "at": e["at"], **e["data"]} for e in followed]
    assert archived == flat[: len(archived)] and archived[-1]["type"] == "stage_ended"


def test_events_are_capped(client, redis, worker_env, monkeypatch):
    monkeypatch.setenv("MAX_JOB_EVENTS", "12")
    monkeypatch.setenv("PROGRESS_EVENT_SECONDS", "0")  # a progress event with every report
    get_settings.cache_clear()
    sid = make_seed_set(client)
    job_id = client.post("/v1/jobs", json={"seed_set_id": sid, "num_instructions": 8}).json["id"]
    work(redis)
    assert redis.xlen(keyspace.job_events(job_id)) == 12
    events = all_events(client, job_id, limit=5)
    assert len(events) == 12 and events[-1]["type"] == "state" and events[-1]["data"]["state"] == "succeeded"
    assert "queued" not in kinds(events, "state", "state")  # the oldest went first
    # every writer caps the stream, not only the state changes
    for n in range(5):
        events_.emit(redis, job_id, "warning", get_settings().max_job_events, message=f"extra {n}")
    assert redis.xlen(keyspace.job_events(job_id)) == 12
    assert all_events(client, job_id)[-1]["data"] == {"message": "extra 4"}


def test_retries_warnings_cancel_and_delete(client, redis, worker_env, settings, monkeypatch):
    sid = make_seed_set(client)
    with FakeLLM(Script(schedule=["500", "429", "500"])) as flaky:
        profile = Profile.of("fake", flaky.base_url, "fake", timeout=5, max_wait=0.2)
        monkeypatch.setenv("LLM_PROFILES", json.dumps({"fake": profile.options()}))
        get_settings.cache_clear()
        # one request allowed in stage 1: it ends short of its target
        body = {"seed_set_id": sid, "num_instructions": 50, "max_requests": 1}
        job_id = client.post("/v1/jobs", json=body).json["id"]
        work(redis)
    events = all_events(client, job_id)
    retries = [e["data"] for e in events if e["type"] == "retry"]
    assert sum(r["attempts"] for r in retries) == 3
    assert {k: sum(r["reasons"].get(k, 0) for r in retries) for k in ("500", "429")} == {"500": 2, "429": 1}
    warnings = kinds(events, "warning", "message")
    assert any(w.startswith("stage instructions ended short of its target") for w in warnings), warnings
    assert client.get(f"/v1/jobs/{job_id}/events?cursor=nope").status_code == 422
    # a stream id's parts are below 2**64: a longer one is refused, not passed to Redis
    assert client.get(f"/v1/jobs/{job_id}/events?cursor=24178590768239028803-3253").status_code == 422
    assert client.get(f"/v1/jobs/{job_id}/events?wait=26").status_code == 422
    # a finished job's poll does not wait
    started = time.monotonic()
    end = client.get(f"/v1/jobs/{job_id}/events?wait=20&cursor={events[-1]['id']}").json
    assert (
        end == {"items": [], "next_cursor": events[-1]["id"], "done": True} and time.monotonic() - started < 5
    )
    # who cancelled
    queued = client.post("/v1/jobs", json={"seed_set_id": sid, "num_instructions": 3}).json["id"]
    assert client.post(f"/v1/jobs/{queued}/cancel").status_code == 202
    last = all_events(client, queued)[-1]["data"]
    assert last["state"] == "canceled" and last["cancelled_by"].startswith("team alpha (request ")
    # removed with the job
    assert client.delete(f"/v1/jobs/{queued}").status_code == 204
    assert not redis.exists(keyspace.job_events(queued))
    assert client.get(f"/v1/jobs/{queued}/events").status_code == 410


def test_a_failed_jobs_error_is_its_last_event(client, redis, worker_env, monkeypatch):
    sid = make_seed_set(client)
    with FakeLLM(Script(fault_rate=1.0, faults=("500",))) as broken:
        profile = Profile.of("fake", broken.base_url, "fake", timeout=5, max_attempts=2, max_wait=0.1)
        options = profile.options()
        monkeypatch.setenv("LLM_PROFILES", json.dumps({"fake": options}))
        get_settings.cache_clear()
        job_id = client.post("/v1/jobs", json={"seed_set_id": sid, "num_instructions": 3}).json["id"]
        work(redis)
    events = all_events(client, job_id)
    last = events[-1]
    assert last["type"] == "state" and last["data"]["state"] == "failed"
    assert last["data"]["error"] == client.get(f"/v1/jobs/{job_id}").json["error"]
    assert "500" in last["data"]["error"]
    assert sum(e["data"]["attempts"] for e in events if e["type"] == "retry") >= 1


def test_a_rate_limited_endpoint_is_paced_and_the_waits_are_reported(client, redis, worker_env, monkeypatch):
    sid = make_seed_set(client)
    # two requests a 0.4 s window, told in x-ratelimit-* headers; a request over it would get a 429
    with FakeLLM(Script(limit_requests=2, limit_window=0.4)) as limited:
        profile = Profile.of("fake", limited.base_url, "fake", timeout=5, max_wait=2, concurrency=1)
        options = profile.options()
        monkeypatch.setenv("LLM_PROFILES", json.dumps({"fake": options}))
        monkeypatch.setenv("PROGRESS_EVENT_SECONDS", "0")
        get_settings.cache_clear()
        body = {"seed_set_id": sid, "num_instructions": 2, "classification_method": "text"}
        job_id = client.post("/v1/jobs", json=body).json["id"]
        work(redis)
    assert client.get(f"/v1/jobs/{job_id}").json["state"] == "succeeded"
    assert limited.script.counts.get("rate_limited", 0) == 0  # paced: no 429 drawn
    events = all_events(client, job_id, limit=100)
    assert not [e for e in events if e["type"] == "retry"]
    waits = [e["data"] for e in events if e["type"] == "progress" and "rate_limit_waits" in e["data"]]
    assert waits and waits[-1]["rate_limit_waits"] >= 2 and waits[-1]["rate_limit_seconds"] > 0
    # the waits only ever grow, and progress events before the first say nothing of them
    assert [w["rate_limit_waits"] for w in waits] == sorted(w["rate_limit_waits"] for w in waits)
    progress = [e["data"] for e in events if e["type"] == "progress"]
    assert "rate_limit_waits" not in progress[0]
    stats = httpx.get(_file_url(client, job_id, "stats.json")).json()
    assert stats["rate_limit_waits"]["requests"] >= waits[-1]["rate_limit_waits"]
