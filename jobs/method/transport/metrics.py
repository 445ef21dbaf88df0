"""Prometheus counters of the endpoint's work: LLM requests, tokens, retries, latency and cost.

(Dedup time is counted in jobs.method.stages.filters, decisions in jobs.method.run.)

prometheus_client only: a worker serves them (jobs.runner.metrics_server); a local run just counts.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

LLM_REQUESTS = Counter(
    "selfinstruct_llm_requests_total",
    "LLM requests, by stage and outcome (ok, or error after every retry)",
    ["stage", "outcome"],
)
LLM_SECONDS = Histogram(
    "selfinstruct_llm_request_seconds",
    "Latency of successful LLM requests",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
LLM_RETRIES = Counter(
    "selfinstruct_llm_retries_total", "Failed LLM attempts, by kind (429, 500, timeout, ...)", ["kind"]
)
LLM_TOKENS = Counter(
    "selfinstruct_llm_tokens_total", "Tokens, by stage and kind (prompt, completion)", ["stage", "kind"]
)
LLM_COST = Counter(
    "selfinstruct_llm_cost_total",
    "What the tokens cost at the profile's prices, by stage and currency",
    ["stage", "currency"],
)
LLM_WAIT_SECONDS = Counter(
    "selfinstruct_llm_wait_seconds_total",
    "Seconds requests waited for the endpoint's limits: shared by every worker (shared), or told by "
    "its rate-limit headers (headers)",
    ["kind"],
)
