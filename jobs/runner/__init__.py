"""What runs jobs: the queue (enqueue, fan out, cancel), the RQ entry points (generation, finalize,
preview) and their context, the worker, and retention."""
