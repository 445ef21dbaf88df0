"""/v1/reference-sets: create (JSONL body or file upload), get, list, delete."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE

from api_spec.reference_sets import (
    ReferenceSetListArgsSchema,
    ReferenceSetPageSchema,
    ReferenceSetSchema,
    ReferenceSetUploadArgsSchema,
)
from jobs.method.seed_tasks import ReferenceSetError, parse_references_jsonl
from jobs.store import reference_sets as store
from service import pages
from service.context import services, team
from service.errors import load, problem
from service.seed_sets import JSONL_TYPES

blp = Blueprint(
    "reference-sets",
    __name__,
    url_prefix="/v1/reference-sets",
    description="Texts a job's data must not overlap: a team's evaluation prompts, a benchmark's questions.",
)

REQUEST_BODY = {
    "required": True,
    "description": 'The JSONL file as the body (name in the query), one {"text", "id"?} object a line '
    "(other fields, such as an answer, are allowed and not read; ids default to `line<N>`); or a "
    "multipart form with `file` (and `name`).",
    "content": {
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


def render(record: store.ReferenceSet) -> dict[str, Any]:
    return {**record.__dict__, "created_at": datetime.fromtimestamp(record.created_at, UTC)}


def _read_request() -> tuple[list[dict[str, str]], str | None]:
    """The items and the name, with every fault of the query and the file's lines in one 422."""
    limit = services().settings.max_reference_items
    errors: list[dict[str, Any]] = []
    name = load(ReferenceSetUploadArgsSchema(), request.args.to_dict(), errors).get("name")
    items: list[dict[str, str]] = []
    try:
        if request.mimetype in JSONL_TYPES:
            items = parse_references_jsonl(request.get_data(), limit)
        elif request.mimetype == "multipart/form-data":
            name = load(ReferenceSetUploadArgsSchema(), request.form.to_dict(), errors).get("name") or name
            upload = request.files.get("file")
            if upload is None:
                errors.append({"field": "file", "message": "Missing file."})
            else:
                items = parse_references_jsonl(upload.read(), limit)
        else:
            problem(
                415,
                f"unsupported content type {request.mimetype or '(none)'}: send application/x-ndjson "
                "or multipart/form-data",
            )
    except ReferenceSetError as e:
        errors += [err.to_dict() for err in e.errors]
    if errors:
        problem(422, f"the reference set is invalid: {len(errors)} problem(s); see errors", errors)
    return items, name


@blp.route("")
class ReferenceSets(MethodView):
    @blp.doc(requestBody=REQUEST_BODY, parameters=[{"in": "query", "schema": ReferenceSetUploadArgsSchema}])
    @blp.response(201, ReferenceSetSchema, description="Stored.")
    @blp.alt_response(
        200, schema=ReferenceSetSchema, description="The same items were already stored.", success=True
    )
    @blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
    @blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
    def post(self) -> tuple[dict[str, Any], int]:
        """Create a reference set; every bad line and field is reported at once."""
        items, name = _read_request()
        s = services()
        record, created = store.create(s.redis, s.artifacts, team(), items, name)
        return render(record), 201 if created else 200

    @blp.arguments(ReferenceSetListArgsSchema, location="query", unknown=RAISE)
    @blp.response(200, ReferenceSetPageSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List reference sets, newest first."""
        found, last = store.page(services().redis, team(), pages.decode(args.get("cursor")), args["limit"])
        return {"items": [render(r) for r in found], "next_cursor": pages.encode(last)}


@blp.route("/<reference_set_id>")
class ReferenceSetById(MethodView):
    @blp.response(200, ReferenceSetSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, reference_set_id: str) -> dict[str, Any]:
        """A reference set's summary."""
        record = store.get(services().redis, team(), reference_set_id)
        if record is None:
            problem(404, f"no reference set {reference_set_id}")
        return render(record)

    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def delete(self, reference_set_id: str) -> None:
        """Delete a reference set; refused while an unfinished job names it."""
        s = services()
        try:
            deleted = store.delete(s.redis, s.artifacts, team(), reference_set_id)
        except store.InUse as e:
            problem(409, f"{e}: {', '.join(e.jobs[:10])}")
        if not deleted:
            problem(404, f"no reference set {reference_set_id}")
