"""Extensions (jobs.method.lineage): a finished job continued to a larger target makes the data files a
single run to that target makes, with the same seed on the scripted endpoint, without repeating the
earlier run's stage-1 requests; and through the service (POST /v1/jobs/{id}/extensions)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from jobs.method.checkpoint import FileStore
from jobs.method.engine import execute
from jobs.method.lineage import Carried
from jobs.method.outputs import exports
from jobs.method.recipe import Execution, Recipe
from jobs.method.run import Run
from tests.conftest import fake_endpoint, work
from tests.test_api import make_seed_set
from tests.test_auth import as_team

DATA_FILES = (
    "finetune.jsonl",
    "alpaca.json",
    "chat.jsonl",
    "dataset.parquet",
    "instructions.jsonl",
    "decisions.jsonl",
    "report.json",
)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_to(
    tmp: Path, name: str, server, seed_tasks, target: int, carried=None, concurrency=3, **endpoint
) -> tuple[Run, Path]:
    run = Run(
        name,
        seed_tasks,
        # stage 2 by the paper's method, which asks: its answers are carried over, not asked again
        Recipe(num_instructions=target, seed=3, classification_method="text"),
        fake_endpoint(server, **endpoint),
        FileStore(tmp / name / "state"),
        execution=Execution(concurrency=concurrency),
        carried=carried,
    )
    execute(run)
    exports.export(run, tmp / name / "out")
    return run, tmp / name / "out"


@pytest.mark.parametrize(
    "endpoint", [{}, {"api": "chat", "response_format": "json_schema"}], ids=["completions", "chat"]
)
def test_an_extension_makes_what_a_single_run_to_its_target_makes(tmp_path, fake_llm, seed_tasks, endpoint):
    # one request at a time: no request is ever in flight when a run ends, so the counts are exact
    first, first_out = run_to(tmp_path, "first", fake_llm, seed_tasks, 8, concurrency=1, **endpoint)
    assert any(d["rule"] == "target_reached" for d in lines(first_out / "decisions.jsonl"))
    carried = Carried.read(
        "job-a", lines(first_out / "decisions.jsonl"), lines(first_out / "instructions.jsonl")
    )
    extension, out = run_to(tmp_path, "extension", fake_llm, seed_tasks, 20, carried, 1, **endpoint)
    single, single_out = run_to(tmp_path, "single", fake_llm, seed_tasks, 20, None, 1, **endpoint)
    for name in DATA_FILES:
        assert (out / name).read_bytes() == (single_out / name).read_bytes(), name
    # what the first run asked is not asked again: stage 1's handled prompts, classification and
    # instances of its 8 instructions
    asked, once = extension.usage.requests, single.usage.requests
    assert asked["instructions"] == once["instructions"] - (carried.last_prompt + 1)
    assert asked["instances"] == once["instances"] - first.usage.requests["instances"]  # 8 and second asks
    # (a single run also probes the endpoint for log-probabilities; the extension has the answer)
    assert asked["classification"] <= once["classification"] - 8
    # and the counts it reports are a single run's
    mine, theirs = (json.loads((o / "stats.json").read_text()) for o in (out, single_out))
    for key in ("verdicts", "classification", "instructions_kept", "instances_kept", "tasks_with_instances"):
        assert mine[key] == theirs[key], key
    assert json.loads((out / "run.json").read_text())["extends"] == "job-a"
    assert "extends job `job-a`" in (out / "README.md").read_text()
    assert "extends" not in json.loads((single_out / "run.json").read_text())


def test_an_interrupted_extension_resumes_from_its_own_checkpoint(tmp_path, fake_llm, seed_tasks):
    _, first_out = run_to(tmp_path, "first", fake_llm, seed_tasks, 6)
    carried = Carried.read("a", lines(first_out / "decisions.jsonl"), lines(first_out / "instructions.jsonl"))
    store = FileStore(tmp_path / "ext" / "state")

    def start() -> Run:
        recipe = Recipe(num_instructions=12, seed=3)
        return Run("ext", seed_tasks, recipe, fake_endpoint(fake_llm), store, carried=carried)

    start()
    seeded = store.load()
    assert seeded is not None and seeded.decisions == len(carried.instance_decisions) == len(
        list(store.decisions())
    )
    # a second start finds the seeded checkpoint: nothing is carried twice
    again = start()
    execute(again)
    exports.export(again, tmp_path / "ext" / "out")
    ids = [d["id"] for d in lines(tmp_path / "ext" / "out" / "decisions.jsonl")]
    assert len(ids) == len(set(ids))
    _, single_out = run_to(tmp_path, "single", fake_llm, seed_tasks, 12)
    assert (tmp_path / "ext" / "out" / "decisions.jsonl").read_bytes() == (
        single_out / "decisions.jsonl"
    ).read_bytes()


def test_extensions_through_the_service(app, client, redis, worker_env):
    sid = make_seed_set(client)
    body = {"seed_set_id": sid, "num_instructions": 5, "seed": 4, "classification_method": "text"}
    first = client.post("/v1/jobs", json=body).json["id"]
    refused = client.post(f"/v1/jobs/{first}/extensions", json={"num_instructions": 9})
    assert refused.status_code == 409  # not finished yet
    work(redis)
    too_small = client.post(f"/v1/jobs/{first}/extensions", json={"num_instructions": 5})
    assert too_small.status_code == 422 and too_small.json["errors"][0]["field"] == "num_instructions"
    created = client.post(f"/v1/jobs/{first}/extensions", json={"num_instructions": 9})
    assert created.status_code == 202, created.json
    extension = created.json["id"]
    assert created.json["config"]["extends"] == first and created.json["config"]["num_instructions"] == 9
    single = client.post("/v1/jobs", json={**body, "num_instructions": 9}).json["id"]
    work(redis)
    for job_id in (first, extension, single):
        assert client.get(f"/v1/jobs/{job_id}").json["state"] == "succeeded"

    def file(job_id: str, name: str) -> bytes:
        r = client.get(f"/v1/jobs/{job_id}/dataset/{name}")
        assert r.status_code == 302, r.json
        return httpx.get(r.headers["Location"]).content

    for name in ("alpaca.json", "instructions.jsonl", "decisions.jsonl"):
        assert file(extension, name) == file(single, name), name
    # it carried the first job's work over: at least its 5 classification and 5 instance requests
    # (and its stage-1 prompts) were not made again
    requests = {j: client.get(f"/v1/jobs/{j}").json["progress"]["requests"] for j in (extension, single)}
    assert requests[extension] <= requests[single] - 10
    manifest = client.get(f"/v1/jobs/{extension}/dataset").json
    assert manifest["extends"] == first
    assert len(json.loads(file(first, "alpaca.json"))) < len(json.loads(file(extension, "alpaca.json")))
    # another team cannot extend it, nor learn that it exists
    beta = as_team(app, redis, "beta")
    assert beta.post(f"/v1/jobs/{first}/extensions", json={"num_instructions": 9}).status_code == 404


def test_the_command_line_extends_a_job_through_gunicorn(client, settings, spawn, tmp_path, api_key, capsys):
    from client.__main__ import main as cli
    from jobs.tools.local_stack import gunicorn
    from tests.conftest import env_for
    from tests.test_history import finished

    sid = make_seed_set(client)
    spawn(settings, "worker")
    api, url = gunicorn(env_for(settings), tmp_path / "gunicorn.log")
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=40) as http:
            first = finished(http, {"seed_set_id": sid, "num_instructions": 3, "seed": 5})
            out = tmp_path / "out"
            argv = ["--url", url, "--api-key", api_key, "extend", first["id"], "--instructions", "6"]
            assert cli([*argv, "--wait", "--download", str(out)]) == 0
            assert f"(extends {first['id']})" in capsys.readouterr().out
            assert len(json.loads((out / "alpaca.json").read_text())) >= 6
            assert json.loads((out / "run.json").read_text())["extends"] == first["id"]
            assert cli([*argv[:-1], "2"]) == 2  # not above the job's own target: refused, named
            assert "num_instructions" in capsys.readouterr().err
    finally:
        api.stop()
