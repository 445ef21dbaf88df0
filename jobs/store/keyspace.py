"""Every Redis key name the service and workers use, in one place (RQ's own `rq:*` keys aside).

si:job:<id>                          job record (hash)
si:job:<id>:dec|decid|seq|dx:<f>     its decision log (jobs.store.decision_log)
si:job:<id>:checkpoint[:<part>]      its checkpoints: snapshot and last commit number (hash)
si:job:<id>:cpdeltas[:<part>]        their deltas since the snapshot (list; jobs.store.checkpoints)
si:job:<id>:events                   its events (capped stream; jobs.store.events)
si:job:<id>:batches                  batch mode: each provider batch's last status seen (hash)
si:job:<id>:board:<part>             its spread requests, their answers and helpers (jobs.store.board)
si:job:<id>:gone                     a deleted or expired job's tombstone: its team (string, expires)
si:jobs:expiring                     finished jobs by the time their retention ends (sorted set)
si:spreading                         runs asking for helpers now, by when they stop counting (sorted set)
si:given_way:<rq id>                 a main run a chunk gave its worker to: the chunk's job id (expires)
si:team:<team>:jobs                  a team's jobs by creation time (sorted set)
si:team:<team>:active_jobs           a team's unfinished jobs (set)
si:team:<team>:seedsets              a team's seed sets by creation time (sorted set)
si:team:<team>:seedset:<sha>         a seed set's record (hash)
si:team:<team>:seedset:<sha>:active  the unfinished jobs using it (set)
si:team:<team>:idem:<sha256(key)>    an Idempotency-Key's claim (string, expires)
rq:rl:si:team:<team>:turns[:...]     RQ's rate limit through which the team's generation RQ jobs take turns
si:team:<team>:rate:<minute>         requests in one rate-limit window (counter, expires)
si:team:<team>:webhook_secret        its webhook signing secret, and the previous one (hash)
si:apikeys                           API key id -> sha256 of its secret (hash)
si:apikey:<sha256>                   an API key's record (hash)
si:stats:jobs_by_state               job counts by state (hash), for metrics
si:preview:<id>                      a preview's request, state and result (hash, expires)
si:endpoint:<key>:leases|limits      an endpoint's shared limits: leases in flight, cap, pause, rates
"""

from __future__ import annotations

import hashlib

from jobs.method.vocabulary import STAGE_RULES

PREFIX = "si"
API_KEYS = f"{PREFIX}:apikeys"
JOBS_BY_STATE = f"{PREFIX}:stats:jobs_by_state"
EXPIRING = f"{PREFIX}:jobs:expiring"
SPREADING = f"{PREFIX}:spreading"
BOARD_PARTS = ("todo", "requests", "leased", "answers", "done", "posted", "closed", "first", "helpers")


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


def board(job_id: str, part: str) -> str:
    return f"{job(job_id)}:board:{part}"


def given_way(rq_id: str) -> str:
    return f"{PREFIX}:given_way:{rq_id}"


def preview(preview_id: str) -> str:
    return f"{PREFIX}:preview:{preview_id}"


def job_gone(job_id: str) -> str:
    return f"{job(job_id)}:gone"


# A job's decision log (jobs.store.decision_log): decision JSON by seq (hash), seq by decision id (hash),
# the last seq (string), and per filter the seqs it holds (sorted set: seq as member and score). A filter
# is a stage, a verdict or a rule, or a stage with a verdict or a rule.
def decisions(job_id: str) -> str:
    return f"{job(job_id)}:dec"


def decision_ids(job_id: str) -> str:
    return f"{job(job_id)}:decid"


def decision_seq(job_id: str) -> str:
    return f"{job(job_id)}:seq"


def decision_indexes(job_id: str) -> str:
    """What a filter's name follows in its index's key (the commit script appends it)."""
    return f"{job(job_id)}:dx:"


def decision_index(job_id: str, name: str) -> str:
    return decision_indexes(job_id) + name


def decision_filter(stage: str | None, verdict: str | None, rule: str | None) -> str:
    """The name of the filter a page asks for ("" for none): a rule makes the verdict redundant."""
    parts = [f"s={stage}" if stage else "", f"r={rule}" if rule else (f"v={verdict}" if verdict else "")]
    return "|".join(p for p in parts if p)


def decision_filters(stage: str, verdict: str, rule: str) -> list[str]:
    """The filters a decision is in."""
    return [f"s={stage}", f"v={verdict}", f"r={rule}", f"s={stage}|v={verdict}", f"s={stage}|r={rule}"]


def job_run_data(job_id: str, chunks: int) -> list[str]:
    """Every key of a job's decision log and checkpoints (the record itself aside)."""
    names = []  # every stage has kept and dropped rules: this meets every verdict with every stage
    for stage, rules in STAGE_RULES.items():
        for rule in rules:
            names += decision_filters(stage, "kept" if rule == "kept" else "dropped", rule)
    names += [f"v={v}" for v in ("kept", "dropped")] + [
        f"s={s}|v={v}" for s in STAGE_RULES for v in ("kept", "dropped")
    ]
    keys = [decisions(job_id), decision_ids(job_id), decision_seq(job_id), job_batches(job_id)]
    keys += [board(job_id, part) for part in BOARD_PARTS]
    keys += [decision_index(job_id, name) for name in dict.fromkeys(names)]
    for part in [None, *(f"chunk{i}" for i in range(chunks))]:
        keys += [checkpoint(job_id, part), checkpoint_deltas(job_id, part)]
    return keys


# An endpoint's limits, shared by every worker (jobs.store.limits): the leases of the attempts in flight
# (sorted set, by expiry) and the rest of its state (hash: cap, paused_until, GCRA cells).
def endpoint_leases(key: str) -> str:
    return f"{PREFIX}:endpoint:{key}:leases"


def endpoint_limits(key: str) -> str:
    return f"{PREFIX}:endpoint:{key}:limits"


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


def team_reference_sets(team: str) -> str:
    return f"{_team(team)}:refsets"


def reference_set(team: str, reference_set_id: str) -> str:
    return f"{_team(team)}:refset:{reference_set_id}"


def team_turns(team: str) -> str:
    """The name of RQ's rate limit through which a team's generation RQ jobs take turns (RQ keeps it
    under rq:rl:<name>; jobs.runner.queue)."""
    return f"{_team(team)}:turns"


def idempotency(team: str, idempotency_key: str) -> str:
    return f"{_team(team)}:idem:{hashlib.sha256(idempotency_key.encode()).hexdigest()}"


def rate_window(team: str, window: int) -> str:
    return f"{_team(team)}:rate:{window}"


def webhook_secret(team: str) -> str:
    return f"{_team(team)}:webhook_secret"


def api_key(digest: str) -> str:
    return f"{PREFIX}:apikey:{digest}"
