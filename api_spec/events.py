"""A job's events, oldest first, cursor-paged, with long polling."""

from marshmallow import RAISE, Schema, fields, validate

from api_spec.common import QueryInteger

EVENT_CURSOR = r"^\d{1,19}-\d{1,19}$"  # a Redis stream id; each part below 2**64
EVENT_TYPES = (
    "state",
    "stage_started",
    "stage_ended",
    "progress",
    "retry",
    "warning",
    "webhook",
    "batch",
    "hub",
)
MAX_WAIT_SECONDS = 25  # below gunicorn's worker timeout


class EventArgsSchema(Schema):
    class Meta:
        unknown = RAISE

    limit = QueryInteger(
        load_default=100, validate=validate.Range(1, 1000), metadata={"description": "Page size."}
    )
    cursor = fields.String(
        validate=validate.Regexp(EVENT_CURSOR, error="Not a cursor this API returned."),
        metadata={"description": "`next_cursor` of the previous page: the events after it."},
    )
    wait = QueryInteger(
        load_default=0,
        validate=validate.Range(0, MAX_WAIT_SECONDS),
        metadata={
            "description": "Long polling: with no event after the cursor yet, wait up to this many seconds "
            "for one (0: answer at once)."
        },
    )
    follow = fields.Boolean(
        load_default=False,
        truthy={"true"},
        falsy={"false"},
        metadata={
            "description": f"Shorthand for wait={MAX_WAIT_SECONDS} (what `selfinstruct logs --follow` does)."
        },
    )


class EventSchema(Schema):
    id = fields.String(required=True, metadata={"description": "Its cursor: events after it come later."})
    type = fields.String(required=True, validate=validate.OneOf(EVENT_TYPES))
    at = fields.Float(required=True, metadata={"description": "Unix time."})
    data = fields.Dict(
        required=True,
        metadata={
            "description": "state: state, previous, error, cancelled_by, stop_reason; stage_started: stage, "
            "total; stage_ended: stage; progress: part and counters; retry: part, attempts, reasons; "
            "warning: message; webhook (an attempt to post the job's end to its notify_url): event, "
            "attempt, status, error, delivered, final, next_attempt_in; batch (a batch-mode job's provider "
            "batch changed state): part, batch_id, status, stage, round, attempt, requests."
        },
    )


class EventPageSchema(Schema):
    items = fields.List(fields.Nested(EventSchema), required=True)
    next_cursor = fields.String(
        allow_none=True,
        required=True,
        metadata={"description": "Pass back as `cursor` for the events after these (null: none seen yet)."},
    )
    done = fields.Boolean(
        required=True,
        metadata={
            "description": "The job has finished, its webhook (if any) is delivered or given up, and "
            "every event was returned."
        },
    )
