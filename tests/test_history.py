"""A job's `dedup_against`: earlier jobs' kept instructions (read back from their datasets in S3,
jobs.blobs.history) join the ROUGE-L pool, so a new job never repeats a team's earlier data.

Through gunicorn and a worker process on the real Redis and S3 endpoint, with the scripted model."""

from __future__ import annotations

import httpx
import pytest
from rouge_score import rouge_scorer

from client.__main__ import main as cli
from jobs.method.recipe import Recipe
from jobs.store import keyspace
from jobs.tools.local_stack import gunicorn
from tests.conftest import env_for, wait_until, work
from tests.test_api import SEEDS, make_seed_set
from tests.test_auth import as_team

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge(a: str, b: str) -> float:
    return SCORER.score(a, b)["rougeL"].fmeasure


def finished(http: httpx.Client, body: dict) -> dict:
    """Submit a job and wait for it to succeed (a condition, with a generous deadline)."""
    created = http.post("/v1/jobs", json=body)
    assert created.status_code == 202, created.text
    url = f"/v1/jobs/{created.json()['id']}"

    def ended() -> dict | None:
        job = http.get(url).json()
        return job if job["state"] in ("succeeded", "failed", "canceled") else None

    job = wait_until(ended, timeout=180, interval=0.2, what=f"{url} to end")
    assert job["state"] == "succeeded", job
    return job


def instruction_decisions(http: httpx.Client, job_id: str, **filters: str) -> list[dict]:
    out, cursor = [], None
    while True:
        params = {"stage": "instruction", "limit": "500", **filters, **({"cursor": cursor} if cursor else {})}
        page = http.get(f"/v1/jobs/{job_id}/decisions", params=params).json()
        out += page["items"]
        if not (cursor := page["next_cursor"]):
            return out


@pytest.mark.slow
def test_a_job_never_repeats_the_jobs_it_dedups_against(
    client, settings, fake_llm, spawn, tmp_path, api_key, capsys
) -> None:
    sid = make_seed_set(client)
    spawn(settings, "worker")
    api, url = gunicorn(env_for(settings), tmp_path / "gunicorn.log")
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=40)
    try:
        first = finished(http, {"seed_set_id": sid, "num_instructions": 8, "seed": 1})
        earlier = {d["id"]: d["text"] for d in instruction_decisions(http, first["id"], rule="kept")}
        assert len(earlier) == 8
        # near-copies of three earlier instructions (one word more) and one exact copy, at the head of
        # the second job's first stage-1 response; unlike each other, so only the first job can stop them
        planted: dict[str, str] = {}
        for source in sorted(earlier):
            text = (
                f"Please {earlier[source][0].lower()}{earlier[source][1:]}"
                if len(planted) < 3
                else earlier[source]
            )
            if all(rouge(text, other) <= 0.5 for other in planted):
                planted[text] = source
            if len(planted) == 4:
                break
        assert len(planted) == 4
        assert all(rouge(text, earlier[i]) > 0.7 for text, i in planted.items())
        body = {"seed_set_id": sid, "num_instructions": 8, "seed": 2}
        # planted into the second job's first prompt only, whatever else is still on its way
        fake_llm.script.plant_seed = Recipe(seed=2).derived_seed("instructions", 0)

        fake_llm.script.plant = list(planted)
        control = finished(http, body)  # without dedup_against the near-copies get in
        kept = {d["text"] for d in instruction_decisions(http, control["id"], rule="kept")}
        assert set(planted) <= kept

        fake_llm.script.plant = list(planted)
        second = finished(http, {**body, "dedup_against": [first["id"]]})
        assert second["config"]["dedup_against"] == [first["id"]]
        decisions = instruction_decisions(http, second["id"])
        by_text = {d["text"]: d for d in decisions}
        for text, source in planted.items():
            dropped = by_text[text]
            assert dropped["rule"] == ("exact_duplicate" if text == earlier[source] else "too_similar"), (
                dropped
            )
            assert (
                dropped["detail"]["nearest_job"] == first["id"] and dropped["detail"]["nearest_id"] == source
            )
        # whatever names an earlier item names the right job and a kept instruction of it, fairly scored
        for d in decisions:
            if "nearest_job" in d["detail"]:
                assert d["detail"]["nearest_job"] == first["id"] and d["detail"]["nearest_id"] in earlier
                assert d["rule"] != "kept" or d["detail"]["score"] <= 0.7
        # the promise itself, checked independently of the index: nothing kept repeats the first job
        kept_now = [d["text"] for d in decisions if d["rule"] == "kept"]
        assert len(kept_now) == 8
        assert max(rouge(text, old) for text in kept_now for old in earlier.values()) <= 0.7

        # "team" (through the command line): every dataset the team still has, oldest first
        seeds = tmp_path / "seeds.jsonl"
        seeds.write_bytes(SEEDS)
        argv = ["--url", url, "--api-key", api_key, "submit", str(seeds), "--instructions", "3"]
        assert cli([*argv, "--dedup-against", "team", "--wait"]) == 0
        third = http.get("/v1/jobs", params={"limit": 1}).json()["items"][0]
        assert third["state"] == "succeeded"
        assert third["config"]["dedup_against"] == [first["id"], control["id"], second["id"]]
        assert cli([*argv, "--dedup-against", second["id"], first["id"]]) == 0
        fourth = http.get("/v1/jobs", params={"limit": 1}).json()["items"][0]
        assert fourth["config"]["dedup_against"] == [second["id"], first["id"]]
    finally:
        http.close()
        api.stop()


def test_dedup_against_names_only_the_teams_jobs_with_a_dataset(app, client, redis, worker_env) -> None:
    sid = make_seed_set(client)
    done = client.post("/v1/jobs", json={"seed_set_id": sid, "num_instructions": 3}).json["id"]
    work(redis)
    queued = client.post("/v1/jobs", json={"seed_set_id": sid, "num_instructions": 3}).json["id"]
    body = {"seed_set_id": sid, "num_instructions": 3}

    refused = client.post("/v1/jobs", json={**body, "dedup_against": [done, queued]})
    assert refused.status_code == 422
    assert refused.json["errors"] == [
        {"field": "dedup_against[1]", "message": f"job {queued} has no dataset"}
    ]
    bad = client.post("/v1/jobs", json={**body, "dedup_against": ["x" * 32]})
    assert bad.status_code == 422 and bad.json["errors"][0]["field"] == "dedup_against"

    # another team: the job is as absent as one that never existed
    beta = as_team(app, redis, "beta")
    beta_sid = make_seed_set(beta)
    absent = beta.post("/v1/jobs", json={**body, "seed_set_id": beta_sid, "dedup_against": ["0" * 32]})
    theirs = beta.post("/v1/jobs", json={**body, "seed_set_id": beta_sid, "dedup_against": [done]})
    assert (absent.status_code, theirs.status_code) == (404, 404)
    assert theirs.json["detail"] == absent.json["detail"].replace("0" * 32, done)
    assert redis.zcard(keyspace.team_jobs("beta")) == 0
    # and "team" is beta's own: none
    none = beta.post("/v1/jobs", json={**body, "seed_set_id": beta_sid, "dedup_against": "team"})
    assert none.status_code == 202 and none.json["config"]["dedup_against"] == []


def test_a_dataset_deleted_before_the_job_reads_it_fails_the_job_with_the_reason(client, redis, worker_env):
    sid = make_seed_set(client)
    body = {"seed_set_id": sid, "num_instructions": 3}
    earlier = client.post("/v1/jobs", json=body).json["id"]
    work(redis)
    later = client.post("/v1/jobs", json={**body, "dedup_against": [earlier]}).json["id"]
    assert client.delete(f"/v1/jobs/{earlier}").status_code == 204
    work(redis)
    job = client.get(f"/v1/jobs/{later}").json
    assert (
        job["state"] == "failed" and job["error"] == f"the dataset of job {earlier} (dedup_against) is gone"
    )
