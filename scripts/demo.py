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

from jobs.tools.local_stack import Stack  # noqa: E402


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--instructions", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "out" / "demo"))
    args = parser.parse_args()
    run = ROOT / ".run" / "demo"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    started = time.monotonic()
    stack = Stack(run)
    try:
        stack.start(step)
        url, api_key = stack.url, stack.api_key
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
            print(f"the job did not succeed (exit {result.returncode}); see {run}/worker0.log")
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
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
