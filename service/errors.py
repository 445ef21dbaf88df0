"""Every error as RFC 9457 problem details (application/problem+json), naming the fields at fault."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import structlog
from flask import Response, g, request
from flask_smorest import abort
from marshmallow import Schema, ValidationError
from werkzeug.exceptions import HTTPException

PROBLEM = "application/problem+json"
log = structlog.get_logger(__name__)


def problem(status: int, detail: str, errors: list[dict[str, Any]] | None = None, **headers: str) -> NoReturn:
    """Stop the request with a problem response; header names are given with _ for - (Retry_After)."""
    abort(
        status,
        message=detail,
        errors=errors,
        headers={k.replace("_", "-"): v for k, v in headers.items()} or None,
    )
    raise AssertionError  # pragma: no cover - abort raises


def flatten(messages: Any, prefix: str = "") -> list[dict[str, Any]]:
    """marshmallow/webargs messages ({location: {field: [msg]}}) as [{field, message}]."""
    out: list[dict[str, Any]] = []
    if isinstance(messages, dict):
        for key, sub in messages.items():
            if not prefix and key in ("json", "query", "headers", "form", "files", "path"):
                out += flatten(sub, "")
                continue
            path = f"{prefix}[{key}]" if isinstance(key, int) else (f"{prefix}.{key}" if prefix else str(key))
            out += flatten(sub, path)
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        out += [{"field": prefix or "(body)", "message": m} for m in messages]
    elif isinstance(messages, list):
        out += [
            e if isinstance(e, dict) and "field" in e else {"field": prefix, "message": str(e)}
            for e in messages
        ]
    else:
        out.append({"field": prefix or "(body)", "message": str(messages)})
    return out


def load(schema: Schema, data: Any, errors: list[dict[str, Any]]) -> dict[str, Any]:
    """`data` loaded by `schema`, every fault added to `errors` rather than raised, so that one answer
    can name the faults of the body, the query, the headers and the checks after them together.
    Returns the fields that did load."""
    try:
        return schema.load(data)
    except ValidationError as e:
        errors += flatten(e.messages)
        return e.valid_data if isinstance(e.valid_data, dict) else {}


def json_object(what: str) -> dict[str, Any]:
    """The request's JSON object body (none: {}); 415 for another content type, 400 for text that is not
    JSON, 422 for JSON that is not an object (`what`: the request, for the problem's title)."""
    if request.mimetype != "application/json":
        problem(415, f"unsupported content type {request.mimetype or '(none)'}: send application/json")
    body = request.get_json(silent=True) if request.get_data() else {}
    if body is None:
        problem(400, "the body is not valid JSON")
    if not isinstance(body, dict):
        problem(422, f"invalid {what}", [{"field": "(body)", "message": "Must be a JSON object."}])
    return body


def headers(schema: Schema) -> dict[str, str]:
    """The request headers that `schema` names (by data_key), for load()."""
    names = [f.data_key or name for name, f in schema.fields.items()]
    return {name: request.headers[name] for name in names if name in request.headers}


def render(error: HTTPException) -> Response:
    data = getattr(error, "data", None) or {}
    status = error.code or 500
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": error.name,
        "status": status,
        "detail": data.get("message") or error.description or error.name,
    }
    errors = data.get("errors") if data.get("errors") is not None else data.get("messages")
    if errors:
        flat = flatten(errors)
        if status == 422 and len(flat) == 1:
            body["detail"] = f"{flat[0]['field']}: {flat[0]['message']}"
        elif status == 422:
            body["detail"] = f"{len(flat)} fields are invalid; see errors"
        body["errors"] = flat[:100]
        if len(flat) > 100:
            body["errors_truncated"] = True
    if request_id := g.get("request_id"):
        body["request_id"] = request_id
    response = Response(json.dumps(body), status=status, content_type=PROBLEM)
    for name, value in (data.get("headers") or {}).items():
        response.headers[name] = value
    if status == 405 and getattr(error, "valid_methods", None):
        response.headers["Allow"] = ", ".join(error.valid_methods)
    if status >= 500:
        log.error("server_error", status=status, detail=body["detail"])
    return response
