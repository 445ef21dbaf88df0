"""Batch mode (jobs.method.transport.batch) against the scripted server's Files and Batch APIs: the same
dataset as online, expired and failed batches, answers that are errors, a refused parameter; and through the
service with real workers: a whole job, kill -9 at each step of a submission, cancel."""

from __future__ import annotations

import json
import os
import re
import signal
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from jobs.method.checkpoint import FileStore
from jobs.method.engine import execute
from jobs.method.outputs import exports
from jobs.method.prompts import chat
from jobs.method.recipe import Execution, Recipe
from jobs.method.run import Run
from jobs.method.transport import EndpointError, Waiting, batch
from jobs.settings import Profile
from jobs.store import events
from tests.conftest import fake_endpoint, wait_until
from tests.fake_llm import FakeLLM, Script
from tests.test_api import make_seed_set
from tests.test_faults import DATA_FILES, dataset, finish, horse_of, read, reference

# batch runs ask once per task for instances: the online run they equal does too
RECIPE = {"num_instructions": 12, "seed": 4, "round_size": 4, "instance_followup": False}


def drive(
    tmp: Path, seed_tasks, script: Script, mode: str, api: str = "completions", recipe: dict | None = None
) -> tuple[Run, Path]:
    """A whole run on the scripted server, resumed after each wait as the worker's polls resume it."""
    with FakeLLM(script) as server:
        endpoint = replace(fake_endpoint(server), mode=mode, api=api)
        waits = 0
        while True:
            run = Run(
                "r",
                seed_tasks,
                Recipe.build(RECIPE if recipe is None else recipe),
                endpoint,
                FileStore(tmp / "state"),
                execution=Execution(2),
            )
            try:
                execute(run)
                break
            except Waiting:
                waits += 1
                assert waits < 200, "the run never ends"
        exports.export(run, tmp / "out")
    return run, tmp / "out"


def same_data(a: Path, b: Path) -> None:
    for name in DATA_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_a_batch_run_makes_the_online_runs_dataset(tmp_path, seed_tasks, api) -> None:
    _, online_out = drive(tmp_path / "online", seed_tasks, Script(logprobs="top"), "online", api)
    script = Script(logprobs="top")
    run, out = drive(tmp_path / "batch", seed_tasks, script, "batch", api)
    same_data(online_out, out)
    assert len(script.batches.created) == run.checkpoint.batch_totals["batches"] >= 3
    assert run.checkpoint.batch_totals["rounds"] == run.checkpoint.batch_totals["batches"]
    # every request went once: as many completions as the online run's requests (its waste aside)
    lines = sum(1 for path, _ in script.bodies if path in ("/completions", "/chat/completions"))
    assert lines == sum(run.usage.requests.values())
    assert run.usage.retries == 0 and not run.usage.errors


def test_each_round_samples_the_pool_as_it_stood_when_the_round_began(tmp_path, seed_tasks) -> None:
    """A stage-1 prompt of round r shows machine instructions from the prompts before the round only,
    and from all of them: some from the window before it that a sliding window would hide."""
    script = Script(logprobs="top")
    run, _ = drive(tmp_path, seed_tasks, script, "batch")
    recipe, size = Recipe.build(RECIPE), RECIPE["round_size"]
    index = {recipe.derived_seed("instructions", i): i for i in range(run.checkpoint.next_prompt + 1)}
    made_by = {k["text"]: k["prompt"] for k in run.checkpoint.instructions}
    shown = []
    for path, body in script.bodies:
        if path == "/completions" and body["seed"] in index:
            i = index[body["seed"]]
            listed = re.findall(r"^\d+\. (.*)$", body["prompt"], re.MULTILINE)
            shown += [(i, made_by[text]) for text in listed if text in made_by]
    assert shown and all(at < i // size * size for i, at in shown)
    assert any(at > i - recipe.window for i, at in shown)  # unseen through a sliding window


def test_a_round_that_falls_short_sends_the_rest_in_one_more_batch(tmp_path, seed_tasks, monkeypatch) -> None:
    """A round's first batch is as many prompts as the yield so far says will reach the target; when they
    keep fewer (here: most answers are garbage), the rest of the round goes as one more batch, decided
    once that batch is handled, not one prompt a batch (each a provider's turnaround)."""
    monkeypatch.setitem(RECIPE, "round_size", 60)  # stage 1 in one round
    script = Script(garbage_share=0.8)
    run, _ = drive(tmp_path, seed_tasks, script, "batch")  # writes tmp_path / "out"
    stage_1 = [
        len(f["content"].splitlines())
        for f in script.batches.files.values()
        if f["purpose"] == "batch"
        and json.loads(f["content"].splitlines()[0])["custom_id"].startswith("instructions")
    ]
    assert len(run.checkpoint.instructions) == RECIPE["num_instructions"]
    # the first wave: the target at a yield of one a prompt; each later one decided from what it kept
    assert stage_1[0] == RECIPE["num_instructions"] and len(stage_1) > 1, stage_1
    assert all(n > 1 for n in stage_1[1:]) and len(stage_1) <= 4, stage_1  # not one prompt a batch
    _, online = drive(tmp_path / "online", seed_tasks, Script(garbage_share=0.8), "online")
    same_data(online, tmp_path / "out")


def test_an_expired_batch_keeps_its_answers_and_sends_the_rest_once_more(tmp_path, seed_tasks) -> None:
    _, online_out = drive(tmp_path / "online", seed_tasks, Script(logprobs="top"), "online")
    script = Script(logprobs="top", batch_outcomes=["completed", "expired"], batch_partial=0.5)
    run, out = drive(tmp_path / "batch", seed_tasks, script, "batch")
    same_data(online_out, out)
    second = script.batches.batches[script.batches.created[1]]
    retry = script.batches.batches[script.batches.created[2]]
    assert second["status"] == "expired" and retry["metadata"]["attempt"] == "1"
    assert retry["metadata"]["round"] == second["metadata"]["round"]
    total = second["request_counts"]["total"]
    assert second["request_counts"]["completed"] == total // 2
    assert retry["request_counts"]["total"] == total - total // 2  # only what it left
    assert run.usage.errors["batch_expired"] == total - total // 2 and run.usage.retries == total - total // 2


def test_a_batch_that_fails_twice_fails_the_run(tmp_path, seed_tasks) -> None:
    script = Script(logprobs="top", batch_outcomes=["failed", "failed"], batch_partial=0.5)
    with pytest.raises(EndpointError, match="failed in batch mode: not answered before its batch ended"):
        drive(tmp_path, seed_tasks, script, "batch")
    assert len(script.batches.created) == 2  # once more, then no more


def test_answers_that_are_errors_are_sent_once_more(tmp_path, seed_tasks) -> None:
    _, online_out = drive(tmp_path / "online", seed_tasks, Script(logprobs="top"), "online")
    script = Script(logprobs="top", schedule=[None, "500", None, "429"])
    run, out = drive(tmp_path / "batch", seed_tasks, script, "batch")
    same_data(online_out, out)
    first = script.batches.batches[script.batches.created[0]]
    assert first["request_counts"]["failed"] == 2 and first["error_file_id"]
    assert run.usage.errors == Counter({"500": 1, "429": 1}) and run.usage.retries == 2


def test_an_answer_refused_for_good_fails_the_run(tmp_path, seed_tasks) -> None:
    script = Script(logprobs="top", schedule=[None, "400"])
    with pytest.raises(EndpointError, match=r"failed in batch mode \(HTTP 400\): bad request"):
        drive(tmp_path, seed_tasks, script, "batch")
    assert len(script.batches.created) == 1


def test_a_refused_token_cap_goes_again_under_its_other_name(tmp_path, seed_tasks) -> None:
    """A batch's lines refused with a 400 naming max_completion_tokens, as a hosted model answers."""
    _, online_out = drive(tmp_path / "online", seed_tasks, Script(logprobs="top"), "online", "chat")
    script = Script(logprobs="top", reject_params=("max_completion_tokens",))
    run, out = drive(tmp_path / "batch", seed_tasks, script, "batch", "chat")
    same_data(online_out, out)
    assert run.usage.dropped["max_completion_tokens"].startswith("sent as max_tokens instead")
    retry = script.batches.batches[script.batches.created[1]]
    assert retry["metadata"] == {"run": "r", "round": "0", "attempt": "1"}
    lines = [json.loads(x) for x in script.batches.files[retry["input_file_id"]]["content"].splitlines()]
    assert all("max_tokens" in x["body"] and "max_completion_tokens" not in x["body"] for x in lines)


def test_an_endpoint_without_the_batch_api_fails_the_run_saying_so(tmp_path, seed_tasks) -> None:
    with FakeLLM(Script()) as server:  # answers 404 to everything under another prefix
        endpoint = replace(
            fake_endpoint(server), mode="batch", base_url=server.base_url.replace("/v1", "/v2")
        )
        run = Run("r", seed_tasks, Recipe.build(RECIPE), endpoint, FileStore(tmp_path))
        with pytest.raises(EndpointError, match=r"batch request failed \(404\)"):
            execute(run)
    assert run.checkpoint.batches[0]["file"] is None  # recorded before the upload, which failed


@pytest.mark.parametrize("limit", [{"MAX_REQUESTS": 5}, {"MAX_BYTES": 20_000}])
def test_a_round_over_a_files_limits_goes_as_several_batches(
    tmp_path, seed_tasks, monkeypatch, limit
) -> None:
    _, online_out = drive(tmp_path / "online", seed_tasks, Script(logprobs="top"), "online")
    for name, value in limit.items():
        monkeypatch.setattr(batch, name, value)
    script = Script(logprobs="top")
    _, out = drive(tmp_path / "batch", seed_tasks, script, "batch")
    same_data(online_out, out)
    inputs = [f["content"] for f in script.batches.files.values() if f["purpose"] == "batch"]
    assert all(len(c.splitlines()) <= limit.get("MAX_REQUESTS", 10**9) for c in inputs)
    assert all(len(c) <= limit.get("MAX_BYTES", 10**12) for c in inputs)
    parts = Counter(b["metadata"]["round"] for b in script.batches.batches.values())
    assert max(parts.values()) >= 2, parts  # some round went as several files and batches


def test_a_schema_strict_outputs_refuse_fails_the_run_as_online(tmp_path, seed_tasks, monkeypatch) -> None:
    """A 400 on response_format, as OpenAI answers a schema Structured Outputs cannot take: not a
    parameter to drop, so the job fails with what the provider said."""
    loose = {"type": "object", "properties": {"answer": {"type": "string"}}}
    monkeypatch.setattr(chat, "schema", lambda *args: loose)
    script = Script(logprobs="top", strict_schemas=True)
    with FakeLLM(script) as server:
        endpoint = replace(fake_endpoint(server), api="chat", response_format="json_schema", mode="batch")
        with pytest.raises(EndpointError, match=r"\(HTTP 400\): Invalid schema for response_format"):
            for _ in range(20):
                run = Run("r", seed_tasks, Recipe.build(RECIPE), endpoint, FileStore(tmp_path / "s"))
                try:
                    execute(run)
                except Waiting:
                    continue
    with_schema = [
        b
        for b in script.batches.batches.values()
        if b"response_format" in script.batches.files[b["input_file_id"]]["content"]
    ]
    assert len(with_schema) == 1  # not sent again


# --- through the service, with real workers ---


@pytest.fixture
def settings(settings, fake_llm):
    """The scripted server also as a batch-mode profile, at half its online prices; polls every 0.2 s."""
    online = {"prompt": 2.0, "completion": 8.0}
    batch = Profile.of(
        "batch",
        fake_llm.base_url,
        "fake",
        timeout=5,
        max_attempts=4,
        max_wait=0.2,
        mode="batch",
        price_per_million_tokens=online,
        batch_price_per_million_tokens={"prompt": 1.0, "completion": 4.0},
    )
    return replace(settings, profiles={**settings.profiles, "batch": batch}, batch_poll_seconds=0.2)


BODY = {"num_instructions": 8, "seed": 5, "round_size": 4, "instance_followup": False}


def batch_events(redis, job_id: str) -> list[dict]:
    return [e for e in events.every(redis, job_id) if e["type"] == "batch"]


def no_second_submission(script: Script) -> None:
    """Each input file uploaded once, each batch created once (by its run, round, attempt)."""
    uploaded = Counter(f["filename"] for f in script.batches.files.values() if f["purpose"] == "batch")
    assert uploaded and max(uploaded.values()) == 1, uploaded
    made = Counter(json.dumps(b["metadata"], sort_keys=True) for b in script.batches.batches.values())
    assert max(made.values()) == 1, made
    assert len({b["input_file_id"] for b in script.batches.batches.values()}) == len(made)


@pytest.mark.slow
def test_a_batch_job_through_the_service(client, redis, settings, worker_env, fake_llm, spawn) -> None:
    sid = make_seed_set(client)
    expected = reference(client, redis, sid, BODY)
    spawn(settings, "worker")
    job_id = client.post("/v1/jobs", json={"seed_set_id": sid, "profile": "batch", **BODY}).json["id"]
    job = finish(client, job_id)
    assert job["state"] == "succeeded", job
    assert dataset(settings, "alpha", job_id) == expected
    no_second_submission(fake_llm.script)
    seen = batch_events(redis, job_id)
    for batch_id in fake_llm.script.batches.created:  # each batch's states, in order, once each
        states = [e["status"] for e in seen if e["batch_id"] == batch_id]
        assert states[0] == "validating" and states[-1] == "completed" and len(states) == len(set(states)), (
            states
        )
    # cost at the batch prices
    tokens = job["progress"]
    cost = job["cost"]
    assert cost["price_per_million_tokens"] == {"prompt": 1.0, "completion": 4.0}
    assert cost["total"] == pytest.approx((tokens["prompt_tokens"] + 4 * tokens["completion_tokens"]) / 1e6)


@pytest.mark.slow
def test_a_batch_profiles_preview_samples_stage_1_as_its_job_does(
    client, redis, settings, worker_env, fake_llm, spawn
) -> None:
    """What batch mode implies is recorded in the recipe: a batch job's stage 1 goes in rounds (200
    prompts when the body names no round_size) and asks once for instances, and so does the preview of
    a batch profile, online. A sliding window (8 prompts, named in the body) would show prompt 8 the
    instructions prompt 0 kept; a round shows none: the preview's candidates are the job's."""
    sid = make_seed_set(client)
    body = {"seed_set_id": sid, "profile": "batch", "num_instructions": 20, "seed": 5, "window": 8}
    spawn(settings, "worker")
    job_id = client.post("/v1/jobs", json=body).json["id"]
    job = finish(client, job_id)
    assert job["state"] == "succeeded", job
    assert (job["config"]["round_size"], job["config"]["instance_followup"]) == (200, False)
    assert job["config"]["window"] == 8 and job["config"]["seed"] == 5  # every recipe field is shown
    preview = client.post("/v1/previews?wait=0", json=body).headers["Location"]
    spawn(replace(settings, queue=settings.preview_queue), "previews")  # a preview worker
    done = wait_until(
        lambda: (p := client.get(preview).json)["state"] in ("succeeded", "failed") and p, what="the preview"
    )
    assert done["state"] == "succeeded", done
    candidates = [(c["id"], c["text"], c["rule"]) for c in done["result"]["candidates"]]
    made = [json.loads(line) for line in read(settings, "alpha", job_id, "decisions.jsonl").splitlines()]
    assert candidates == [(d["id"], d["text"], d["rule"]) for d in made if d["stage"] == "instruction"]
    # past the window's first 8 prompts, where a window and a round sample differently
    assert max(int(c[0].split(".")[0][1:]) for c in candidates) >= 8


@pytest.mark.slow
@pytest.mark.parametrize("step", ["files", "batches"])
def test_a_worker_killed_mid_submission_never_submits_twice(
    client, redis, settings, worker_env, fake_llm, spawn, step
) -> None:
    """kill -9 after the upload landed and before its answer was heard (so before the batch is
    created), or after the batch was created and before its answer was heard (before the first poll)."""
    sid = make_seed_set(client)
    expected = reference(client, redis, sid, BODY)
    script = fake_llm.script
    script.holding.clear()
    script.hold = {step: 60.0}
    first = spawn(settings, "first")
    job_id = client.post("/v1/jobs", json={"seed_set_id": sid, "profile": "batch", **BODY}).json["id"]
    wait_until(script.holding.is_set, what=f"the first {step} answer held")
    horse = horse_of(first)
    assert horse is not None, "the worker's work horse, which holds the request, was not found"
    first.signal(signal.SIGKILL)
    os.kill(horse, signal.SIGKILL)
    spawn(settings, "second")
    job = finish(client, job_id, timeout=240)
    assert job["state"] == "succeeded", job
    assert dataset(settings, "alpha", job_id) == expected
    no_second_submission(script)


@pytest.mark.slow
def test_cancel_follows_the_batches_to_their_end_and_counts_what_they_answered(
    client, redis, settings, worker_env, fake_llm, spawn
) -> None:
    """A cancel cancels the open batch and follows it through `cancelling` to `cancelled` (the provider
    takes a while) before the partial dataset goes out; what the batch finished before it stopped is
    billed, so it is counted: in the dataset's stats.json and in the job's requests and tokens."""
    sid = make_seed_set(client)
    script = fake_llm.script
    script.batch_polls = 10**9  # never ends by itself
    script.cancel_reads = 3  # cancelling for two reads, then cancelled with half its requests answered
    spawn(settings, "worker")
    job_id = client.post("/v1/jobs", json={"seed_set_id": sid, "profile": "batch", **BODY}).json["id"]
    wait_until(lambda: any(e["status"] == "in_progress" for e in batch_events(redis, job_id)), what="a batch")
    assert client.get(f"/v1/jobs/{job_id}").json["progress"]["requests"] == 0  # all with the provider
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    assert finish(client, job_id)["state"] == "canceled"
    job = wait_until(
        lambda: (j := client.get(f"/v1/jobs/{job_id}").json)["dataset_available"] and j,
        what="the partial dataset",
    )
    (batch_id,) = script.batches.created
    batch = script.batches.batches[batch_id]
    answered = batch["request_counts"]["completed"]
    assert batch["status"] == "cancelled" and answered == BODY["round_size"] // 2
    statuses = [e["status"] for e in batch_events(redis, job_id)]
    assert statuses.index("cancelling") < statuses.index("cancelled"), statuses
    stats = json.loads(read(settings, "alpha", job_id, "stats.json"))
    assert stats["requests"] == {"instructions": answered}, stats
    assert stats["failed_attempts"] == {"batch_cancelled": BODY["round_size"] - answered}
    assert job["progress"]["requests"] == answered and job["progress"]["completion_tokens"] > 0
    assert job["cost"]["total"] > 0  # at the batch prices, for what was answered


@pytest.mark.parametrize("lost", ["files", "batches"])
def test_a_creation_whose_answer_is_lost_is_looked_for_not_made_again(tmp_path, seed_tasks, lost) -> None:
    """The provider uploads the file or creates the batch, then the connection drops before its answer
    arrives (a proxy reset): the run looks for what it made before it tries again, so nothing is
    submitted, or paid for, twice, and the dataset is the online run's."""
    script = Script(lose={lost: 2})
    _, out = drive(tmp_path / "batch", seed_tasks, script, "batch")
    assert script.lose[lost] == 0  # both answers were lost
    no_second_submission(script)
    _, online = drive(tmp_path / "online", seed_tasks, Script(), "online")
    same_data(online, out)


def test_auto_in_batch_mode_on_an_endpoint_failing_log_probabilities_ends(tmp_path, seed_tasks) -> None:
    """The selection's round with log-probabilities fails: the run records that before its text-only
    round waits, so the run that resumes asks for that round, not the failed one again."""
    script = Script(logprobs="refuse")
    run, _ = drive(tmp_path, seed_tasks, script, "batch")
    selection = run.checkpoint.calibration["selection"]
    assert set(selection["unavailable"]) == {"logprobs", "calibrated", "fitted"}
    assert selection["unavailable"]["logprobs"].startswith("the endpoint refused log-probabilities:")
    # what each batch asked: the selection's first round (and its retry), then its text-only round
    batches = script.batches
    asked = [batches.files[batches.batches[b]["input_file_id"]]["content"].decode() for b in batches.created]
    selection_rounds = [
        a for a in asked if '"classification_selection-' in a or "classification_selection-" in a
    ]
    assert 2 <= len(selection_rounds) <= 3, len(selection_rounds)
