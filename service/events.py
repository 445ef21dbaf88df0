"""/v1/jobs/{id}/events: state changes, stages, retries, progress and warnings, cursor-paged.

Following a job is long polling (`wait` or `follow`), not Server-Sent Events: the API runs on gunicorn's
sync workers, and a stream open for a job's hours would hold one worker per follower; a poll holds one
for at most MAX_WAIT_SECONDS, passes through any proxy, and its answers are the same JSON pages.
"""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE

from api_spec.events import MAX_WAIT_SECONDS, EventArgsSchema, EventPageSchema
from jobs.store import events
from service.context import services
from service.generation_jobs import get_job

blp = Blueprint("events", __name__, url_prefix="/v1", description="What a job did, as it happens.")


@blp.route("/jobs/<job_id>/events")
class JobEvents(MethodView):
    @blp.arguments(EventArgsSchema, location="query", unknown=RAISE)
    @blp.response(200, EventPageSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(410, response="GONE")
    def get(self, args: dict[str, Any], job_id: str) -> dict[str, Any]:
        """A job's events, oldest first; with `wait` (or `follow`), wait for the next one."""
        job = get_job(job_id)
        wait = MAX_WAIT_SECONDS if args["follow"] else args["wait"]
        found = events.page(
            services().redis, job.id, args.get("cursor"), args["limit"], 0 if job.settled else wait
        )
        items = [{"id": e.pop("id"), "type": e.pop("type"), "at": e.pop("at", 0.0), "data": e} for e in found]
        done = get_job(job_id).settled and len(items) < args["limit"]
        return {"items": items, "next_cursor": items[-1]["id"] if items else args.get("cursor"), "done": done}
