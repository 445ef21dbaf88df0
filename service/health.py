"""Liveness (the process answers) and readiness (Redis and S3 answer)."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint

from api_spec.health import HealthSchema
from service.context import services

blp = Blueprint("health", __name__, description="Probes for Kubernetes.")


@blp.route("/healthz")
class Live(MethodView):
    @blp.doc(security=[])
    @blp.response(200, HealthSchema)
    def get(self) -> dict:
        """Liveness: the process serves requests."""
        return {"status": "ok"}


@blp.route("/readyz")
class Ready(MethodView):
    @blp.doc(security=[])
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="A dependency is down.")
    def get(self) -> tuple[dict, int]:
        """Readiness: Redis and S3 answer."""
        s = services()
        checks = {}
        try:
            s.redis.ping()
            checks["redis"] = "ok"
        except Exception as e:  # any failure means not ready
            checks["redis"] = f"error: {type(e).__name__}"
        try:
            s.artifacts.ping()
            checks["s3"] = "ok"
        except Exception as e:
            checks["s3"] = f"error: {type(e).__name__}"
        ok = all(v == "ok" for v in checks.values())
        return {"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503
