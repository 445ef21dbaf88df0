"""The Flask app: `create_app()` for gunicorn (`service.app:create_app()`) and the openapi CLI."""

from __future__ import annotations

import http
import os
import re
import time
import uuid

import flask_smorest
import structlog
from botocore.exceptions import BotoCoreError, ClientError
from flask import Flask, Response, g, request
from flask_smorest.utils import prepare_response
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError as RedisOutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError
from werkzeug.exceptions import (
    BadRequest,
    HTTPException,
    InternalServerError,
    RequestEntityTooLarge,
    RequestURITooLarge,
    ServiceUnavailable,
)

from api_spec.common import ProblemSchema
from jobs import __version__, logs
from jobs.settings import Settings
from service import (
    auth,
    capacity,
    datasets,
    decisions,
    events,
    generation_jobs,
    health,
    previews,
    profiles,
    reference_sets,
    seed_sets,
    ui,
    webhooks,
)
from service.context import Services
from service.errors import PROBLEM, render

log = structlog.get_logger(__name__)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class Api(flask_smorest.Api):
    """Errors as problem+json, in the responses and in the spec."""

    ERROR_SCHEMA = ProblemSchema

    def handle_http_exception(self, error: HTTPException) -> Response:
        return render(error)

    def _register_responses(self) -> None:
        for status in http.HTTPStatus:
            response: dict = {"description": status.phrase}
            if status >= 400:
                response["schema"] = self.ERROR_SCHEMA
            prepare_response(
                response, self.spec, PROBLEM if status >= 400 else self.DEFAULT_RESPONSE_CONTENT_TYPE
            )
            self.spec.components.response(status.name, response, lazy=True)
        response = {"description": "Default error response", "schema": self.ERROR_SCHEMA}
        prepare_response(response, self.spec, PROBLEM)
        self.spec.components.response("DEFAULT_ERROR", response, lazy=True)


def _metrics(app: Flask) -> None:
    """/metrics: request counts and latencies by endpoint (URL rule) and status. Under gunicorn
    (PROMETHEUS_MULTIPROC_DIR set) every worker process's numbers are summed."""
    from prometheus_flask_exporter import PrometheusMetrics
    from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

    kind = (
        GunicornInternalPrometheusMetrics if "PROMETHEUS_MULTIPROC_DIR" in os.environ else PrometheusMetrics
    )
    kind(app, group_by="url_rule", defaults_prefix="selfinstruct", excluded_paths=["/metrics"])


def create_app(settings: Settings | None = None, configure_logging: bool = True) -> Flask:
    settings = settings or Settings.from_env()
    if configure_logging:
        logs.configure(settings.log_level)
    app = Flask("selfinstruct")
    app.config.update(
        API_TITLE="selfinstruct-service",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        API_SPEC_OPTIONS={
            "security": [{"bearerAuth": []}],
            "components": {"securitySchemes": {"bearerAuth": auth.SECURITY_SCHEME}},
            "info": {
                "description": "Turns seed tasks into instruction-tuning datasets with SELF-INSTRUCT. "
                "Errors are RFC 9457 problem details naming every field (and file line) at fault."
            },
        },
    )
    app.extensions["selfinstruct"] = Services(settings)
    _metrics(app)
    api = Api(app)
    for module in (
        seed_sets,
        reference_sets,
        generation_jobs,
        events,
        previews,
        decisions,
        datasets,
        profiles,
        webhooks,
        health,
    ):
        api.register_blueprint(module.blp)
    app.register_blueprint(ui.blp)  # a plain blueprint: the web page stays out of the API's spec

    @app.before_request
    def _start() -> None:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        g.started = time.perf_counter()
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=g.request_id)

    @app.before_request
    def _limit_url() -> None:
        # below gunicorn's request-line limit, so that a long URL gets a problem from the app
        uri = request.environ.get("RAW_URI") or request.full_path
        if len(uri) > settings.max_url_chars:
            raise RequestURITooLarge(f"the URL is longer than {settings.max_url_chars} characters")

    @app.before_request
    def _authenticate() -> None:
        if not ui.serves(request.path):  # the page's shells hold no data; its script sends the key to /v1
            auth.authenticate()

    @app.before_request
    def _room_in_redis() -> None:
        capacity.check()

    @app.before_request
    def _limit_chunked_bodies() -> None:
        # With no Content-Length, werkzeug stops reading at MAX_CONTENT_LENGTH without an error;
        # read (and cache) such a body here so that an oversized one is a 413, not a truncated body.
        if (
            request.content_length is None
            and "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        ) and len(request.get_data()) >= settings.max_request_bytes:
            raise RequestEntityTooLarge()

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        log.info(
            "request",
            method=request.method,
            path=request.path,
            status=response.status_code,
            ms=round((time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 1),
        )
        return response

    @app.errorhandler(RecursionError)
    def _too_deep(error: RecursionError) -> Response:
        return render(BadRequest("the JSON body is nested too deeply"))

    @app.errorhandler(RedisConnectionError)
    @app.errorhandler(RedisTimeoutError)
    def _redis_down(error: Exception) -> Response:
        log.error("redis_unavailable", error=str(error))
        return render(ServiceUnavailable("the job store (Redis) is unavailable; try again shortly"))

    @app.errorhandler(RedisOutOfMemoryError)
    def _redis_full(error: Exception) -> Response:
        log.error("redis_full", error=str(error))
        response = render(ServiceUnavailable("the job store (Redis) is full; try again shortly"))
        response.headers["Retry-After"] = capacity.RETRY_AFTER
        return response

    @app.errorhandler(BotoCoreError)
    @app.errorhandler(ClientError)
    def _s3_down(error: Exception) -> Response:
        log.error("s3_unavailable", error=str(error)[:300])
        return render(ServiceUnavailable("the object store (S3) is unavailable; try again shortly"))

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        if isinstance(error, HTTPException):
            return render(error)
        log.exception("unhandled_error")
        return render(InternalServerError())

    return app
