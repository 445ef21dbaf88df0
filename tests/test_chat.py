"""Chat endpoints (/v1/chat/completions): the method's prompts as messages, replies in text or JSON, the
same filters and decisions, faults retried, and parameters an endpoint refuses dropped and recorded."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from jobs.method.checkpoint import FileStore
from jobs.method.endpoint import Endpoint
from jobs.method.engine import execute
from jobs.method.outputs import exports
from jobs.method.prompts import chat
from jobs.method.recipe import STAGES, Execution, Recipe
from jobs.method.run import Run
from jobs.method.transport import EndpointError
from jobs.method.transport.client import REASONING_REFUSES
from jobs.settings import Profile
from tests.conftest import fake_endpoint, work
from tests.fake_llm import FakeLLM, Script, compose_chat
from tests.test_engine import DATASET_FILES

PAPER_RULES = {
    "too_short",
    "blacklisted_keyword",
    "write_a_program",
    "starts_with_punctuation",
    "too_similar",
}


def chat_run(
    tmp: Path,
    server: FakeLLM,
    seed_tasks,
    name: str = "run",
    response_format=None,
    timeout=5.0,
    endpoint_options: dict | None = None,
    **config,
):
    execution = Execution(concurrency=config.pop("concurrency", 3))
    cfg = Recipe.build({"num_instructions": 12, "seed": 5, **config})
    endpoint = replace(
        fake_endpoint(server, timeout=timeout),
        api="chat",
        response_format=response_format,
        **(endpoint_options or {}),
    )
    run = Run("chat-1", seed_tasks, cfg, endpoint, FileStore(tmp / name / "state"), execution=execution)
    execute(run)
    exports.export(run, tmp / name / "out")
    return run, tmp / name / "out"


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]


def test_numbered_list_replies_are_read_without_preamble_or_closing_remark() -> None:
    reply = (
        "Sure! Here are three new tasks:\n\n1. **Summarize** a news story\nfor a child.\n"
        "2) Rate this review from 1 to 5.\n3. Name two rivers.\n\nLet me know if you need more."
    )
    assert chat.instructions(reply) == [
        "Summarize a news story for a child.",
        "Rate this review from 1 to 5.",
        "Name two rivers.",
    ]
    assert chat.instructions("I cannot help with that.") == []


def test_structured_replies_keep_the_papers_order_and_skip_bad_items() -> None:
    labels = '{"examples": [{"class_label": "spam", "input": "Win now"}, {"class_label": 3}]}'
    assert chat.instances(labels, is_classification=True, structured=True) == [("Win now", "spam")]
    pairs = '{"examples": [{"input": "", "output": "Paris"}]}'
    assert chat.instances(pairs, is_classification=False, structured=True) == [("", "Paris")]
    assert chat.instances("[1, 2]", is_classification=False, structured=True) == []
    assert chat.classification('{"answer": "No"}', structured=True) == "no"
    assert chat.classification('{"answer": "Maybe"}', structured=True) == "unparseable"
    assert chat.classification("Yes.", structured=False) == "yes"
    assert chat.classification("Yes, it is.", structured=False) == "unparseable"


@pytest.mark.parametrize("response_format", [None, "json_schema", "json_object"])
def test_a_chat_run_applies_the_papers_filters(tmp_path, fake_llm, seed_tasks, response_format) -> None:
    # seed 6: among the scripted replies to its prompts are candidates for each of the paper's rules;
    # the scripted answers decide stage 2 (text), so some tasks are classification ones
    _, out = chat_run(
        tmp_path,
        fake_llm,
        seed_tasks,
        response_format=response_format,
        num_instructions=20,
        seed=6,
        classification_method="text",
    )
    stats = json.loads((out / "stats.json").read_text())
    assert stats["instructions_kept"] == 20 and stats["stop_reason"] == "target_reached"
    assert set(stats["verdicts"]["instruction"]) >= PAPER_RULES
    assert stats["instances_kept"] > 0 and stats["classification"].get("yes", 0) > 0
    decisions = records(out)
    assert all(d["source"]["role"] == "assistant" for d in decisions)
    requests = fake_llm.script.chat_requests
    assert requests and not fake_llm.script.prompts[0].startswith("Below is")
    stage1 = [r for r in requests if "numbered list" in r["prompt"]]
    assert stage1 and all(not r.get("stop") for r in stage1)  # the paper's list stops would cut a preamble
    formats = [r.get("response_format") for r in requests if r not in stage1]
    if response_format is None:
        assert formats and not any(formats)
    else:
        assert formats and all(f and f["type"] == response_format for f in formats)
        if response_format == "json_object":
            assert all("schema" in f for f in formats)
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["endpoint"]["api"] == "chat"
    assert run_json["endpoint"]["response_format"] == response_format
    assert "/v1/chat/completions" in (out / "README.md").read_text()


def test_a_cut_off_chat_reply_loses_only_its_last_item(tmp_path, fake_llm, seed_tasks) -> None:
    decoding = {"instructions": {"max_tokens": 40}}  # cuts most replies mid-list
    run, out = chat_run(tmp_path, fake_llm, seed_tasks, decoding=decoding, num_instructions=8, max_requests=6)
    assert run.checkpoint.truncated_responses > 0
    whole_items = set()
    for body in fake_llm.script.chat_requests:
        if "numbered list" in body["prompt"]:
            reply = compose_chat(body["messages"], body.get("seed"), body["temperature"], structured=False)
            whole_items.update(chat.instructions(reply))
    candidates = [d["text"] for d in records(out) if d["stage"] == "instruction"]
    assert candidates and set(candidates) <= whole_items  # no cut-off fragment became a candidate


def test_faults_in_chat_mode_change_nothing(tmp_path, seed_tasks) -> None:
    with FakeLLM(Script()) as clean:
        _, clean_out = chat_run(tmp_path, clean, seed_tasks, "clean", "json_schema")
    # 30% of requests: 429, 500, a timeout, a dropped connection, a broken body, or a reply that is not JSON
    faults = ("429", "500", "slow", "drop", "malformed", "badjson")
    script = Script(fault_rate=0.3, faults=faults, slow_seconds=1.5, retry_after=0.05, seed=11)
    script.schedule = ["slow", "429", "500", "drop", "malformed"]  # each kind at least once
    with FakeLLM(script) as flaky:
        run, flaky_out = chat_run(tmp_path, flaky, seed_tasks, "flaky", "json_schema", timeout=1.0)
    drawn = {k for k in script.counts if k != "requests"}
    assert {"429", "500", "slow", "badjson"} <= drawn, script.counts
    assert run.usage.errors["timeout"] > 0 and run.usage.errors["malformed"] > 0
    for name in DATASET_FILES:
        if name != "run.json":  # the two servers listen on different ports
            assert (clean_out / name).read_bytes() == (flaky_out / name).read_bytes(), name


def test_a_structured_reply_that_is_not_json_is_retried(tmp_path, seed_tasks) -> None:
    # Stage 1 asks for a list, not JSON; every other request's first attempt gets broken JSON (stage 2
    # asks the model with the paper's method: knn would ask nothing)
    script = Script(faults=("badjson",), fault_rate=1.0, seed=1)
    with FakeLLM(script) as server:
        endpoint = replace(fake_endpoint(server, max_attempts=2), api="chat", response_format="json_schema")
        cfg = Recipe(num_instructions=3, seed=5, classification_method="text")
        run = Run(
            "bad-json", seed_tasks, cfg, endpoint, FileStore(tmp_path / "state"), execution=Execution(1)
        )
        with pytest.raises(EndpointError, match=r"classification request failed \(malformed\)"):
            execute(run)
    assert run.usage.errors["malformed"] >= 2


def test_a_refused_parameter_is_dropped_and_recorded(tmp_path, seed_tasks) -> None:
    script = Script(reject_params=("presence_penalty",))
    with FakeLLM(script) as server:
        _, out = chat_run(tmp_path, server, seed_tasks, concurrency=1, num_instructions=6)
    stats = json.loads((out / "stats.json").read_text())
    assert list(stats["dropped_parameters"]) == ["presence_penalty"]
    assert "presence_penalty" in stats["dropped_parameters"]["presence_penalty"]
    carried = [r for r in script.chat_requests if "presence_penalty" in r]
    assert len(carried) == 1 and len(script.chat_requests) > 5  # refused once, never sent again
    assert stats["instructions_kept"] == 6


def caps(requests: list[dict]) -> list[str]:
    """The name each request gave its token cap."""
    return [next(k for k in ("max_completion_tokens", "max_tokens") if k in r) for r in requests]


def test_a_refused_required_parameter_fails_the_run_naming_it(tmp_path, seed_tasks) -> None:
    # the token cap goes under its other name once; refused under both, the run fails
    script = Script(reject_params=("max_completion_tokens", "max_tokens"))
    with FakeLLM(script) as server, pytest.raises(EndpointError, match="parameter 'max_tokens'"):
        chat_run(tmp_path, server, seed_tasks, num_instructions=3, concurrency=1)
    assert caps(script.chat_requests) == ["max_completion_tokens", "max_tokens"]
    with FakeLLM(Script(reject_params=("model",))) as server, pytest.raises(EndpointError, match="'model'"):
        chat_run(tmp_path, server, seed_tasks, "model", num_instructions=3)


@pytest.mark.parametrize(
    ("configured", "refused"), [(None, "max_completion_tokens"), ("max_tokens", "max_tokens")]
)
def test_a_refused_token_cap_name_switches_to_the_other_once(
    tmp_path, seed_tasks, configured, refused
) -> None:
    other = "max_tokens" if refused == "max_completion_tokens" else "max_completion_tokens"
    script = Script(reject_params=(refused,))
    options = {"max_tokens_param": configured}
    with FakeLLM(script) as server:
        _, out = chat_run(
            tmp_path, server, seed_tasks, endpoint_options=options, concurrency=1, num_instructions=4
        )
    sent = caps(script.chat_requests)
    assert sent[0] == refused and set(sent[1:]) == {other} and len(sent) > 5  # refused once, then the other
    stats = json.loads((out / "stats.json").read_text())
    assert list(stats["dropped_parameters"]) == [refused] and stats["instructions_kept"] == 4
    assert stats["dropped_parameters"][refused].startswith(f"sent as {other} instead: HTTP 400")
    assert json.loads((out / "run.json").read_text())["endpoint"]["max_tokens_param"] == other


def test_chat_sends_max_completion_tokens_and_no_seed_unless_told(tmp_path, fake_llm, seed_tasks) -> None:
    _, out = chat_run(tmp_path, fake_llm, seed_tasks, num_instructions=3)
    requests = fake_llm.script.chat_requests
    assert set(caps(requests)) == {"max_completion_tokens"} and not any("seed" in r for r in requests)
    endpoint = json.loads((out / "run.json").read_text())["endpoint"]
    assert endpoint["max_tokens_param"] == "max_completion_tokens" and endpoint["send_seed"] is False
    # what llama.cpp's servers need (the embedded model's profile): the old name, and the seed
    fake_llm.script.chat_requests.clear()
    options = {"max_tokens_param": "max_tokens", "send_seed": True}
    _, out = chat_run(tmp_path, fake_llm, seed_tasks, "llama", endpoint_options=options, num_instructions=3)
    requests = fake_llm.script.chat_requests
    assert set(caps(requests)) == {"max_tokens"} and all(isinstance(r["seed"], int) for r in requests)


@pytest.mark.model
def test_the_embedded_server_honours_the_cap_and_the_seed_its_profile_sends(local_model) -> None:
    """The embedded model's profile (REQUEST_OPTIONS) sends the token cap as max_tokens and a seed:
    llama-server caps the answer, and one seed gives one sampled answer where other seeds vary."""
    import httpx

    from jobs.tools.local_model import REQUEST_OPTIONS

    assert REQUEST_OPTIONS == {"max_tokens_param": "max_tokens", "send_seed": True}

    def chat(seed: int) -> tuple[str, int]:
        messages = [{"role": "user", "content": "Tell me a long story about a cat."}]
        body = {"model": local_model.model, "messages": messages, "max_tokens": 6, "temperature": 1.0}
        # sampled from every token (no top-k, top-p or min-p cut): how many seeds agree then hangs on no
        # build's numerics (with llama-server's default cuts, over a third of the texts were one text)
        body |= {"top_k": 0, "top_p": 1.0, "min_p": 0.0}
        # no cached prompt: a partly cached evaluation can tip a sampled token (docs/method.md)
        body |= {"seed": seed, "cache_prompt": False}
        answer = httpx.post(f"{local_model.base_url}/chat/completions", json=body, timeout=120)
        return answer.json()["choices"][0]["message"]["content"], answer.json()["usage"]["completion_tokens"]

    answers = {seed: chat(seed) for seed in range(1, 9)}
    assert all(tokens <= 6 for _, tokens in answers.values())
    assert max(tokens for _, tokens in answers.values()) == 6
    # each seed gives its answer again, asked in another order
    assert [chat(seed) for seed in (3, 2, 1)] == [answers[3], answers[2], answers[1]]
    # and the seeds vary: 8 texts of 8 on both builds tried
    assert len({text for text, _ in answers.values()}) >= 4, answers


def test_a_reasoning_profile_sends_no_sampling_parameter(tmp_path, fake_llm, seed_tasks) -> None:
    options = {"reasoning": True}
    _, out = chat_run(
        tmp_path,
        fake_llm,
        seed_tasks,
        response_format="json_schema",
        endpoint_options=options,
        num_instructions=4,
    )
    requests = fake_llm.script.chat_requests
    assert requests and not any(set(r) & set(REASONING_REFUSES) for r in requests)
    assert set(caps(requests)) == {"max_completion_tokens"}
    stats = json.loads((out / "stats.json").read_text())
    # every parameter the recipe would have sent is a warning, none refused by the endpoint
    assert set(stats["dropped_parameters"]) == {
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
    }
    assert all(v.startswith("left out: the profile") for v in stats["dropped_parameters"].values())
    # auto: reasoning models give no log-probabilities; knn, the seed tasks' vote, beat the text there
    assert stats["classification_method"]["methods"] == {"knn": 4}
    assert json.loads((out / "run.json").read_text())["endpoint"]["reasoning"] is True


def test_a_refused_temperature_says_the_model_reasons(tmp_path, seed_tasks) -> None:
    # a reasoning model as OpenAI serves one: each of these is refused with a 400 naming it
    script = Script(reject_params=(*REASONING_REFUSES, "max_tokens"), logprobs="top")
    with FakeLLM(script) as server:
        _, out = chat_run(tmp_path, server, seed_tasks, concurrency=1, num_instructions=4)
    first, *rest = script.chat_requests
    assert "temperature" in first and rest and not any(set(r) & set(REASONING_REFUSES) for r in rest)
    stats = json.loads((out / "stats.json").read_text())
    dropped = stats["dropped_parameters"]
    assert (
        dropped["temperature"].startswith("a reasoning model: HTTP 400") and stats["instructions_kept"] == 4
    )
    assert set(dropped) == {"temperature", "top_p", "presence_penalty", "frequency_penalty", "stop"}
    assert json.loads((out / "run.json").read_text())["endpoint"]["reasoning"] is True
    assert stats["classification_method"]["methods"] == {"knn": 4}  # auto chose between knn and text
    assert set(stats["classification_method"]["selection"]["methods"]) == {"knn", "text"}


def strict_problems(schema: object, at: str = "$") -> list[str]:
    """Where a schema breaks Structured Outputs' strict mode: an object not closed with
    additionalProperties false, or with a property it does not require."""
    out = []
    if isinstance(schema, dict):
        if schema.get("type") == "object":
            if schema.get("additionalProperties") is not False:
                out.append(f"{at}: additionalProperties is not false")
            if set(schema.get("required", ())) != set(schema.get("properties", {})):
                out.append(f"{at}: required is not every property")
        for key, value in schema.items():
            out += strict_problems(value, f"{at}.{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            out += strict_problems(value, f"{at}[{i}]")
    return out


def test_every_reply_schema_suits_strict_structured_outputs() -> None:
    schemas = [chat.schema(stage, kind) for stage in STAGES for kind in (False, True)]
    assert {json.dumps(s, sort_keys=True) for s in schemas} == {
        json.dumps(s, sort_keys=True)
        for s in (chat.CLASSIFICATION_SCHEMA, chat.INPUT_FIRST_SCHEMA, chat.OUTPUT_FIRST_SCHEMA)
    }
    for schema in schemas:
        assert strict_problems(schema) == [], schema
    items = [s["properties"]["examples"]["items"] for s in schemas if "examples" in s["properties"]]
    assert len(items) == 4 and all(i["type"] == "object" for i in items)  # the nested objects are walked
    assert strict_problems({"type": "object", "properties": {"a": {}}, "additionalProperties": False})


def test_the_scripted_server_refuses_a_schema_strict_mode_would(tmp_path, seed_tasks, monkeypatch) -> None:
    script = Script(strict_schemas=True)
    with FakeLLM(script) as server:
        text = {"num_instructions": 3, "classification_method": "text"}  # stage 2 asks, with its schema
        chat_run(tmp_path, server, seed_tasks, "ours", "json_schema", **text)  # ours pass
        loose = {**chat.CLASSIFICATION_SCHEMA}
        del loose["additionalProperties"]
        monkeypatch.setattr(chat, "CLASSIFICATION_SCHEMA", loose)
        with pytest.raises(EndpointError, match=r"parameter 'response_format'.*additionalProperties"):
            chat_run(tmp_path, server, seed_tasks, "loose", "json_schema", **text)


def test_profiles_say_which_api_they_speak(client, settings) -> None:
    with pytest.raises(ValueError, match=r"profile 'bad': api must be one of"):
        Profile.of("bad", "http://127.0.0.1:1/v1", "m", api="responses")
    with pytest.raises(ValueError, match="response_format"):
        Profile.of("bad", "http://127.0.0.1:1/v1", "m", response_format="json_schema")
    with pytest.raises(ValueError, match="api must be"):
        Endpoint("http://127.0.0.1:1/v1", "m", api="edits")
    with pytest.raises(ValueError, match="max_tokens_param"):
        Profile.of("bad", "http://127.0.0.1:1/v1", "m", api="chat", max_tokens_param="max_new_tokens")
    with pytest.raises(ValueError, match="max_tokens_param"):
        Profile.of("bad", "http://127.0.0.1:1/v1", "m", max_tokens_param="max_completion_tokens")
    with pytest.raises(ValueError, match="reasoning is for chat"):
        Profile.of("bad", "http://127.0.0.1:1/v1", "m", reasoning=True)
    with pytest.raises(ValueError, match="reasoning is for chat"):
        Endpoint("http://127.0.0.1:1/v1", "m", reasoning=True)
    profile = Profile.of(
        "o", "http://127.0.0.1:1/v1", "m", api="chat", reasoning=True, max_tokens_param="max_tokens"
    )
    endpoint = profile.endpoint
    assert endpoint.reasoning and endpoint.token_limit == "max_tokens" and not endpoint.seeded
    assert Profile.of("c", "http://127.0.0.1:1/v1", "m").endpoint.seeded  # completions: as before
    (answer,) = client.get("/v1/profiles").get_json()
    assert (
        answer["name"] == "fake" and answer["api"] == "completions" and answer["structured_output"] is False
    )


@pytest.fixture
def chat_settings(settings, fake_llm):
    profile = Profile.of(
        "chat",
        fake_llm.base_url,
        "fake",
        timeout=5,
        max_attempts=4,
        max_wait=0.2,
        api="chat",
        response_format="json_schema",
    )
    return replace(settings, profiles={**settings.profiles, "chat": profile})


def test_a_chat_job_through_the_service(
    chat_settings, redis, api_key, fake_llm, worker_env, monkeypatch
) -> None:
    from jobs.settings import get_settings
    from service.app import create_app

    for name, value in chat_settings.to_env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    client = create_app(chat_settings, configure_logging=False).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {api_key}"
    profiles = {p["name"]: p for p in client.get("/v1/profiles").get_json()}
    assert profiles["chat"]["api"] == "chat" and profiles["chat"]["structured_output"] is True
    seeds = Path(__file__).parent.parent / "data" / "seed_tasks.jsonl"
    made = client.post("/v1/seed-sets", data=seeds.read_bytes(), content_type="application/x-ndjson")
    assert made.status_code == 201, made.get_json()
    job = client.post(
        "/v1/jobs", json={"seed_set_id": made.get_json()["id"], "num_instructions": 5, "profile": "chat"}
    )
    assert job.status_code == 202, job.get_json()
    fake_llm.script.reject_params = ("presence_penalty", "max_completion_tokens")
    work(redis)
    done = client.get(f"/v1/jobs/{job.get_json()['id']}").get_json()
    assert done["state"] == "succeeded", done
    # a refused parameter, and the token cap's switch to its other name, are warnings, not a failed job
    assert len(done["warnings"]) == 2, done["warnings"]
    assert done["warnings"][0].startswith(
        "parameter max_completion_tokens dropped: sent as max_tokens instead"
    )
    assert done["warnings"][1].startswith("parameter presence_penalty dropped:")
    page = client.get(f"/v1/jobs/{done['id']}/decisions?stage=instance&limit=5").get_json()
    assert page["items"] and all(d["source"]["role"] == "assistant" for d in page["items"])
    assert fake_llm.script.chat_requests and "requests" in fake_llm.script.counts


def test_the_command_line_says_what_chat_requests_carry(tmp_path, fake_llm, capsys) -> None:
    from argparse import Namespace

    from jobs.tools.generate import main as cli
    from jobs.tools.generate import request_options
    from jobs.tools.local_model import REQUEST_OPTIONS

    seeds = Path(__file__).parent.parent / "data" / "seed_tasks.jsonl"
    argv = [
        "generate",
        "--seed-tasks",
        str(seeds),
        "--num-instructions",
        "2",
        "--base-url",
        fake_llm.base_url,
    ]
    chat_flags = ["--api", "chat", "--max-tokens-param", "max_tokens", "--send-seed"]
    assert cli([*argv, "--out", str(tmp_path / "chat"), *chat_flags]) == 0
    requests = fake_llm.script.chat_requests
    assert set(caps(requests)) == {"max_tokens"} and all("seed" in r for r in requests)
    assert cli([*argv, "--out", str(tmp_path / "bad"), "--reasoning"]) == 2  # completions: refused
    assert "--reasoning" in capsys.readouterr().err
    # the embedded model gets its server's options unless a flag says otherwise
    flags = Namespace(max_tokens_param=None, send_seed=None, reasoning=False)
    assert request_options(flags, embedded=True) == REQUEST_OPTIONS
    assert request_options(flags, embedded=False) == {}
    flags = Namespace(max_tokens_param="max_completion_tokens", send_seed=False, reasoning=True)
    assert request_options(flags, embedded=True) == {
        "max_tokens_param": "max_completion_tokens",
        "send_seed": False,
        "reasoning": True,
    }
