"""Decontamination: the reference-set resource (uploads checked line by line), the n-gram and ROUGE-L
index, and jobs whose instructions and instances overlapping a reference item are dropped as
`contaminated` with the item in the decision."""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import replace

import httpx
import pytest
from rq import Queue, SimpleWorker

from client.__main__ import main as cli
from jobs.method.recipe import Recipe
from jobs.method.similarity import ReferenceIndex, tokenize
from jobs.method.stages.filters import contamination_check, filter_instances
from jobs.tools.local_stack import gunicorn
from service.app import create_app
from tests.conftest import env_for, work
from tests.fake_llm import TOPICS
from tests.test_api import SEEDS, make_seed_set

QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)
# a generated instruction that copies 13 words of it in a row, and one that only resembles another item
COPIED = "Solve this: then she sold half as many clips in May. How many clips did Natalia sell?"
SIMILAR_ITEM = "Write a short story about a dragon who learns to fly"
RESEMBLES = "Write a short story about a dragon who learns to swim"


def jsonl(*items: dict) -> bytes:
    return "".join(json.dumps(i) + "\n" for i in items).encode()


def upload(client, data: bytes, name: str = "gsm8k"):
    return client.post(f"/v1/reference-sets?name={name}", data=data, content_type="application/x-ndjson")


def test_the_index_finds_shared_runs_and_rouge_l_neighbours() -> None:
    index = ReferenceIndex(13, 0.7)
    index.add("s", "q1", QUESTION)
    index.add("s", "q2", SIMILAR_ITEM)
    hit = index.check(COPIED)
    assert hit is not None and hit.index == 0 and hit.how == "ngram"
    assert hit.ngram == " ".join(tokenize("then she sold half as many clips in May. How many clips did"))
    # case and punctuation do not hide a run: rouge-score's tokens
    assert index.check(QUESTION.upper().replace(",", " ;")).how == "ngram"  # type: ignore[union-attr]
    # one word in every 12 changed: no run of 13 (ROUGE-L still finds it)
    words = QUESTION.split()
    broken = " ".join(w if i % 12 else "zzz" for i, w in enumerate(words))
    assert index.check(broken).how == "rouge_l"  # type: ignore[union-attr]
    runs_only = ReferenceIndex(13, None)
    runs_only.add("s", "q1", QUESTION)
    assert runs_only.check(broken) is None and runs_only.check(COPIED) is not None
    near = index.check(RESEMBLES)
    assert near is not None and near.index == 1 and near.how == "rouge_l"
    assert near.score == pytest.approx(10 / 11)  # 10 of 11 words in order
    assert ReferenceIndex(13, None).check(RESEMBLES) is None  # no ROUGE-L rule
    off = ReferenceIndex(0, None)
    off.add("s", "q1", QUESTION)
    assert off.check(QUESTION) is None  # no rule at all


def test_a_hash_collision_is_never_a_match() -> None:
    """Hashes that collide for every run starting with the same word: only the word-for-word check tells
    the runs apart."""

    class Colliding(ReferenceIndex):
        def _hashes(self, words: list[str]) -> list[int]:
            return [len(words[i]) for i in range(len(words) - self.n + 1)]

    index = Colliding(3, None)
    index.add("s", "a", "alpha beta gamma delta")
    index.add("s", "b", "alpha zeta eta theta")
    assert index.check("alpha beta omega") is None
    hit = index.check("x alpha zeta eta")
    assert hit is not None and hit.index == 1 and hit.ngram == "alpha zeta eta"


def test_many_planted_runs_are_all_found() -> None:
    """2,000 reference items of random words; 300 texts each carrying 13 words of one item among
    others, 300 without: every planted one is found, with its item, and no other."""
    rng = random.Random(7)
    vocabulary = [f"w{i}" for i in range(5000)]
    items = [" ".join(rng.choices(vocabulary, k=rng.randint(14, 60))) for _ in range(2000)]
    index = ReferenceIndex(13, None)
    for i, text in enumerate(items):
        index.add("s", str(i), text)
    planted = []
    for _ in range(300):
        item = rng.randrange(len(items))
        words = items[item].split()
        start = rng.randrange(len(words) - 12)
        run = words[start : start + 13]
        text = " ".join(["q1", "q2", *run, "q3"])
        planted.append((item, text))
    clean = [" ".join(rng.choices(vocabulary, k=30)) for _ in range(300)]
    for _, text in planted:
        hit = index.check(text)
        assert hit is not None and " ".join(index.items[hit.index][2].split()).find(hit.ngram) >= 0  # type: ignore[arg-type]
    assert sum(index.check(text) is not None for text in clean) == 0


def test_instances_are_checked_input_then_output() -> None:
    index = ReferenceIndex(3, None)
    index.add("set", "i1", "gardening and chess")
    check = contamination_check(index)
    parsed = [("Gardening and chess!", "an answer"), ("", "about gardening and chess"), ("x", "y")]
    outcomes = filter_instances(parsed, False, 5, random.Random(0), check)
    assert [rule for rule, _ in outcomes] == ["contaminated", "contaminated", "kept"]
    assert outcomes[0][1] == {
        "reference_set": "set",
        "reference_id": "i1",
        "reference_text": "gardening and chess",
        "ngram": "gardening and chess",
        "field": "input",
    }
    assert outcomes[1][1]["field"] == "output"


def test_reference_sets_upload_list_get_delete(client) -> None:
    data = jsonl({"text": QUESTION, "answer": "72"}, {"id": "story", "text": SIMILAR_ITEM})
    r = upload(client, data)
    assert r.status_code == 201, r.json
    created = r.json
    assert created["items"] == 2 and created["name"] == "gsm8k" and len(created["id"]) == 64
    assert upload(client, data).status_code == 200  # the same items: the same set
    listed = client.get("/v1/reference-sets").json
    assert [s["id"] for s in listed["items"]] == [created["id"]]
    assert client.get(f"/v1/reference-sets/{created['id']}").json == created
    assert client.delete(f"/v1/reference-sets/{created['id']}").status_code == 204
    assert client.get(f"/v1/reference-sets/{created['id']}").status_code == 404
    assert client.delete(f"/v1/reference-sets/{created['id']}").status_code == 404


def test_a_bad_upload_names_every_line_and_field(client, settings) -> None:
    bad = b'{"text": "fine"}\nnot json\n[1]\n{"text": "   "}\n{"id": "a", "text": "x"}\n'
    bad += b'{"id": "a", "text": "y"}\n{"txt": "typo"}\n\xff\xfe\n'
    r = upload(client, bad)
    assert r.status_code == 422 and r.content_type == "application/problem+json"
    got = {(e["line"], e["field"]) for e in r.json["errors"]}
    assert got == {(2, "(line)"), (3, "(line)"), (4, "text"), (6, "id"), (7, "text"), (8, "(line)")}
    assert upload(client, b"").json["errors"][0]["field"] == "items"
    assert upload(client, b'{"text": "x"}', name="").status_code == 422
    r = client.post("/v1/reference-sets", json={"items": []})
    assert r.status_code == 415
    many = jsonl(*({"text": f"item {i}"} for i in range(3)))
    small = create_app(replace(settings, max_reference_items=2), configure_logging=False).test_client()
    small.environ_base.update(client.environ_base)
    r = upload(small, many)
    assert r.status_code == 422 and r.json["errors"] == [
        {"line": 3, "field": "(file)", "message": "more than 2 items"}
    ]


def test_a_job_drops_what_overlaps_its_reference_sets(client, redis, fake_llm, worker_env) -> None:
    """Planted instructions: one copies 13 words of a reference question, one resembles another item by
    ROUGE-L; the scripted model's instance inputs are `topic and topic`, every pair of which is a
    reference item."""
    fake_llm.script.plant = [COPIED, RESEMBLES]
    pairs = [{"id": f"{a}+{b}", "text": f"{a} and {b}"} for a, b in itertools.product(TOPICS, TOPICS)]
    questions = upload(
        client, jsonl({"id": "q1", "text": QUESTION}, {"id": "story", "text": SIMILAR_ITEM})
    ).json
    topics = upload(client, jsonl(*pairs), name="topics").json
    sid = make_seed_set(client)
    body = {"seed_set_id": sid, "num_instructions": 6, "seed": 2}
    body["decontaminate_against"] = [questions["id"], topics["id"], questions["id"]]
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.json
    job_id = r.json["id"]
    assert r.json["config"]["decontaminate_against"] == [questions["id"], topics["id"]]
    assert (
        r.json["config"]["contamination_ngram"] == 13 and r.json["config"]["contamination_threshold"] == 0.7
    )
    # named by an unfinished job: not deleted
    gone = client.delete(f"/v1/reference-sets/{questions['id']}")
    assert gone.status_code == 409 and job_id in gone.json["detail"]
    work(redis)
    assert client.get(f"/v1/jobs/{job_id}").json["state"] == "succeeded"
    dropped = client.get(
        f"/v1/jobs/{job_id}/decisions", query_string={"rule": "contaminated", "limit": 500}
    ).json
    instructions = {d["text"]: d["detail"] for d in dropped["items"] if d["stage"] == "instruction"}
    copied = instructions[COPIED]
    assert copied["reference_set"] == questions["id"] and copied["reference_id"] == "q1"
    assert copied["reference_text"] == QUESTION and copied["ngram"] in " ".join(tokenize(QUESTION))
    resembles = instructions[RESEMBLES]
    assert resembles["reference_id"] == "story" and resembles["score"] > 0.7 and "ngram" not in resembles
    instances = [d for d in dropped["items"] if d["stage"] == "instance"]
    # three words: shorter than a run, found by ROUGE-L
    assert instances and all(
        d["detail"]["field"] == "input" and d["detail"]["score"] == 1.0 for d in instances
    )
    assert all(d["detail"]["reference_text"] == d["input"] for d in instances)
    kept = client.get(f"/v1/jobs/{job_id}/decisions", query_string={"stage": "instance", "rule": "kept"}).json
    assert all(" and " not in d["input"] for d in kept["items"])
    # finished: the set may go
    assert client.delete(f"/v1/reference-sets/{questions['id']}").status_code == 204


def test_a_job_naming_an_unknown_reference_set(client) -> None:
    sid = make_seed_set(client)
    body = {"seed_set_id": sid, "num_instructions": 2, "decontaminate_against": ["0" * 64]}
    assert client.post("/v1/jobs", json=body).status_code == 404
    r = client.post("/v1/jobs", json={**body, "num_instructions": 0})
    assert r.status_code == 422
    assert {e["field"] for e in r.json["errors"]} >= {"decontaminate_against[0]"}
    r = client.post("/v1/jobs", json={**body, "decontaminate_against": ["nope"], "contamination_ngram": -1})
    assert r.status_code == 422
    assert {e["field"] for e in r.json["errors"]} == {"decontaminate_against[0]", "contamination_ngram"}


def test_recipe_limits() -> None:
    with pytest.raises(ValueError, match="contamination_ngram"):
        Recipe.build({"contamination_ngram": 100})
    assert Recipe.build({"contamination_threshold": None}).contamination_threshold is None


@pytest.mark.slow
def test_the_command_line_uploads_reference_files_and_names_them(
    settings, fake_llm, spawn, tmp_path, api_key, capsys
) -> None:
    """`selfinstruct submit --decontaminate FILE...`: each file becomes a reference set the job names."""
    fake_llm.script.plant = [COPIED]
    spawn(settings, "worker")
    api, url = gunicorn(env_for(settings), tmp_path / "gunicorn.log")
    try:
        seeds, gsm, stories = tmp_path / "seeds.jsonl", tmp_path / "gsm.jsonl", tmp_path / "stories.jsonl"
        seeds.write_bytes(SEEDS)
        gsm.write_bytes(jsonl({"id": "q1", "text": QUESTION}))
        stories.write_bytes(jsonl({"text": SIMILAR_ITEM}))
        argv = ["--url", url, "--api-key", api_key, "submit", str(seeds), "--instructions", "3"]
        # with the judge and semantic dedup, whose flags ride along (their summary line too)
        more = ["--judge-threshold", "2", "--semantic-threshold", "0.95"]
        assert (
            cli(
                [
                    *argv,
                    *more,
                    "--decontaminate",
                    str(gsm),
                    str(stories),
                    "--wait",
                    "--download",
                    str(tmp_path / "d"),
                ]
            )
            == 0
        )
        out = capsys.readouterr().out
        assert "judge scores (" in out and "instances dropped under the threshold" in out
        assert "reference set" in out and "1 items (gsm.jsonl)" in out and "(stories.jsonl)" in out
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=40)
        job = http.get("/v1/jobs", params={"limit": 1}).json()["items"][0]
        sets = {s["name"]: s["id"] for s in http.get("/v1/reference-sets").json()["items"]}
        assert job["state"] == "succeeded"
        assert job["config"]["decontaminate_against"] == [sets["gsm.jsonl"], sets["stories.jsonl"]]
        assert (job["config"]["judge_threshold"], job["config"]["semantic_threshold"]) == (2, 0.95)
        dropped = http.get(f"/v1/jobs/{job['id']}/decisions", params={"rule": "contaminated"}).json()
        assert [d["detail"]["reference_id"] for d in dropped["items"] if d["text"] == COPIED] == ["q1"]
    finally:
        api.stop()


def test_a_preview_checks_the_reference_sets_too(client, redis, settings, fake_llm, worker_env) -> None:
    fake_llm.script.plant = [COPIED]
    questions = upload(client, jsonl({"id": "q1", "text": QUESTION})).json["id"]
    body = {"seed_set_id": make_seed_set(client), "num_instructions": 3, "decontaminate_against": [questions]}
    location = client.post("/v1/previews?wait=0", json=body).headers["Location"]
    SimpleWorker([Queue(settings.preview_queue, connection=redis)], connection=redis).work(burst=True)
    done = client.get(location).json
    assert done["state"] == "succeeded", done
    contaminated = [c for c in done["result"]["candidates"] if c["rule"] == "contaminated"]
    assert [(c["text"], c["detail"]["reference_id"]) for c in contaminated] == [(COPIED, "q1")]
    assert client.post("/v1/previews", json={**body, "decontaminate_against": ["1" * 64]}).status_code == 404
