"""/v1/jobs: create (idempotent, with an optional webhook), get with progress and ETA, list, cancel,
delete."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import structlog
from flask import g, request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE
from redis.exceptions import RedisError

from api_spec.jobs import (
    ExtensionCreateSchema,
    IdempotencyHeaderSchema,
    JobCreateSchema,
    JobListArgsSchema,
    JobPageSchema,
    JobSchema,
)
from api_spec.webhooks import CALLBACKS
from jobs import webhooks
from jobs.method.endpoint import cost_summary
from jobs.method.recipe import REQUEST_FIELDS, Recipe
from jobs.method.seed_tasks import InstructionsError, parse_instruction_records
from jobs.runner import queue, retention
from jobs.store import idempotency
from jobs.store import job as jobs_
from jobs.store import webhooks as webhook_store
from service import job_body, pages
from service.context import services, team
from service.errors import headers, json_object, load, problem

blp = Blueprint("jobs", __name__, url_prefix="/v1/jobs", description="Generation jobs, run by RQ workers.")
log = structlog.get_logger(__name__)


@blp.before_request
def _json_only() -> None:
    if request.method == "POST" and request.path == "/v1/jobs" and request.mimetype != "application/json":
        problem(415, f"unsupported content type {request.mimetype or '(none)'}: send application/json")


def _time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def render(job: jobs_.Job) -> dict[str, Any]:
    tokens, stop_reason = jobs_.spending(services().redis, job.id)
    profile = services().settings.profiles.get(job.profile)
    prices = profile.prices if profile else None
    return {
        "id": job.id,
        "state": job.state,
        "stage": job.stage,
        "seed_set_id": job.seed_set_id,
        "profile": job.profile,
        "config": {
            k: len(v) if k == "instructions" else v for k, v in job.config.items()
        },  # a stage-level job's list, by its size
        "created_at": _time(job.created_at),
        "started_at": _time(job.started_at),
        "finished_at": _time(job.finished_at),
        "progress": {**job.progress, "instructions_target": job.config["num_instructions"]},
        "eta_seconds": job.eta_seconds(),
        "error": job.error,
        "warnings": job.warnings,
        "cancel_requested": job.cancel_requested,
        "cost": cost_summary(tokens["prompt"], tokens["completion"], prices, profile.endpoint.currency)
        if profile and prices
        else None,
        "stop_reason": stop_reason,
        "dataset_available": job.dataset,
        "notify_url": job.notify_url,
        "deliveries": [
            {
                "event": d.event,
                "attempts": d.attempts,
                "last_status": d.status,
                "last_error": d.error,
                "delivered": d.delivered,
                "pending": not d.final,
                "last_attempt_at": _time(d.last_attempt_at),
            }
            for d in job.deliveries
        ],
    }


def get_job(job_id: str) -> jobs_.Job:
    """The caller's job, or 404 (also for another team's job: ids are not secrets, data is); 410 for
    one of the caller's jobs that was deleted or whose retention period has ended."""
    r = services().redis
    job = jobs_.get(r, job_id) if len(job_id) == 32 else None
    if job is not None and job.team == team() and not job.expired():
        return job
    if (job is not None and job.team == team()) or (job is None and jobs_.gone(r, job_id) == team()):
        problem(410, f"job {job_id} was deleted or its retention period ended")
    problem(404, f"no job {job_id}")


CREATE_BODY = {"required": True, "content": {"application/json": {"schema": JobCreateSchema}}}


def _read_create() -> tuple[dict[str, Any], str, str | None]:
    """The body, the profile and the Idempotency-Key, checked against the schema, the operator's
    limits and the seed set: every fault in one 422 (a missing seed set alone is a 404)."""
    settings, errors = services().settings, []
    body = request.get_json(silent=True) if request.get_data() else {}
    if body is None:
        problem(400, "the body is not valid JSON")
    if not isinstance(body, dict):
        problem(422, "invalid job request", [{"field": "(body)", "message": "Must be a JSON object."}])
    # the instruction list is checked like an instruction file (duplicates too), not by the schema
    listed = body.pop("instructions", None)
    args = load(JobCreateSchema(), body, errors)
    if listed is not None:
        if not isinstance(listed, list):
            errors.append({"field": "instructions", "message": "Not a valid list."})
        elif len(listed) > settings.max_instructions:
            errors.append(
                {"field": "instructions", "message": f"at most {settings.max_instructions} on this service"}
            )
        else:
            try:
                args["instructions"] = parse_instruction_records(listed, settings.max_instructions)
            except InstructionsError as e:
                errors += [{"field": err.field, "message": err.message} for err in e.errors]
        if "num_instructions" in body:
            errors.append(
                {"field": "num_instructions", "message": "not with instructions: those are the instructions"}
            )
    elif "num_instructions" not in body:
        errors.append({"field": "num_instructions", "message": "Missing data for required field."})
    key = load(IdempotencyHeaderSchema(), headers(IdempotencyHeaderSchema()), errors).get("idempotency_key")
    profile = job_body.profile(args, body, errors)
    if args.get("num_instructions", 0) > settings.max_instructions:
        errors.append(
            {"field": "num_instructions", "message": f"at most {settings.max_instructions} on this service"}
        )
    if "max_cost" in args and profile in settings.profiles and settings.profiles[profile].prices is None:
        errors.append({"field": "max_cost", "message": f"profile {profile} has no prices to count a cost by"})
    if "notify_url" in args:
        _check_notify_url(args["notify_url"], errors)
    if "push_to_hub" in args and not settings.hub_token_env:
        message = "this service pushes to no Hub (its operator sets HUB_TOKEN_ENV)"
        errors.append({"field": "push_to_hub", "message": message})
    job_body.seed_set(args, errors)
    job_body.dedup_against(args, errors)
    job_body.decontaminate_against(args, errors)
    if errors:
        problem(422, "invalid job request", errors)
    return args, profile, key


def _check_notify_url(url: str, errors: list[dict[str, Any]]) -> None:
    """The operator's allowlist and the URL's form (jobs.webhooks); the addresses are checked when the
    webhook is sent. The team needs a secret to sign with."""
    try:
        webhooks.parse(url, services().settings.webhook_allowed_hosts)
    except webhooks.Refused as e:
        errors.append({"field": "notify_url", "message": str(e)})
        return
    if not webhook_store.has_secret(services().redis, team()):
        errors.append(
            {
                "field": "notify_url",
                "message": "this team has no webhook secret to sign with: create one with "
                "POST /v1/webhook-secret first",
            }
        )


def _config(args: dict[str, Any], profile: str) -> tuple[dict[str, Any], Recipe]:
    """The request's parameters as the job shows them (with a stage-level run's instructions), and its
    recipe."""
    recipe = job_body.recipe(args, profile)
    if "instructions" in args:
        args["num_instructions"] = len(args["instructions"])
        recipe = replace(recipe, num_instructions=len(args["instructions"]))
    config = job_body.config(args, recipe)
    if "instructions" in args:
        config["instructions"] = args["instructions"]
    return config, recipe


def _enqueue(job: jobs_.Job, claim: idempotency.Claim | None) -> None:
    """Queue the job's first RQ job. If Redis refuses (full, or gone), the job fails at once, saying so,
    and its Idempotency-Key is free again: no job waits for an RQ job that never came."""
    s = services()
    try:
        queue.enqueue(s.redis, job, s.settings)
    except RedisError:
        with contextlib.suppress(RedisError):
            error = "the job could not be queued (the job store refused it); submit it again"
            jobs_.transition(s.redis, job, "failed", ("queued",), error=error)
        if claim:
            with contextlib.suppress(RedisError):
                claim.release()
        raise


@blp.route("")
class Jobs(MethodView):
    @blp.doc(
        requestBody=CREATE_BODY,
        parameters=[{"in": "header", "schema": IdempotencyHeaderSchema}],
        callbacks=CALLBACKS,
    )
    @blp.response(202, JobSchema, description="Queued.")
    @blp.alt_response(
        200, schema=JobSchema, description="Replayed: this Idempotency-Key made it.", success=True
    )
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    @blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
    def post(self) -> tuple[dict[str, Any], int]:
        """Start a generation job on a seed set, with an endpoint profile the operator configured."""
        s = services()
        r, settings = s.redis, s.settings
        args, profile, idempotency_key = _read_create()
        config, recipe = _config(args, profile)
        claim = None
        if idempotency_key:  # the same request: the same other body items and the same recipe, as run
            request = {k: v for k, v in args.items() if k not in REQUEST_FIELDS}
            request["recipe"] = recipe.to_dict()
            try:
                claim = idempotency.claim(r, team(), idempotency_key, request)
            except (idempotency.Mismatch, idempotency.InProgress) as e:
                problem(409, str(e))
            if claim.job_id:
                return render(get_job(claim.job_id)), 200
        try:
            job = jobs_.create(
                r,
                team(),
                args["seed_set_id"],
                profile,
                config,
                recipe.to_dict(),
                settings.max_active_jobs,
                notify_url=args.get("notify_url"),
            )
        except jobs_.TooManyActiveJobs as e:
            if claim:
                claim.release()
            problem(429, f"{e}; wait for one to finish or cancel one", Retry_After="30")
        if job is None:  # deleted in between
            if claim:
                claim.release()
            problem(404, f"no seed set {args['seed_set_id']}")
        _enqueue(job, claim)
        if claim:
            claim.complete(job.id)
        log.info("job_created", job_id=job.id, profile=profile, num_instructions=config["num_instructions"])
        return render(jobs_.get(r, job.id) or job), 202

    @blp.arguments(JobListArgsSchema, location="query", unknown=RAISE)
    @blp.response(200, JobPageSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List jobs, newest first, optionally by state or seed set."""
        found, last = jobs_.page(
            services().redis,
            team(),
            pages.decode(args.get("cursor")),
            args["limit"],
            args.get("state"),
            args.get("seed_set_id"),
        )
        return {"items": [render(j) for j in found], "next_cursor": pages.encode(last)}


@blp.route("/<job_id>")
class JobById(MethodView):
    @blp.response(200, JobSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(410, response="GONE")
    def get(self, job_id: str) -> dict[str, Any]:
        """A job's state, stage, progress, tokens and estimated time left."""
        return render(get_job(job_id))

    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    def delete(self, job_id: str) -> tuple[str, int]:
        """Delete a job: cancel it if it runs, then remove its dataset, decisions and record.

        Repeating it is harmless; the job then answers 410 Gone."""
        r = services().redis
        if len(job_id) == 32 and jobs_.get(r, job_id) is None and jobs_.gone(r, job_id) == team():
            return "", 204
        job = jobs_.get(r, job_id) if len(job_id) == 32 else None
        if job is None or job.team != team():
            problem(404, f"no job {job_id}")
        retention.delete(r, services().artifacts, job, services().settings)
        log.info("job_deleted", job_id=job.id)
        return "", 204


@blp.route("/<job_id>/cancel")
class JobCancel(MethodView):
    @blp.response(202, JobSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    @blp.alt_response(410, response="GONE")
    def post(self, job_id: str) -> dict[str, Any]:
        """Cancel: a queued job never starts; a running one stops at once (RQ's stop command) and keeps
        what it made, exported as a partial dataset."""
        job = get_job(job_id)
        who = f"team {team()} (request {g.get('request_id', '')})"
        if not queue.cancel(services().redis, job, services().settings, by=who):
            problem(409, f"the job is already {get_job(job_id).state}")
        log.info("job_canceled", job_id=job.id, was=job.state)
        return render(get_job(job_id))


def _read_extension() -> int:
    """The larger target, checked against the schema and the operator's limit."""
    settings, errors = services().settings, []
    args = load(ExtensionCreateSchema(), json_object("extension"), errors)
    if args.get("num_instructions", 0) > settings.max_instructions:
        message = f"at most {settings.max_instructions} on this service"
        errors.append({"field": "num_instructions", "message": message})
    if errors:
        problem(422, "invalid extension", errors)
    return args["num_instructions"]


@blp.route("/<job_id>/extensions")
class JobExtensions(MethodView):
    @blp.doc(
        requestBody={"required": True, "content": {"application/json": {"schema": ExtensionCreateSchema}}}
    )
    @blp.response(202, JobSchema, description="Queued: a new job that continues this one.")
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    @blp.alt_response(410, response="GONE")
    @blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
    @blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
    def post(self, job_id: str) -> tuple[dict[str, Any], int]:
        """Extend a job that succeeded to a larger target: a new job with its seed set, profile and
        recipe that carries over its stage-1 pool, decisions, classification answers and instances and
        makes only what is missing. Its dataset holds everything (with a deterministic endpoint, what a
        single run to the larger target makes); the earlier dataset stays as it is."""
        s = services()
        r, settings = s.redis, s.settings
        target = _read_extension()  # a bad body is refused alike for every job id, known or not
        earlier = get_job(job_id)
        if earlier.state != "succeeded" or not earlier.dataset:
            problem(409, f"job {job_id} is {earlier.state}: only a job that succeeded can be extended")
        if "instructions" in earlier.config:
            problem(409, "a stage-level job (given instructions) has no stage 1 to continue")
        if earlier.profile not in settings.profiles:
            problem(409, f"profile {earlier.profile} is no longer offered on this service")
        current = earlier.config["num_instructions"]
        if target <= current:
            message = f"must be above the job's {current}"
            problem(422, "invalid extension", [{"field": "num_instructions", "message": message}])
        recipe = replace(Recipe.from_dict(earlier.recipe), num_instructions=target)
        config = {**earlier.config, "num_instructions": target, "extends": earlier.id}
        try:
            job = jobs_.create(
                r,
                team(),
                earlier.seed_set_id,
                earlier.profile,
                config,
                recipe.to_dict(),
                settings.max_active_jobs,
            )
        except jobs_.TooManyActiveJobs as e:
            problem(429, f"{e}; wait for one to finish or cancel one", Retry_After="30")
        if job is None:
            problem(409, f"the seed set of job {job_id} was deleted")
        _enqueue(job, None)
        log.info("job_extended", job_id=job.id, extends=earlier.id, num_instructions=target)
        return render(jobs_.get(r, job.id) or job), 202
