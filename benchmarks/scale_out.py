"""One job on 1, 2, 4 and 8 workers, and another team's small job beside it on 8.

    .venv/bin/python -m benchmarks.scale_out [--instructions 500] [--workers 1,2,4,8]
                                             [--latency 0.5] [--latency-max 1.0] [--limit 32] [--small 10]
                                             [--stage1 'window=8;window=16;round_size=32,seed=2']

Starts Redis, the S3 endpoint, gunicorn and, for each worker count, that many RQ workers, plus the
scripted endpoint of benchmarks.paper_scale answering each request after a uniform 0.5-1 s, at most
--limit at once (its own limit; the profile's max_in_flight says the same). On this 2-core machine the
endpoint, not the CPU, is the bound. It prints, per worker count: the wall time of each stage, the
speed-up over one worker, whether the dataset files are byte-identical to one worker's, and the most
requests the endpoint ever had in flight. Then, on the largest worker count, another team's --small
instruction job: alone, sent while the big job is in stage 1, and sent just after the big job's
instance chunks were queued; its wall time over its time alone. With --stage1, stage 1 alone under each
recipe given (the job is cancelled as it moves on), on the largest worker count: how the window and
rounds compare.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from redis import Redis

from jobs.blobs.artifacts import Artifacts
from jobs.settings import Profile, Settings
from jobs.store import api_keys, keyspace
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
FILES = ("finetune.jsonl", "alpaca.json", "chat.jsonl", "instructions.jsonl", "decisions.jsonl")
STAGES = ("instructions", "classification", "instances")


class Stack:
    """Redis, S3 and gunicorn for the whole benchmark; the endpoint and the workers per measurement."""

    def __init__(self, tmp: Path, latency: float, latency_max: float, limit: int):
        self.tmp, self.latency, self.latency_max, self.limit = tmp, latency, latency_max, limit
        self.parts: list[Process] = []
        self.endpoint_port = free_port()
        redis_proc, redis_url = redis_server(tmp / "redis")
        s3_proc, s3_url = s3_server(tmp / "s3")
        self.parts += [redis_proc, s3_proc]
        profile = Profile.of(
            "bench", f"http://127.0.0.1:{self.endpoint_port}/v1", "m", timeout=60, max_in_flight=limit
        )
        self.settings = Settings(
            redis_url=redis_url,
            s3_endpoint_url=s3_url,
            s3_public_endpoint_url=s3_url,
            profiles={"bench": profile},
            default_profile="bench",
            work_dir=str(tmp),
            log_level="WARNING",
            rate_limit_per_minute=100_000,
        )
        Artifacts(self.settings).ensure_bucket()
        self.r = Redis.from_url(redis_url)
        self.env = {**self.settings.to_env(), "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
        api, self.url = gunicorn(self.env, tmp / "gunicorn.log", workers=2)
        self.parts.append(api)
        seeds = (ROOT / "data" / "seed_tasks.jsonl").read_bytes()
        self.teams: dict[str, tuple[httpx.Client, str]] = {}
        for team in ("big", "small"):
            key = api_keys.create(self.r, team, team)[1]
            http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=120)
            seed_set = http.post(
                "/v1/seed-sets?name=paper", content=seeds, headers={"Content-Type": "application/x-ndjson"}
            ).json()["id"]
            self.teams[team] = (http, seed_set)
        self.endpoint: Process | None = None
        self.workers: list[Process] = []

    def start(self, workers: int) -> None:
        """A fresh endpoint (its in-flight count from zero) and `workers` RQ workers."""
        self.stop_round()
        cmd = [sys.executable, "-m", "benchmarks.paper_scale", "--serve-endpoint", str(self.endpoint_port)]
        cmd += ["--latency", str(self.latency), "--latency-max", str(self.latency_max)]
        cmd += ["--concurrency", str(self.limit)]
        self.endpoint = Process(cmd, self.tmp / "endpoint.log")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{self.endpoint_port}/stats", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        self.workers = [rq_worker(self.env, self.tmp / f"worker{i}.log") for i in range(workers)]
        deadline = time.monotonic() + 60
        while self.r.scard("rq:workers") < workers and time.monotonic() < deadline:
            time.sleep(0.1)

    def most_in_flight(self) -> int:
        return httpx.get(f"http://127.0.0.1:{self.endpoint_port}/stats").json()["most_in_flight"]

    def submit(self, team: str, n: int, **recipe: Any) -> str:
        http, seed_set = self.teams[team]
        body = {"seed_set_id": seed_set, "num_instructions": n, **recipe}
        return http.post("/v1/jobs", json=body).json()["id"]

    def follow(self, team: str, job_id: str, moment: Callable[[dict[str, Any]], None] | None = None) -> dict:
        """Poll the job to its end: its wall time from submission and when each stage began."""
        http, _ = self.teams[team]
        start, stages = time.monotonic(), {}
        while True:
            body = http.get(f"/v1/jobs/{job_id}").json()
            if body["stage"]:
                stages.setdefault(body["stage"], time.monotonic() - start)
            if moment:
                moment(body)
            if body["state"] in ("succeeded", "failed", "canceled"):
                break
            time.sleep(0.1)
        if body["state"] != "succeeded":
            raise RuntimeError(f"job ended {body['state']}: {body.get('error')}")
        return {"job": body, "wall": time.monotonic() - start, "stages": stages}

    def files(self, team: str, job_id: str) -> dict[str, str]:
        a = Artifacts(self.settings)
        out = {}
        for name in FILES:
            body = a.s3.get_object(Bucket=a.bucket, Key=a.dataset_key(team, job_id, name))["Body"].read()
            out[name] = hashlib.sha256(body).hexdigest()
        return out

    def stop_round(self) -> None:
        for part in [*self.workers, *([self.endpoint] if self.endpoint else [])]:
            part.stop()
        self.workers, self.endpoint = [], None
        deadline = time.monotonic() + 30
        while self.r.scard("rq:workers") and time.monotonic() < deadline:
            time.sleep(0.1)

    def close(self) -> None:
        self.stop_round()
        for part in reversed(self.parts):
            part.stop()


def stage_seconds(run: dict) -> dict[str, float]:
    """Each stage's wall time, from when the status first showed it to when the next one showed."""
    marks = sorted((t, s) for s, t in run["stages"].items() if s in STAGES)
    ends = [t for t, _ in marks[1:]] + [run["wall"]]
    return {s: end - t for (t, s), end in zip(marks, ends, strict=True)}


def small_beside(stack: Stack, instructions: int, small: int, when: str) -> tuple[float, str]:
    """The small job's wall time when sent while the big one is in stage 1 (`when` "stage 1") or just
    after its instance chunks were queued ("chunks queued"), and the big job's stage then (a big job
    too quick to be seen in stage 1 gets it when it is first seen past; one too small for chunks, when
    it has ended)."""
    big = stack.submit("big", instructions)
    http, _ = stack.teams["big"]
    while True:
        body = http.get(f"/v1/jobs/{big}").json()
        past = body["stage"] not in (None, "instructions") or body["state"] != "running"
        if when == "stage 1" and body["state"] == "running" and body["stage"] == "instructions":
            break
        if when == "chunks queued" and stack.r.hget(keyspace.job(big), "chunks") is not None:
            break
        # a big job that never fans out: stage 1's moment once past it, the chunks' once it has ended
        if past and body["state"] != "queued" and (when == "stage 1" or body["state"] != "running"):
            break
        time.sleep(0.05)
    at = body["stage"] or body["state"]
    wall = stack.follow("small", stack.submit("small", small))["wall"]
    stack.follow("big", big)
    return wall, at


def stage1(stack: Stack, instructions: int, recipe: dict[str, Any]) -> dict[str, Any]:
    """Stage 1 alone under `recipe` (the job is cancelled once it moves on): its wall time, and the
    requests it sent for the instructions it kept."""
    http, _ = stack.teams["big"]
    job_id, start = stack.submit("big", instructions, **recipe), time.monotonic()
    while True:
        body = http.get(f"/v1/jobs/{job_id}").json()
        if body["state"] in ("failed", "canceled"):
            raise RuntimeError(f"job ended {body['state']}: {body.get('error')}")
        if body["stage"] not in (None, "instructions") or body["state"] == "succeeded":
            break
        time.sleep(0.05)
    wall = time.monotonic() - start
    http.post(f"/v1/jobs/{job_id}/cancel")
    while http.get(f"/v1/jobs/{job_id}").json()["state"] not in ("succeeded", "failed", "canceled"):
        time.sleep(0.1)
    return {
        "wall": wall,
        "requests": body["progress"]["requests"],
        "kept": body["progress"]["instructions_kept"],
    }


def run(
    instructions: int = 500,
    workers: tuple[int, ...] = (1, 2, 4, 8),
    latency: float = 0.5,
    latency_max: float = 1.0,
    limit: int = 32,
    small: int | None = 10,
    stage1_recipes: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    """Rows per worker count (wall, stages, speed-up, identical, most in flight), the small job's
    times (alone, and beside the big job at each moment) on the largest worker count, and stage 1
    alone under each of `stage1_recipes` on the largest worker count."""
    os.environ.update(AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET)
    with tempfile.TemporaryDirectory(prefix="scale-out-") as tmp:
        stack = Stack(Path(tmp), latency, latency_max, limit)
        try:
            rows, first = [], None
            for count in workers:
                stack.start(count)
                job_id = stack.submit("big", instructions)
                res = stack.follow("big", job_id)
                files = stack.files("big", job_id)
                first = first or {"wall": res["wall"], "files": files}
                rows.append(
                    {
                        "workers": count,
                        "wall": res["wall"],
                        "stages": stage_seconds(res),
                        "speedup": first["wall"] / res["wall"],
                        "identical": files == first["files"],
                        "most_in_flight": stack.most_in_flight(),
                        "requests": res["job"]["progress"].get("requests"),
                        # RQ's records of the helpers that answered the main run's requests
                        "helpers": sum(1 for _ in stack.r.scan_iter(f"rq:job:{job_id}-helper-*")),
                    }
                )
                print(_row(rows[-1]), flush=True)
            beside: dict[str, Any] = {}
            if small:
                stack.start(max(workers))
                beside["alone"] = stack.follow("small", stack.submit("small", small))["wall"]
                for when in ("stage 1", "chunks queued"):
                    beside[when], beside[f"{when}: big job at"] = small_beside(
                        stack, instructions, small, when
                    )
                beside["most_in_flight"] = stack.most_in_flight()
            firsts = []
            if stage1_recipes:
                stack.start(max(workers))
                print(f"\nstage 1 alone on {max(workers)} workers:")
                print(f"{'recipe':>20} {'wall s':>8} {'requests':>9} {'kept':>5} {'req/kept':>9}")
                for recipe in stage1_recipes:
                    firsts.append({"recipe": recipe, **stage1(stack, instructions, recipe)})
                    print(_stage1_row(firsts[-1]), flush=True)
        finally:
            stack.close()
    return {"rows": rows, "small": beside, "limit": limit, "stage1": firsts}


def _row(row: dict[str, Any]) -> str:
    stages = " ".join(f"{row['stages'].get(s, 0):>8.1f}" for s in STAGES)
    return (
        f"{row['workers']:>7} {row['wall']:>8.1f} {stages} {row['speedup']:>7.2f}x "
        f"{row['identical']!s:>9} {row['most_in_flight']:>8}"
    )


def _stage1_row(row: dict[str, Any]) -> str:
    recipe = ",".join(f"{k}={v}" for k, v in row["recipe"].items()) or "shipped"
    per = row["requests"] / max(row["kept"], 1)
    return f"{recipe:>20} {row['wall']:>8.1f} {row['requests']:>9} {row['kept']:>5} {per:>9.2f}"


def _recipes(text: str) -> tuple[dict[str, Any], ...]:
    """ "window=8;window=16,seed=3;round_size=32": recipes separated by ';', fields by ','."""
    out = []
    for recipe in filter(None, text.split(";")):
        fields = (pair.split("=", 1) for pair in recipe.split(","))
        out.append({k.strip(): int(v) for k, v in fields})
    return tuple(out)


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--instructions", type=int, default=500)
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--latency-max", type=float, default=1.0)
    parser.add_argument("--limit", type=int, default=32)
    parser.add_argument("--small", type=int, default=10)
    parser.add_argument(
        "--stage1", default="", help="recipes to time stage 1 alone under, e.g. 'window=8;round_size=32'"
    )
    args = parser.parse_args()
    workers = tuple(int(w) for w in args.workers.split(","))
    print(
        f"{args.instructions} instructions; endpoint {args.latency}-{args.latency_max} s a request, "
        f"at most {args.limit} in flight; the shipped defaults otherwise"
    )
    print(
        f"{'workers':>7} {'wall s':>8} {'stage 1':>8} {'stage 2':>8} {'stage 3':>8} {'speedup':>8} "
        f"{'identical':>9} {'in flight':>8}"
    )
    stage1_recipes = _recipes(args.stage1)
    out = run(
        args.instructions, workers, args.latency, args.latency_max, args.limit, args.small, stage1_recipes
    )
    small = out["small"]
    if small:
        alone = small["alone"]
        print(f"\nanother team's {args.small}-instruction job on {max(workers)} workers: alone {alone:.1f} s")
        for when in ("stage 1", "chunks queued"):
            ratio, at = small[when] / alone, small[f"{when}: big job at"]
            print(
                f"  sent at the big job's {when} (it was at {at}): {small[when]:.1f} s ({ratio:.2f}x alone)"
            )
        print(f"  the endpoint's most in flight meanwhile: {small['most_in_flight']} (limit {out['limit']})")


if __name__ == "__main__":
    main()
