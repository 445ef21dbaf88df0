"""Text search of decisions: the same answers from a running job's log in Redis (bounded reads) and a
finished job's FTS5 archive (real Redis, S3 and an in-process RQ worker)."""

from __future__ import annotations

import collections
import json
import re
import sqlite3

import pytest

from jobs.blobs import decision_archive
from jobs.blobs.artifacts import Artifacts
from jobs.method.decisions import Query
from jobs.runner import finalize, retention
from jobs.store import decision_log
from jobs.store import job as jobs_
from tests.test_api import PROBLEM, make_seed_set, run_job
from tests.test_retention import walk


def body(text: str, input: str | None = None) -> str:
    return json.dumps({"text": text, "input": input})


def test_a_query_is_its_words_each_the_start_of_a_word_in_the_text_or_input():
    q = Query("Classif  the, the!")
    assert q.terms == ["classif", "the"]
    assert q.matches(body("Classify THE sentence."))
    assert q.matches(body("The review:", input="Classification of reviews"))
    assert not q.matches(body("Classify a sentence."))  # every word is needed
    assert not q.matches(body("reclassify the sentence"))  # a word's start, not its middle
    assert Query("café").matches(body("Un café noir")) and not Query("cafe").matches(body("café"))
    # underscores and punctuation split words
    assert Query("snake").matches(body("use snake_case")) and Query("case").matches(body("snake_case"))
    # FTS5's syntax in a query is only words: quotes, stars, NEAR, OR, column filters
    assert (
        Query('"a" OR b* NEAR(c d) text:e').fts()
        == '"a"* AND "or"* AND "b"* AND "near"* AND "c"* AND "d"* AND "text"* AND "e"*'
    )
    for nothing in ("", "  !!! ", "_"):  # no words: finds nothing
        assert Query(nothing).terms == [] and not Query(nothing).matches(body("_ !!! anything"))


def test_a_running_job_and_its_archive_find_the_same_decisions(
    client, redis, settings, worker_env, monkeypatch
):
    # the job ends with its log still in Redis, as a running job's is; it is archived by hand below
    monkeypatch.setattr(finalize, "_archive", lambda ctx: None)
    job = run_job(client, redis, make_seed_set(client), num_instructions=10)
    assert job["state"] == "succeeded" and not jobs_.get(redis, job["id"]).archived
    everything, _, total = walk(client, job["id"], "", limit=500)
    assert total == len(everything) > 30
    words = {d["id"]: re.findall(r"[a-z0-9]+", f"{d['text']} {d['input'] or ''}".lower()) for d in everything}
    counts = collections.Counter(w for ws in words.values() for w in set(ws))
    common = next(w for w, n in counts.most_common() if len(w) > 3 and n < len(everything) / 2)
    rare = next(w for w, n in reversed(counts.most_common()) if len(w) > 3)
    queries = {
        common: [common],
        rare.upper(): [rare],
        common[:3]: [common[:3]],  # a prefix
        f"{common} {rare}": [common, rare],
        "zzzqx": ["zzzqx"],
    }
    filters = {
        "": lambda d: True,
        "&stage=instance": lambda d: d["stage"] == "instance",
        "&verdict=dropped": lambda d: d["verdict"] == "dropped",
        "&stage=instruction&rule=kept": lambda d: d["stage"] == "instruction" and d["rule"] == "kept",
    }

    def expected(terms: list[str], keep) -> list[str]:
        return [
            d["id"]
            for d in everything
            if keep(d) and all(any(w.startswith(t) for w in words[d["id"]]) for t in terms)
        ]

    # a running job's page reads at most SCAN decisions: some pages come back short, with a cursor
    monkeypatch.setattr(decision_log, "SCAN", 7)
    live: dict[tuple[str, str], list[str]] = {}
    short = 0
    for text, terms in queries.items():
        for query, keep in filters.items():
            items, sizes, total = walk(client, job["id"], f"{query}&q={text}")
            assert total is None
            assert [d["id"] for d in items] == expected(terms, keep), (text, query)
            short += sum(1 for size in sizes[:-1] if size < 3)
            live[text, query] = [d["id"] for d in items]
    assert short > 0
    assert any(live.values()) and not all(live.values())

    retention.archive(redis, Artifacts(settings), "alpha", job["id"], settings.work_dir)
    assert jobs_.get(redis, job["id"]).archived
    for (text, query), ids in live.items():
        items, sizes, total = walk(client, job["id"], f"{query}&q={text}")
        assert [d["id"] for d in items] == ids and total == len(ids), (text, query)
        assert all(size == 3 for size in sizes[:-1])  # the archive's pages are full


@pytest.mark.parametrize("archived", [True, False])
def test_a_query_too_long_is_a_422_naming_q_and_one_of_no_words_finds_nothing(
    client, redis, worker_env, monkeypatch, archived
):
    if not archived:
        monkeypatch.setattr(finalize, "_archive", lambda ctx: None)
    job = run_job(client, redis, make_seed_set(client), num_instructions=3)
    url = f"/v1/jobs/{job['id']}/decisions"
    for q in ("", "x" * 201):
        r = client.get(url, query_string={"q": q})
        assert r.status_code == 422 and r.mimetype == PROBLEM
        assert [e["field"] for e in r.json["errors"]] == ["q"] and "Length" in r.json["detail"], r.json
    for q in ("!!!", "_ *", '"'):
        assert client.get(url, query_string={"q": q}).json == {"items": [], "next_cursor": None, "total": 0}
    # FTS5's syntax is words too: it never reaches SQLite as syntax, so no 500
    assert client.get(url, query_string={"q": 'NEAR(a b) OR "x* text:y'}).status_code == 200
    assert client.get(url, query_string={"q": "x" * 200}).json["items"] == []


def stored(texts: list[str]) -> list[tuple[int, bytes]]:
    """(seq, stored JSON) of an instruction decision a text, as a log holds them."""
    return [
        (
            n + 1,
            json.dumps(
                {
                    "id": f"i{n}",
                    "stage": "instruction",
                    "text": text,
                    "input": None,
                    "verdict": "kept",
                    "rule": "kept",
                    "detail": {},
                    "source": {},
                }
            ).encode(),
        )
        for n, text in enumerate(texts)
    ]


def test_the_archive_and_the_scan_read_the_same_words_in_any_script(tmp_path):
    texts = [
        "İstanbul gezisi",
        "ΟΔΟΣΤΡΩΜΑ",
        "nai\u0308ve",
        "5 µm",
        "🤖robot arm",
        "हिन्दी भाषा",
        "ที่นี่",
        "snake_case",
        "Straße",
        "abc",
        "ᦰabc",
        "Ｆｕｌｌ width",
    ]
    bodies = stored(texts)
    decision_archive.build(iter(bodies), tmp_path / "a.sqlite")
    archived = decision_archive.ArchivedLog(tmp_path / "a.sqlite")
    queries = [
        "οδος",
        "ΟΔΟΣ",
        "naïve",
        "ve",
        "μm",
        "robot",
        "हिन्दी",
        "ह",
        "ที่",
        "snake",
        "case",
        "STRASSE",
        "a",
        "ᦰ",
        "full",
        "i̇stanbul",
        "gez",
    ]
    found = 0
    for q in queries:
        scanned = [seq for seq, b in bodies if Query(q).matches(b)]
        items, _, total = archived.page(text=Query(q), limit=100)
        assert [json.loads(b)["id"] for b in items] == [f"i{s - 1}" for s in scanned], q
        assert total == len(scanned)
        found += bool(scanned)
    assert found == len(queries) - 1  # all but "ve", which is no word's start


def test_an_archive_written_before_text_search_gets_its_word_index(tmp_path):
    old = tmp_path / "old.sqlite"
    decision_archive.build(iter(stored(["Write a haiku.", "Sort the list.", "Write a poem."])), old)
    db = sqlite3.connect(old)
    db.execute("DROP TABLE words")
    db.commit()
    db.close()
    cache = decision_archive.Cache(tmp_path / "cache")
    # downloaded now, and a copy already on disk (from before an upgrade)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "j2.sqlite").write_bytes(old.read_bytes())
    for job_id in ("j1", "j2"):
        archived = cache.get(job_id, lambda path: path.write_bytes(old.read_bytes()))
        items, cursor, total = archived.page(text=Query("writ"))
        assert [json.loads(b)["id"] for b in items] == ["i0", "i2"] and cursor is None and total == 2


def test_the_command_line_searches_a_jobs_decisions_through_gunicorn(
    client, redis, settings, worker_env, api_key, tmp_path, capsys
):
    from client.__main__ import main as cli
    from jobs.tools.local_stack import gunicorn
    from tests.conftest import env_for

    job = run_job(client, redis, make_seed_set(client), num_instructions=6)
    everything, _, _ = walk(client, job["id"], "", limit=500)
    word = re.findall(r"[a-z0-9]+", everything[-1]["text"].lower())[0]
    expected, _, _ = walk(client, job["id"], f"&stage=instance&q={word}")
    assert expected
    api, url = gunicorn(env_for(settings), tmp_path / "gunicorn.log")
    try:
        argv = ["--url", url, "--api-key", api_key, "decisions", job["id"], "--stage", "instance"]
        capsys.readouterr()
        assert cli([*argv, "--search", word, "--json"]) == 0
        printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert printed == expected
        assert cli([*argv, "--search", word, "--max", "1"]) == 0
        line = capsys.readouterr().out.splitlines()
        assert len(line) == 1 and line[0].split("\t")[:3] == [
            expected[0]["id"],
            expected[0]["verdict"],
            expected[0]["rule"],
        ]
        assert cli([*argv, "--search", "x" * 201]) == 2  # refused, the parameter named
        assert "q: Length must be between 1 and 200" in capsys.readouterr().err
    finally:
        api.stop()
