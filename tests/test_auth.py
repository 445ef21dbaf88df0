"""Access: API keys (hashed), team isolation over every endpoint, rate and job limits, no SSRF, no
secret in logs, errors, job records or exports."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace

import pytest
import yaml
from rq import Queue

from jobs.settings import Profile, get_settings
from jobs.store import api_keys, keyspace, webhooks
from service.app import create_app
from tests.conftest import ROOT, work
from tests.test_api import PROBLEM, make_seed_set, run_job

SPEC = yaml.safe_load((ROOT / "openapi.yaml").read_text())
VERBS = {"get", "post", "put", "patch", "delete"}
OPERATIONS = [(m.upper(), path) for path, item in SPEC["paths"].items() for m in item if m in VERBS]
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz")}


def as_team(app, redis, team: str):
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {api_keys.create(redis, team)[1]}"
    return client


def fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


@pytest.fixture
def alpha_world(client, redis, worker_env):
    """Team alpha's seed set, finished job, one of its decisions and a dataset file."""
    seed_set_id = make_seed_set(client)
    job = run_job(client, redis, seed_set_id, num_instructions=3)
    decision = client.get(f"/v1/jobs/{job['id']}/decisions?limit=1").json["items"][0]["id"]
    preview = client.post("/v1/previews?wait=0", json={"seed_set_id": seed_set_id, "num_instructions": 2})
    reference = client.post(
        "/v1/reference-sets", data=b'{"text": "Is the sky blue?"}\n', content_type="application/x-ndjson"
    )
    return {
        "reference_set_id": reference.json["id"],
        "seed_set_id": seed_set_id,
        "job_id": job["id"],
        "decision_id": decision,
        "name": "alpaca.json",
        "preview_id": preview.json["id"],
    }


def test_every_protected_operation_needs_a_valid_key(app, redis, alpha_world):
    anonymous = app.test_client()
    bad = app.test_client()
    bad.environ_base["HTTP_AUTHORIZATION"] = "Bearer sik_nope"
    for method, path in OPERATIONS:
        url = fill(path, alpha_world)
        if (method, path) in PUBLIC:
            assert anonymous.open(url, method=method).status_code in (200, 503)
            continue
        for caller in (anonymous, bad):
            r = caller.open(url, method=method, json={})
            assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer"), (method, path)
    assert {op for op in OPERATIONS if op not in PUBLIC}, "the spec lists protected operations"
    assert ("POST", "/v1/webhook-secret") in OPERATIONS


def test_another_teams_resources_answer_404_on_every_endpoint(app, redis, client, alpha_world):
    beta = as_team(app, redis, "beta")
    bodies = {"/v1/jobs/{job_id}/extensions": {"num_instructions": 5}}
    requests: list[tuple[str, str, dict | None]] = [
        (method, fill(path, alpha_world), bodies.get(path))
        for method, path in OPERATIONS
        if (method, path) not in PUBLIC and "{" in path
    ]
    assert len(requests) == len([op for op in OPERATIONS if "{" in op[1]])
    # a job on another team's seed set is refused like a missing one
    requests.append(("POST", "/v1/jobs", {"seed_set_id": alpha_world["seed_set_id"], "num_instructions": 2}))
    requests.append(("POST", "/v1/previews?wait=0", {"seed_set_id": alpha_world["seed_set_id"]}))
    for method, url, body in requests:
        r = beta.open(url, method=method, json=body)
        assert r.status_code == 404, (method, url, r.status_code, r.json)
    # Positive control: the same requests find alpha's resources (deletions last, so nothing is gone early).
    owner = {
        (method, url): client.open(url, method=method, json=body).status_code
        for method, url, body in sorted(requests, key=lambda req: req[0] == "DELETE")
    }
    assert all(status in (200, 202, 204, 302, 409) for status in owner.values()), owner
    # lists show only the caller's own
    assert beta.get("/v1/seed-sets").json["items"] == [] and beta.get("/v1/jobs").json["items"] == []
    assert beta.get("/v1/reference-sets").json["items"] == []
    # the same tasks are new for beta: nothing tells beta that alpha has them
    assert (
        beta.post(
            "/v1/seed-sets",
            data=(ROOT / "data" / "seed_tasks.jsonl").read_bytes(),
            content_type="application/x-ndjson",
        ).status_code
        == 201
    )
    # a job of beta's naming alpha's reference set is refused like one naming a missing set
    own = beta.get("/v1/seed-sets").json["items"][0]["id"]
    named = {
        "seed_set_id": own,
        "num_instructions": 2,
        "decontaminate_against": [alpha_world["reference_set_id"]],
    }
    r = beta.post("/v1/jobs", json=named)
    assert r.status_code == 404 and alpha_world["reference_set_id"] in r.json["detail"]


def test_webhook_secrets_are_per_team(app, redis):
    """POST /v1/webhook-secret makes the caller's team's secret only; a job's notify_url needs its own
    team's secret, whatever another team holds."""
    local = create_app(
        replace(app.extensions["selfinstruct"].settings, webhook_allowed_hosts=("ci.example.com",)),
        configure_logging=False,
    )
    alpha, beta, gamma = (as_team(local, redis, team) for team in ("alpha", "beta", "gamma"))
    first = alpha.post("/v1/webhook-secret").json["secret"]
    assert webhooks.signing_secrets(redis, "alpha") == [first]
    second = beta.post("/v1/webhook-secret")
    assert second.status_code == 201 and second.json["previous_valid_until"] is None  # beta's first
    assert webhooks.signing_secrets(redis, "alpha") == [first]  # alpha's untouched
    assert webhooks.signing_secrets(redis, "beta") == [second.json["secret"]] != [first]
    body = {
        "seed_set_id": make_seed_set(gamma),
        "num_instructions": 2,
        "notify_url": "https://ci.example.com/",
    }
    r = gamma.post("/v1/jobs", json=body)
    assert r.status_code == 422 and r.json["errors"][0]["field"] == "notify_url"
    assert gamma.get("/v1/jobs").json["items"] == []
    assert webhooks.signing_secrets(redis, "gamma") == []


def test_keys_are_stored_hashed_and_can_be_revoked(app, redis, settings):
    env = {**os.environ, **settings.to_env()}
    created = subprocess.run(
        [sys.executable, "-m", "jobs.tools.keys", "create", "--team", "gamma", "--name", "ci"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    secret = created.strip().splitlines()[-1]
    key_id = re.search(r"key (\w+) for team gamma", created).group(1)
    for k in redis.scan_iter():
        assert secret.encode() not in k
        if redis.type(k) == b"hash":
            assert all(secret.encode() not in v for v in redis.hvals(k))
    caller = app.test_client()
    caller.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    assert caller.get("/v1/jobs").status_code == 200
    listed = subprocess.run(
        [sys.executable, "-m", "jobs.tools.keys", "list"], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert key_id in listed and "team=gamma" in listed and secret not in listed
    subprocess.run(
        [sys.executable, "-m", "jobs.tools.keys", "revoke", key_id], env=env, check=True, capture_output=True
    )
    assert caller.get("/v1/jobs").status_code == 401
    bad = subprocess.run(
        [sys.executable, "-m", "jobs.tools.keys", "create", "--team", "Bad Team"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert bad.returncode == 2 and "team:" in bad.stderr


def test_rate_limit_per_team(redis, settings):
    app = create_app(replace(settings, rate_limit_per_minute=5), configure_logging=False)
    alpha, beta = as_team(app, redis, "alpha"), as_team(app, redis, "beta")
    # fixed one-minute windows: 12 quick requests span at most two, so 5 to 10 get through
    responses = [alpha.get("/v1/jobs") for _ in range(12)]
    statuses = [r.status_code for r in responses]
    assert 5 <= statuses.count(200) <= 10 and statuses[:5] == [200] * 5 and 429 in statuses
    limited = next(r for r in responses if r.status_code == 429)
    assert (
        limited.content_type == "application/problem+json" and 1 <= int(limited.headers["Retry-After"]) <= 60
    )
    assert beta.get("/v1/jobs").status_code == 200  # another team has its own budget


def test_concurrent_jobs_per_team(redis, settings, worker_env):
    app = create_app(replace(settings, max_active_jobs=1), configure_logging=False)
    alpha = as_team(app, redis, "alpha")
    sid = make_seed_set(alpha)
    assert alpha.post("/v1/jobs", json={"seed_set_id": sid, "num_instructions": 2}).status_code == 202
    r = alpha.post(
        "/v1/jobs", json={"seed_set_id": sid, "num_instructions": 2}, headers={"Idempotency-Key": "x"}
    )
    assert r.status_code == 429 and r.headers["Retry-After"] == "30" and "unfinished jobs" in r.json["detail"]
    work(redis)  # the first finishes
    assert (
        alpha.post(
            "/v1/jobs", json={"seed_set_id": sid, "num_instructions": 2}, headers={"Idempotency-Key": "x"}
        ).status_code
        == 202
    )


def test_callers_cannot_point_workers_anywhere(client, redis, settings):
    """A URL or a key in a job request is refused, naming the field, and nothing is queued."""
    sid = make_seed_set(client)
    queued = Queue(settings.queue, connection=redis)
    for body, field in (
        ({"profile": "http://169.254.169.254/latest"}, "profile"),
        ({"base_url": "http://127.0.0.1:6379"}, "base_url"),
        ({"decoding": {"instructions": {"base_url": "http://x"}}}, "decoding.instructions.base_url"),
        ({"api_key": "sk-x"}, "api_key"),
    ):
        r = client.post("/v1/jobs", json={"seed_set_id": sid, "num_instructions": 2, **body})
        assert r.status_code == 422 and r.content_type == PROBLEM, (body, r.status_code, r.json)
        assert [e["field"] for e in r.json["errors"]] == [field], (body, r.json)
        assert client.get("/v1/jobs").json["items"] == [] and queued.count == 0, body
        assert not list(redis.scan_iter(match=keyspace.job("*"))), body
    # positive control: the same request without the offending field makes a job, and it shows
    r = client.post("/v1/jobs", json={"seed_set_id": sid, "num_instructions": 2})
    assert r.status_code == 202
    assert [j["id"] for j in client.get("/v1/jobs").json["items"]] == [r.json["id"]] == queued.job_ids
    assert redis.exists(keyspace.job(r.json["id"]))


def test_no_secret_in_logs_errors_records_or_exports(client, redis, settings, fake_llm, monkeypatch, capfd):
    secret = "sk-live-THIS-IS-A-SECRET-0123456789"
    monkeypatch.setenv("SECRET_LLM_KEY", secret)
    profile = Profile.of(
        "fake", fake_llm.base_url, "fake", api_key_env="SECRET_LLM_KEY", max_attempts=2, max_wait=0.1
    )
    local = replace(settings, profiles={"fake": profile})
    for name, value in local.to_env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    app = create_app(local)  # with its JSON logging, as in production
    api = app.test_client()
    api.environ_base.update(client.environ_base)
    sid = make_seed_set(api)
    good = api.post("/v1/jobs", json={"seed_set_id": sid, "num_instructions": 3}).json["id"]
    work(redis)
    fake_llm.script.fault_rate, fake_llm.script.faults = 1.0, ("401echo",)
    bad = api.post("/v1/jobs", json={"seed_set_id": sid, "num_instructions": 3}).json["id"]
    work(redis)
    failed = api.get(f"/v1/jobs/{bad}").json
    assert failed["state"] == "failed" and "[redacted]" in failed["error"] and secret not in failed["error"]
    seen = [json.dumps(api.get(f"/v1/jobs/{good}").json), json.dumps(api.get(f"/v1/jobs/{bad}").json)]
    for k in redis.scan_iter():
        kind = redis.type(k)
        if kind == b"hash":
            seen += [v.decode(errors="replace") for v in redis.hvals(k)]
        elif kind == b"string":
            seen.append(redis.get(k).decode(errors="replace"))
    from jobs.blobs.artifacts import Artifacts

    store = Artifacts(local)
    for obj in store.s3.list_objects_v2(Bucket=local.s3_bucket).get("Contents", []):
        seen.append(
            store.s3.get_object(Bucket=local.s3_bucket, Key=obj["Key"])["Body"]
            .read()
            .decode("utf-8", "replace")
        )
    out, err = capfd.readouterr()
    seen += [out, err]
    assert all(secret not in text for text in seen)
    assert any("run.json" in text or '"endpoint"' in text for text in seen)  # exports were inspected
