"""Smoke tests of the benchmarks (benchmarks/, figures in docs/benchmarks.md): each runs at a small size
and asserts the facts of its headline that do not depend on timing, so that a published claim such as
"same dataset: True" or "10 of 10 answers identical" cannot drift from the code. Timings are only
checked to be there and positive: speed targets live in the benchmark scripts, never in a test."""

from __future__ import annotations

import itertools
import json
import math
import re
from contextlib import nullcontext
from types import SimpleNamespace

import pytest

from benchmarks import (
    api_reads,
    batch,
    classification,
    decontamination,
    dedup,
    engine,
    history,
    instances,
    paper_scale,
    scale_out,
    semantic_dedup,
    servers,
)
from jobs.method.endpoint import cost
from jobs.method.recipe import Recipe
from tests.conftest import DATA, SHARED
from tests.fake_llm import FakeLLM, Script

STREAM = SHARED / "data" / "instruction_stream_50k.jsonl"
METHODS = {"text", "logprobs", "calibrated", "fitted", "prior", "knn", "always_no", "hindsight", "auto"}
MARGIN_METHODS = ("logprobs", "calibrated", "fitted", "prior")


def positive(figures: dict, *keys: str) -> None:
    for key in keys:
        assert key in figures and figures[key] > 0, (key, figures.get(key))


def expected_pages(ids: list[str], limit: int = 50) -> tuple[list[str], list[str]]:
    """The first page and the last page of `ids` in pages of `limit`."""
    return ids[:limit], ids[(len(ids) - 1) // limit * limit :]


def test_batch_gives_the_online_dataset_at_half_the_price():
    """benchmarks.batch: the batch job's dataset is byte-identical to the same job run online ("same
    dataset: True"), at half the price a token. The batch run's completions are at least the online
    run's: a batch answers every prompt of the wave that reaches the target, where online cancels the
    prompts still out (how many of them finished first is the machine's timing)."""
    result = batch.run(20, 10)
    online, batched = result["online"], result["batch"]
    assert result["same_dataset"] is True
    assert batched["completions"] >= online["completions"] > 0
    assert online["instructions"] == batched["instructions"] == 20
    assert batch.PRICES["batch"] == tuple(price / 2 for price in batch.PRICES["online"])

    def at_online_prices(row: dict) -> float:
        return cost(row["tokens"]["prompt"], row["tokens"]["completion"], batch.PRICES["online"])

    assert at_online_prices(batched) >= at_online_prices(online)
    assert result["cost_ratio"] == pytest.approx(0.5 * at_online_prices(batched) / at_online_prices(online))
    # the batch run went through the Batch API, the online one never did
    assert batched["batches"] > 0 and batched["rounds"] > 0 and batched["resumes"] > 0
    assert online["batches"] == online["rounds"] == online["resumes"] == 0
    assert batched["http_requests"] < online["http_requests"]
    positive(result, "wall_ratio")


def test_dedup_index_answers_as_the_reference_scan():
    """benchmarks.dedup: side by side against the same pool, the ROUGE-L index gives the rouge-score
    scan's answer for every candidate ("identical answers 10/10"), and the whole-stream pass keeps
    every candidate it adds to the pool."""
    seeds = dedup.load(DATA / "seed_tasks.jsonl")
    stream = dedup.load(STREAM)[:3000]
    result = dedup.run(seeds, stream, pool_size=500, reference_sample=10)
    assert result["candidates"] == 10
    assert result["identical"] == 10
    assert result["pool"] == 500
    assert result["stream"] == 3000 and 0 < result["kept"] <= 3000
    assert result["pool_end"] == len(seeds) + result["kept"]
    assert result["more"] == 2000
    positive(result, "whole_seconds", "reference_s", "index_ms", "index_ms_more", "ratio", "ratio_more")


def test_history_reports_every_pool_size(seed_tasks):
    """benchmarks.history: a row per number of earlier instructions, the empty pool being the 1.00x
    baseline, with a pool that holds more memory the more it holds."""
    seeds = [(t.id, t.instruction) for t in seed_tasks]
    with STREAM.open() as f:
        stream = [json.loads(line)["instruction"] for line in itertools.islice(f, 1300)]
    sizes = (0, 300, 1000)
    result = history.run(seeds, stream, candidates=100, rounds=1, sizes=sizes)
    rows = result["rows"]
    assert [row["earlier"] for row in rows] == list(sizes)
    assert result["candidates"] == 100 and result["seeds"] == 175
    assert rows[0]["vs_none"] == 1.0
    for row in rows:
        positive(row, "ms_per_candidate", "vs_none", "memory_mib")
        assert row["load_s"] >= 0
    memory = [row["memory_mib"] for row in rows]
    assert memory == sorted(memory) and memory[0] < memory[-1]


def test_engine_replays_the_jobs_requests():
    """benchmarks.engine: the raw phases send exactly the requests the job sent, so on a deterministic
    endpoint they make the job's completion tokens; the ratio job/raw is reported."""
    with FakeLLM(Script()) as server:
        result = engine.run(5, concurrency=1, seed=1, rounds=1, base_url=server.base_url, model="fake")
    phases = result["phases"]
    assert [kind for kind, _ in phases] == ["job", "raw", "raw", "job"]
    tokens = {figures[0] for _, figures in phases}
    assert len(tokens) == 1 and tokens.pop() > 0
    assert result["requests"] == sum(result["stats"]["requests"].values()) > 0
    positive(result, "job_tok_s", "raw_tok_s", "ratio")


def test_classification_scores_every_method_on_held_out_tasks(seed_tasks, tmp_path):
    """benchmarks.classification: every method is scored on every split, each balanced accuracy in
    [0, 1]; held-out tasks are never among their draw's demonstrations; each split keeps the seed set's
    class ratio; `hindsight` is a ceiling for the margin methods; `auto` answers as the method it chose
    on the split's seed tasks; leave-one-out scores every task outside the demonstrations."""
    # a smaller seed set (every classification task, 44 others) keeps the scoring and the
    # leave-one-out fits short; the demonstrations still take 12 and 19 of them
    yes = [t for t in seed_tasks if t.is_classification]
    tasks = yes + [t for t in seed_tasks if not t.is_classification][:44]
    held_out, splits = 20, 3
    with FakeLLM(Script(logprobs="top")) as server:
        result = classification.run(
            tasks, tmp_path / "cache.json", 1, splits, held_out, base_url=server.base_url, model="fake"
        )
    draw = result["draws"]["0"]
    demos = set(draw["demos"])
    assert len(demos) + len(draw["answers"]) == len(tasks)  # every task outside the prefix scored
    n_yes = round(held_out * len(yes) / len(tasks))
    assert len(result["splits"]) == splits
    for split in result["splits"]:
        assert len(split["held_out"]) == held_out and not demos & set(split["held_out"])
        assert set(split["balanced_accuracy"]) == METHODS
        assert all(0.0 <= v <= 1.0 for v in split["balanced_accuracy"].values())
        for counts in split["confusion"].values():
            assert counts["tp"] + counts["fn"] == n_yes
            assert counts["tn"] + counts["fp"] == held_out - n_yes
        assert split["balanced_accuracy"]["always_no"] == 0.5
        for method in MARGIN_METHODS:
            assert split["balanced_accuracy"]["hindsight"] >= split["balanced_accuracy"][method]
        # the scripted model's labels are random: auto keeps the seed tasks' vote
        assert split["auto_chose"] == "knn" and split["confusion"]["auto"] == split["confusion"]["knn"]
    assert set(result["spread"]) == METHODS
    loo = result["leave_one_out"]
    assert set(loo) == METHODS - {"hindsight"}
    for counts in loo.values():
        assert counts["tp"] + counts["fn"] + counts["tn"] + counts["fp"] == len(tasks) - len(demos)
        assert 0.0 <= counts["balanced_accuracy"] <= 1.0


def test_instances_compares_the_strategies_on_the_same_first_answers():
    """benchmarks.instances: for a run's instructions.jsonl, every strategy is scored on one draw: `one`
    sends one request a task, the follow-ups only add requests, `resample` and `hybrid` ask again for
    the same single-instance answers, and resampling never keeps fewer instances than `one`."""
    tasks = [
        {"id": "i1", "text": "Classify the sentiment of this movie review.", "classification": "yes"},
        {"id": "i2", "text": "Is the following email spam? Answer yes or no.", "classification": "yes"},
        {"id": "i3", "text": "Write a short poem about autumn leaves for a child.", "classification": "no"},
        {"id": "i4", "text": "Summarize the given paragraph in one sentence.", "classification": "no"},
        {"id": "i5", "text": "Suggest three names for a bakery.", "classification": "no"},
        {"id": "i6", "text": "Translate the sentence into French.", "classification": "no"},
    ]
    with FakeLLM(Script()) as server:
        result = instances.run(tasks, [1], base_url=server.base_url, model="fake")
    assert set(result) == set(instances.STRATEGIES)
    got = {strategy: draws[0] for strategy, draws in result.items()}
    assert all(len(draws) == 1 for draws in result.values())
    cap = Recipe().max_instances_per_task
    for figures in got.values():
        assert 0 <= figures["kept"] <= cap and 0.0 <= figures["dropped"] <= 1.0
        assert figures["requests"] >= len(tasks) and figures["tokens"] >= got["one"]["tokens"]
    assert got["one"]["requests"] == len(tasks)
    # the follow-up path ran: some answer held a single instance
    assert got["resample"]["requests"] > got["one"]["requests"]
    assert got["hybrid"]["requests"] == got["resample"]["requests"]
    assert got["resample"]["kept"] >= got["one"]["kept"]


def test_api_reads_pages_hold_the_right_decisions():
    """benchmarks.api_reads: every URL it loads answers 2xx under wrk; the first and last pages, of
    the whole log and of a rule filter, hold the decisions written there; latency figures are
    reported."""
    count = 600
    written = list(api_reads.decisions(count))
    every = [d.id for d in written]
    similar = [d.id for d in written if d.stage == "instruction" and d.rule == "too_similar"]
    assert len(similar) > 50  # the filter has a last page apart from its first
    result = api_reads.run(count, rate=50, seconds=1, rounds=1, connections=2)
    for label, figures in [*result["results"].items(), ("unpaced", result["unpaced"])]:
        assert figures["errors"] == 0, label
        positive(figures, "rps", "p50", "p99")
    positive(result, "worst_p99")
    pages = result["pages"]
    first, last = expected_pages(every)
    assert pages["decisions, first page (50)"]["ids"] == first
    assert pages["decisions, last page (50)"]["ids"] == last
    assert pages["decisions, last page (50)"]["next_cursor"] is None
    first, last = expected_pages(similar)
    label = f"too_similar ({len(similar)})"
    assert pages[f"{label}, first page"]["ids"] == first
    assert pages[f"{label}, last page"]["ids"] == last
    assert pages[f"{label}, last page"]["next_cursor"] is None
    assert pages[f"{label}, first page"]["total"] == len(similar)


def test_paper_scale_costs_are_reported_per_pool_size():
    """benchmarks.paper_scale --costs: a row of per-item costs for every pool size."""
    rows = paper_scale.flat_costs((200, 500))
    assert [row["pool"] for row in rows] == [200, 500]
    for row in rows:
        positive(row, "commit", "progress", "sample", "nearest")


@pytest.mark.slow
def test_paper_scale_job_through_the_whole_stack():
    """benchmarks.paper_scale: a job through gunicorn, RQ workers, Redis and S3 on the scripted endpoint
    keeps the instructions asked for, without worker errors; its archived decision pages, first and
    last of the kept filter and that filter searched for a word, hold the right decisions under wrk."""
    n = 300
    result = paper_scale.run(n, seconds=1)
    (job,) = result["results"]
    assert job["job"]["state"] == "succeeded"
    assert job["job"]["progress"]["instructions_kept"] == n
    assert job["decisions"] > n and job["requests"] > 0
    positive(job, "ideal", "wall", "vs_ideal")
    # every answer of the job falls in one stage's span; the export after the last one is timed
    assert sum(stage["busy"] for stage in job["busy"].values()) == pytest.approx(job["ideal"])
    assert job["busy"]["instructions"]["busy"] > 0
    assert job["after"]["used"] > result["baseline"]
    assert set(result["worker_errors"].values()) == {0}
    assert result["filter_total"] == n
    first, last = result["pages"]["first page"], result["pages"]["last page"]
    assert len(first["items"]) == 50 and first["next_cursor"] is not None
    assert last["next_cursor"] is None and len(last["items"]) == n - (n - 1) // 50 * 50
    assert not {d["id"] for d in first["items"]} & {d["id"] for d in last["items"]}
    for page in (first, last):
        assert page["total"] == n
        assert {(d["stage"], d["rule"]) for d in page["items"]} == {("instruction", "kept")}
    word = result["word"]
    search = result["pages"][f"text search q={word}, first page"]
    assert 1 <= search["total"] <= n and len(search["items"]) == min(search["total"], 50)
    assert (search["next_cursor"] is not None) == (search["total"] > 50)
    for d in search["items"]:
        assert (d["stage"], d["rule"]) == ("instruction", "kept")
        assert any(w.startswith(word) for w in re.findall(r"[a-z0-9]+", d["text"].lower()))
    for figures in result["wrk"].values():
        assert figures["errors"] == 0
        positive(figures, "rps", "p50", "p99")


@pytest.mark.browser
def test_ui_walks_to_the_last_page():
    """benchmarks.ui: in Chromium, "Next page" reaches the last page of every view, one click a page,
    and the last page shows the last decisions written."""
    from benchmarks import ui  # imports Playwright: only the browser test needs it

    count = 600
    written = list(api_reads.decisions(count))
    similar = [d.id for d in written if d.stage == "instruction" and d.rule == "too_similar"]
    result = ui.run(count, loads=1)
    assert len(result["first_render"]) == 1 and result["first_render"][0] > 0
    views = {
        "to the last page, 50 a page": ([d.id for d in written], 50),
        "to the last page, 200 a page": ([d.id for d in written], 200),
        "to the last page, too_similar, 50 a page": (similar, 50),
    }
    assert set(result["walks"]) == set(views)
    for label, (ids, limit) in views.items():
        walked = result["walks"][label]
        pages = math.ceil(len(ids) / limit)
        assert len(walked["times"]) == pages - 1, label
        assert all(t > 0 for t in walked["times"])
        start = (pages - 1) * limit + 1
        assert walked["info"] == f"Page {pages}: decisions {start}–{len(ids)} of {len(ids)} matching"
        assert walked["ids"] == expected_pages(ids, limit)[1]


@pytest.mark.model
def test_servers_llama_server_reads_label_logprobs(local_model):
    """benchmarks.servers --servers llama-server: the engine reads the labels' log-probabilities from
    every classification answer of the embedded llama-server (1.00)."""
    assert list(servers.starters(["llama-server"])) == ["llama-server"]
    served = SimpleNamespace(base_url=local_model.base_url)
    # few and short requests: the tokens per second are only reported here
    result = servers.run(
        {"llama-server": lambda: nullcontext(served)}, rounds=1, tasks=3, requests=2, tokens=16
    )
    figures = result["llama-server"]
    assert figures["readable"] == 1.0
    positive(figures, "classification_ms", "tok_s_1", "tok_s_4")


@pytest.mark.slow
def test_scale_out_makes_one_dataset_on_any_number_of_workers():
    """benchmarks.scale_out: the job's dataset files are byte-identical on 1 and 2 workers, the endpoint
    never has more requests in flight than the shared limit, another team's small job finishes beside
    the big one, and stage 1 runs alone under each recipe compared."""
    recipes = ({"window": 4}, {"round_size": 4})
    out = scale_out.run(30, (1, 2), latency=0.05, latency_max=0.1, limit=3, small=4, stage1_recipes=recipes)
    assert [row["workers"] for row in out["rows"]] == [1, 2]
    assert out["rows"][1]["identical"], out["rows"]  # 2 workers' files are 1 worker's
    assert out["rows"][1]["helpers"] > 0  # and the second worker helped
    assert all(0 < row["most_in_flight"] <= 3 for row in out["rows"]), out["rows"]
    assert all(row["stages"].get("instructions", 0) > 0 for row in out["rows"])
    small = out["small"]
    positive(small, "alone", "stage 1", "chunks queued")
    assert small["most_in_flight"] <= 3
    # stage 1 alone under each recipe compared: it kept what was asked, with some requests
    assert [row["recipe"] for row in out["stage1"]] == list(recipes)
    assert all(row["kept"] == 30 and row["requests"] > 0 and row["wall"] > 0 for row in out["stage1"])


def test_decontamination_finds_every_planted_run_as_the_plain_way_does():
    """benchmarks.decontamination on a small slice: every planted 13-word run found, the same candidates
    flagged as the plain set of runs, and the ROUGE-L rule's nearest scores those of rouge-score's scan."""
    result = decontamination.run(2000, 4000, 50, rouge_sample=50, scan_sample=2)
    assert result["planted_found"] == result["planted"] == 50 and result["same_as_plain"] is True
    assert result["flagged"] >= 50 and result["scan_same"] == 2
    positive(result, "index_build_s", "index_check_s", "ratio", "rouge_ms_per_candidate", "scan_ratio")


@pytest.mark.model
def test_semantic_dedup_is_exact_and_drops_beyond_rouge_l(embedding_model):
    """benchmarks.semantic_dedup on a small slice with the embedded model: the index's nearest item and
    cosine are the brute force's at every pool size, and the semantic rule drops texts ROUGE-L kept."""
    result = semantic_dedup.run([300, 1000], 40, 1500, 0.9, embedding_model)
    assert [row["exact"] for row in result["search"]] == [40, 40]
    for row in result["search"]:
        positive(row, "semantic_ms", "rouge_ms", "ratio")
    rouge, semantic = (result["beyond_rouge"][k]["rules"] for k in ("rouge", "semantic"))
    assert semantic["semantic_duplicate"] > 0 and "semantic_duplicate" not in rouge
    # a text dropped by meaning is not in the pool: ROUGE-L may keep a later one it would have dropped
    assert semantic["kept"] + semantic["semantic_duplicate"] >= rouge["kept"] > semantic["kept"]
    positive(result, "embed_ms_per_text")
