"""A job record's progress fields (jobs.store.progress): written per part, summed when read, folded
when the job finishes, and read back through a real Redis by the job record; and progress as the
command line prints it."""

from __future__ import annotations

import pytest

from jobs.store import job as jobs_
from jobs.store import keyspace, progress

MAIN = {
    "stage": "instances",
    "stage_done": 3,
    "stage_total": 9,
    "instructions_kept": 9,
    "instances_kept": 4,
    "prompt_tokens": 100,
    "completion_tokens": 10,
    "requests": 7,
    "prompt_by_stage": {"instructions": 60, "instances": 40},
    "completion_by_stage": {"instructions": 6, "instances": 4},
}
CHUNK = {
    **MAIN,
    "stage_done": 2,
    "instances_kept": 5,
    "prompt_tokens": 30,
    "completion_tokens": 3,
    "requests": 2,
    "prompt_by_stage": {"instances": 30},
    "completion_by_stage": {"instances": 3},
}


def raw() -> dict[str, str]:
    fields = {**progress.fields("main", MAIN, main=True), **progress.fields("chunk0", CHUNK, main=False)}
    return {k: str(v) for k, v in fields.items()} | {"stage_total": "9"}


def test_parts_are_summed_and_chunks_do_not_count_kept_instructions() -> None:
    totals = progress.totals(raw())
    assert totals["instances_kept"] == 9 and totals["requests"] == 9 and totals["stage_done"] == 5
    assert totals["instructions_kept"] == 9  # the main run's; a chunk holds copies
    assert totals["stage_total"] == 9  # the main run's own field, not a sum


def test_tokens_by_stage_and_elsewhere() -> None:
    assert progress.tokens_by_stage(raw()) == {
        "prompt": {"instructions": 60, "instances": 70},
        "completion": {"instructions": 6, "instances": 7},
    }
    assert progress.tokens_elsewhere(raw(), "chunk0") == (100, 10)
    assert progress.tokens_elsewhere(raw(), "main") == (30, 3)


def test_folding_keeps_the_totals() -> None:
    before = raw()
    gone, folded = progress.folded(before)
    after = {k: v for k, v in before.items() if k not in gone} | {k: str(v) for k, v in folded.items()}
    assert not any(k.startswith(("p:chunk", "t:chunk")) for k in after)
    assert progress.totals(after) == progress.totals(before)
    assert progress.tokens_by_stage(after) == progress.tokens_by_stage(before)


def test_the_job_record_reads_them_from_redis(redis) -> None:
    redis.hset(keyspace.job("j1"), mapping={"id": "j1", "team": "t", "state": "running", "seed_set_id": "s"})
    redis.hset(keyspace.job("j1"), mapping={"profile": "p", "config": "{}", "created_at": "1.0", **raw()})
    redis.hset(keyspace.job("j1"), mapping=progress.refusals({"top_p": "not supported"}))
    job = jobs_.get(redis, "j1")
    assert job is not None and job.progress == progress.totals(raw())
    assert job.warnings == ["parameter top_p dropped: not supported"]
    assert jobs_.spending(redis, "j1") == (progress.tokens_by_stage(raw()), None)
    jobs_.compact_record(redis, "j1")
    again = jobs_.get(redis, "j1")
    assert again is not None and again.progress == job.progress
    assert jobs_.spending(redis, "j1")[0] == progress.tokens_by_stage(raw())


# --- progress on the command line, off a terminal (a CI log) ---


def _job(stage: str, done: int) -> dict:
    progress = {"stage": stage, "stage_done": done, "stage_total": 100, "instructions_kept": done}
    progress |= {"prompt_tokens": 10 * done, "completion_tokens": done, "instances_kept": 0}
    return {"state": "running", "stage": stage, "progress": progress, "eta_seconds": 30.0}


@pytest.mark.parametrize("kind", ["selfinstruct", "generate"])
def test_off_a_terminal_progress_is_a_line_every_few_seconds(kind, capsys, monkeypatch) -> None:
    """`selfinstruct --wait` and `python -m jobs generate` in a CI log: a plain line when the stage
    changes and at most one every LINE_SECONDS, never a carriage-return stream of every update."""
    import client.__main__ as cli
    from jobs.tools import generate

    module, bars = (cli, cli.Bar) if kind == "selfinstruct" else (generate, generate.StageBars)
    clock = [1000.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: clock[0])
    bar = bars()
    assert not bar.tty  # pytest captures stderr: not a terminal
    for done in range(100):  # ten seconds of updates, ten a second
        job = _job("instructions", done)
        bar(job if kind == "selfinstruct" else job["progress"])
        clock[0] += 0.1
    job = _job("classification", 0)
    bar(job if kind == "selfinstruct" else job["progress"])
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert [line.split(":")[0].strip() for line in lines] == ["instructions"] * 2 + ["classification"], lines
    assert lines[1].split(":")[1].strip().startswith("50/100")  # the update five seconds on
