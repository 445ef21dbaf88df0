"""Prometheus metrics: the API's across gunicorn workers, and the workers' from their work horses."""

from __future__ import annotations

import os
import re

import httpx

from jobs.store import api_keys
from jobs.tools.local_stack import free_port, gunicorn, rq_worker
from tests.test_api import make_seed_set
from tests.test_faults import env_for, finish, wait_until


def value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        named = line.startswith(name + "{") or line.startswith(name + " ")
        if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_api_metrics_sum_over_gunicorn_workers(settings, redis, tmp_path):
    env = {**env_for(settings), "RATE_LIMIT_PER_MINUTE": "0"}
    proc, url = gunicorn(env, tmp_path / "gunicorn.log", workers=2)
    try:
        key = api_keys.create(redis, "alpha")[1]
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"})
        for _ in range(30):
            assert http.get("/v1/jobs").status_code == 200
        http.get("/v1/jobs/" + "0" * 32)
        text = httpx.get(f"{url}/metrics").text
    finally:
        proc.stop()
    assert (
        value(text, "selfinstruct_http_request_duration_seconds_count", url_rule="/v1/jobs", status="200")
        == 30
    )
    assert (
        value(
            text,
            "selfinstruct_http_request_duration_seconds_count",
            url_rule="/v1/jobs/<job_id>",
            status="404",
        )
        == 1
    )
    # both gunicorn workers served some of them: the numbers come from more than one process
    assert (
        len([f for f in os.listdir(tmp_path / f"metrics-{url.rsplit(':', 1)[1]}") if f.endswith(".db")]) >= 2
    )


def test_worker_metrics(client, redis, settings, fake_llm, tmp_path):
    port = free_port()
    fake_llm.script.schedule = ["429"]
    worker = rq_worker({**env_for(settings), "METRICS_PORT": str(port)}, tmp_path / "worker.log")
    try:
        sid = make_seed_set(client)
        # one instance request an instruction (no second answers), so the counts below are exact
        body = {"seed_set_id": sid, "num_instructions": 4, "instance_followup": False}
        job_id = client.post("/v1/jobs", json=body).json["id"]
        assert finish(client, job_id)["state"] == "succeeded"
        text = wait_until(
            lambda: (t := _scrape(port)) and "selfinstruct_llm_requests_total" in t and t,
            what="worker metrics",
        )
    finally:
        worker.stop()
    assert value(text, "selfinstruct_llm_requests_total", stage="instructions", outcome="ok") >= 1
    assert value(text, "selfinstruct_llm_requests_total", stage="instances", outcome="ok") == 4
    assert value(text, "selfinstruct_llm_retries_total", kind="429") == 1
    assert value(text, "selfinstruct_llm_tokens_total", kind="completion") > 0
    # the default classification method (auto) asked about the seed tasks, then kept knn: no more
    assert value(text, "selfinstruct_llm_request_seconds_count", stage="classification") == 0
    assert value(text, "selfinstruct_llm_request_seconds_count", stage="instances") == 4
    assert value(text, "selfinstruct_dedup_seconds_count") >= 4
    assert value(text, "selfinstruct_candidates_total", stage="instruction", verdict="kept", rule="kept") == 4
    assert (
        value(text, "selfinstruct_jobs", state="succeeded") == 1
        and value(text, "selfinstruct_jobs", state="queued") == 0
    )
    assert re.search(r'selfinstruct_queue_jobs\{registry="queued"\} 0', text)


def _scrape(port: int) -> str | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
