"""Every Redis key name the service and workers use, in one place (RQ's own `rq:*` keys aside).

si:job:<id>                          job record (hash)
si:job:<id>:dec|decid|seq|dx:<f>     its decision log (jobs.store.decision_log)
si:job:<id>:checkpoint[:<part>]      its checkpoints: snapshot and last commit number (hash)
si:job:<id>:cpdeltas[:<part>]        their deltas since the snapshot (list; jobs.store.checkpoints)
si:job:<id>:events                   its events (capped stream; jobs.store.events)
si:job:<id>:batches                  batch mode: each provider batch's last status seen (hash)
si:job:<id>:gone                     a deleted or expired job's tombstone: its team (string, expires)
si:jobs:expiring                     finished jobs by the time their retention ends (sorted set)
si:team:<team>:jobs                  a team's jobs by creation time (sorted set)
si:team:<team>:active_jobs           a team's unfinished jobs (set)
si:team:<team>:seedsets              a team's seed sets by creation time (sorted set)
si:team:<team>:seedset:<sha>         a seed set's record (hash)
si:team:<team>:seedset:<sha>:active  the unfinished jobs using it (set)
si:team:<team>:idem:<sha256(key)>    an Idempotency-Key's claim (string, expires)
si:team:<team>:rate:<minute>         requests in one rate-limit window (counter, expires)
si:team:<team>:webhook_secret        its webhook signing secret, and the previous one (hash)
si:apikeys                           API key id -> sha256 of its secret (hash)
si:apikey:<sha256>                   an API key's record (hash)
si:stats:jobs_by_state               job counts by state (hash), for metrics
si:preview:<id>                      a preview's request, state and result (hash, expires)
"""

from __future__ import annotations

import hashlib

from jobs.method.vocabulary import STAGE_RULES

PREFIX = "si"
API_KEYS = f"{PREFIX}:apikeys"
JOBS_BY_STATE = f"{PREFIX}:stats:jobs_by_state"
EXPIRING = f"{PREFIX}:jobs:expiring"


def job(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def checkpoint(job_id: str, part: str | None = None) -> str:
    return f"{job(job_id)}:checkpoint" + (f":{part}" if part else "")


def checkpoint_deltas(job_id: str, part: str | None = None) -> str:
    return f"{job(job_id)}:cpdeltas" + (f":{part}" if part else "")


def job_events(job_id: str) -> str:
    return f"{job(job_id)}:events"


def job_batches(job_id: str) -> str:
    return f"{job(job_id)}:batches"


def preview(preview_id: str) -> str:
    return f"{PREFIX}:preview:{preview_id}"


def job_gone(job_id: str) -> str:
    return f"{job(job_id)}:gone"


def job_run_data(job_id: str, chunks: int) -> list[str]:
    """Every key of a job's decision log and checkpoints (the record itself aside)."""
    prefix = job(job_id)
    filters = [f"s={s}" for s in STAGE_RULES] + ["v=kept", "v=dropped"]
    filters += [f"s={s}|v={v}" for s in STAGE_RULES for v in ("kept", "dropped")]
    for stage, rules in STAGE_RULES.items():
        filters += [f"r={r}" for r in rules] + [f"s={stage}|r={r}" for r in rules]
    keys = [f"{prefix}:{name}" for name in ("dec", "decid", "seq", "batches")]
    keys += [f"{prefix}:dx:{f}" for f in dict.fromkeys(filters)]
    for part in [None, *(f"chunk{i}" for i in range(chunks))]:
        keys += [checkpoint(job_id, part), checkpoint_deltas(job_id, part)]
    return keys


def _team(team: str) -> str:
    return f"{PREFIX}:team:{team}"


def team_jobs(team: str) -> str:
    return f"{_team(team)}:jobs"


def active_jobs(team: str) -> str:
    return f"{_team(team)}:active_jobs"


def team_seed_sets(team: str) -> str:
    return f"{_team(team)}:seedsets"


def seed_set(team: str, seed_set_id: str) -> str:
    return f"{_team(team)}:seedset:{seed_set_id}"


def seed_set_users(team: str, seed_set_id: str) -> str:
    return f"{seed_set(team, seed_set_id)}:active"


def idempotency(team: str, idempotency_key: str) -> str:
    return f"{_team(team)}:idem:{hashlib.sha256(idempotency_key.encode()).hexdigest()}"


def rate_window(team: str, window: int) -> str:
    return f"{_team(team)}:rate:{window}"


def webhook_secret(team: str) -> str:
    return f"{_team(team)}:webhook_secret"


def api_key(digest: str) -> str:
    return f"{PREFIX}:apikey:{digest}"
