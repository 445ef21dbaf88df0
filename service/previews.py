"""/v1/previews: a job's body on a few instructions, run at once on the preview queue, to look at the
candidates, their decisions, the instances and the cost before launching the job itself."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE

from api_spec.previews import PreviewArgsSchema, PreviewCreateSchema, PreviewSchema
from jobs.runner import queue
from jobs.store import previews
from service import job_body
from service.context import services, team
from service.errors import json_object, load, problem

blp = Blueprint(
    "previews", __name__, url_prefix="/v1/previews", description="Try a recipe on a few instructions first."
)
log = structlog.get_logger(__name__)


def _time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def render(preview: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": preview["id"],
        "state": preview["state"],
        "seed_set_id": preview["seed_set_id"],
        "profile": preview["profile"],
        "num_instructions": preview["recipe"]["num_instructions"],
        "full_num_instructions": preview["full_num_instructions"],
        "created_at": _time(preview["created_at"]),
        "finished_at": _time(preview["finished_at"]),
        "expires_at": _time(preview["created_at"] + services().settings.preview_retention_seconds),
        "error": preview["error"],
        "result": preview["result"],
    }


def _read() -> tuple[dict[str, Any], str]:
    """The body, checked like a job's (every fault in one 422; a missing seed set alone is a 404)."""
    settings, errors = services().settings, []
    body = json_object("preview request")
    args = load(PreviewCreateSchema(), body, errors)
    profile = job_body.profile(args, body, errors)
    if args.get("num_instructions", 0) > settings.preview_max_instructions:
        cap = settings.preview_max_instructions
        errors.append({"field": "num_instructions", "message": f"at most {cap} in a preview on this service"})
    if args.get("full_num_instructions", 0) > settings.max_instructions:
        cap = settings.max_instructions
        errors.append({"field": "full_num_instructions", "message": f"at most {cap} on this service"})
    job_body.seed_set(args, errors)
    job_body.dedup_against(args, errors)
    job_body.decontaminate_against(args, errors)
    if errors:
        problem(422, "invalid preview request", errors)
    return args, profile


@blp.route("")
class Previews(MethodView):
    @blp.arguments(PreviewArgsSchema, location="query", unknown=RAISE)
    @blp.doc(requestBody={"required": True, "content": {"application/json": {"schema": PreviewCreateSchema}}})
    @blp.response(200, PreviewSchema, description="Finished (succeeded or failed) within the wait.")
    @blp.alt_response(
        202, schema=PreviewSchema, description="Still running: poll its Location.", success=True
    )
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
    @blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
    def post(self, query: dict[str, Any]) -> Any:
        """Run a job's body on a few instructions now: candidates with their decisions, the kept ones'
        classification and instances, tokens, and the estimated cost of the full job."""
        s = services()
        args, profile = _read()
        recipe = job_body.recipe(args, profile)
        full = args.get("full_num_instructions")
        ttl = s.settings.preview_retention_seconds
        preview_id = previews.create(
            s.redis,
            team(),
            args["seed_set_id"],
            profile,
            recipe.to_dict(),
            full,
            ttl,
            args.get("dedup_against"),
            args.get("decontaminate_against"),
        )
        queue.enqueue_preview(s.redis, preview_id, s.settings)
        log.info("preview_created", preview_id=preview_id, num_instructions=recipe.num_instructions)
        wait = min(query.get("wait", s.settings.preview_wait_seconds), s.settings.preview_wait_seconds)
        preview = previews.wait(s.redis, preview_id, wait)
        if preview is None:  # expired already (a retention shorter than the wait)
            problem(404, f"preview {preview_id} expired")
        location = {"Location": url_for("previews.PreviewById", preview_id=preview_id)}
        done = preview["state"] in ("succeeded", "failed")
        return render(preview), 200 if done else 202, location


@blp.route("/<preview_id>")
class PreviewById(MethodView):
    @blp.response(200, PreviewSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, preview_id: str) -> dict[str, Any]:
        """A preview: its state, and its result once it has run. Previews expire after a short retention."""
        preview = previews.get(services().redis, preview_id) if len(preview_id) == 32 else None
        if preview is None or preview["team"] != team():
            problem(404, f"no preview {preview_id} (previews expire after a while)")
        return render(preview)
