"""Semantic deduplication (recipe field semantic_threshold): the exact cosine index, runs that drop a
paraphrase ROUGE-L lets through as `semantic_duplicate` with the nearest item and the cosine, resumed
runs, the API's checks, and the embedded all-MiniLM-L6-v2 on llama.cpp's server."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import numpy as np
import pytest

from jobs.method.checkpoint import FileStore
from jobs.method.endpoint import EmbeddingEndpoint
from jobs.method.engine import execute
from jobs.method.outputs import exports
from jobs.method.recipe import Execution, Recipe
from jobs.method.run import Canceled, Run
from jobs.method.similarity import RougeLIndex, SemanticIndex
from jobs.method.transport import Embedder, EndpointError, Usage
from tests.conftest import fake_endpoint
from tests.fake_llm import FakeLLM, Script, embedding
from tests.test_api import make_seed_set
from tests.test_engine import decisions, read_bytes

SEED = "Write a story that contains the given words in 4 sentences."  # seed_task_59
# the same task in other words: ROUGE-L lets it through, the scripted embedding sees synonyms
PARAPHRASE = "Using the given words in 4 sentences, compose a tale that contains them."
THRESHOLD = 0.75


def cosine(a: str, b: str) -> float:
    return float(np.dot(embedding(a), embedding(b)))


def test_the_premise_rouge_l_keeps_the_paraphrase_the_embedding_does_not() -> None:
    index = RougeLIndex()
    index.add("seed", SEED)
    assert index.nearest(PARAPHRASE).score < 0.7 < THRESHOLD < cosine(PARAPHRASE, SEED)


def test_the_index_is_the_exact_nearest_by_cosine() -> None:
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(3000, 48)).astype(np.float32)  # past the first capacity: it grows
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = SemanticIndex()
    assert index.nearest(vectors[0]) == (None, 0.0)
    for v in vectors:
        index.add(v)
    for query in rng.normal(size=(50, 48)).astype(np.float32):
        query /= np.linalg.norm(query)
        best = int(np.argmax(vectors @ query))
        found = index.nearest(query)
        assert found.index == best and found.cosine == pytest.approx(float(vectors[best] @ query), abs=1e-6)
    index.add(vectors[5])  # a tie goes to the earliest item
    assert index.nearest(vectors[5]).index == 5
    with pytest.raises(ValueError, match="dimension"):
        index.nearest(np.ones(3, dtype=np.float32))


def semantic_run(tmp, server, seed_tasks, name="run", stop_after=None, **config):
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return stop_after is not None and calls["n"] > stop_after

    recipe = Recipe.build({"num_instructions": 15, "seed": 3, **config})
    run = Run(
        "run-1",
        seed_tasks,
        recipe,
        fake_endpoint(server),
        FileStore(tmp / name / "state"),
        should_stop=should_stop,
        execution=Execution(3),
        embeddings=EmbeddingEndpoint(server.base_url, "fake-embed", batch=8, max_wait=0.2),
    )
    execute(run)
    exports.export(run, tmp / name / "out")
    return run, tmp / name / "out"


def test_a_paraphrase_rouge_l_keeps_is_dropped_naming_the_item_and_the_cosine(tmp_path, seed_tasks) -> None:
    outcomes = {}
    for name, threshold in (("plain", None), ("semantic", THRESHOLD)):
        script = Script(plant=[PARAPHRASE])
        with FakeLLM(script) as server:
            run, out = semantic_run(tmp_path, server, seed_tasks, name, semantic_threshold=threshold)
        outcomes[name] = next(d for d in decisions(out) if d["text"] == PARAPHRASE)
        outcomes[f"{name}-run"], outcomes[f"{name}-script"], url = run, script, server.base_url
    assert outcomes["plain"]["rule"] == "kept"
    dropped = outcomes["semantic"]
    assert dropped["rule"] == "semantic_duplicate" and dropped["verdict"] == "dropped"
    assert dropped["detail"]["nearest_id"] == "seed_task_59" and dropped["detail"]["nearest_text"] == SEED
    assert dropped["detail"]["cosine"] == round(cosine(PARAPHRASE, SEED), 6)
    assert dropped["detail"]["rouge_l"] == outcomes["plain"]["detail"]["score"] < 0.7
    records = decisions(tmp_path / "semantic" / "out")
    kept = [d for d in records if d["stage"] == "instruction" and d["rule"] == "kept"]
    # every kept one says how near it came by meaning, and none came above the threshold
    assert kept and all(d["detail"]["cosine"] <= THRESHOLD and d["detail"]["cosine_nearest_id"] for d in kept)
    others = [d for d in records if d["rule"] == "semantic_duplicate" and d["text"] != PARAPHRASE]
    assert all(d["detail"]["cosine"] > THRESHOLD for d in others)
    # the pool was embedded once (175 seeds), then each answer's candidates that pass the paper's rules
    script, run = outcomes["semantic-script"], outcomes["semantic-run"]
    embedded = [t for request in script.embedding_requests for t in request]
    assert set(embedded) >= {t.instruction for t in seed_tasks} | {d["text"] for d in kept}
    assert not {d["text"] for d in records if d["rule"] in ("too_short", "blacklisted_keyword")} & set(
        embedded
    )
    assert run.usage.requests["embeddings"] == len(script.embedding_requests)
    assert run.usage.embedding_tokens == sum(len(t.split()) for t in embedded)
    stats = json.loads((tmp_path / "semantic" / "out" / "stats.json").read_text())
    assert stats["tokens"]["embeddings"] == run.usage.embedding_tokens
    assert stats["requests"]["embeddings"] == len(script.embedding_requests)
    run_json = json.loads((tmp_path / "semantic" / "out" / "run.json").read_text())
    assert run_json["config"]["semantic_threshold"] == THRESHOLD
    assert run_json["embeddings"] == {
        "base_url": url,
        "model": "fake-embed",
        "price_per_million_tokens": None,
    }
    assert "embeddings" not in json.loads((tmp_path / "plain" / "out" / "run.json").read_text())


def test_a_stopped_run_resumes_to_the_same_bytes(tmp_path, seed_tasks) -> None:
    with FakeLLM(Script()) as server:
        whole_run, whole = semantic_run(tmp_path, server, seed_tasks, "whole", semantic_threshold=THRESHOLD)
        assert any(d["rule"] == "semantic_duplicate" for d in decisions(whole))
        stop = whole_run.checkpoint.next_prompt // 2
        with pytest.raises(Canceled):
            semantic_run(tmp_path, server, seed_tasks, "parts", stop, semantic_threshold=THRESHOLD)
        assert FileStore(tmp_path / "parts" / "state").load().instructions  # resumes with a pool to embed
        _, resumed = semantic_run(tmp_path, server, seed_tasks, "parts", semantic_threshold=THRESHOLD)
    assert read_bytes(resumed) == read_bytes(whole)


def test_embedding_faults_are_retried_and_a_dead_endpoint_fails_the_run_saying_so(
    tmp_path, seed_tasks
) -> None:
    script = Script(embedding_faults=[429, 500, 503])
    with FakeLLM(script) as server:
        run, _ = semantic_run(tmp_path, server, seed_tasks, "faults", semantic_threshold=THRESHOLD)
        assert run.usage.retries >= 3 and run.checkpoint.stage == "done"
        usage = Usage()
        dead = EmbeddingEndpoint("http://127.0.0.1:9/v1", "x", max_attempts=2, max_wait=0.1, timeout=1)

        async def embed() -> None:
            embedder = Embedder(dead, usage, 2)
            try:
                await embedder.embed(["a text"])
            finally:
                await embedder.close()

        with pytest.raises(EndpointError, match="embeddings request failed"):
            asyncio.run(embed())
    with pytest.raises(ValueError, match="embedding endpoint"):
        Run("r", seed_tasks, Recipe(semantic_threshold=0.9), fake_endpoint(server), FileStore(tmp_path / "x"))


def test_the_api_needs_a_profile_with_embeddings(client, settings, monkeypatch) -> None:
    sid = make_seed_set(client)
    profiles = client.get("/v1/profiles").json
    assert profiles[0]["embeddings"] == {"model": "fake-embed", "price_per_million_tokens": None}
    body = {"seed_set_id": sid, "num_instructions": 3, "semantic_threshold": 0.9}
    assert client.post("/v1/jobs", json={**body, "semantic_threshold": 1.5}).status_code == 422
    bare = settings.profiles["fake"]
    monkeypatch.setitem(settings.profiles, "fake", replace(bare, embeddings=None))
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 422
    message = "profile fake has no embedding endpoint to compare meanings with"
    assert {"field": "semantic_threshold", "message": message} in r.json["errors"]


@pytest.mark.model
def test_the_embedded_model_puts_a_paraphrase_near_and_another_task_far(embedding_model) -> None:
    texts = [
        "Write a poem about the sea.",
        "Compose a poem about the ocean.",
        "List three prime numbers.",
        SEED,
        PARAPHRASE,
    ]

    async def embed() -> np.ndarray:
        embedder = Embedder(embedding_model, Usage(), 2)
        try:
            return await embedder.embed(texts)
        finally:
            await embedder.close()

    vectors = asyncio.run(embed())
    assert vectors.shape == (5, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    near, far = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert near > 0.85 and far < 0.3
    assert float(vectors[3] @ vectors[4]) > 0.8


def test_embeddings_are_priced_at_their_own_price_and_count_against_the_cost_budget() -> None:
    from jobs.method.accounting import Accounting
    from jobs.method.endpoint import Endpoint

    usage = Usage(embedding_tokens=2_000_000)
    usage.prompt_tokens["instructions"] = 1_000_000
    endpoint = Endpoint("http://x/v1", "m", prices=(1.0, 2.0))
    accounting = Accounting(usage, Recipe(max_cost=1.05), endpoint, embedding_price=0.02)
    cost = accounting.cost()
    assert cost is not None and cost["by_stage"] == {"instructions": 1.0, "embeddings": 0.04}
    assert cost["total"] == 1.04 and accounting.budget_reached() is None
    usage.embedding_tokens = 3_000_000  # 1.06 in all: the budget is spent
    assert accounting.budget_reached() == "cost_budget"
    assert Accounting(usage, Recipe(), endpoint).cost()["total"] == 1.0  # type: ignore[index]  # unpriced


@pytest.mark.parametrize(
    "bad, said",
    [
        ({"base_url": "http://x/v1", "model": 3}, "both non-empty strings"),
        ({"model": "m"}, "both non-empty strings"),
        ({"base_url": "http://x/v1", "model": "m", "timeout": -1}, "embeddings.timeout"),
        ({"base_url": "http://x/v1", "model": "m", "batch": 0}, "embeddings.batch"),
        ({"base_url": "http://x/v1", "model": "m", "price_per_million_tokens": -1}, "non-negative"),
        ({"base_url": "http://x/v1", "model": "m", "nope": 1}, "unknown option"),
    ],
)
def test_a_profile_s_bad_embeddings_option_is_refused_when_settings_load(bad, said) -> None:
    from jobs.settings import Profile

    with pytest.raises(ValueError, match=f"profile 'p': .*{said}"):
        Profile.of("p", "http://a/v1", "m", embeddings=bad)
