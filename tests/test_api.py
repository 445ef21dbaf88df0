"""The HTTP API on real Redis and a real S3 endpoint; jobs run by RQ workers (in-process, burst)."""

from __future__ import annotations

import json

import httpx
import yaml

from tests.conftest import DATA, ROOT, wait_until, work

SEEDS = (DATA / "seed_tasks.jsonl").read_bytes()
PROBLEM = "application/problem+json"


def make_seed_set(client, data: bytes = SEEDS, name: str = "paper") -> str:
    r = client.post(f"/v1/seed-sets?name={name}", data=data, content_type="application/x-ndjson")
    assert r.status_code in (200, 201), r.json
    return r.json["id"]


def run_job(client, redis, seed_set_id: str, **body) -> dict:
    r = client.post("/v1/jobs", json={"seed_set_id": seed_set_id, "num_instructions": 6, **body})
    assert r.status_code == 202, r.json
    work(redis)
    return client.get(f"/v1/jobs/{r.json['id']}").json


# --- seed sets ---


def test_seed_set_by_file_json_and_upload_is_one_set(client):
    r = client.post("/v1/seed-sets?name=paper", data=SEEDS, content_type="application/x-ndjson")
    assert r.status_code == 201
    body = r.json
    assert (body["tasks"], body["classification_tasks"], body["instances"], body["name"]) == (
        175,
        26,
        175,
        "paper",
    )
    tasks = [json.loads(line) for line in SEEDS.decode().splitlines()]
    again = client.post("/v1/seed-sets", json={"name": "again", "tasks": tasks})
    assert again.status_code == 200 and again.json["id"] == body["id"]
    upload = client.post("/v1/seed-sets", data={"file": (DATA / "seed_tasks.jsonl").open("rb"), "name": "x"})
    assert upload.status_code == 200 and upload.json["id"] == body["id"]
    assert client.get(f"/v1/seed-sets/{body['id']}").json == body
    user = client.post("/v1/seed-sets", data={"file": (DATA / "user_oriented_instructions.jsonl").open("rb")})
    assert user.status_code == 201 and user.json["tasks"] == 252


def test_seed_set_errors_name_every_line_and_field(client):
    bad = b'{"id": "a", "instruction": "Hi there", "instances": []}\n{oops\n' + SEEDS.splitlines()[0] + b"\n"
    r = client.post("/v1/seed-sets", data=bad, content_type="application/x-ndjson")
    assert r.status_code == 422 and r.content_type == PROBLEM
    assert {(e["line"], e["field"]) for e in r.json["errors"]} == {(1, "instances"), (2, "(line)")}
    r = client.post(
        "/v1/seed-sets", json={"tasks": [{"id": "a", "instruction": 5, "instances": [{}]}], "x": 1}
    )
    assert r.status_code == 422  # the unknown field and the tasks' faults, in one answer
    assert {e["field"] for e in r.json["errors"]} == {
        "x",
        "tasks[0].instruction",
        "tasks[0].instances[0].input",
        "tasks[0].instances[0].output",
    }
    r = client.post("/v1/seed-sets", json={"tasks": [{"id": "a", "instruction": 5, "instances": [{}]}]})
    assert {e["field"] for e in r.json["errors"]} == {
        "tasks[0].instruction",
        "tasks[0].instances[0].input",
        "tasks[0].instances[0].output",
    }
    assert client.post("/v1/seed-sets", data=b"{", content_type="application/json").status_code == 400
    r = client.post("/v1/seed-sets", data=b"hello", content_type="text/plain")
    assert r.status_code == 415 and "application/x-ndjson" in r.json["detail"]
    r = client.post("/v1/seed-sets", data=b"x" * (1024 * 1024 + 1), content_type="application/x-ndjson")
    assert r.status_code == 413 and r.content_type == PROBLEM
    too_many = b"".join(
        json.dumps(
            {"id": str(i), "instruction": f"Task {i}", "instances": [{"input": "", "output": "o"}]}
        ).encode()
        + b"\n"
        for i in range(501)
    )
    r = client.post("/v1/seed-sets", data=too_many, content_type="application/x-ndjson")
    assert r.status_code == 422 and "more than 500 tasks" in r.json["errors"][0]["message"]


def test_seed_set_list_pages_and_delete(client, redis, worker_env):
    ids = []
    for i in range(3):
        line = {
            "id": "t",
            "instruction": f"Write a poem number {i}.",
            "instances": [{"input": "", "output": "A"}],
        }
        ids.append(make_seed_set(client, json.dumps(line).encode(), name=f"s{i}"))
    first = client.get("/v1/seed-sets?limit=2").json
    assert [s["id"] for s in first["items"]] == ids[::-1][:2] and first["next_cursor"]
    second = client.get(f"/v1/seed-sets?limit=2&cursor={first['next_cursor']}").json
    assert [s["id"] for s in second["items"]] == [ids[0]] and second["next_cursor"] is None
    assert client.get("/v1/seed-sets?cursor=%%%").status_code == 422
    # in use by a queued job: refused; once the job is finished: deleted
    paper = make_seed_set(client)
    job = client.post("/v1/jobs", json={"seed_set_id": paper, "num_instructions": 2}).json
    r = client.delete(f"/v1/seed-sets/{paper}")
    assert r.status_code == 409 and job["id"] in r.json["detail"]
    work(redis)
    assert client.delete(f"/v1/seed-sets/{paper}").status_code == 204
    assert client.get(f"/v1/seed-sets/{paper}").status_code == 404
    assert client.delete(f"/v1/seed-sets/{paper}").status_code == 404


# --- jobs ---


def test_job_runs_to_a_dataset(client, redis, worker_env):
    sid = make_seed_set(client)
    created = client.post("/v1/jobs", json={"seed_set_id": sid, "num_instructions": 6, "seed": 7})
    assert created.status_code == 202 and created.json["state"] == "queued"
    assert created.json["progress"]["instructions_target"] == 6
    work(redis)
    job = client.get(f"/v1/jobs/{created.json['id']}").json
    assert job["state"] == "succeeded" and job["stage"] == "done" and job["dataset_available"]
    p = job["progress"]
    # stage 1, and one instance request a task (the default classification, auto, chose knn on the
    # scripted model's random answers: it asks nothing more)
    assert p["instructions_kept"] == 6 and p["requests"] >= 7 and p["completion_tokens"] > 0
    assert job["started_at"] and job["finished_at"] and job["eta_seconds"] is None
    listed = client.get("/v1/jobs?state=succeeded").json["items"]
    assert [j["id"] for j in listed] == [job["id"]]
    assert client.get("/v1/jobs?state=failed").json["items"] == []
    assert client.get(f"/v1/jobs?seed_set_id={sid}").json["items"][0]["id"] == job["id"]


def test_job_request_validation(client):
    sid = make_seed_set(client)
    r = client.post("/v1/jobs", json={"seed_set_id": sid, "num_instructions": 0, "surprise": 1})
    assert r.status_code == 422 and r.content_type == PROBLEM
    assert {e["field"] for e in r.json["errors"]} == {"num_instructions", "surprise"}
    r = client.post("/v1/jobs", json={"seed_set_id": sid, "num_instructions": 5, "profile": "elsewhere"})
    assert r.status_code == 422 and r.json["errors"] == [{"field": "profile", "message": "one of: fake"}]
    r = client.post(
        "/v1/jobs",
        json={
            "seed_set_id": sid,
            "num_instructions": 5,
            "decoding": {"instructions": {"temperature": 9, "base_url": "http://evil"}},
        },
    )
    assert {e["field"] for e in r.json["errors"]} == {
        "decoding.instructions.temperature",
        "decoding.instructions.base_url",
    }
    r = client.post("/v1/jobs", json={"seed_set_id": "0" * 64, "num_instructions": 5})
    assert r.status_code == 404
    r = client.post("/v1/jobs", json={"seed_set_id": sid, "num_instructions": 100_001})
    assert r.status_code == 422
    assert client.post("/v1/jobs", data="x", content_type="text/plain").status_code == 415
    assert client.get("/v1/jobs/nope").status_code == 404
    assert client.get("/v1/jobs?state=sleeping").status_code == 422


def test_idempotency_key(client):
    sid = make_seed_set(client)
    body = {"seed_set_id": sid, "num_instructions": 3}
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "ci-run-17"})
    again = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "ci-run-17"})
    assert first.status_code == 202 and again.status_code == 200 and again.json["id"] == first.json["id"]
    other = client.post(
        "/v1/jobs", json={**body, "num_instructions": 4}, headers={"Idempotency-Key": "ci-run-17"}
    )
    assert other.status_code == 409 and "different request body" in other.json["detail"]
    assert client.post("/v1/jobs", json=body).json["id"] != first.json["id"]  # no key: a new job


def test_cancel_a_queued_job(client, redis, worker_env, fake_llm):
    sid = make_seed_set(client)
    job = client.post("/v1/jobs", json={"seed_set_id": sid, "num_instructions": 3}).json
    r = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 202 and r.json["state"] == "canceled" and r.json["cancel_requested"]
    work(redis)
    assert fake_llm.script.counts.get("requests", 0) == 0  # never started
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409
    assert client.get(f"/v1/jobs/{job['id']}/dataset").status_code == 409


# --- decisions ---


def test_decision_pages_filters_and_lookup(client, redis, worker_env):
    sid = make_seed_set(client)
    job = run_job(client, redis, sid, num_instructions=10)
    base = f"/v1/jobs/{job['id']}/decisions"
    everything, cursor = [], None
    while True:
        page = client.get(base + "?limit=7" + (f"&cursor={cursor}" if cursor else "")).json
        everything += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert page["total"] == len(everything) == len({d["id"] for d in everything})
    stats = json.loads(httpx.get(_file_url(client, job["id"], "stats.json")).content)
    assert len(everything) == sum(sum(v.values()) for v in stats["verdicts"].values())
    kept = client.get(base + "?stage=instruction&verdict=kept&limit=500").json
    assert kept["total"] == 10 and all(d["rule"] == "kept" for d in kept["items"])
    for rule, count in stats["verdicts"]["instruction"].items():
        r = client.get(base + f"?stage=instruction&rule={rule}&limit=500").json
        assert r["total"] == count and {d["rule"] for d in r["items"]} == {rule}
    assert client.get(base + "?rule=kept&verdict=dropped").json == {
        "items": [],
        "next_cursor": None,
        "total": 0,
    }
    similar = next(d for d in everything if d["rule"] == "too_similar")
    one = client.get(f"{base}/{similar['id']}").json
    assert one == similar and one["detail"]["score"] > 0.7 and one["detail"]["nearest_id"]
    assert client.get(f"{base}/nope").status_code == 404
    assert client.get(base + "?cursor=zzz").status_code == 422
    assert client.get(base + "?rule=unknown").status_code == 422


# --- datasets ---


def _file_url(client, job_id: str, name: str) -> str:
    r = client.get(f"/v1/jobs/{job_id}/dataset/{name}")
    assert r.status_code == 302
    return r.headers["Location"]


def test_manifest_and_presigned_downloads(client, redis, worker_env):
    sid = make_seed_set(client)
    job = run_job(client, redis, sid)
    manifest = client.get(f"/v1/jobs/{job['id']}/dataset").json
    assert manifest["partial"] is False and manifest["expires_in"] == 900
    names = {f["name"] for f in manifest["files"]}
    assert names >= {
        "finetune.jsonl",
        "alpaca.json",
        "chat.jsonl",
        "dataset.parquet",
        "decisions.jsonl",
        "stats.json",
        "run.json",
        "README.md",
        "instructions.jsonl",
    }
    import hashlib

    for f in manifest["files"]:
        body = httpx.get(f["url"]).content  # a plain client, straight from S3
        assert hashlib.sha256(body).hexdigest() == f["sha256"] and len(body) == f["bytes"]
        via_redirect = httpx.get(_file_url(client, job["id"], f["name"])).content
        assert via_redirect == body
    alpaca = json.loads(httpx.get(_file_url(client, job["id"], "alpaca.json")).content)
    assert len(alpaca) == next(f for f in manifest["files"] if f["name"] == "alpaca.json")["records"] > 0
    tampered = manifest["files"][0]["url"].replace("X-Amz-Signature=", "X-Amz-Signature=0")
    assert httpx.get(tampered).status_code == 403
    assert client.get(f"/v1/jobs/{job['id']}/dataset/nothing.txt").status_code == 404


def test_presigned_urls_expire(client, redis, worker_env, settings):
    from dataclasses import replace

    from service.app import create_app

    sid = make_seed_set(client)
    job = run_job(client, redis, sid, num_instructions=2)
    ttl = 6
    short = create_app(replace(settings, presign_ttl=ttl), configure_logging=False).test_client()
    short.environ_base.update(client.environ_base)
    url = short.get(f"/v1/jobs/{job['id']}/dataset").json["files"][0]["url"]
    assert httpx.get(url).status_code == 200  # at once: X-Amz-Date has whole seconds, so ttl - 1 s are left
    # refused once the ttl has passed; a URL valid for longer than ttl + 30 s was not given the ttl
    wait_until(
        lambda: httpx.get(url).status_code in (400, 403),
        timeout=ttl + 30,
        interval=0.5,
        what="the URL to expire",
    )


def test_fan_out_gives_the_same_dataset(client, redis, worker_env, settings, monkeypatch):
    sid = make_seed_set(client)
    whole = run_job(client, redis, sid, num_instructions=9, seed=3)
    monkeypatch.setenv("INSTANCE_CHUNK_SIZE", "4")
    from jobs.settings import get_settings

    get_settings.cache_clear()
    split = run_job(client, redis, sid, num_instructions=9, seed=3)
    assert split["state"] == "succeeded"
    from jobs.store import job as jobs_

    assert len(jobs_.get(redis, split["id"]).rq_ids) == 1 + 3 + 1  # main, 3 chunks, finalize
    for name in ("alpaca.json", "finetune.jsonl", "decisions.jsonl", "dataset.parquet"):
        a = httpx.get(_file_url(client, whole["id"], name)).content
        b = httpx.get(_file_url(client, split["id"], name)).content
        assert a == b, name
    assert split["progress"]["instances_kept"] == whole["progress"]["instances_kept"]
    assert split["progress"]["stage_done"] == 9


def test_a_chunk_without_its_first_checkpoint_makes_it_from_the_main_one(
    client, redis, worker_env, settings, monkeypatch
):
    """The main run writes each chunk's first checkpoint as it fans out, and folds its own deltas (the
    chunks start with none left); a chunk queued without its first checkpoint (by an earlier version's
    main run) makes it from the main checkpoint: the same dataset either way."""
    from jobs.runner import generation
    from jobs.settings import get_settings
    from jobs.store import keyspace

    sid = make_seed_set(client)
    monkeypatch.setenv("INSTANCE_CHUNK_SIZE", "4")
    get_settings.cache_clear()
    written = run_job(client, redis, sid, num_instructions=9, seed=3)
    chunk, dropped, main_deltas = generation._chunk, [], []

    def without_checkpoint(ctx, index, ids):
        main_deltas.append(redis.llen(keyspace.checkpoint_deltas(ctx.job.id, None)))
        if index == 1:
            keys = keyspace.checkpoint(ctx.job.id, "chunk1"), keyspace.checkpoint_deltas(ctx.job.id, "chunk1")
            dropped.append(redis.delete(*keys))
        chunk(ctx, index, ids)

    monkeypatch.setattr(generation, "_chunk", without_checkpoint)
    made = run_job(client, redis, sid, num_instructions=9, seed=3)
    assert dropped == [2] and made["state"] == written["state"] == "succeeded"
    assert main_deltas == [0, 0, 0]
    assert made["progress"]["requests"] == written["progress"]["requests"]  # chunk 1 did only its part
    for name in ("finetune.jsonl", "decisions.jsonl"):
        a = httpx.get(_file_url(client, written["id"], name)).content
        b = httpx.get(_file_url(client, made["id"], name)).content
        assert a == b, name


def test_every_queued_function_is_importable():
    """The functions RQ jobs name exist, in the modules a worker imports before it forks."""
    import importlib

    from jobs.runner import queue

    names = [v for k, v in vars(queue).items() if k.isupper() and str(v).startswith("jobs.")]
    assert len(names) == 7
    for name in names:
        module, _, function = name.rpartition(".")
        assert module in {f"jobs.runner.{m}" for m in ("delivery", "finalize", "generation", "preview")}
        assert callable(getattr(importlib.import_module(module), function)), name


# --- health and the spec ---


def test_health(client, settings):
    from dataclasses import replace

    from service.app import create_app

    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/readyz").json == {"status": "ok", "checks": {"redis": "ok", "s3": "ok"}}
    broken = create_app(
        replace(settings, s3_endpoint_url="http://127.0.0.1:9", redis_url="redis://127.0.0.1:9/0")
    )
    r = broken.test_client().get("/readyz")
    assert r.status_code == 503 and r.json["checks"]["redis"].startswith("error")


def test_openapi_yaml_is_generated_from_the_code_and_valid(app):
    from openapi_spec_validator import validate

    spec = app.extensions["flask-smorest"]["apis"][""]["ext_obj"].spec.to_dict()
    committed = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    assert committed == spec, "openapi.yaml is stale: run scripts/openapi.sh"
    validate(committed)


def test_errors_are_problem_json_with_request_id(client):
    r = client.get("/v1/nothing", headers={"X-Request-ID": "abc-123"})
    assert r.status_code == 404 and r.content_type == PROBLEM
    assert r.json["request_id"] == "abc-123" == r.headers["X-Request-ID"]
    r = client.delete("/v1/jobs")
    assert r.status_code == 405 and "GET" in r.headers["Allow"]
    deep = "[" * 50_000 + "]" * 50_000
    r = client.post("/v1/seed-sets", data=deep, content_type="application/json")
    assert r.status_code in (400, 422) and r.content_type == PROBLEM
