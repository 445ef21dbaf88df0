"""Stage 2 from label log-probabilities: the arithmetic, exact decisions from planted log-probabilities
on the scripted endpoint, the fallback to the text method, and the path against the real local model."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

from api_spec.jobs import JobCreateSchema
from jobs.method.checkpoint import FileStore
from jobs.method.endpoint import Endpoint
from jobs.method.outputs import exports
from jobs.method.prompts import parsing
from jobs.method.prompts.layouts import one_line
from jobs.method.recipe import Execution, Recipe
from jobs.method.run import Run
from jobs.method.seed_tasks import Instance, SeedTask
from jobs.method.stages import classification as clf
from jobs.method.transport import LLM
from jobs.tools.generate import main as cli
from tests.conftest import fake_endpoint
from tests.fake_llm import FakeLLM, Script

# content-free inputs: P(Yes) normalised 0.75, 0.5, 0.75 -> mean 2/3 -> shift log 2
CONTENT_FREE = {
    "N/A": (math.log(0.6), math.log(0.2)),
    "": (-0.7, -0.7),
    "[MASK]": (math.log(0.3), math.log(0.1)),
}
SHIFT = math.log(2)
# seed tasks scored to fit the threshold (no demonstrations: demo_chars=0); calibrated margins
# 0.307, -0.093 (classification) and -0.493, -1.093 (others): the threshold is midway, -0.293
SEEDS = {
    "Label the sentiment of the review.": (True, (-0.2, -1.2)),
    "Is the statement true or false?": (True, (-0.5, -1.1)),
    "Write a story about a dragon.": (False, (-0.6, -0.8)),
    "Plan a trip to the mountains.": (False, (-0.9, -0.5)),
}
TASKS = {  # raw margin 0.5: Yes raw, No calibrated (-0.193), Yes fitted (> -0.293)
    "Decide whether the email is spam.": (-0.5, -1.0),
    # raw margin 0.3: Yes raw, No calibrated (-0.393), No fitted
    "Say whether the number is even.": (-0.7, -1.0),
    # raw margin -0.8: No throughout
    "Summarize the article in one line.": (-1.0, -0.2),
}
EXPECTED = {
    "text": ["yes", "yes", "no"],
    "logprobs": ["yes", "yes", "no"],
    "calibrated": ["no", "no", "no"],
    "fitted": ["yes", "no", "no"],
}


def seed_set() -> list[SeedTask]:
    return [
        SeedTask(f"s{i}", text, (Instance("", "x"),), is_clf)
        for i, (text, (is_clf, _)) in enumerate(SEEDS.items())
    ]


def planted() -> dict[str, tuple[float, float]]:
    return {**CONTENT_FREE, **{t: pair for t, (_, pair) in SEEDS.items()}, **TASKS}


def classify(
    tmp: Path, endpoint: Endpoint, method: str, seeds: list[SeedTask] | None = None, tasks=TASKS, **cfg
) -> Run:
    execution = Execution(concurrency=cfg.pop("concurrency", 2))
    config = Recipe(classification_method=method, demo_chars=cfg.pop("demo_chars", 0), **cfg)
    run = Run("r", seeds or seed_set(), config, endpoint, FileStore(tmp), execution=execution)
    run.checkpoint.instructions = [{"id": f"i{n}", "text": text} for n, text in enumerate(tasks)]

    async def go() -> None:
        llm = LLM(endpoint, execution.concurrency, run.usage)
        try:
            await clf.run_stage(run, llm)
        finally:
            await llm.close()

    asyncio.run(go())
    return run


def labels(run: Run) -> list[str]:
    return [run.checkpoint.classification[f"i{n}"]["label"] for n in range(len(TASKS))]


def test_arithmetic_by_hand() -> None:
    # spellings of one label add up; a label missing from the alternatives gets the least listed
    top = {" Yes": math.log(0.3), "Yes": math.log(0.1), " No": math.log(0.4), "\n": math.log(0.05)}
    yes, no = clf.label_logprobs(top)
    assert yes == pytest.approx(math.log(0.4)) and no == pytest.approx(math.log(0.4))
    assert clf.label_logprobs({" Yes": -0.1, "\n": -4.0}) == pytest.approx((-0.1, -4.0))
    assert clf.content_free_shift(list(CONTENT_FREE.values())) == pytest.approx(SHIFT)
    assert clf.content_free_shift([(-1.0, -1.0)]) == pytest.approx(0.0)
    margins = [p[0] - p[1] - SHIFT for _, p in SEEDS.values()]
    assert clf.fit_threshold(margins, [c for c, _ in SEEDS.values()]) == pytest.approx(0.4 - SHIFT)
    assert clf.balanced_accuracy([True, False, False, False], [True, True, False, False]) == pytest.approx(
        5 / 6
    )
    assert clf.balanced_accuracy([True, False], [False, False]) == 0.5
    # all-Yes (4.0) and all-No (7.0) tie: the one nearer zero
    assert clf.fit_threshold([5.0, 6.0], [True, False]) == 4.0


@pytest.mark.parametrize("method", list(EXPECTED))
def test_planted_logprobs_decide_exactly(tmp_path: Path, method: str) -> None:
    with FakeLLM(Script(logprobs="top", label_logprobs=planted())) as server:
        run = classify(tmp_path, fake_endpoint(server), method)
    assert labels(run) == EXPECTED[method]
    first = run.checkpoint.classification["i0"]
    assert first["raw"].strip() == "Yes" and first["method"] == method
    if method == "text":
        assert "margin" not in first and "logprob_yes" not in first
        return
    assert (first["logprob_yes"], first["logprob_no"]) == (-0.5, -1.0)
    shift = 0.0 if method == "logprobs" else SHIFT
    assert first["margin"] == pytest.approx(0.5 - shift, abs=1e-6)
    if method == "fitted":
        assert first["threshold"] == pytest.approx(0.4 - SHIFT, abs=1e-6)
    summary = exports.stats(run)["classification_method"]
    assert summary["methods"] == {method: 3} and summary["fallbacks"] == {}
    assert exports.run_record(run)["classification_method"] == summary


def knn_seeds(texts: dict[str, bool]) -> list[SeedTask]:
    return [
        SeedTask(f"k{i}", text, (Instance("", "x"),), is_clf)
        for i, (text, is_clf) in enumerate(texts.items())
    ]


def test_knn_vote_by_hand() -> None:
    # two words a task; the verb is shared within a class, the other word is unique to its task
    seeds = knn_seeds(
        {"classify a": True, "classify b": True, "write c": False, "write d": False, "write e": False}
    )
    knn = clf.SeedNeighbours(seeds)
    idf_c, idf_w, idf_x = math.log(6 / 3) + 1, math.log(6 / 4) + 1, math.log(6 / 2) + 1
    s_yes = idf_c**2 / (idf_c**2 + idf_x**2)  # cosine of "classify a" and "classify b"
    s_no = idf_w**2 / (idf_w**2 + idf_x**2)
    # "classify" alone: cosine idf_c / |classify a| with each Yes task, 0 with the others; each
    # vote divided by its class's size (2)
    score, nearest = knn.score("Classify!")
    assert score == pytest.approx(2 * (idf_c / math.sqrt(idf_c**2 + idf_x**2)) / 2)
    assert [n["id"] for n in nearest[:2]] == ["k0", "k1"] and nearest[0]["is_classification"] is True
    assert len(nearest) == clf.EVIDENCE_NEIGHBOURS
    # leave-one-out: a Yes task's only non-zero neighbour is the other Yes one (s_yes / 2), a No
    # task's the two other No ones (-2 s_no / 3); the threshold is midway
    assert knn.fit_threshold() == pytest.approx((s_yes / 2 - 2 * s_no / 3) / 2)
    # only the k nearest vote
    assert clf.SeedNeighbours(seeds, k=1).score("classify a")[0] == pytest.approx(1 / 2)


def test_knn_divides_each_vote_by_its_class_size() -> None:
    # "sort" is equally similar to every seed task: 2 Yes and 4 No votes cancel out
    seeds = knn_seeds({f"sort {w}": i < 2 for i, w in enumerate(["a", "b", "c", "d", "e", "f"])})
    assert clf.SeedNeighbours(seeds).score("sort")[0] == pytest.approx(0.0, abs=1e-12)
    assert clf.SeedNeighbours(seeds).score("sort a")[0] > 0 > clf.SeedNeighbours(seeds).score("sort c")[0]


KNN_TASKS = {  # worded like the Yes seed tasks, like the No ones
    "Label the statement as true or false.": "yes",
    "Write a story about a trip to the mountains.": "no",
    "The sentiment of a trip.": "no",  # a vote of 0.004: above zero, below the fitted threshold (0.018)
}


def test_knn_asks_the_model_nothing(tmp_path: Path) -> None:
    """knn reads no answer of the model, so stage 2 sends no request at all; each answer says it was
    not asked (raw null, asked false)."""
    with FakeLLM(Script(logprobs="top", label_logprobs=planted())) as server:
        run = classify(tmp_path, fake_endpoint(server), "knn", tasks=KNN_TASKS)
        bodies = [body for _, body in server.script.bodies]
    assert bodies == [] and run.usage.requests == {}
    answers = [run.checkpoint.classification[f"i{n}"] for n in range(3)]
    assert [a["label"] for a in answers] == list(KNN_TASKS.values())
    knn = clf.SeedNeighbours(seed_set())
    for answer, text in zip(answers, KNN_TASKS, strict=True):
        assert answer["method"] == "knn" and answer["threshold"] == pytest.approx(knn.fit_threshold())
        assert answer["score"] == pytest.approx(knn.score(text)[0], abs=1e-6)
        assert answer["neighbours"] == knn.score(text)[1]
        assert answer["raw"] is None and answer["asked"] is False
        assert "margin" not in answer
    summary = exports.run_record(run)["classification_method"]
    assert summary["methods"] == {"knn": 3} and summary["threshold"] == answers[0]["threshold"]
    assert "selection" not in summary


def perfect(tasks: list[SeedTask]) -> dict[str, tuple[float, float]]:
    """Label log-probabilities that answer every task right (and say nothing on content-free inputs)."""
    return {one_line(t.instruction): (-0.1, -2.5) if t.is_classification else (-2.5, -0.1) for t in tasks} | {
        text: (-0.7, -0.7) for text in CONTENT_FREE
    }


@pytest.mark.parametrize("logprobs", ["top", "none", "refuse"])
def test_auto_asks_a_model_that_knows_the_seed_tasks(
    tmp_path: Path, seed_tasks: list[SeedTask], logprobs: str
) -> None:
    """An endpoint answering every seed task right scores 1.0 with every method that reads it, more
    than the knn vote: auto picks the cheapest of those (text), and records the table once."""
    with FakeLLM(Script(logprobs=logprobs, label_logprobs=perfect(seed_tasks))) as server:
        run = classify(tmp_path, fake_endpoint(server), "auto", seed_tasks, KNN_TASKS)
    selection = run.checkpoint.calibration["selection"]
    fit = clf.fit_tasks(run)
    assert selection["chosen"] == "text" and selection["tasks"] == len(fit) == clf.FIT_TASKS
    assert selection["classification_tasks"] == sum(t.is_classification for t in fit) == clf.FIT_TASKS // 2
    table = selection["methods"]
    models = ["text", "logprobs", "calibrated", "fitted"] if logprobs == "top" else ["text"]
    assert list(table) == ["knn", *models]
    for method in models:
        assert table[method] == {"balanced_accuracy": 1.0, "tp": 20, "fn": 0, "tn": 20, "fp": 0}
    assert 0.5 < table["knn"]["balanced_accuracy"] < 1.0
    if logprobs != "top":
        assert set(selection["unavailable"]) == {"logprobs", "calibrated", "fitted"}
        why = "the endpoint gave no" if logprobs == "none" else "log-probabilities failed: "
        assert all(said.startswith(why) for said in selection["unavailable"].values())
    if logprobs == "refuse":  # refused at once: the fit tasks are then asked for their text alone
        assert run.usage.requests[clf.SELECTION_STAGE] == clf.FIT_TASKS
        assert "logprobs" in run.usage.dropped  # recorded: a resumed run does not ask again
    else:  # the content-free inputs and the fit tasks, as one round
        asked = len(CONTENT_FREE) + clf.FIT_TASKS
        assert run.usage.requests == {clf.SELECTION_STAGE: asked, clf.STAGE: len(KNN_TASKS)}
    for answer in run.checkpoint.classification.values():
        assert answer["method"] == "text" and "selection" not in answer
        assert answer["label"] == parsing.classification(answer["raw"])
    summary = exports.stats(run)["classification_method"]
    assert summary["methods"] == {"text": 3} and summary["selection"] == selection
    assert exports.run_record(run)["classification_method"] == summary


def test_auto_keeps_knn_on_a_model_that_answers_at_random(tmp_path: Path, seed_tasks: list[SeedTask]) -> None:
    """Label log-probabilities drawn at random: no reading of them beats the vote of the seed tasks, and
    stage 2 then sends nothing more."""
    with FakeLLM(Script(logprobs="top")) as server:
        run = classify(tmp_path, fake_endpoint(server), "auto", seed_tasks, KNN_TASKS)
        requests = server.script.counts["requests"]
    selection = run.checkpoint.calibration["selection"]
    table = selection["methods"]
    assert selection["chosen"] == "knn" and list(table) == ["knn", "text", "logprobs", "calibrated", "fitted"]
    assert "unavailable" not in selection
    for method in ("text", "logprobs", "calibrated", "fitted"):
        assert table[method]["balanced_accuracy"] < table["knn"]["balanced_accuracy"]
    assert requests == len(CONTENT_FREE) + clf.FIT_TASKS  # the selection's, and none for the tasks
    knn = clf.SeedNeighbours(seed_tasks)
    for answer in run.checkpoint.classification.values():
        assert answer["method"] == "knn" and answer["threshold"] == pytest.approx(knn.fit_threshold())


def test_selection_answers_each_task_without_its_own_label(monkeypatch: pytest.MonkeyPatch) -> None:
    """By hand on four fit tasks: fitted thresholds each on the other three, knn votes with the other
    seed tasks; a method costlier to run than another must beat it by more than MARGIN."""
    seeds, free = seed_set(), list(CONTENT_FREE.values())  # Yes, Yes, No, No; shift log 2
    calibrated = [1.0, -0.3, 0.5, -1.0]
    pairs = [(-0.1, -0.1 - m - SHIFT) for m in calibrated]
    got = clf.select(seeds, seeds, [True, True, False, True], pairs, free)  # the text: wrong on the last
    table = got["selection"]["methods"]
    assert table["text"] == {"balanced_accuracy": 0.75, "tp": 2, "fn": 0, "tn": 1, "fp": 1}
    assert table["logprobs"] == table["text"]  # raw margins 1.69, 0.39, 1.19, -0.31
    assert table["calibrated"] == {"balanced_accuracy": 0.5, "tp": 1, "fn": 1, "tn": 1, "fp": 1}
    # each left out, the others' best threshold: -0.65 (s0 Yes), 0.75 (s1 No), -0.65 (s2 Yes), 0.75
    # (s3 No); fitted on all four, 0.75 would answer all four right
    assert clf.held_out_thresholds(calibrated, [True, True, False, False], range(4)) == pytest.approx(
        [-0.65, 0.75, -0.65, 0.75]
    )
    assert table["fitted"] == {"balanced_accuracy": 0.5, "tp": 1, "fn": 1, "tn": 1, "fp": 1}
    assert table["knn"]["balanced_accuracy"] < 0.75
    assert got == {"method": "text", "selection": got["selection"]} and got["selection"]["chosen"] == "text"
    monkeypatch.setattr(clf, "MARGIN", 0.3)  # text's lead over knn (0.25) is now within the noise
    assert clf.select(seeds, seeds, [True, True, False, True], pairs, free)["selection"]["chosen"] == "knn"
    monkeypatch.undo()
    # seed tasks whose wording separates the classes: knn answers each right without it, and wins
    worded = knn_seeds(
        {"classify a": True, "classify b": True, "write c": False, "write d": False, "write e": False}
    )
    got = clf.select(worded, worded, [True, False, False, False, False], None, None, "none given")
    assert got["selection"]["methods"]["knn"]["balanced_accuracy"] == 1.0
    assert got["selection"]["methods"]["text"]["balanced_accuracy"] == 0.75
    assert got["selection"]["unavailable"] == dict.fromkeys(
        ("logprobs", "calibrated", "fitted"), "none given"
    )
    assert got["method"] == "knn" and got["threshold"] == clf.SeedNeighbours(worded).fit_threshold()


def test_auto_without_both_classes_outside_the_demonstrations_asks_nothing(tmp_path: Path) -> None:
    others = [t for t in seed_set() if not t.is_classification]
    with FakeLLM(Script(logprobs="top")) as server:
        run = classify(tmp_path, fake_endpoint(server), "auto", others, KNN_TASKS)
        assert server.script.counts.get("requests", 0) == len(KNN_TASKS)  # the tasks' own only
    assert run.checkpoint.calibration["selection"] == {
        "chosen": "text",  # knn's fallback: it needs 2 seed tasks of each class
        "skipped": "the seed tasks outside the demonstrations lack a class",
    }
    assert all(
        a["method"] == "text" and "2 seed tasks" in a["fallback"]
        for a in run.checkpoint.classification.values()
    )


def test_knn_needs_two_seed_tasks_of_each_class(tmp_path: Path) -> None:
    one_yes = [t for t in seed_set() if not t.is_classification or t.id == "s0"]
    with FakeLLM(Script()) as server:
        run = classify(tmp_path, fake_endpoint(server), "knn", one_yes, KNN_TASKS)
    for answer in run.checkpoint.classification.values():
        assert answer["method"] == "text" and "2 seed tasks of each class" in answer["fallback"]
        assert answer["label"] == parsing.classification(answer["raw"])


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("none", "the endpoint gave no log-probabilities"), ("refuse", "log-probabilities failed")],
)
def test_without_logprobs_falls_back_to_text(tmp_path: Path, mode: str, reason: str) -> None:
    with FakeLLM(Script(logprobs=mode, label_logprobs=planted())) as server:
        run = classify(tmp_path, fake_endpoint(server), "fitted")
    # one request finds out (a refusal is not retried), then one a task
    assert server.script.counts["requests"] == 1 + 3
    assert labels(run) == EXPECTED["text"]
    for answer in run.checkpoint.classification.values():
        assert answer["method"] == "text" and answer["fallback"].startswith(reason)
        assert "margin" not in answer
    stats = exports.stats(run)["classification_method"]
    assert stats["methods"] == {"text": 3}
    assert stats["fallbacks"] and all(r.startswith(reason) for r in stats["fallbacks"])


def test_an_answer_without_logprobs_is_decided_by_its_text(tmp_path: Path) -> None:
    # 3 content-free and 4 fit requests, then the first task's answer is garbage with no log-probabilities
    script = Script(logprobs="top", label_logprobs=planted(), schedule=[None] * 7 + ["garbage"])
    with FakeLLM(script) as server:
        run = classify(tmp_path, fake_endpoint(server), "fitted", concurrency=1)
    first = run.checkpoint.classification["i0"]
    assert first["method"] == "text" and first["label"] == "unparseable" and "margin" not in first
    assert "no log-probabilities for this answer" in first["fallback"]
    assert labels(run)[1:] == EXPECTED["fitted"][1:]
    assert exports.stats(run)["classification_method"]["methods"] == {"text": 1, "fitted": 2}


def test_chat_logprobs_and_structured_fallback(tmp_path: Path) -> None:
    with FakeLLM(Script(logprobs="top", label_logprobs=planted())) as server:
        run = classify(tmp_path / "a", fake_endpoint(server, api="chat"), "calibrated")
        assert labels(run) == EXPECTED["calibrated"]
        assert run.checkpoint.classification["i0"]["margin"] == pytest.approx(0.5 - SHIFT, abs=1e-6)
        structured = fake_endpoint(server, api="chat", response_format="json_schema")
        run = classify(tmp_path / "b", structured, "calibrated")
    answer = run.checkpoint.classification["i0"]
    assert answer["method"] == "text" and "structured" in answer["fallback"]


def test_resume_reuses_the_calibration(tmp_path: Path) -> None:
    with FakeLLM(Script(logprobs="top", label_logprobs=planted())) as server:
        endpoint = fake_endpoint(server)
        run = classify(tmp_path, endpoint, "fitted")
        first = len(server.script.received)
        # a resumed run with one answer missing scores that one only: no content-free or fit requests
        del run.checkpoint.classification["i1"]
        run.commit()
        again = classify(tmp_path, endpoint, "fitted")
        assert len(server.script.received) == first + 1
    assert labels(again) == EXPECTED["fitted"]


def test_fit_tasks_leave_out_the_demonstrations(tmp_path: Path, seed_tasks: list[SeedTask]) -> None:
    run = Run("r", seed_tasks, Recipe(), Endpoint("http://127.0.0.1:9/v1", "m"), FileStore(tmp_path))
    fit = clf.fit_tasks(run)
    shown = run.prompts.classification_prefix
    assert len(fit) == clf.FIT_TASKS and any(t.is_classification for t in fit)
    assert all(f"Task: {one_line(t.instruction)}\n" not in shown for t in fit)


def test_the_field_in_recipe_api_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="classification_method"):
        Recipe.build({"classification_method": "coin"})
    assert Recipe.build({"classification_method": "text"}).classification_method == "text"
    body = {"seed_set_id": "a" * 64, "num_instructions": 1}
    assert JobCreateSchema().load(body)["recipe"].classification_method == "auto"
    errors = JobCreateSchema().validate({**body, "classification_method": "coin"})
    assert "classification_method" in errors
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in seed_set()))
    with FakeLLM(Script(logprobs="top", label_logprobs=planted())) as server:
        argv = [
            "generate",
            "--seed-tasks",
            str(seeds),
            "--num-instructions",
            "2",
            "--base-url",
            server.base_url,
        ]
        assert cli([*argv, "--out", str(tmp_path / "out"), "--classification-method", "calibrated"]) == 0
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["config"]["classification_method"] == "calibrated"
    assert set(record["classification_method"]["methods"]) == {"calibrated"}
    rows = [json.loads(line) for line in (tmp_path / "out" / "instructions.jsonl").read_text().splitlines()]
    assert rows
    for row in rows:
        detail = row["classification_detail"]
        assert detail["method"] == "calibrated" and detail["shift"] == pytest.approx(SHIFT)
        margin = detail["logprob_yes"] - detail["logprob_no"] - SHIFT
        assert detail["margin"] == pytest.approx(margin, abs=1e-5)
        assert row["classification"] == ("yes" if margin > 0 else "no")


# Greedy decoding picks the likeliest single token, while a label's log-probability adds up its
# spellings (" No" and " NO"): the two can disagree at a near tie, and which side of it an answer falls
# on depends on the build (a native and a generic x86-64 build of llama-server move these gaps by up to
# 0.35 nats). Past this gap they agree: near a tie, every other listed token carried under 0.03 nats.
TIE_NATS = 0.05


@pytest.mark.model
def test_real_model_calibrated_answers(
    tmp_path: Path, seed_tasks: list[SeedTask], local_model: Endpoint
) -> None:
    """A few tasks through the embedded model: every answer carries both log-probabilities and the
    margin they give, the label follows the margin, and the greedy text is the likelier label wherever
    the two are more than TIE_NATS apart."""
    # gaps of 0.09 to 1.25 nats either way on a native and a generic build, but for the poem: -0.06
    # and -0.0003 (greedy Yes there)
    held = [
        "Classify the sentiment of the tweet as positive or negative.",
        "Decide whether the email is spam or not spam.",
        "Write a poem about rain.",
        "Write a short story about a dragon.",
        "Write a letter to your landlord asking for a repair.",
        "Write a blog post about learning to cook.",
    ]
    run = classify(tmp_path, local_model, "calibrated", seed_tasks, held, demo_chars=4000, concurrency=1)
    summary = exports.stats(run)["classification_method"]
    assert summary["methods"] == {"calibrated": len(held)} and summary["fallbacks"] == {}
    decisive = []
    for answer in run.checkpoint.classification.values():
        margin = answer["logprob_yes"] - answer["logprob_no"] - summary["shift"]
        assert answer["margin"] == pytest.approx(margin, abs=1e-5)
        if abs(margin) > 1e-5:  # the label comes from the unrounded margin
            assert answer["label"] == ("yes" if margin > 0 else "no")
        assert answer["logprob_yes"] < 0 and answer["logprob_no"] < 0
        gap = answer["logprob_yes"] - answer["logprob_no"]
        if abs(gap) > TIE_NATS:
            assert parsing.classification(answer["raw"]) == ("yes" if gap > 0 else "no"), answer
            decisive.append(gap > 0)
    # enough answers far from a tie, of both labels, for the comparison to mean something
    assert len(decisive) >= 3 and set(decisive) == {True, False}, decisive


def test_through_the_service(client, redis, worker_env, fake_llm) -> None:
    """The job body's field reaches the run (real Redis, S3 and RQ worker code; the scripted endpoint
    gives log-probabilities), and run.json and stats.json record the method; a bad value is a 422
    naming the field."""
    import httpx

    from tests.test_api import _file_url, make_seed_set, run_job

    fake_llm.script.logprobs = "top"  # the profile's endpoint
    sid = make_seed_set(client)
    bad = client.post(
        "/v1/jobs", json={"seed_set_id": sid, "num_instructions": 2, "classification_method": "x"}
    )
    assert bad.status_code == 422 and "classification_method" in {e["field"] for e in bad.json["errors"]}
    job = run_job(client, redis, sid, num_instructions=3, classification_method="calibrated")
    assert job["state"] == "succeeded", job
    record = json.loads(httpx.get(_file_url(client, job["id"], "run.json")).content)
    stats = json.loads(httpx.get(_file_url(client, job["id"], "stats.json")).content)
    assert record["config"]["classification_method"] == "calibrated"
    assert record["classification_method"]["methods"] == {"calibrated": 3}
    assert stats["classification_method"] == record["classification_method"]
