"""Records in Redis: jobs, previews, seed sets, API keys, idempotency claims, events, the decision log,
checkpoints and the progress fields of a job; keyspace names every key."""
