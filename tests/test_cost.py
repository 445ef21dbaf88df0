"""Cost at a profile's prices, and the whole-job token and cost budgets, against the scripted endpoint's own
token counts (it counts words)."""

from __future__ import annotations

import json
from dataclasses import replace

import httpx
import pytest
from prometheus_client import REGISTRY

from jobs.method.checkpoint import FileStore
from jobs.method.engine import execute
from jobs.method.outputs import exports
from jobs.method.recipe import Execution, Recipe
from jobs.method.run import BudgetReached, Run
from jobs.settings import get_settings
from service.app import create_app
from tests.conftest import fake_endpoint, work
from tests.test_api import make_seed_set

# stage 2 by the paper's method, which asks the model: every stage then has requests and a cost (the
# default, auto, asks about the seed tasks, then nothing when it keeps knn)
TEXT = "text"

PRICES = (2.5, 10.0)  # per million prompt, completion tokens


def expected(tokens: dict[str, int]) -> float:
    return (tokens["prompt"] * PRICES[0] + tokens["completion"] * PRICES[1]) / 1_000_000


def cost_metric(stage: str) -> float:
    return (
        REGISTRY.get_sample_value("selfinstruct_llm_cost_total", {"stage": stage, "currency": "EUR"}) or 0.0
    )


def test_cost_is_the_endpoints_tokens_at_the_profiles_prices(tmp_path, fake_llm, seed_tasks):
    before = {s: cost_metric(s) for s in ("instructions", "classification", "instances")}
    endpoint = fake_endpoint(fake_llm, prices=PRICES, currency="EUR")
    cfg = Recipe(num_instructions=8, seed=5, classification_method=TEXT)
    # one request at a time: none is still out when stage 1 reaches its target and cancels the rest,
    # whose tokens the endpoint counts (and a provider bills) but whose answer the run never reads
    run = Run("r", seed_tasks, cfg, endpoint, FileStore(tmp_path / "state"), execution=Execution(1))
    execute(run)
    exports.export(run, tmp_path / "out")
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    served = fake_llm.script.tokens
    assert (
        stats["tokens"]["prompt"] == served["prompt"]
        and stats["tokens"]["completion"] == served["completion"]
    )
    cost = stats["cost"]
    assert cost["currency"] == "EUR" and cost["total"] == round(expected(served), 6) > 0
    for stage, amount in cost["by_stage"].items():
        tokens = {
            "prompt": stats["tokens"]["prompt_by_stage"][stage],
            "completion": stats["tokens"]["completion_by_stage"][stage],
        }
        assert amount == round(expected(tokens), 6)
        assert cost_metric(stage) - before[stage] == pytest.approx(expected(tokens), abs=1e-9)
    assert set(cost["by_stage"]) == {"instructions", "classification", "instances"}
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"cost {cost['total']:.6f} EUR" in card
    run_json = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run_json["endpoint"]["price_per_million_tokens"] == {
        "prompt": 2.5,
        "completion": 10.0,
        "currency": "EUR",
    }


def test_token_budget_is_the_whole_runs(tmp_path, fake_llm, seed_tasks):
    """A budget above stage 1's tokens stops the run in a later stage, not at the end of stage 1."""
    cfg = Recipe(num_instructions=8, seed=5, classification_method=TEXT)
    full = Run("full", seed_tasks, cfg, fake_endpoint(fake_llm), FileStore(tmp_path / "full"))
    execute(full)
    by_stage = {
        s: full.usage.prompt_tokens[s] + full.usage.completion_tokens[s] for s in full.usage.prompt_tokens
    }
    budget = by_stage["instructions"] + by_stage["classification"] + by_stage["instances"] // 2
    run = Run(
        "b", seed_tasks, replace(cfg, max_tokens=budget), fake_endpoint(fake_llm), FileStore(tmp_path / "b")
    )
    with pytest.raises(BudgetReached) as stopped:
        execute(run)
    assert stopped.value.reason == "token_budget" and run.checkpoint.stop_reason == "token_budget"
    assert run.checkpoint.stage == "instances" and 0 < len(run.checkpoint.instances) < 8
    spent = sum(run.accounting.tokens_spent())
    # it stops at the first handled item past the budget: at most the requests then in flight are over it
    assert budget <= spent < budget + 4 * max(1, by_stage["instances"] // 8)
    # resumed with the same budget, it stops again at once: the budget is the run's, across processes
    again = Run(
        "b", seed_tasks, replace(cfg, max_tokens=budget), fake_endpoint(fake_llm), FileStore(tmp_path / "b")
    )
    with pytest.raises(BudgetReached):
        execute(again)
    assert sum(again.accounting.tokens_spent()) == spent


@pytest.fixture
def priced(settings, worker_env, monkeypatch, api_key):
    """The scripted profile with prices, for the API and the workers."""
    profile = settings.profiles["fake"].with_options(
        price_per_million_tokens={"prompt": PRICES[0], "completion": PRICES[1]},
        currency="EUR",
    )
    priced = replace(
        settings,
        profiles={"fake": profile, "free": profile.with_options(name="free", price_per_million_tokens=None)},
    )
    for name, value in priced.to_env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    client = create_app(priced, configure_logging=False).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {api_key}"
    return client


def _file(client, job_id: str, name: str) -> bytes:
    r = client.get(f"/v1/jobs/{job_id}/dataset/{name}")
    assert r.status_code == 302, r.json
    return httpx.get(r.headers["Location"]).content


def _jsonl(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines()]


def _run(client, redis, body: dict) -> dict:
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.json
    work(redis)
    return client.get(f"/v1/jobs/{r.json['id']}").json


@pytest.mark.parametrize("stage", ["instructions", "classification", "instances"])
def test_cost_budget_stops_the_job_with_a_consistent_partial_dataset(priced, redis, fake_llm, stage):
    sid = make_seed_set(priced)
    body = {"seed_set_id": sid, "num_instructions": 10, "seed": 4, "classification_method": TEXT}
    full = _run(priced, redis, body)
    assert full["state"] == "succeeded" and full["stop_reason"] is None
    by_stage = full["cost"]["by_stage"]
    stats = json.loads(_file(priced, full["id"], "stats.json"))
    assert full["cost"]["total"] == stats["cost"]["total"] == round(expected(stats["tokens"]), 6)
    order = ["instructions", "classification", "instances"]
    max_cost = sum(by_stage[s] for s in order[: order.index(stage)]) + by_stage[stage] / 2
    job = _run(priced, redis, {**body, "max_cost": max_cost})
    assert job["state"] == "canceled" and job["stop_reason"] == "cost_budget", job
    assert job["dataset_available"] and job["cost"]["total"] >= max_cost
    assert job["cost"]["total"] < full["cost"]["total"]
    manifest = priced.get(f"/v1/jobs/{job['id']}/dataset").json
    assert manifest["partial"] is True
    stats = json.loads(_file(priced, job["id"], "stats.json"))
    assert stats["stop_reason"] == "cost_budget" and stats["cost"]["total"] == job["cost"]["total"]
    assert {s for s, v in stats["cost"]["by_stage"].items() if v} == set(order[: order.index(stage) + 1])
    # consistent: the kept instructions are the kept decisions, every example belongs to one of them
    rows = _jsonl(_file(priced, job["id"], "instructions.jsonl"))
    decisions = _jsonl(_file(priced, job["id"], "decisions.jsonl"))
    kept = [d["id"] for d in decisions if d["stage"] == "instruction" and d["verdict"] == "kept"]
    assert [row["id"] for row in rows] == kept and rows
    alpaca = json.loads(_file(priced, job["id"], "alpaca.json"))
    assert len(alpaca) == sum(row["instances"] for row in rows)
    assert {a["instruction"] for a in alpaca} <= {row["text"] for row in rows}
    kept_instances = [d for d in decisions if d["stage"] == "instance" and d["verdict"] == "kept"]
    assert len(kept_instances) == len(alpaca)
    classified = [row for row in rows if row["classification"] is not None]
    if stage == "instructions":
        assert len(rows) < 10 and not classified and not alpaca
    elif stage == "classification":
        assert len(rows) == 10 and 0 < len(classified) < 10 and not alpaca
    else:
        assert len(classified) == 10 and 0 < len({a["instruction"] for a in alpaca}) < 10
    state_events = [
        e for e in priced.get(f"/v1/jobs/{job['id']}/events").json["items"] if e["type"] == "state"
    ]
    assert state_events[-1]["data"] == {
        "state": "canceled",
        "previous": "running",
        "cancelled_by": "budget",
        "stop_reason": "cost_budget",
    }


def test_max_cost_needs_a_priced_profile(priced):
    sid = make_seed_set(priced)
    r = priced.post(
        "/v1/jobs", json={"seed_set_id": sid, "num_instructions": 3, "profile": "free", "max_cost": 1.0}
    )
    assert r.status_code == 422 and [e["field"] for e in r.json["errors"]] == ["max_cost"]
    for bad in (0, -1, "1", True):
        r = priced.post("/v1/jobs", json={"seed_set_id": sid, "num_instructions": 3, "max_cost": bad})
        assert r.status_code == 422 and r.json["errors"][0]["field"] == "max_cost"
    profiles = {p["name"]: p for p in priced.get("/v1/profiles").json}
    assert profiles["fake"]["price_per_million_tokens"] == {"prompt": 2.5, "completion": 10.0}
    assert profiles["free"]["price_per_million_tokens"] is None


def test_cost_budget_counts_every_chunk_of_a_fanned_out_job(priced, redis, monkeypatch):
    """Instances in chunks (one RQ job each): a chunk counts the others' tokens against the budget, and
    the stop reason reaches stats.json from whichever chunk stopped."""
    monkeypatch.setenv("INSTANCE_CHUNK_SIZE", "3")
    get_settings.cache_clear()
    sid = make_seed_set(priced)
    body = {"seed_set_id": sid, "num_instructions": 10, "seed": 4, "classification_method": TEXT}
    full = _run(priced, redis, body)
    assert full["state"] == "succeeded"
    by_stage = full["cost"]["by_stage"]
    max_cost = by_stage["instructions"] + by_stage["classification"] + by_stage["instances"] * 0.6
    job = _run(priced, redis, {**body, "max_cost": max_cost})
    assert job["state"] == "canceled" and job["stop_reason"] == "cost_budget", job
    # each chunk alone stays far below the budget: only their sum reaches it
    assert max_cost <= job["cost"]["total"] < full["cost"]["total"]
    stats = json.loads(_file(priced, job["id"], "stats.json"))
    assert stats["stop_reason"] == "cost_budget" and stats["cost"]["total"] == job["cost"]["total"]
    rows = _jsonl(_file(priced, job["id"], "instructions.jsonl"))
    alpaca = json.loads(_file(priced, job["id"], "alpaca.json"))
    assert len(alpaca) == sum(row["instances"] for row in rows)
    assert 3 <= len({a["instruction"] for a in alpaca}) < 10  # the first chunk at least, not all
