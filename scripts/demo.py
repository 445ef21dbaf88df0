"""The main job, end to end on one machine with the embedded defaults.

Starts Redis, an S3 endpoint (rclone serve s3), the local model, gunicorn and an RQ worker on
private ports; submits the bundled seed set over HTTP with the `selfinstruct` command, which shows
progress and downloads the dataset; prints where it is and a summary; stops everything.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobs.local_model import MODEL_ALIAS, LocalModel  # noqa: E402
from jobs.settings import Profile, Settings  # noqa: E402
from tests.servers import S3_KEY, S3_SECRET, gunicorn, redis_server, rq_worker, s3_server  # noqa: E402


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instructions", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "out" / "demo"))
    args = parser.parse_args()
    run = ROOT / ".run" / "demo"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    os.environ.update(AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET)
    started = time.monotonic()
    stack = []
    try:
        step("starting Redis, the S3 endpoint and the local model")
        redis, redis_url = redis_server(run / "redis")
        stack.append(redis)
        s3, s3_url = s3_server(run / "s3")
        stack.append(s3)
        model = LocalModel(log_file=run / "model.log").start()
        settings = Settings(
            redis_url=redis_url,
            s3_endpoint_url=s3_url,
            s3_public_endpoint_url=s3_url,
            s3_bucket="selfinstruct",
            profiles={"local": Profile("local", model.base_url, MODEL_ALIAS, timeout=300, concurrency=1)},
            default_profile="local",
            work_dir=str(run),
        )
        from jobs.artifacts import Artifacts

        Artifacts(settings).ensure_bucket()
        from redis import Redis

        from jobs import keys

        _, api_key = keys.create(Redis.from_url(redis_url), "demo", "demo")
        env = {**settings.to_env(), "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
        step("starting gunicorn and a worker (logs in .run/demo/)")
        api, url = gunicorn(env, run / "gunicorn.log")
        stack.append(api)
        stack.append(rq_worker(env, run / "worker.log"))
        step(f"submitting data/seed_tasks.jsonl to {url} for {args.instructions} instructions")
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "selfinstruct"),
                "--url",
                url,
                "submit",
                str(ROOT / "data" / "seed_tasks.jsonl"),
                "--instructions",
                str(args.instructions),
                "--seed",
                str(args.seed),
                "--wait",
                "--download",
                str(out),
            ],
            env={**os.environ, "SELFINSTRUCT_API_KEY": api_key},
            check=False,
        )
        if result.returncode != 0:
            print(f"the job did not succeed (exit {result.returncode}); see {run}/worker.log")
            return result.returncode
        stats = json.loads((out / "stats.json").read_text())
        step(f"done in {time.monotonic() - started:.0f} s (job wall time {stats['wall_seconds']:.0f} s)")
        print(f"dataset: {out}/  (README.md describes it)")
        for stage, rules in stats["verdicts"].items():
            print(f"  {stage} decisions: " + ", ".join(f"{k} {v}" for k, v in sorted(rules.items())))
        print(f"  classification answers: {stats['classification']}")
        t = stats["tokens"]
        print(
            f"  tokens: {t['prompt']} prompt + {t['completion']} completion; endpoint busy "
            f"{stats['endpoint_busy_fraction']:.0%}"
        )
        return 0
    finally:
        step("stopping")
        for proc in reversed(stack):
            proc.stop()
        if "model" in locals():
            model.stop()


if __name__ == "__main__":
    sys.exit(main())
