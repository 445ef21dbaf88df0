"""Whole runs on the scripted endpoint: filters applied, deterministic, resumable, robust to faults."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from jobs.method.checkpoint import FileStore
from jobs.method.endpoint import Endpoint
from jobs.method.engine import execute
from jobs.method.outputs import exports
from jobs.method.outputs.exports import FILES
from jobs.method.recipe import Execution, Recipe
from jobs.method.run import FREE_BATCH, Canceled, Run
from jobs.method.vocabulary import RULES
from tests.conftest import fake_endpoint
from tests.fake_llm import FakeLLM, Script

DATASET_FILES = [*FILES.values(), "instructions.jsonl", "decisions.jsonl", "run.json", "README.md"]


def generate(tmp: Path, server: FakeLLM, seed_tasks, name="run", stop_after=None, **config):
    """A whole run into tmp/name; with stop_after=k it is asked to stop after k handled items."""
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return stop_after is not None and calls["n"] > stop_after

    execution = Execution(concurrency=config.pop("concurrency", 3))
    cfg = Recipe(**{"num_instructions": 12, "seed": 3, **config})
    store = FileStore(tmp / name / "state")
    endpoint = fake_endpoint(server)
    run = Run("run-1", seed_tasks, cfg, endpoint, store, should_stop=should_stop, execution=execution)
    execute(run)
    exports.export(run, tmp / name / "out")
    return run, tmp / name / "out"


def read_bytes(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in DATASET_FILES}


def decisions(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]


def test_a_run_keeps_the_target_and_records_every_candidate(tmp_path, fake_llm, seed_tasks):
    run, out = generate(tmp_path, fake_llm, seed_tasks, num_instructions=25)
    stats = json.loads((out / "stats.json").read_text())
    records = decisions(out)
    assert stats["instructions_kept"] == 25 and stats["stop_reason"] == "target_reached"
    assert len({d["id"] for d in records}) == len(records)
    assert all(
        d["rule"] in RULES and d["verdict"] == ("kept" if d["rule"] == "kept" else "dropped") for d in records
    )
    for stage in ("instruction", "instance"):
        assert sum(stats["verdicts"][stage].values()) == sum(d["stage"] == stage for d in records)
    # the scripted model writes candidates that several filters must drop
    assert {
        "too_short",
        "blacklisted_keyword",
        "write_a_program",
        "starts_with_punctuation",
        "too_similar",
    } <= set(stats["verdicts"]["instruction"])
    assert {"empty_output", "ends_with_colon", "kept"} <= set(stats["verdicts"]["instance"])
    kept = [d for d in records if d["stage"] == "instruction" and d["verdict"] == "kept"]
    assert [d["id"] for d in kept] == [k["id"] for k in run.checkpoint.instructions]
    assert sum(stats["requests"].values()) == fake_llm.script.counts["requests"]
    assert 0 < stats["endpoint_busy_fraction"] <= 1


def test_similarity_decisions_match_rouge_score(tmp_path, fake_llm, seed_tasks):
    _, out = generate(tmp_path, fake_llm, seed_tasks, num_instructions=15)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pool = {t.id: t.instruction for t in seed_tasks}
    checked = 0
    for d in decisions(out):
        if d["stage"] != "instruction" or d["rule"] not in ("kept", "too_similar"):
            continue
        scores = {pid: scorer.score(d["text"], text)["rougeL"].fmeasure for pid, text in pool.items()}
        best = max(scores.values())
        assert d["detail"]["score"] == best
        assert d["detail"]["nearest_id"] == next(pid for pid, s in scores.items() if s == best)
        assert (d["rule"] == "too_similar") == (best > 0.7)
        if d["rule"] == "kept":
            pool[d["id"]] = d["text"]
        checked += 1
    assert checked > 15


def test_same_seed_same_bytes_whatever_the_concurrency(tmp_path, fake_llm, seed_tasks):
    _, a = generate(tmp_path, fake_llm, seed_tasks, name="a", concurrency=1)
    _, b = generate(tmp_path, fake_llm, seed_tasks, name="b", concurrency=6)
    _, c = generate(tmp_path, fake_llm, seed_tasks, name="c", seed=4)
    same = read_bytes(a)
    assert json.loads(same.pop("run.json"))["config"]["concurrency"] == 1  # the only difference
    assert same == {k: v for k, v in read_bytes(b).items() if k != "run.json"}
    assert read_bytes(a)["alpaca.json"] != read_bytes(c)["alpaca.json"]


@pytest.mark.parametrize(
    "stage, method",
    [("instructions", "knn"), ("classification", "text"), ("instances", "knn"), ("instances", "text")],
)
def test_stopped_run_resumes_without_losing_or_repeating(tmp_path, fake_llm, seed_tasks, stage, method):
    whole_run, whole = generate(tmp_path, fake_llm, seed_tasks, name="whole", classification_method=method)
    prompts, kept = whole_run.checkpoint.next_prompt, len(whole_run.checkpoint.instructions)
    # items handled before the stop: stage-1 prompts, then one per instruction in stages 2 (where the
    # method asks the model: knn's votes look for a stop once every 400) and 3
    asked = kept if method == "text" else 0
    stop_after = {
        "instructions": prompts // 2,
        "classification": prompts + kept // 2,
        "instances": prompts + asked + kept // 2,
    }[stage]
    with pytest.raises(Canceled):
        generate(tmp_path, fake_llm, seed_tasks, "parts", stop_after, classification_method=method)
    assert FileStore(tmp_path / "parts" / "state").load().stage == stage
    _, resumed = generate(tmp_path, fake_llm, seed_tasks, name="parts", classification_method=method)
    assert read_bytes(resumed) == read_bytes(whole)


def test_items_that_cost_no_request_commit_and_look_for_a_stop_in_batches(tmp_path, seed_tasks):
    """A knn vote costs no request: stage 2 commits, and asks whether to stop (a Redis read in a
    worker), once every FREE_BATCH x checkpoint_every votes, not every checkpoint_every."""
    store, asked, commits = FileStore(tmp_path / "state"), [], []
    commit = store.commit
    store.commit = lambda cp, pending: commits.append(len(pending)) or commit(cp, pending)  # type: ignore[method-assign]
    endpoint = Endpoint(base_url="http://127.0.0.1:9/v1", model="m", api_key="k")
    run = Run("free", seed_tasks, Recipe(), endpoint, store, should_stop=lambda: asked.append(1) or False)
    every = run.execution.checkpoint_every * FREE_BATCH
    for _ in range(2 * every + 1):
        run.handled(free=True)
    assert len(commits) == len(asked) == 2
    for _ in range(every):
        run.handled()  # a paid item: as before
    assert len(asked) == 2 + every and len(commits) == 2 + every // run.execution.checkpoint_every


@pytest.mark.slow
def test_faults_on_30_percent_of_requests_change_nothing(tmp_path, seed_tasks):
    with FakeLLM(Script()) as clean:
        _, expected = generate(tmp_path, clean, seed_tasks, name="clean")
    faults = ("429", "500", "slow", "drop", "malformed")
    with FakeLLM(Script(fault_rate=0.3, faults=faults, slow_seconds=6.0, retry_after=0.05, seed=1)) as flaky:
        _, got = generate(tmp_path, flaky, seed_tasks, name="flaky")
        injected = {k: v for k, v in flaky.script.counts.items() if k != "requests"}
    drop_endpoint = {"run.json"}  # the two servers listen on different ports
    assert {k: v for k, v in read_bytes(got).items() if k not in drop_endpoint} == {
        k: v for k, v in read_bytes(expected).items() if k not in drop_endpoint
    }
    stats = json.loads((got / "stats.json").read_text())
    assert sum(injected.values()) >= 0.2 * flaky.script.counts["requests"]
    kinds = {"429": "429", "500": "500", "slow": "timeout", "drop": "connection", "malformed": "malformed"}
    counted = {kinds[k]: v for k, v in injected.items()}
    # every injected fault was counted as a failed attempt and retried, except on requests that were
    # still in flight when bootstrapping reached its target (cancelled, counted as wasted)
    assert stats["retries"] == sum(stats["failed_attempts"].values())
    for kind, n in counted.items():
        assert n - stats["wasted"]["requests"] <= stats["failed_attempts"].get(kind, 0) <= n


def test_garbage_text_is_recorded_not_fatal(tmp_path, seed_tasks):
    """A model that writes garbage for some prompts (chosen by the prompt, so the same ones every run):
    the answers are recorded as unparseable, in stage 2 (asked by the paper's method) and stage 3, and
    the run goes on to its target."""
    with FakeLLM(Script(garbage_share=0.3, seed=2)) as server:
        _, out = generate(tmp_path, server, seed_tasks, classification_method="text")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["instructions_kept"] == 12
    assert stats["verdicts"]["instance"].get("unparseable", 0) > 0
    assert stats["classification"].get("unparseable", 0) > 0


def test_request_budget_stops_bootstrapping(tmp_path, fake_llm, seed_tasks):
    _, out = generate(tmp_path, fake_llm, seed_tasks, num_instructions=100, max_requests=3)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["stop_reason"] == "request_budget"
    assert stats["requests"]["instructions"] == 3 and 0 < stats["instructions_kept"] < 100


def test_prompt_layout_and_sampling(tmp_path, fake_llm, seed_tasks):
    run, _ = generate(tmp_path, fake_llm, seed_tasks, num_instructions=20, window=2)
    seed_texts = {t.instruction for t in seed_tasks}
    stage1 = [p for p in fake_llm.script.prompts if p.endswith("9.")]
    assert len(stage1) >= 2
    for prompt in stage1:
        lines = prompt.split("\n")
        assert lines[0] == "Below is a numbered list of diverse, self-contained tasks:"
        assert [line.split(". ", 1)[0] for line in lines[1:9]] == [str(i) for i in range(1, 9)]
        listed = [line.split(". ", 1)[1] for line in lines[1:9]]
        machine = [
            text
            for text in listed
            if text not in {re.sub(r"\s+", " ", s).strip().rstrip(":") for s in seed_texts}
        ]
        assert len(machine) <= 2
    # once machine instructions exist, prompts include them
    assert any(
        any(
            line.split(". ", 1)[1] in {k["text"] for k in run.checkpoint.instructions}
            for line in p.split("\n")[1:9]
        )
        for p in stage1[3:]
    )


def test_file_store_cuts_decisions_past_the_checkpoint(tmp_path, fake_llm, seed_tasks):
    generate(tmp_path, fake_llm, seed_tasks)
    store = FileStore(tmp_path / "run" / "state")
    committed = list(store.decisions())
    with open(tmp_path / "run" / "state" / "decisions.jsonl", "a") as f:
        f.write('{"half written": ')  # a crash between the decisions and the checkpoint
    checkpoint = store.load()
    assert checkpoint.decisions == len(committed) == len(list(store.decisions()))


def test_an_answer_with_a_single_instance_is_asked_again(tmp_path, seed_tasks):
    """An instance answer that ends on its own after one instance is asked again, once: the same
    prompt, sampled, with its own seed; the two answers' instances are filtered together. Answers
    with more, or cut short, are not. Off, every task is asked once."""
    from jobs.method.prompts import parsing
    from jobs.method.prompts.layouts import INPUT_FIRST_HEADER, OUTPUT_FIRST_HEADER
    from jobs.method.stages.instances import AGAIN

    # some answers are garbage (no instance): they are not asked again either
    with FakeLLM(Script(garbage_share=0.1)) as fake_llm:
        _, out = generate(
            tmp_path, fake_llm, seed_tasks, name="on", concurrency=1, num_instructions=30, seed=4, window=8
        )
        script = fake_llm.script
        asked = [
            (body, json.loads(answer[3])["choices"][0])
            for (path, body), answer in zip(script.bodies, script.answers, strict=True)
            if path == "/completions" and body["prompt"].startswith((OUTPUT_FIRST_HEADER, INPUT_FIRST_HEADER))
        ]
        script.bodies.clear(), script.answers.clear()
        options = {"num_instructions": 30, "seed": 4, "window": 8, "instance_followup": False}
        _, off = generate(tmp_path, fake_llm, seed_tasks, name="off", concurrency=1, **options)
        prompts = [body["prompt"] for path, body in script.bodies if path == "/completions"]
    by_prompt: dict[str, list] = {}
    for body, choice in asked:
        by_prompt.setdefault(body["prompt"], []).append((body, choice))
    kept = [json.loads(line) for line in (out / "instructions.jsonl").read_text().splitlines()]
    ids = {k["text"]: k["id"] for k in kept}
    records = [d for d in decisions(out) if d["stage"] == "instance" and d["rule"] != "unparseable"]
    kinds, garbage = set(), 0
    for prompt, answers in by_prompt.items():
        classification = prompt.startswith(OUTPUT_FIRST_HEADER)
        parse = parsing.classification_instances if classification else parsing.generation_instances
        (first, choice), *again = answers
        assert first["temperature"] == 0
        single = choice["finish_reason"] == "stop" and len(parse(choice["text"])) == 1
        assert len(again) == single  # asked again exactly when the first gave one instance
        parsed = parse(choice["text"])
        garbage += not parsed
        if again:
            ((body, second),) = again
            assert {k: body[k] for k in AGAIN} == AGAIN and body["seed"] != first["seed"]
            parsed += parse(second["text"])
            kinds.add(classification)
        task = ids[prompt.rsplit("Task: ", 1)[1].strip()]
        assert [(d["input"], d["text"]) for d in records if d["source"]["instruction_id"] == task] == parsed
    assert kinds == {True, False}  # both kinds were asked again here
    assert garbage  # some first answers gave no instance here
    # off: no prompt twice, and fewer instances
    assert len(prompts) == len(set(prompts))
    on_kept = json.loads((out / "stats.json").read_text())["instances_kept"]
    assert json.loads((off / "stats.json").read_text())["instances_kept"] < on_kept


@pytest.mark.parametrize("cap", [1, 9])
def test_a_second_answer_cut_at_the_cap_marks_only_its_own_last_instance(tmp_path, seed_tasks, cap):
    """When the second answer to an instance prompt is cut at the token cap, only its own last instance
    can be cut short: the first answer ended on its own, so its instance is never dropped as truncated,
    whether the cut second answer parsed to nothing (cap 1) or to instances (cap 9)."""
    from jobs.method.prompts import parsing
    from jobs.method.prompts.layouts import OUTPUT_FIRST_HEADER

    with FakeLLM(Script(again_cap=cap)) as fake_llm:
        _, out = generate(
            tmp_path, fake_llm, seed_tasks, name="cut", concurrency=1, num_instructions=30, seed=4
        )
        script = fake_llm.script
        answers = [
            (body, json.loads(answer[3])["choices"][0])
            for (path, body), answer in zip(script.bodies, script.answers, strict=True)
            if path == "/completions" and "Task:" in body["prompt"] and body["prompt"].endswith("\n")
        ]
    kept = [json.loads(line) for line in (out / "instructions.jsonl").read_text().splitlines()]
    ids = {k["text"]: k["id"] for k in kept}
    by_task: dict[str, list] = {}
    for body, choice in answers:
        by_task.setdefault(ids[body["prompt"].rsplit("Task: ", 1)[1].strip()], []).append((body, choice))
    records = [d for d in decisions(out) if d["stage"] == "instance"]
    cut_empty = cut_parsed = 0
    for task, asked in by_task.items():
        if len(asked) != 2 or asked[1][1]["finish_reason"] != "length":
            continue
        (first_body, first), (_, second) = asked
        parse = (
            parsing.classification_instances
            if first_body["prompt"].startswith(OUTPUT_FIRST_HEADER)
            else (parsing.generation_instances)
        )
        own = len(parse(first["text"]))
        mine = [d for d in records if d["source"]["instruction_id"] == task and d["rule"] != "unparseable"]
        assert all(d["rule"] != "truncated" for d in mine[:own]), mine  # the first answer's instance
        if parse(second["text"]):
            cut_parsed += 1
            assert mine[-1]["rule"] == "truncated", mine  # the cut answer's own last instance
        else:
            cut_empty += 1
    assert cut_empty if cap == 1 else cut_parsed  # the case each cap is for happened here
