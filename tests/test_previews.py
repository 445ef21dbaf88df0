"""Previews: answered by their own worker while a long job holds the generation queue, 202 then poll,
expiry, the operator's cap, and the estimate's arithmetic."""

from __future__ import annotations

import re
import time
from dataclasses import replace

import httpx
import pytest
from rq import Queue, SimpleWorker

from client.__main__ import main as cli
from jobs.method.stages.classification import SELECTION_STAGE
from jobs.runner import queue
from jobs.settings import get_settings
from jobs.store import keyspace
from jobs.tools.local_stack import Process, gunicorn, rq_worker
from service.app import create_app
from tests.conftest import ROOT, env_for, wait_until
from tests.test_api import make_seed_set

PRICES = {"prompt": 2.0, "completion": 6.0}


@pytest.fixture
def priced(settings, monkeypatch):
    profile = settings.profiles["fake"].with_options(price_per_million_tokens=PRICES)
    priced = replace(settings, profiles={"fake": profile}, preview_max_instructions=8)
    for name, value in priced.to_env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield priced
    get_settings.cache_clear()


def check_result(preview: dict, full: int) -> None:
    result = preview["result"]
    kept = result["kept"]
    assert preview["state"] == "succeeded" and 0 < len(kept) <= preview["num_instructions"]
    decided = [c for c in result["candidates"] if c["verdict"] == "kept"]
    assert [c["id"] for c in decided] == [k["id"] for k in kept]
    for c in result["candidates"]:
        assert c["rule"] and c["stage"] == "instruction"
        if c["rule"] in ("kept", "too_similar"):
            assert c["detail"]["nearest_id"] and c["nearest_text"] and 0 <= c["detail"]["score"] <= 1
    assert all(k["classification"]["label"] in ("yes", "no", "unparseable") for k in kept)
    assert any(k["instances"] for k in kept)
    tokens = result["tokens"]
    # classification_method auto asked about the seed tasks once: a cost the full job pays once too
    once = [tokens[f"{k}_by_stage"][SELECTION_STAGE] for k in ("prompt", "completion")]
    estimate = result["estimate"]
    assert [estimate["once"]["prompt_tokens"], estimate["once"]["completion_tokens"]] == once
    assert once[0] > 0
    per = ((tokens["prompt"] - once[0]) / len(kept), (tokens["completion"] - once[1]) / len(kept))
    total = (per[0] * full + once[0], per[1] * full + once[1])
    assert estimate["full_job"]["prompt_tokens"] == round(total[0])
    assert estimate["full_job"]["completion_tokens"] == round(total[1])
    expected = (total[0] * PRICES["prompt"] + total[1] * PRICES["completion"]) / 1e6
    assert estimate["full_job"]["cost"] == pytest.approx(expected, abs=1e-6) and estimate["currency"] == "USD"
    assert result["cost"]["total"] == round(
        (tokens["prompt"] * PRICES["prompt"] + tokens["completion"] * PRICES["completion"]) / 1e6, 6
    )


@pytest.mark.slow
def test_preview_answers_while_a_long_job_holds_the_generation_queue(
    client, redis, priced, fake_llm, tmp_path, api_key, capsys
):
    sid = make_seed_set(client)
    fake_llm.script.delay = 0.2
    env = env_for(priced)
    parts: list[Process] = []
    try:
        api, url = gunicorn(env, tmp_path / "gunicorn.log")
        parts += [api, rq_worker(env, tmp_path / "worker.log")]
        parts.append(rq_worker(env, tmp_path / "preview.log", priced.preview_queue))
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=90)
        long_job = http.post("/v1/jobs", json={"seed_set_id": sid, "num_instructions": 500}).json()["id"]
        wait_until(lambda: http.get(f"/v1/jobs/{long_job}").json()["state"] == "running", what="the long job")
        started = time.monotonic()
        r = http.post("/v1/previews", json={"seed_set_id": sid, "full_num_instructions": 1000, "seed": 7})
        took = time.monotonic() - started
        assert r.status_code == 200, r.text
        preview = r.json()
        check_result(preview, 1000)
        assert preview["num_instructions"] == 5  # the default
        assert http.get(f"/v1/jobs/{long_job}").json()["state"] == "running"  # it was never in the way
        assert http.get(r.headers["Location"]).json() == preview
        print(f"\npreview of 5 instructions in {took:.1f} s while a 500-instruction job ran")
        # the CLI prints it readably
        seeds = tmp_path / "seeds.jsonl"
        seeds.write_bytes((ROOT / "data" / "seed_tasks.jsonl").read_bytes())
        argv = [
            "--url",
            url,
            "--api-key",
            api_key,
            "preview",
            str(seeds),
            "--instructions",
            "3",
            "--for",
            "2000",
        ]
        assert cli(argv) == 0
        out = capsys.readouterr().out
        assert "candidates:" in out and "kept:" in out and "(classification: " in out
        assert re.search(
            r"a 2000-instruction job: about \d+ prompt and \d+ completion tokens, about [\d.]+ USD", out
        )
        http.post(f"/v1/jobs/{long_job}/cancel")
    finally:
        for part in reversed(parts):
            part.stop()


@pytest.mark.slow
def test_preview_202_then_poll_then_expiry(priced, redis, api_key):
    short = replace(priced, preview_retention_seconds=15)
    client = create_app(short, configure_logging=False).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {api_key}"
    sid = make_seed_set(client)
    r = client.post("/v1/previews?wait=0", json={"seed_set_id": sid, "num_instructions": 3})
    assert r.status_code == 202 and r.json["state"] == "queued" and r.json["result"] is None
    location = r.headers["Location"]
    assert client.get(location).json["state"] == "queued"
    # no generation worker serves previews: only a worker on the preview queue runs it
    SimpleWorker([queue.queue(redis, short)], connection=redis).work(burst=True)
    assert client.get(location).json["state"] == "queued"
    from rq import Queue

    SimpleWorker([Queue(short.preview_queue, connection=redis)], connection=redis).work(burst=True)
    done = client.get(location).json
    assert done["state"] == "succeeded" and done["result"]["kept"]
    left = redis.ttl(keyspace.preview(done["id"]))
    assert 0 < left <= 15
    # gone once its time is up (a preview still there 30 s after that was kept)
    wait_until(
        lambda: client.get(location).status_code == 404, timeout=left + 30, interval=0.2, what="the expiry"
    )
    assert not redis.exists(keyspace.preview(done["id"]))


def test_preview_limits(priced, client, redis):
    sid = make_seed_set(client)
    app = create_app(priced, configure_logging=False).test_client()
    app.environ_base.update(client.environ_base)
    r = app.post("/v1/previews", json={"seed_set_id": sid, "num_instructions": 9})
    assert r.status_code == 422 and r.json["errors"][0]["field"] == "num_instructions"
    assert "at most 8" in r.json["errors"][0]["message"]
    r = app.post("/v1/previews", json={"seed_set_id": "0" * 64})
    assert r.status_code == 404
    r = app.post("/v1/previews", data="x", content_type="text/plain")
    assert r.status_code == 415
    assert app.get("/v1/previews/" + "0" * 32).status_code == 404
    assert not redis.keys(keyspace.preview("*"))  # nothing made by refused requests


def test_the_chart_runs_a_preview_worker_and_carries_prices():
    from jobs.settings import Settings
    from tests.test_deploy import VALUE_SETS, render

    values = {**VALUE_SETS["everything"]}
    profiles = {name: dict(p) for name, p in values["llm"]["profiles"].items() if p}
    first = next(iter(profiles))
    profiles[first].update(pricePerMillionTokens={"prompt": 0.5, "completion": 1.5}, currency="EUR")
    values["llm"] = {**values["llm"], "profiles": profiles}
    docs = render(values)
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    pod = deployments["rel-selfinstruct-preview-worker"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["WORKER_QUEUES"] == "preview"
    assert "WORKER_QUEUES" not in {
        e["name"]
        for e in deployments["rel-selfinstruct-worker"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    settings = Settings.from_env({**config, "REDIS_URL": "redis://x:6379/0"})
    profile = settings.profiles[first]
    assert profile.prices == (0.5, 1.5) and profile.endpoint.currency == "EUR"
    assert settings.preview_queue == env["WORKER_QUEUES"] and settings.preview_max_instructions == 20


def test_a_preview_runs_the_job_body_s_classification_method(priced, redis, api_key):
    """The body's stage-2 method reaches the preview's run: the scripted endpoint gives no
    log-probabilities, so `fitted` falls back to text with a reason, while `text` needs none."""
    client = create_app(priced, configure_logging=False).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {api_key}"
    sid = make_seed_set(client)
    answers = {}
    for method in ("fitted", "text"):
        body = {"seed_set_id": sid, "num_instructions": 3, "classification_method": method}
        location = client.post("/v1/previews?wait=0", json=body).headers["Location"]
        SimpleWorker([Queue(priced.preview_queue, connection=redis)], connection=redis).work(burst=True)
        done = client.get(location).json
        assert done["state"] == "succeeded", done
        answers[method] = [k["classification"] for k in done["result"]["kept"]]
    assert answers["fitted"] and all(a["method"] == "text" and a["fallback"] for a in answers["fitted"])
    assert answers["text"] and all(a["method"] == "text" and "fallback" not in a for a in answers["text"])


def test_a_batch_profiles_preview_runs_online_and_prices_the_job_both_ways(
    priced, redis, api_key, fake_llm, monkeypatch
):
    """A preview of a batch-mode profile answers at once (online, no batch submitted) and gives the
    full job's cost at the online prices and at the batch prices."""
    batch_prices = {"prompt": 1.0, "completion": 3.0}
    profile = priced.profiles["fake"].with_options(
        name="batch", mode="batch", batch_price_per_million_tokens=batch_prices
    )
    local = replace(priced, profiles={**priced.profiles, "batch": profile})
    for name, value in local.to_env().items():  # the preview worker's settings
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    client = create_app(local, configure_logging=False).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {api_key}"
    sid = make_seed_set(client)
    body = {"seed_set_id": sid, "num_instructions": 3, "profile": "batch", "full_num_instructions": 1000}
    location = client.post("/v1/previews?wait=0", json=body).headers["Location"]
    SimpleWorker([Queue(local.preview_queue, connection=redis)], connection=redis).work(burst=True)
    done = client.get(location).json
    assert done["state"] == "succeeded", done
    assert not fake_llm.script.batches.created and fake_llm.script.answers
    full = done["result"]["estimate"]["full_job"]
    prompt, completion = full["prompt_tokens"], full["completion_tokens"]
    assert done["result"]["estimate"]["mode"] == "batch"
    online = (prompt * PRICES["prompt"] + completion * PRICES["completion"]) / 1e6
    batch = (prompt * batch_prices["prompt"] + completion * batch_prices["completion"]) / 1e6
    assert full["cost_by_mode"]["online"] == pytest.approx(online, rel=1e-3)
    assert full["cost_by_mode"]["batch"] == pytest.approx(batch, rel=1e-3)
    assert full["cost"] == full["cost_by_mode"]["batch"]


def test_a_preview_with_the_judge_prices_it_and_shows_each_score(priced, redis, api_key):
    client = create_app(priced, configure_logging=False).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {api_key}"
    sid = make_seed_set(client)
    body = {"seed_set_id": sid, "num_instructions": 4, "judge_threshold": 3, "full_num_instructions": 1000}
    location = client.post("/v1/previews?wait=0", json=body).headers["Location"]
    SimpleWorker([Queue(priced.preview_queue, connection=redis)], connection=redis).work(burst=True)
    done = client.get(location).json
    assert done["state"] == "succeeded", done
    result = done["result"]
    check_result(done, 1000)  # the judge's tokens are in the per-instruction rate the estimate uses
    shown = [i for k in result["kept"] for i in k["instances"] + k["dropped_instances"]]
    judged = [i for i in shown if "judge_score" in i]
    assert result["tokens"]["prompt_by_stage"]["judge"] > 0 and judged
    assert all(i["judge_score"] >= 3 for k in result["kept"] for i in k["instances"])
    low = [d for k in result["kept"] for d in k["dropped_instances"] if d["rule"] == "judge_low_score"]
    assert all(d["judge_score"] < 3 and d["judge_rationale"] for d in low)
    r = client.post("/v1/previews?wait=0", json={**body, "judge_threshold": 6})
    assert r.status_code == 422 and "judge_threshold" in r.get_data(as_text=True)


def test_a_preview_with_semantic_dedup_prices_its_embeddings(settings, redis, api_key, monkeypatch):
    fake = settings.profiles["fake"]
    embeddings = {**fake.options()["embeddings"], "price_per_million_tokens": 50.0}
    profile = fake.with_options(price_per_million_tokens=PRICES, embeddings=embeddings)
    priced = replace(settings, profiles={"fake": profile})
    for name, value in priced.to_env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    client = create_app(priced, configure_logging=False).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {api_key}"
    body = {"seed_set_id": make_seed_set(client), "num_instructions": 4, "semantic_threshold": 0.95}
    location = client.post("/v1/previews?wait=0", json={**body, "full_num_instructions": 1000}).headers[
        "Location"
    ]
    SimpleWorker([Queue(priced.preview_queue, connection=redis)], connection=redis).work(burst=True)
    get_settings.cache_clear()
    result = client.get(location).json["result"]
    tokens, estimate, kept = result["tokens"], result["estimate"], len(result["kept"])
    assert tokens["embeddings"] > 0 and kept
    per = estimate["per_instruction"]
    assert per["embedding_tokens"] == round(tokens["embeddings"] / kept, 1)
    once = [estimate["once"]["prompt_tokens"], estimate["once"]["completion_tokens"]]
    prompt = (tokens["prompt"] - once[0]) / kept * 1000 + once[0]
    completion = (tokens["completion"] - once[1]) / kept * 1000 + once[1]
    embedding = tokens["embeddings"] / kept * 1000
    expected = (prompt * PRICES["prompt"] + completion * PRICES["completion"] + embedding * 50.0) / 1e6
    assert estimate["full_job"]["embedding_tokens"] == round(embedding)
    assert estimate["full_job"]["cost"] == pytest.approx(expected, abs=1e-6)
    assert result["cost"]["by_stage"]["embeddings"] == round(tokens["embeddings"] * 50.0 / 1e6, 6)
