"""Read latency under load: job status and decision pages of a job holding 50,000 decisions.

    .venv/bin/python -m benchmarks.api_reads [--decisions 50000] [--rate 200] [--seconds 15]

Starts Redis, an S3 endpoint and gunicorn (2 workers) on loopback, writes a job with --decisions
decision records straight into its log, then drives each URL with wrk at about --rate requests per
second (a Lua script paces the connections) and prints throughput and p50/p99 latency. The first
and the last page of a filter must cost the same: a page is one sorted-set range plus one HMGET.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from redis import Redis

from jobs.blobs.artifacts import Artifacts
from jobs.method.decisions import Decision
from jobs.method.recipe import Recipe
from jobs.method.seed_tasks import load_file
from jobs.settings import Settings
from jobs.store import api_keys, keyspace
from jobs.store import job as jobs_
from jobs.store.decision_log import Cursor, DecisionLog
from jobs.store.seed_sets import create as create_seed_set
from jobs.tools.local_stack import S3_KEY, S3_SECRET, gunicorn, redis_server, s3_server

ROOT = Path(__file__).resolve().parent.parent
INSTRUCTION_RULES = ["kept", "too_similar", "too_short", "blacklisted_keyword", "exact_duplicate"]
PACE = """
local rate_per_connection = {rate}
function delay() return 1000 / rate_per_connection end
"""


def decisions(count: int) -> Iterator[Decision]:
    """The job's decisions, in log order: two instruction decisions (a seeded mix of rules) to one
    instance decision."""
    rng = random.Random(0)
    for i in range(count):
        if i % 3 == 2:
            yield Decision(
                f"i{i}.0.0:0",
                "instance",
                f"output {i}",
                rng.choice(["kept", "empty_output"]),
                {"instruction_id": f"i{i}.0.0", "position": 0},
                {},
                input=f"input {i}",
            )
        else:
            rule = rng.choice(INSTRUCTION_RULES)
            detail = {
                "nearest_id": f"seed_task_{i % 175}",
                "nearest_text": "Some seed instruction text here.",
                "score": round(rng.random(), 6),
            }
            yield Decision(
                f"i{i}.0.0",
                "instruction",
                f"Candidate instruction number {i} for the benchmark.",
                rule,
                {"prompt": i, "completion": 0, "position": 0},
                detail,
            )


def fill(r: Redis, job_id: str, count: int) -> None:
    log, checkpoint = DecisionLog(r, job_id), keyspace.checkpoint(job_id)
    batch = []
    for d in decisions(count):
        batch.append(d)
        if len(batch) == 1000:
            log.commit(batch, checkpoint, "")
            batch = []
    if batch:
        log.commit(batch, checkpoint, "")


@dataclass(frozen=True)
class Served:
    redis: Redis
    key: str  # an API key of the job's team
    job_id: str
    url: str  # gunicorn's
    tmp: Path


@contextlib.contextmanager
def served_job(decisions: int) -> Iterator[Served]:
    """Redis, the S3 endpoint and gunicorn (2 workers) on loopback, and a running job whose log holds
    `decisions` decision records; no rate limit (one team sends hundreds of requests a second)."""
    os.environ.update(AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET)
    with tempfile.TemporaryDirectory() as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        redis_proc, redis_url = redis_server(tmp / "redis")
        stack.callback(redis_proc.stop)
        s3_proc, s3_url = s3_server(tmp / "s3")
        stack.callback(s3_proc.stop)
        settings = Settings(
            redis_url=redis_url,
            s3_endpoint_url=s3_url,
            s3_public_endpoint_url=s3_url,
            log_level="WARNING",
            rate_limit_per_minute=0,
        )
        artifacts = Artifacts(settings)
        artifacts.ensure_bucket()
        r = Redis.from_url(redis_url)
        key = api_keys.create(r, "bench")[1]
        seed_set, _ = create_seed_set(
            r, artifacts, "bench", load_file(ROOT / "data" / "seed_tasks.jsonl"), "b"
        )
        config = {"num_instructions": 20000}
        job = jobs_.create(r, "bench", seed_set.id, "local", config, Recipe.build(config).to_dict())
        assert job is not None
        jobs_.transition(r, job, "running", ("queued",), started_at=time.time(), stage="instances")
        start = time.perf_counter()
        fill(r, job.id, decisions)
        print(f"wrote {decisions} decisions in {time.perf_counter() - start:.1f} s")
        api, url = gunicorn({**settings.to_env(), "LOG_LEVEL": "WARNING"}, tmp / "gunicorn.log", workers=2)
        stack.callback(api.stop)
        yield Served(r, key, job.id, url, tmp)


def wrk(url: str, seconds: int, connections: int, script: Path, key: str) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t",
            "2",
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            str(script),
            "-H",
            f"Authorization: Bearer {key}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def ms(label: str) -> float:
        value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": ms("50%"), "p99": ms("99%"), "errors": int(errors.group(1)) if errors else 0}


def page(url: str, key: str) -> dict[str, Any]:
    """One page as the API serves it: its decisions' ids, the next cursor and the filter's total."""
    body = httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=30).raise_for_status().json()
    return {
        "ids": [d["id"] for d in body["items"]],
        "next_cursor": body["next_cursor"],
        "total": body["total"],
    }


def run(decisions: int, rate: int, seconds: int, rounds: int, connections: int) -> dict[str, Any]:
    """Per URL, medians over the rounds of wrk's requests/s, p50 and p99 ms and non-2xx answers; the
    headline: the worst p99, and the first and last pages of a filter alike. `pages` holds what each
    page URL returned, read once outside the timing."""
    with served_job(decisions) as served:
        r, key, job_id, url, tmp = served.redis, served.key, served.job_id, served.url, served.tmp
        log = DecisionLog(r, job_id)
        _, _, similar_total = log.page(stage="instruction", rule="too_similar", limit=1)
        last_all = Cursor(log.count() - 50).encode()
        # the cursor before the last page of 50 of a filter: walk to it once
        after = 0
        while True:
            _, more, _ = log.page(stage="instruction", rule="too_similar", after=after, limit=50)
            if more is None:
                break
            after = more
        filtered_last = Cursor(after).encode()
        base = f"{url}/v1/jobs/{job_id}"
        similar = f"{base}/decisions?stage=instruction&rule=too_similar&limit=50"
        targets = {
            "job status": base,
            "decisions, first page (50)": f"{base}/decisions?limit=50",
            "decisions, last page (50)": f"{base}/decisions?limit=50&cursor={last_all}",
            f"too_similar ({similar_total}), first page": similar,
            f"too_similar ({similar_total}), last page": f"{similar}&cursor={filtered_last}",
        }
        pages = {label: page(target, key) for label, target in targets.items() if label != "job status"}
        script = tmp / "pace.lua"
        # each connection waits between requests; aim a little high for the time a request takes
        script.write_text(PACE.format(rate=rate * 1.12 / connections))
        results = {}
        # rounds, interleaving the URLs, so that a disturbance on the machine hits them all alike
        runs: dict[str, list[dict[str, float]]] = {label: [] for label in targets}
        for _ in range(rounds):
            for label, target in targets.items():
                runs[label].append(wrk(target, seconds, connections, script, key))
        for label, measured in runs.items():
            results[label] = {
                k: statistics.median(m[k] for m in measured) for k in ("rps", "p50", "p99", "errors")
            }
        unpaced = tmp / "unpaced.lua"
        unpaced.write_text("")
        full = wrk(f"{base}/decisions?limit=50&cursor={last_all}", seconds, connections, unpaced, key)
    return {
        "results": results,
        "unpaced": full,
        "worst_p99": max(res["p99"] for res in results.values()),
        "pages": pages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=50_000)
    parser.add_argument("--rate", type=int, default=200, help="target requests per second")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="figures are medians over the rounds")
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: run scripts/setup.sh")
    result = run(args.decisions, args.rate, args.seconds, args.rounds, args.connections)
    print(
        f"wrk: {args.connections} connections paced to ~{args.rate} req/s, {args.seconds} s a run, "
        f"medians of {args.rounds} rounds"
    )
    print(f"{'endpoint':<40} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for label, res in result["results"].items():
        print(f"{label:<40} {res['rps']:>8.1f} {res['p50']:>8.2f} {res['p99']:>8.2f} {res['errors']:>8.0f}")
    full = result["unpaced"]
    label = "unpaced, last page (capacity)"
    print(f"{label:<40} {full['rps']:>8.1f} {full['p50']:>8.2f} {full['p99']:>8.2f}")
    worst = result["worst_p99"]
    verdict = "met" if worst < 50 else "NOT met"
    print(f"worst p99 at ~{args.rate} req/s: {worst:.2f} ms (target < 50 ms -> {verdict})")


if __name__ == "__main__":
    main()
