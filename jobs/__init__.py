"""Work behind the service, in rooms by what they hold (one floor imports only the floors below it):

- jobs.method: the SELF-INSTRUCT method itself (recipe, run, stages, transport, outputs); no Redis, S3,
  RQ or HTTP, so it runs the same in a worker, a preview and the command line.
- jobs.store: records in Redis (jobs and their states, previews, seed sets, API keys, idempotency,
  events, batches, the decision log, checkpoints, progress fields) and every Redis key name (keyspace).
- jobs.blobs: objects in S3 (seed sets, datasets, earlier jobs' instructions, the decision archive).
- jobs.runner: what runs jobs (the queue, the RQ entry points, the worker, previews, retention, the
  metrics endpoint).
- jobs.tools: command-line tools (local generation, dedup, API keys, the local stack, the local model).

settings.py (the operator's environment), logs.py, retry.py and webhooks.py serve them all. Never
imports Flask or service/.
"""

__version__ = "0.1.0"
