"""Webhooks: a team's signing secret, the event a job's end posts to its notify_url, and its deliveries."""

from marshmallow import Schema, fields, validate

from jobs.webhooks import EVENT_TYPES


class WebhookSecretSchema(Schema):
    secret = fields.String(
        required=True,
        metadata={
            "description": "whsec_ and the base64 key: verify deliveries with it. Shown only in this answer."
        },
    )
    created_at = fields.DateTime(required=True)
    previous_valid_until = fields.DateTime(
        allow_none=True,
        required=True,
        metadata={
            "description": "Deliveries are signed with the previous secret too until then (a second "
            "signature in webhook-signature); null when there was none."
        },
    )


class WebhookEventDataSchema(Schema):
    job_id = fields.String(required=True)
    state = fields.String(required=True, validate=validate.OneOf(("succeeded", "failed", "canceled")))
    instructions_kept = fields.Integer(required=True)
    instances_kept = fields.Integer(required=True)
    stop_reason = fields.String(
        allow_none=True, required=True, metadata={"description": "token_budget or cost_budget, or null."}
    )
    error = fields.String(allow_none=True, required=True, metadata={"description": "Why it failed."})
    dataset_url = fields.String(
        allow_none=True,
        required=True,
        metadata={
            "description": "The dataset's manifest, /v1/jobs/{id}/dataset (relative to the service's URL), "
            "once a dataset exists (a canceled job's partial one is exported before the event is sent); "
            "else null."
        },
    )


class WebhookEventSchema(Schema):
    id = fields.String(required=True, metadata={"description": "The same as the webhook-id header."})
    type = fields.String(required=True, validate=validate.OneOf(EVENT_TYPES))
    timestamp = fields.String(required=True, metadata={"description": "When the job ended (ISO 8601, UTC)."})
    data = fields.Nested(WebhookEventDataSchema, required=True)


class DeliverySchema(Schema):
    event = fields.String(required=True, validate=validate.OneOf(EVENT_TYPES))
    attempts = fields.Integer(required=True)
    last_status = fields.Integer(
        allow_none=True, required=True, metadata={"description": "The last attempt's HTTP status."}
    )
    last_error = fields.String(
        allow_none=True,
        required=True,
        metadata={"description": "Why the last attempt failed (connection, timeout, refused address)."},
    )
    delivered = fields.Boolean(required=True)
    pending = fields.Boolean(required=True, metadata={"description": "An attempt is still to come."})
    last_attempt_at = fields.DateTime(allow_none=True, required=True)


def _header(name: str, description: str) -> dict:
    return {
        "in": "header",
        "name": name,
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


# POST /v1/jobs's callback: what the service posts to the job's notify_url when the job ends
CALLBACKS = {
    "jobEnded": {
        "{$request.body#/notify_url}": {
            "post": {
                "summary": "The job ended: succeeded, failed or canceled",
                "description": "Standard Webhooks (https://www.standardwebhooks.com/): once per final state, "
                "retried with exponential backoff for WEBHOOK_RETRY_SECONDS on a connection error, a "
                "timeout, 408, 429 or 5xx (same webhook-id, a fresh timestamp and signature); any other "
                "status ends the delivery, and redirects are not followed. Verify the signature before "
                "trusting the body: `selfinstruct verify-webhook`, or client.webhooks.verify.",
                "parameters": [
                    _header("webhook-id", "The event's id: the same for every attempt."),
                    _header("webhook-timestamp", "Unix seconds of this attempt (refuse old ones)."),
                    _header(
                        "webhook-signature",
                        'Space-separated `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, '
                        "keyed with the base64-decoded part of the team's whsec_ secret; two during a "
                        "rotation's overlap.",
                    ),
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": WebhookEventSchema}},
                },
                "responses": {
                    "2XX": {"description": "Delivered."},
                    "default": {"description": "Retried (408, 429, 5xx) or given up (anything else)."},
                },
            }
        }
    }
}
