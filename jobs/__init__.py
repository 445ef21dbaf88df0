"""Work behind the service. The method itself is the subpackage jobs.method; this level is the job
plumbing: the job record (job.py) and its RQ entry points (rq_jobs.py, queued by queue.py), the
worker, API keys, S3 artifacts, the Redis decision log and checkpoint store, every Redis key name
(keyspace.py) and the operator's settings.

Never imports Flask or service/.
"""

__version__ = "0.1.0"
