"""/v1/seed-sets: create (JSON body, JSONL body or file upload), get, list, delete."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE

from api_spec.seed_sets import SeedSetCreateSchema, SeedSetListArgsSchema, SeedSetPageSchema, SeedSetSchema
from api_spec.seed_sets import SeedSetUploadArgsSchema as NameSchema
from jobs.method.seed_tasks import SeedSetError, SeedTask, parse_jsonl, parse_records
from jobs.store import seed_sets as seed_set_store
from service import pages
from service.context import services, team
from service.errors import load, problem

blp = Blueprint(
    "seed-sets",
    __name__,
    url_prefix="/v1/seed-sets",
    description="Seed tasks in the paper's format (id, instruction, instances, is_classification).",
)

JSONL_TYPES = ("application/x-ndjson", "application/jsonl", "application/x-jsonlines")
REQUEST_BODY = {
    "required": True,
    "description": "A JSON object {name, tasks}; or the JSONL file itself as the body (name in the query); "
    "or a multipart form with `file` (and `name`). The paper's seed_tasks.jsonl loads as it is.",
    "content": {
        "application/json": {"schema": SeedSetCreateSchema},
        "application/x-ndjson": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}, "name": {"type": "string"}},
                "required": ["file"],
            }
        },
    },
}


def render(record: seed_set_store.SeedSet) -> dict[str, Any]:
    return {**record.__dict__, "created_at": datetime.fromtimestamp(record.created_at, UTC)}


def _read_request() -> tuple[list[SeedTask], str | None]:
    """The tasks and the name, with every fault of the query, the body's fields and the file's lines
    in one 422."""
    limit = services().settings.max_seed_tasks
    errors: list[dict[str, Any]] = []
    query = load(NameSchema(), request.args.to_dict(), errors)
    mimetype = request.mimetype
    tasks: list[SeedTask] = []
    name: str | None = None
    try:
        if mimetype == "application/json":
            body = request.get_json(silent=True)
            if body is None:
                problem(400, "the body is not valid JSON")
            if not isinstance(body, dict):
                problem(422, "the body must be a JSON object {name, tasks}")
            errors += [{"field": k, "message": "Unknown field."} for k in body if k not in ("name", "tasks")]
            # null is not a name: a name given must be a valid one
            name = load(NameSchema(), {k: v for k, v in body.items() if k == "name"}, errors).get("name")
            if not isinstance(body.get("tasks"), list):
                errors.append(
                    {"field": "tasks", "message": "Missing data for required field (a list of seed tasks)."}
                )
            else:
                tasks = parse_records(body["tasks"], limit)
        elif mimetype in JSONL_TYPES:
            name = query.get("name")
            tasks = parse_jsonl(request.get_data(), limit)
        elif mimetype == "multipart/form-data":
            name = load(NameSchema(), request.form.to_dict(), errors).get("name")
            upload = request.files.get("file")
            if upload is None:
                errors.append({"field": "file", "message": "Missing file."})
            else:
                tasks = parse_jsonl(upload.read(), limit)
        else:
            problem(
                415,
                f"unsupported content type {mimetype or '(none)'}: send application/json, "
                "application/x-ndjson or multipart/form-data",
            )
    except SeedSetError as e:
        errors += [err.to_dict() for err in e.errors]
    if errors:
        problem(422, f"the seed set is invalid: {len(errors)} problem(s); see errors", errors)
    return tasks, name


@blp.route("")
class SeedSets(MethodView):
    @blp.doc(requestBody=REQUEST_BODY, parameters=[{"in": "query", "schema": NameSchema}])
    @blp.response(201, SeedSetSchema, description="Stored.")
    @blp.alt_response(
        200, schema=SeedSetSchema, description="The same tasks were already stored.", success=True
    )
    @blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
    @blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
    def post(self) -> tuple[dict[str, Any], int]:
        """Create a seed set; every bad line (uploads) and field is reported at once."""
        tasks, name = _read_request()
        s = services()
        record, created = seed_set_store.create(s.redis, s.artifacts, team(), tasks, name)
        return render(record), 201 if created else 200

    @blp.arguments(SeedSetListArgsSchema, location="query", unknown=RAISE)
    @blp.response(200, SeedSetPageSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List seed sets, newest first."""
        found, last = seed_set_store.page(
            services().redis, team(), pages.decode(args.get("cursor")), args["limit"]
        )
        return {"items": [render(r) for r in found], "next_cursor": pages.encode(last)}


@blp.route("/<seed_set_id>")
class SeedSetById(MethodView):
    @blp.response(200, SeedSetSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, seed_set_id: str) -> dict[str, Any]:
        """A seed set's summary."""
        record = seed_set_store.get(services().redis, team(), seed_set_id)
        if record is None:
            problem(404, f"no seed set {seed_set_id}")
        return render(record)

    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def delete(self, seed_set_id: str) -> None:
        """Delete a seed set; refused while an unfinished job uses it."""
        s = services()
        try:
            deleted = seed_set_store.delete(s.redis, s.artifacts, team(), seed_set_id)
        except seed_set_store.InUse as e:
            problem(409, f"{e}: {', '.join(e.jobs[:10])}")
        if not deleted:
            problem(404, f"no seed set {seed_set_id}")
