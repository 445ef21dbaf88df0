"""/v1/jobs/{id}/decisions: every candidate's verdict, rule and nearest item; filterable, cursor-paged."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE

from api_spec.decisions import DecisionListArgsSchema, DecisionPageSchema, DecisionSchema, RuleSchema
from jobs.blobs.decision_archive import NAME, ArchivedLog, Cache
from jobs.method.decisions import Query
from jobs.method.vocabulary import RULES, STAGE_RULES
from jobs.store import keyspace
from jobs.store.decision_log import Cursor, DecisionLog
from jobs.store.job import Job
from service.context import services
from service.errors import problem
from service.generation_jobs import get_job

blp = Blueprint(
    "decisions", __name__, url_prefix="/v1", description="Filter decisions, kept or dropped, and why."
)


_archives: Cache | None = None
T = TypeVar("T")


def _archived(job: Job) -> ArchivedLog:
    global _archives
    if _archives is None:
        _archives = Cache(Path(services().settings.work_dir) / "decision-archives")
    artifacts = services().artifacts
    return _archives.get(job.id, lambda path: artifacts.download_archive(job.team, job.id, NAME, path))


def _read(job: Job, read: Callable[[DecisionLog | ArchivedLog], T]) -> T:
    """`read` from the job's log: a running job's is in Redis; a finished job's, archived in S3
    (docs/reliability.md, Retention). A job archived while its Redis log was read may have lost that
    log mid-read: the archive answers instead."""
    if job.archived:
        return read(_archived(job))
    out = read(DecisionLog(services().redis, job.id))
    if services().redis.hget(keyspace.job(job.id), "archived") == b"true":
        return read(_archived(job))
    return out


@blp.route("/jobs/<job_id>/decisions")
class Decisions(MethodView):
    @blp.arguments(DecisionListArgsSchema, location="query", unknown=RAISE)
    @blp.response(200, DecisionPageSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(410, response="GONE")
    def get(self, args: dict[str, Any], job_id: str) -> Response:
        """A page of decisions in the order they were made; available while the job runs."""
        job = get_job(job_id)
        after = Cursor.decode(args.get("cursor")).seq  # the schema has checked its form
        text = Query(args["q"]) if args.get("q") else None
        items, last, total = _read(
            job,
            lambda log: log.page(
                args.get("stage"), args.get("verdict"), args.get("rule"), after, args["limit"], text
            ),
        )
        # the stored records are DecisionSchema's JSON already: splice them in, don't re-serialise
        cursor = json.dumps(Cursor(last).encode() if last else None)
        tail = f'], "next_cursor": {cursor}, "total": {json.dumps(total)}}}'
        body = b'{"items": [' + b", ".join(items) + tail.encode()
        return Response(body, mimetype="application/json")


@blp.route("/jobs/<job_id>/decisions/<decision_id>")
class DecisionById(MethodView):
    @blp.response(200, DecisionSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(410, response="GONE")
    def get(self, job_id: str, decision_id: str) -> Response:
        """One decision, with its nearest pool item and ROUGE-L score where it has one."""
        job = get_job(job_id)
        decision = _read(job, lambda log: log.get(decision_id))
        if decision is None:
            problem(404, f"no decision {decision_id} in job {job_id}")
        return Response(decision, mimetype="application/json")


@blp.route("/rules")
class Rules(MethodView):
    @blp.response(200, RuleSchema(many=True))
    def get(self) -> list[dict[str, str]]:
        """The closed set of rule names a decision can carry."""
        return [
            {"name": rule, "stage": stage, "description": RULES[rule]}
            for stage, rules in STAGE_RULES.items()
            for rule in rules
        ]
