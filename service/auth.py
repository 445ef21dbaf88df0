"""Who is calling: an API key (Authorization: Bearer) names the team; per-team request rate limit.

Every resource belongs to a team, and a team sees only its own: another team's seed set, job,
decisions or dataset answers 404, exactly like one that does not exist.
"""

from __future__ import annotations

import time

from flask import g, request

from jobs.store import api_keys, keyspace
from service.context import DEFAULT_TEAM, services
from service.errors import problem

PUBLIC = ("/healthz", "/readyz", "/openapi.json", "/metrics")
SECURITY_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "An API key: python -m jobs.tools.keys create",
}


def authenticate() -> None:
    """A before_request hook: sets g.team, or answers 401 / 429."""
    if request.path in PUBLIC:
        return
    s = services()
    if s.settings.auth_disabled:
        g.team = DEFAULT_TEAM
    else:
        scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            problem(401, "an API key is required: Authorization: Bearer <key>", WWW_Authenticate="Bearer")
        team = api_keys.team_for(s.redis, secret.strip())
        if team is None:
            problem(401, "unknown or revoked API key", WWW_Authenticate='Bearer error="invalid_token"')
        g.team = team
    _rate_limit(g.team)


def _rate_limit(team: str) -> None:
    limit = services().settings.rate_limit_per_minute
    if limit <= 0:
        return
    now = time.time()
    window = keyspace.rate_window(team, int(now // 60))
    pipe = services().redis.pipeline()
    pipe.incr(window)
    pipe.expire(window, 120)
    count, _ = pipe.execute()
    if count > limit:
        retry_after = str(max(1, 60 - int(now) % 60))
        problem(
            429, f"more than {limit} requests a minute for this team; retry later", Retry_After=retry_after
        )
