"""A paper-scale job through the real service: 52,445 instructions with instances.

    .venv/bin/python -m benchmarks.paper_scale [--instructions 52445] [--latency 0.1] [--concurrency 16]
                                               [--workers 2] [--jobs 1] [--rate 200]
    .venv/bin/python -m benchmarks.paper_scale --costs   # in-process per-item costs at 1K, 10K, 52K

Starts Redis (append-only file, fsync everysec), the S3 endpoint, gunicorn and --workers RQ workers,
plus a scripted OpenAI-compatible endpoint (a separate process: asyncio, no framework) that answers
every request after --latency seconds with at most --concurrency requests in flight, and writes
diverse, mostly keepable instructions and well-formed instances. It then runs --jobs jobs of
--instructions instructions through POST /v1/jobs, one after the other, and prints:

- the endpoint-limited ideal (requests x latency / concurrency) against the measured wall time;
- worker CPU per candidate near 1K, 10K and 52K kept instructions (stage 1: the growing pool);
- the commit script's Redis time per call and the AOF bytes per commit, early and late in stage 1;
- Redis peak memory, memory after each job, AOF size;
- decision-page latency (wrk, paced to --rate) on the finished job, first and last page of a rule
  filter, and the first page of that filter searched for a word of its first decision (`q`), served
  from the archive.

Latency and concurrency: the endpoint answers 16 requests per 0.1 s, 160 requests/s. A worker spends
about 2-3 ms of CPU per request (OpenAI client, parsing, filters, commits), so at 160 requests/s the
engine uses roughly half a core and the endpoint stays the limit on a 2-core machine that also runs
Redis, gunicorn and the endpoint itself. A shorter latency makes the engine, not the endpoint, the
bound; that is a different benchmark (benchmarks/engine.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from redis import Redis

from benchmarks.api_reads import PACE, wrk
from jobs.blobs.artifacts import Artifacts
from jobs.method.decisions import words
from jobs.settings import Profile, Settings
from jobs.store import api_keys, keyspace
from jobs.store.decision_log import DecisionLog
from jobs.tools.local_stack import (
    S3_KEY,
    S3_SECRET,
    Process,
    free_port,
    gunicorn,
    redis_server,
    rq_worker,
    s3_server,
)

ROOT = Path(__file__).resolve().parent.parent
SYLLABLES = [a + b for a in "bdfgklmnprstvz" for b in ("a", "e", "i", "o", "u", "ar", "en", "ol")]
VERBS = (
    "Write",
    "Describe",
    "List",
    "Explain",
    "Summarize",
    "Compare",
    "Suggest",
    "Plan",
    "Outline",
    "Create",
)
NOUNS = ("poem", "email", "story", "review", "letter", "speech", "essay", "menu", "lesson", "report", "quiz")
AUDIENCES = ("a child", "an expert", "a tourist", "a student", "a manager", "a neighbour", "a chef")

# --- the scripted endpoint ---


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))


def _instruction(rng: random.Random) -> str:
    if rng.random() < 0.08:
        return f"{rng.choice(VERBS)} it."  # too short: some candidates are dropped
    words = " ".join(_word(rng) for _ in range(rng.randint(3, 5)))
    return f"{rng.choice(VERBS)} a {rng.choice(NOUNS)} about {words} for {rng.choice(AUDIENCES)}."


def compose(prompt: str, seed: object) -> str:
    rng = random.Random(hashlib.blake2b(f"{seed}|{prompt[-300:]}".encode(), digest_size=8).digest())
    if prompt.endswith("Is it classification?"):
        return " Yes" if rng.random() < 0.25 else " No"
    numbered = re.search(r"\n(\d+)\.$", prompt)
    if numbered:
        first = int(numbered.group(1))
        items = [_instruction(rng) for _ in range(rng.randint(5, 8))]
        return " " + "".join(f"{t}\n{first + i + 1}. " for i, t in enumerate(items[:-1])) + items[-1]
    if "class labels" in prompt.split("\n", 1)[0]:
        return "".join(
            f"Class label: {label}\nSentence: {_word(rng)} {_word(rng)}\n" for label in ("yes", "no")
        )
    return "".join(
        f"Example {i}\nInput: {_word(rng)} {_word(rng)}\nOutput: {_word(rng)} {_word(rng)} {_word(rng)}.\n"
        for i in range(1, rng.randint(2, 4))
    )


async def serve_endpoint(
    port: int, latency: float, concurrency: int, latency_max: float | None = None
) -> None:
    """Answers after `latency` seconds (or a uniform draw up to `latency_max`), at most `concurrency`
    at once (the rest wait their turn); GET /stats: requests served, and the most ever in flight (held
    or waiting for a slot), and the answers of each wall-clock second (`answered`: second -> count), which
    tell where in a run the endpoint sat idle."""
    slots = asyncio.Semaphore(concurrency)
    answered: dict[int, int] = {}
    served: dict[str, Any] = {"requests": 0, "in_flight": 0, "most_in_flight": 0, "answered": answered}
    draw = random.Random(0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = (
                    int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1)) if b"ength" in head else 0
                )
                body = json.loads(await reader.readexactly(length)) if length else {}
                if head.startswith(b"GET /stats"):
                    out = json.dumps(served).encode()
                else:
                    served["in_flight"] += 1
                    served["most_in_flight"] = max(served["most_in_flight"], served["in_flight"])
                    try:
                        async with slots:
                            wait = latency if latency_max is None else draw.uniform(latency, latency_max)
                            await asyncio.sleep(wait)
                            served["requests"] += 1
                            second = int(time.time())
                            answered[second] = answered.get(second, 0) + 1
                    finally:
                        served["in_flight"] -= 1
                    text = compose(body["prompt"], body.get("seed"))
                    out = json.dumps(
                        {
                            "id": "c",
                            "object": "text_completion",
                            "created": 0,
                            "model": body.get("model", "m"),
                            "choices": [
                                {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
                            ],
                            "usage": {
                                "prompt_tokens": len(body["prompt"]) // 4,
                                "completion_tokens": len(text) // 4,
                                "total_tokens": (len(body["prompt"]) + len(text)) // 4,
                            },
                        }
                    ).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(out)).encode()
                    + b"\r\n\r\n"
                    + out
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=512)
    async with server:
        await server.serve_forever()


# --- measuring ---


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the workers, their live work horses and the horses that have exited."""
    tick = os.sysconf("SC_CLK_TCK")

    def stat(pid: int, upto: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            return 0.0
        return sum(int(x) for x in fields[11:upto]) / tick

    return sum(stat(pid, 15) + sum(stat(child, 13) for child in _children(pid)) for pid in pids)


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def redis_info(r: Redis) -> dict[str, float]:
    info = {**r.info("memory"), **r.info("persistence")}
    stats = r.info("commandstats")
    evals = {k: v for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval")}
    return {
        "used": info["used_memory"],
        "peak": info["used_memory_peak"],
        "aof": info.get("aof_current_size", 0),
        "evals": sum(v["calls"] for v in evals.values()),
        "eval_usec": sum(v["usec"] for v in evals.values()),
    }


def run_job(
    http: httpx.Client, r: Redis, seed_set: str, n: int, workers: list[Process], marks: list[int]
) -> dict:
    job = http.post("/v1/jobs", json={"seed_set_id": seed_set, "num_instructions": n}).json()
    start, wall_start = time.monotonic(), time.time()
    pids = [w.pid for w in workers]
    samples: list[tuple[float, int, int, float, dict[str, float]]] = []  # t, kept, decisions, cpu, redis
    stages: dict[str, float] = {}
    sample_stages: list[str] = []
    log = DecisionLog(r, job["id"])
    while True:
        body = http.get(f"/v1/jobs/{job['id']}").json()
        stages.setdefault(body["stage"] or "queued", time.monotonic() - start)
        sample_stages.append(body["stage"] or "queued")
        kept = body["progress"]["instructions_kept"] if body["stage"] in (None, "instructions") else n
        samples.append((time.monotonic() - start, kept, log.count(), cpu_seconds(pids), redis_info(r)))
        if body["state"] in ("succeeded", "failed", "canceled"):
            break
        time.sleep(0.25)
    if body["state"] != "succeeded":
        raise RuntimeError(f"job ended {body['state']}: {body.get('error')}")
    wall = time.monotonic() - start
    while r.hget(keyspace.job(job["id"]), "archived") != b"true":  # decisions move to S3 just after
        time.sleep(0.2)
    archived = time.monotonic() - start - wall
    windows = {}
    # stage 1 only (the pool grows there); a window is the last 30% before each mark
    stage1 = [x for x, stage in zip(samples, sample_stages, strict=True) if stage == "instructions"]
    for mark in marks:
        inside = [x for x in stage1 if mark * 0.7 <= x[1] <= mark]
        if len(inside) < 2 or inside[-1][2] == inside[0][2]:
            continue
        a, b = inside[0], inside[-1]
        evals = b[4]["evals"] - a[4]["evals"]
        # the AOF shrinks when Redis rewrites it: count only growth between samples
        aof = sum(max(0.0, y[4]["aof"] - x[4]["aof"]) for x, y in itertools.pairwise(inside))
        windows[mark] = {
            "cpu_ms_per_candidate": 1000 * (b[3] - a[3]) / (b[2] - a[2]),
            "cpu_ms_per_kept": 1000 * (b[3] - a[3]) / max(b[1] - a[1], 1),
            "commit_us": (b[4]["eval_usec"] - a[4]["eval_usec"]) / max(evals, 1),
            "aof_bytes_per_commit": aof / max(evals, 1),
        }
    running_peak = max(s[4]["used"] for s in samples)
    return {
        "job": body,
        "wall": wall,
        "wall_start": wall_start,
        "stages": stages,
        "archived": archived,
        "windows": windows,
        "decisions": max(s[2] for s in samples),
        "peak": running_peak,
    }


def endpoint_busy(answered: dict[str, int], res: dict[str, Any], cost: float) -> dict[str, dict[str, float]]:
    """Each stage's span against the endpoint time its answers took (`cost` seconds an answer at full
    use): where a run left the endpoint idle. `after last answer`: the export and upload."""
    # a second's answers at its start (the first second's, at the job's start)
    start = res["wall_start"]
    seconds = [(max(int(k) - start, 0.0), v) for k, v in answered.items() if int(k) + 1 >= start]
    last = max((t for t, _ in seconds), default=-1.0) + 1
    bounds = [*res["stages"].items(), ("done", res["wall"])]
    out = {}
    for (stage, began), (_, ended) in itertools.pairwise(bounds):
        stop = min(ended, last)
        answers = sum(v for t, v in seconds if began <= t < stop)
        out[stage] = {"span": max(stop - began, 0.0), "busy": answers * cost}
    out["after last answer"] = {"span": max(res["wall"] - last, 0.0), "busy": 0.0}
    return out


def key_usage(r: Redis) -> dict[str, int]:
    """Bytes (MEMORY USAGE) by kind of key: the service's job keys, RQ's own, the rest."""
    out: dict[str, int] = {}
    for key in r.scan_iter(count=1000):
        name = key.decode()
        kind = "rq" if name.startswith("rq:") else name.split(":")[1] if name.count(":") else name
        out[kind] = out.get(kind, 0) + (r.memory_usage(key) or 0)
        if os.environ.get("PAPER_SCALE_KEYS") and kind == "job":
            print(name, r.memory_usage(key))
    return out


def last_page_cursor(http: httpx.Client, job_id: str, query: str) -> tuple[str | None, int]:
    """The cursor that opens the filter's last page of 50, and the filter's total."""
    cursor, opening = None, None
    while True:
        url = f"/v1/jobs/{job_id}/decisions?limit=50{query}" + (f"&cursor={cursor}" if cursor else "")
        page = http.get(url).json()
        if page["next_cursor"] is None:
            return opening, page["total"]
        opening = cursor = page["next_cursor"]


def flat_costs(sizes: tuple[int, ...] = (1000, 10_000, 52_445)) -> list[dict[str, float]]:
    """In-process: the per-item costs that could grow with the run, a row per pool size: a file-store
    commit (ms), a progress count and a pool sample (us per 1,000) and ROUGE-L's nearest (ms)."""
    from jobs.method.checkpoint import Checkpoint, FileStore
    from jobs.method.similarity import RougeLIndex

    rng = random.Random(0)
    texts = [_instruction(rng) for _ in range(max(sizes) + 500)]
    queries = texts[-500:]
    rows = []
    index, added = RougeLIndex(), 0
    for size in sizes:
        while added < size:
            index.add(f"i{added}", texts[added])
            added += 1
        with tempfile.TemporaryDirectory() as tmp:
            store = FileStore(tmp)
            cp = Checkpoint(instructions=[{"id": f"i{i}", "text": texts[i]} for i in range(size)])
            cp.classification = {f"i{i}": {"label": "no", "raw": " No"} for i in range(size)}
            cp.instances = {f"i{i}": [{"input": "a b", "output": "c d e."}] for i in range(size)}
            store.commit(cp, [])  # the first commit writes it all; then deltas of 4 items
            started = time.perf_counter()
            for k in range(50):
                cp.instructions.append({"id": f"x{k}", "text": texts[k]})
                cp.instances[f"x{k}"] = []
                store.commit(cp, [])
            commit = (time.perf_counter() - started) / 50 * 1000
            cp.instances_kept()  # the first call counts everything; then only what is new
            started = time.perf_counter()
            for _ in range(1000):
                cp.instances[f"y{_}"] = [{"input": "", "output": "o"}]
                cp.instances_kept()
            progress = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        for _ in range(1000):
            rng.sample(range(size), 2)
        sample = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        for q in queries:
            index.nearest(q)
        nearest = (time.perf_counter() - started) / len(queries) * 1000
        rows.append(
            {"pool": size, "commit": commit, "progress": progress, "sample": sample, "nearest": nearest}
        )
    return rows


def run(
    instructions: int,
    latency: float = 0.1,
    concurrency: int = 16,
    workers: int = 2,
    jobs: int = 1,
    rate: int = 200,
    seconds: int = 10,
) -> dict[str, Any]:
    """The whole stack, `jobs` jobs one after the other. The headline: each job's measured wall time
    over the endpoint-limited ideal (`results[i]["vs_ideal"]`), worker CPU per candidate as the pool
    grows, Redis memory, and wrk's figures for the first and last decision pages of the last job
    (`pages`: what those pages hold, read once outside the timing)."""
    os.environ.update(AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET)
    with tempfile.TemporaryDirectory(prefix="paper-scale-") as tmp_name:
        tmp = Path(tmp_name)
        parts: list[Process] = []
        try:
            port = free_port()
            cmd = [sys.executable, "-m", "benchmarks.paper_scale", "--serve-endpoint", str(port)]
            cmd += ["--latency", str(latency), "--concurrency", str(concurrency)]
            endpoint = Process(cmd, tmp / "endpoint.log")
            parts.append(endpoint)
            redis_proc, redis_url = redis_server(tmp / "redis", appendonly=True, appendfsync="everysec")
            parts.append(redis_proc)
            s3_proc, s3_url = s3_server(tmp / "s3")
            parts.append(s3_proc)
            profile = Profile.of(
                "bench", f"http://127.0.0.1:{port}/v1", "m", concurrency=concurrency, timeout=60
            )
            settings = Settings(
                redis_url=redis_url,
                s3_endpoint_url=s3_url,
                s3_public_endpoint_url=s3_url,
                profiles={"bench": profile},
                default_profile="bench",
                work_dir=str(tmp),
                # one chunk a worker at a time keeps both workers busy without flooding the endpoint
                instance_chunk_size=max(instructions // (4 * workers), 50),
                log_level="WARNING",
                rate_limit_per_minute=100_000,
            )
            Artifacts(settings).ensure_bucket()
            r = Redis.from_url(redis_url)
            key = api_keys.create(r, "bench", "bench")[1]
            env = {**settings.to_env(), "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
            api, url = gunicorn(env, tmp / "gunicorn.log", workers=2)
            parts.append(api)
            rq_workers = [rq_worker(env, tmp / f"worker{i}.log") for i in range(workers)]
            parts += rq_workers
            http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120)
            seeds = (ROOT / "data" / "seed_tasks.jsonl").read_bytes()
            seed_set = http.post(
                "/v1/seed-sets?name=paper", content=seeds, headers={"Content-Type": "application/x-ndjson"}
            ).json()["id"]
            baseline = redis_info(r)["used"]
            marks = [m for m in (1000, 10_000, 52_000) if m <= instructions] + [instructions]
            marks = sorted(set(marks))
            print(
                f"endpoint: {latency * 1000:.0f} ms a request, {concurrency} in flight; "
                f"{workers} RQ workers; {instructions} instructions a job; Redis AOF everysec"
            )
            results = []
            for number in range(jobs):
                served_before = httpx.get(f"http://127.0.0.1:{port}/stats").json()["requests"]
                res = run_job(http, r, seed_set, instructions, rq_workers, marks)
                res["requests"] = (
                    httpx.get(f"http://127.0.0.1:{port}/stats").json()["requests"] - served_before
                )
                res["after"] = redis_info(r)
                res["ideal"] = res["requests"] * latency / concurrency
                res["busy"] = endpoint_busy(
                    httpx.get(f"http://127.0.0.1:{port}/stats").json()["answered"], res, latency / concurrency
                )
                res["vs_ideal"] = res["wall"] / res["ideal"]
                results.append(res)
                p = res["job"]["progress"]
                print(
                    f"job {number + 1}: {p['instructions_kept']} instructions, "
                    f"{p['instances_kept']} instances, "
                    f"{res['decisions']} decisions, {res['requests']} requests; "
                    f"ideal {res['ideal']:.0f} s, measured {res['wall']:.0f} s ({res['vs_ideal']:.2f}x); "
                    f"Redis after: {(res['after']['used'] - baseline) / 1e6:.2f} MB above the empty baseline"
                )
            keys = key_usage(r)
            info = redis_info(r)
            job_id = results[-1]["job"]["id"]
            query = "&stage=instruction&rule=kept"
            cursor, total = last_page_cursor(http, job_id, query)
            base = f"{url}/v1/jobs/{job_id}/decisions?limit=50{query}"
            script = tmp / "pace.lua"
            script.write_text(PACE.format(rate=rate * 1.12 / 8))
            http.get(f"/v1/jobs/{job_id}/decisions?limit=1")  # the archive is fetched once per API process
            pages, measured = {}, {}
            first_text = http.get(base).json()["items"][0]["text"]
            word = next((w for w in words(first_text) if len(w) > 3), words(first_text)[0])
            for label, target in (
                ("first page", base),
                ("last page", f"{base}&cursor={cursor}" if cursor else base),
                (f"text search q={word}, first page", f"{base}&q={word}"),
            ):
                body = http.get(target).json()
                pages[label] = {
                    "items": body["items"],
                    "next_cursor": body["next_cursor"],
                    "total": body["total"],
                }
                measured[label] = wrk(target, seconds, 8, script, key)
        finally:
            problems = {}
            for log in sorted(tmp.glob("worker*.log")):
                lines = [line for line in log.read_text().splitlines() if "error" in line.lower()]
                problems[log.name] = len(lines)
                if lines:
                    print(f"{log.name}: {len(lines)} error lines, the last: {lines[-1][:300]}")
            for part in reversed(parts):
                part.stop()
    return {
        "baseline": baseline,
        "results": results,
        "keys": keys,
        "redis": info,
        "query": query,
        "filter_total": total,
        "word": word,
        "pages": pages,
        "wrk": measured,
        "worker_errors": problems,
    }


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--instructions", type=int, default=52_445)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-max", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--costs", action="store_true", help="only the in-process per-item costs")
    parser.add_argument("--serve-endpoint", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.costs:
        print(f"{'pool':>7} {'commit ms':>10} {'progress us':>12} {'sample us':>10} {'nearest ms':>11}")
        for c in flat_costs():
            print(
                f"{c['pool']:>7} {c['commit']:>10.3f} {c['progress']:>12.2f} {c['sample']:>10.2f} "
                f"{c['nearest']:>11.3f}"
            )
        return
    if args.serve_endpoint:
        asyncio.run(serve_endpoint(args.serve_endpoint, args.latency, args.concurrency, args.latency_max))
        return
    out = run(
        args.instructions, args.latency, args.concurrency, args.workers, args.jobs, args.rate, args.seconds
    )
    results, baseline, info = out["results"], out["baseline"], out["redis"]
    first = results[0]
    began = ", ".join(f"{k} {v:.0f}" for k, v in first["stages"].items())
    print(f"stages began at (s): {began}; decisions archived {first['archived']:.1f} s after")
    busy = ", ".join(f"{k} {v['span']:.0f} s ({v['busy']:.0f} s busy)" for k, v in first["busy"].items())
    print(f"endpoint use (span, of it the endpoint's answer time): {busy}")
    print(f"Redis keys of the finished jobs: {out['keys']}")
    print(
        f"\n{'kept instructions':>18} {'CPU ms/candidate':>17} {'CPU ms/kept':>12} "
        f"{'commit us':>10} {'AOF B/commit':>13}"
    )
    for mark, w in first["windows"].items():
        print(
            f"{mark:>18} {w['cpu_ms_per_candidate']:>17.2f} {w['cpu_ms_per_kept']:>12.2f} "
            f"{w['commit_us']:>10.0f} {w['aof_bytes_per_commit']:>13.0f}"
        )
    print(
        f"\nRedis: peak {info['peak'] / 1e6:.1f} MB (while running, above baseline: "
        f"{(first['peak'] - baseline) / 1e6:.1f} MB, "
        f"{(first['peak'] - baseline) / first['decisions']:.0f} B a "
        f"decision); after the jobs: {(info['used'] - baseline) / 1e3:.1f} kB above baseline for "
        f"{len(results)} finished job(s); AOF {info['aof'] / 1e6:.1f} MB"
    )
    for label, res in out["wrk"].items():
        total = out["pages"][label]["total"]
        print(
            f"decisions {out['query'][1:]} ({total}), {label}: {res['rps']:.0f} req/s, "
            f"p50 {res['p50']:.2f} ms, "
            f"p99 {res['p99']:.2f} ms, non-2xx {res['errors']}"
        )


if __name__ == "__main__":
    main()
