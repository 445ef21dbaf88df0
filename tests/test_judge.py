"""The LLM judge (recipe field judge_threshold): every instance the filters keep is scored 1-5 with a
rationale; those under the threshold are dropped with rule judge_low_score. Online, in chat with a
strict json_schema, in batch mode, resumed mid-pass; and its scores in stats, report and card."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from jobs.method.checkpoint import FileStore
from jobs.method.prompts import judge
from jobs.method.run import Canceled
from tests.fake_llm import FakeLLM, Script, judged
from tests.test_batch import RECIPE, drive, same_data
from tests.test_chat import chat_run
from tests.test_engine import decisions, generate, read_bytes


def test_a_verdict_is_read_from_each_kind_of_reply() -> None:
    continued = judge.read(" It is right.\nScore: 4", continued=True)
    assert continued == judge.Verdict(4, "It is right.")
    assert judge.read("Rationale: Off the task.\nScore: **2**") == judge.Verdict(2, "Off the task.")
    assert judge.read('{"rationale": "Wrong sum.", "score": 1}', structured=True) == judge.Verdict(
        1, "Wrong sum."
    )
    # no score, or one outside the rubric: unscored, the reply kept as the rationale
    assert judge.read(" I cannot tell.", continued=True) == judge.Verdict(None, "I cannot tell.")
    assert judge.read('{"rationale": "x", "score": 7}', structured=True).score is None
    assert judge.read('{"rationale": "x", "score": true}', structured=True).score is None
    assert judge.read("not json", structured=True) == judge.Verdict(None, "not json")
    assert len(judge.read("Rationale: " + "word " * 500 + "\nScore: 3").rationale) == judge.MAX_RATIONALE


def test_the_prompt_states_the_rubric_and_ends_where_the_model_writes() -> None:
    prompt = judge.completion_prompt("Add the numbers.", "2 and 3", "5")
    assert prompt.startswith(judge.RUBRIC)
    assert prompt.endswith("Instruction: Add the numbers.\nInput: 2 and 3\nResponse: 5\nRationale:")
    assert prompt.count("Score:") == len(judge.EXAMPLES)  # the demonstrations' scores only
    assert "Input:" not in judge.completion_prompt("Name a colour.", "", "Red").rsplit("Instruction:", 1)[1]


def test_a_judged_run_drops_what_scores_under_the_threshold_and_says_why(tmp_path, fake_llm, seed_tasks):
    plain_run, plain = generate(tmp_path, fake_llm, seed_tasks, name="plain")
    run, out = generate(tmp_path, fake_llm, seed_tasks, name="judged", judge_threshold=3)
    judged_records = [d for d in decisions(out) if d["detail"] and "judge_score" in d["detail"]]
    by_rule = Counter(d["rule"] for d in judged_records)
    assert by_rule["judge_low_score"] > 0 and by_rule["kept"] > 0
    for d in judged_records:
        rationale, score = judged(f"Response: {d['text']}\n")  # what the scripted judge answered
        assert d["detail"] == {"judge_score": score, "judge_rationale": rationale}
        assert d["rule"] == ("kept" if score >= 3 else "judge_low_score")
    # the judge only takes away: every instance the plain run kept, less those it scored low
    plain_kept_ids = {
        d["id"] for d in decisions(plain) if d["stage"] == "instance" and d["verdict"] == "kept"
    }
    assert {d["id"] for d in judged_records} == plain_kept_ids
    low = {d["id"] for d in judged_records if d["rule"] == "judge_low_score"}
    kept = {d["id"] for d in decisions(out) if d["stage"] == "instance" and d["verdict"] == "kept"}
    assert kept == plain_kept_ids - low
    assert sum(len(v) for v in run.checkpoint.instances.values()) == len(kept)
    # one request per instance the filters kept, counted as the stage `judge`
    assert run.usage.requests["judge"] == len(judged_records)
    assert plain_run.checkpoint.instructions == run.checkpoint.instructions
    # the distribution in stats, the report and the card; the threshold in run.json
    stats = json.loads((out / "stats.json").read_text())
    scores = Counter(str(d["detail"]["judge_score"]) for d in judged_records)
    assert stats["judge_scores"] == dict(sorted(scores.items()))
    assert stats["verdicts"]["instance"]["judge_low_score"] == len(low)
    report = json.loads((out / "report.json").read_text())["judge_scores"]
    assert report["counts"] == {str(s): scores.get(str(s), 0) for s in judge.SCORES}
    assert report["unscored"] == 0 and report["rubric"] == judge.RUBRIC
    assert report["mean"] == round(sum(int(s) * n for s, n in scores.items()) / len(judged_records), 3)
    assert "LLM judge: each instance the filters kept scored 1-5" in (out / "README.md").read_text()
    assert json.loads((out / "run.json").read_text())["config"]["judge_threshold"] == 3
    # a run without the judge records and reports none of it
    assert "judge_threshold" not in json.loads((plain / "run.json").read_text())["config"]
    assert "judge_scores" not in json.loads((plain / "stats.json").read_text())
    assert json.loads((plain / "report.json").read_text())["judge_scores"] is None


def test_threshold_one_scores_everything_and_drops_nothing(tmp_path, fake_llm, seed_tasks):
    _, plain = generate(tmp_path, fake_llm, seed_tasks, name="plain", num_instructions=6)
    _, out = generate(tmp_path, fake_llm, seed_tasks, name="one", num_instructions=6, judge_threshold=1)
    assert (out / "alpaca.json").read_bytes() == (plain / "alpaca.json").read_bytes()
    assert json.loads((out / "stats.json").read_text())["judge_scores"]["1"] > 0


@pytest.mark.parametrize("handled", ["generation", "judging"])
def test_a_run_stopped_in_either_pass_resumes_to_the_same_bytes(tmp_path, fake_llm, seed_tasks, handled):
    whole_run, whole = generate(tmp_path, fake_llm, seed_tasks, name="whole", judge_threshold=3)
    cp = whole_run.checkpoint
    # handled items before stage 3: stage-1 prompts (the default method, knn, asks nothing in stage 2)
    before = cp.next_prompt
    tasks = len(cp.instructions)
    stop_after = before + (tasks // 2 if handled == "generation" else tasks + tasks // 2)
    with pytest.raises(Canceled):
        generate(tmp_path, fake_llm, seed_tasks, "parts", stop_after, judge_threshold=3)
    stopped = FileStore(tmp_path / "parts" / "state").load()
    assert stopped.stage == "instances"
    assert (len(stopped.unjudged) == tasks) == (handled == "judging")
    assert 0 < len(stopped.instances if handled == "judging" else stopped.unjudged) < tasks
    _, resumed = generate(tmp_path, fake_llm, seed_tasks, name="parts", judge_threshold=3)
    assert read_bytes(resumed) == read_bytes(whole)


def test_chat_asks_with_a_strict_json_schema(tmp_path, seed_tasks) -> None:
    script = Script(strict_schemas=True)  # a schema Structured Outputs would refuse gets a 400
    with FakeLLM(script) as server:
        run, out = chat_run(tmp_path, server, seed_tasks, "chat", "json_schema", judge_threshold=3)
    formats = [b.get("response_format", {}).get("json_schema", {}) for b in script.chat_requests]
    asked = [f for f in formats if f.get("name") == "judge"]
    assert len(asked) == run.usage.requests["judge"] > 0
    assert all(f["strict"] is True and f["schema"] == judge.SCHEMA for f in asked)
    low = [d for d in decisions(out) if d["rule"] == "judge_low_score"]
    assert low and all(d["detail"]["judge_score"] < 3 and d["detail"]["judge_rationale"] for d in low)


def test_batch_mode_judges_in_a_round_of_its_own_and_makes_the_online_dataset(tmp_path, seed_tasks) -> None:
    recipe = {**RECIPE, "judge_threshold": 3}
    _, online = drive(tmp_path / "online", seed_tasks, Script(), "online", recipe=recipe)
    script = Script()
    _, out = drive(tmp_path / "batch", seed_tasks, script, "batch", recipe=recipe)
    same_data(online, out)
    assert any(d["rule"] == "judge_low_score" for d in decisions(out))
    # the judge's requests went together, after every instance request was answered
    stages = [
        {json.loads(line)["custom_id"].split("-")[0] for line in f["content"].splitlines()}
        for f in script.batches.files.values()
        if f["purpose"] == "batch"
    ]
    assert {"judge"} in stages and stages[-1] == {"judge"}
    assert sum(1 for s in stages if "judge" in s) == 1
