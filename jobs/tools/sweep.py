"""End the retention of every job whose time is up: `python -m jobs.tools.sweep` (for a periodic task;
every finished job also sweeps)."""

from jobs.blobs.artifacts import Artifacts
from jobs.runner import queue
from jobs.runner.retention import sweep
from jobs.settings import get_settings

if __name__ == "__main__":
    settings = get_settings()
    print(f"expired {sweep(queue.connect(settings), Artifacts(settings, patient=True), settings, 1000)} jobs")
