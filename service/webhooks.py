"""/v1/webhook-secret: create or rotate the team's webhook signing secret, shown once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from flask.views import MethodView
from flask_smorest import Blueprint

from api_spec.webhooks import WebhookSecretSchema
from jobs import webhooks
from jobs.store import webhooks as webhook_store
from service.context import services, team

blp = Blueprint(
    "webhooks",
    __name__,
    url_prefix="/v1/webhook-secret",
    description="The secret a team's webhooks are signed with (Standard Webhooks).",
)
log = structlog.get_logger(__name__)


@blp.route("")
class WebhookSecret(MethodView):
    @blp.response(201, WebhookSecretSchema)
    def post(self) -> tuple[dict[str, Any], int]:
        """Create the team's webhook secret, or rotate it: the previous one signs too for a day.

        The secret is in this answer only; keep it where the receiver can read it."""
        created = webhook_store.rotate(services().redis, team(), webhooks.new_secret())
        log.info("webhook_secret_rotated", team=team(), had_one=created.previous_until is not None)
        until = created.previous_until
        return {
            "secret": created.secret,
            "created_at": datetime.fromtimestamp(created.created_at, UTC),
            "previous_valid_until": None if until is None else datetime.fromtimestamp(until, UTC),
        }, 201
