"""What runs jobs: the queue (enqueue, fan out, cancel), the RQ entry points (generation, finalize,
preview) and their context, the worker, and retention."""

import signal

PREEMPT_SIGNAL = signal.SIGUSR1  # what a stopping worker (jobs.runner.worker) sends its work horse
