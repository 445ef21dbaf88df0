"""Generation jobs: what a caller may ask for, and what a job looks like."""

import re
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate

from api_spec.common import PageArgsSchema, PageSchema
from api_spec.reference_sets import decontaminate_against_field
from api_spec.seed_sets import SHA256
from api_spec.webhooks import DeliverySchema
from jobs.method.fields import Name, StrictBoolean, StrictFloat, StrictInteger
from jobs.method.recipe import MAX_NGRAM, REQUEST_FIELDS, Recipe, RecipeError
from jobs.method.seed_tasks import GivenInstructionSchema
from jobs.method.vocabulary import CLASSIFICATION_METHODS, EXPORT_FORMATS
from jobs.store.job import JOB_STATES
from jobs.webhooks import MAX_URL_CHARS

MAX_INSTRUCTIONS = 100_000  # the schema's ceiling; the operator's MAX_INSTRUCTIONS may be lower
DEFAULTS = Recipe()  # what a field left out means: the recipe's default (documented from here)
NULLABLE = (
    "contamination_threshold",
    "judge_threshold",
    "semantic_threshold",
)  # recipe fields whose null means something


class StageDecodingSchema(Schema):
    """Overrides of the paper's decoding parameters for one stage, within limits."""

    class Meta:
        unknown = RAISE

    max_tokens = StrictInteger(validate=validate.Range(1, 2048))
    temperature = StrictFloat(validate=validate.Range(0.0, 2.0))
    top_p = StrictFloat(validate=validate.Range(0.0, 1.0))
    frequency_penalty = StrictFloat(validate=validate.Range(-2.0, 2.0))
    presence_penalty = StrictFloat(validate=validate.Range(-2.0, 2.0))


class InstructionDecodingSchema(StageDecodingSchema):
    n = StrictInteger(validate=validate.Range(1, 8), metadata={"description": "Completions per prompt."})


class DecodingSchema(Schema):
    class Meta:
        unknown = RAISE

    instructions = fields.Nested(InstructionDecodingSchema)
    classification = fields.Nested(StageDecodingSchema)
    instances = fields.Nested(StageDecodingSchema)


MAX_DEDUP_JOBS = 1000
_JOB_ID = re.compile(r"[0-9a-f]{32}")


class DedupAgainst(fields.Field):
    """ "team", or a list of the team's job ids (each once, in the order given)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if value == "team":
            return value
        if (
            isinstance(value, list)
            and 1 <= len(value) <= MAX_DEDUP_JOBS
            and all(isinstance(v, str) and _JOB_ID.fullmatch(v) for v in value)
        ):
            return list(dict.fromkeys(value))
        raise ValidationError(f'Must be "team" or a list of 1 to {MAX_DEDUP_JOBS} job ids.')


def dedup_against_field() -> DedupAgainst:
    """A new field each time: schemas that share one would share its description's objects, which
    YAML then writes as anchors."""
    return DedupAgainst(
        metadata={
            "description": "Earlier jobs of the team whose kept instructions this job must not repeat: "
            'their job ids, or "team" for every dataset the team still has. Their instructions join the '
            "ROUGE-L pool as a read-only part; a candidate too similar to one is dropped as too_similar "
            "(or exact_duplicate) with `detail.nearest_job` and `detail.nearest_id` naming it. The job's "
            "`config` shows the job ids it was resolved to.",
            "oneOf": [
                {"type": "string", "enum": ["team"]},
                {
                    "type": "array",
                    "items": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                    "minItems": 1,
                    "maxItems": MAX_DEDUP_JOBS,
                },
            ],
        }
    )


# A Hub repository id: a namespace and a name (the Hub's own rules are checked when it is pushed to)
HUB_REPO = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")


class PushToHubSchema(Schema):
    class Meta:
        unknown = RAISE

    repo_id = fields.String(
        required=True,
        validate=validate.Regexp(HUB_REPO, error="a Hub dataset repository, namespace/name"),
        metadata={"description": "The dataset repository, namespace/name; made when it does not exist."},
    )
    private = StrictBoolean(load_default=True, metadata={"description": "A repository made now is private."})


class JobCreateSchema(Schema):
    class Meta:
        unknown = RAISE

    seed_set_id = fields.String(required=True, validate=SHA256)
    num_instructions = StrictInteger(
        validate=validate.Range(1, MAX_INSTRUCTIONS),
        metadata={"description": "Instructions to bootstrap (stage 1); required unless `instructions`."},
    )
    instructions = fields.List(
        fields.Nested(GivenInstructionSchema),
        validate=validate.Length(1, MAX_INSTRUCTIONS),
        metadata={
            "description": "A stage-level run: skip stage 1 and classify, make and filter instances for "
            "exactly these instructions. Every bad item, duplicate ids and duplicate instructions are "
            "reported at once. Not with `num_instructions`."
        },
    )
    profile = Name(
        validate=validate.Length(1, 100),
        metadata={
            "description": "An endpoint profile from GET /v1/profiles; default: the operator's default."
        },
    )
    seed = StrictInteger(validate=validate.Range(0, 2**31 - 1), metadata={"default": DEFAULTS.seed})
    export_formats = fields.List(
        fields.String(validate=validate.OneOf(EXPORT_FORMATS)),
        validate=validate.Length(min=1),
        metadata={"description": f"Dataset files to write; default: {', '.join(DEFAULTS.export_formats)}."},
    )
    decoding = fields.Nested(DecodingSchema)  # per-stage overrides of the paper's decoding
    classification_only = StrictBoolean(metadata={"default": DEFAULTS.classification_only})
    classification_method = fields.String(
        validate=validate.OneOf(CLASSIFICATION_METHODS),
        metadata={
            "default": DEFAULTS.classification_method,
            "description": "How stage 2 decides Yes/No: text (the paper's greedy answer), logprobs (the "
            "labels' log-probabilities), calibrated (divided by the bias on content-free inputs), fitted "
            "(the calibrated margin thresholded on the seed tasks outside the demonstrations), knn (a vote "
            "of the nearest seed tasks by wording; sends no request), auto (the cheapest of these within 0.1 "
            "of the best balanced accuracy on the seed tasks outside the demonstrations, asked of the job's "
            "endpoint at stage "
            "2's start: a request per such task, at most 40, and one per content-free input; the table is "
            "in run.json, stats.json and the report). A fallback's reason is recorded in stats.json.",
        },
    )
    include_seed_tasks = StrictBoolean(metadata={"default": DEFAULTS.include_seed_tasks})
    instance_followup = StrictBoolean(
        metadata={
            "default": DEFAULTS.instance_followup,
            "description": "An instance answer that ends after a single instance is asked again, once, "
            "sampled, and the two answers' instances are filtered together (completions online; not "
            "chat or batch). false: one request per instruction, as the paper.",
        },
    )
    window = StrictInteger(
        validate=validate.Range(1, 1000),
        metadata={
            "default": DEFAULTS.window,
            "description": "Stage 1's window: prompt i samples the pool as it stood once the prompts before "
            "i - window + 1 were filtered, so up to this many prompts are out at once (across every "
            "worker that helps the job). Part of the recipe: the same window and seed give the same "
            "dataset on any number of workers. round_size, when given, takes its place.",
        },
    )
    round_size = StrictInteger(
        validate=validate.Range(1, 50_000),
        metadata={
            "description": "Stage 1 in rounds of this many prompts, each sampling the pool as it stood when "
            "its round began. A batch-mode profile's rounds are its batches (200 prompts when not given); "
            "an online job with the same round size makes the same dataset."
        },
    )
    similarity_threshold = StrictFloat(
        validate=validate.Range(0.0, 1.0), metadata={"default": DEFAULTS.similarity_threshold}
    )
    decontaminate_against = decontaminate_against_field()
    contamination_ngram = StrictInteger(
        validate=validate.Range(0, MAX_NGRAM),
        metadata={
            "default": DEFAULTS.contamination_ngram,
            "description": "With `decontaminate_against`: the run of words (rouge-score's tokens: "
            "lower-cased, alphanumeric) that an instruction or instance must not share with a reference "
            "item; 0 turns the rule off. Items shorter than it are matched by ROUGE-L only.",
        },
    )
    contamination_threshold = StrictFloat(
        allow_none=True,
        validate=validate.Range(0.0, 1.0),
        metadata={
            "default": DEFAULTS.contamination_threshold,
            "description": "With `decontaminate_against`: the ROUGE-L F-measure against a reference item "
            "above which an instruction or instance is dropped; null turns the rule off.",
        },
    )
    semantic_threshold = StrictFloat(
        allow_none=True,
        validate=validate.Range(-1.0, 1.0),
        metadata={
            "default": DEFAULTS.semantic_threshold,
            "description": "Near-duplicates by meaning, beside ROUGE-L: a candidate instruction whose "
            "embedding has a cosine above this with a pool item's (seeds, the `dedup_against` jobs', the "
            "kept ones) is dropped with rule `semantic_duplicate`, naming the item and the cosine. Needs "
            "a profile with an embedding endpoint (GET /v1/profiles: `embeddings`); on the embedded "
            "all-MiniLM-L6-v2 close paraphrases score about 0.9 and more, so 0.9 is a careful start "
            "(docs/method.md). Null: not compared.",
        },
    )
    judge_threshold = StrictInteger(
        allow_none=True,
        validate=validate.Range(1, 5),
        metadata={
            "default": DEFAULTS.judge_threshold,
            "description": "The LLM judge: every instance the filters keep is scored by the profile's "
            "model from 1 to 5 for following its instruction and being correct, with a one-sentence "
            "rationale (the rubric: docs/method.md), and one scored below this is dropped with rule "
            "`judge_low_score` (1: scores, drops none). Null: no judge. It costs one request per "
            "instance (the preview prices it); the embedded 270M base model scores almost everything 1 or "
            "2 (docs/benchmarks.md), so it is off by default.",
        },
    )
    max_requests = StrictInteger(
        validate=validate.Range(1, 10_000_000),
        metadata={"description": "Stage-1 request budget; default 20 + 10 per instruction."},
    )
    max_tokens = StrictInteger(
        validate=validate.Range(1, 10**10),
        metadata={"description": "Token budget of the whole job (prompt and completion, every stage)."},
    )
    dedup_against = dedup_against_field()
    max_cost = StrictFloat(
        validate=validate.Range(min=0.0, min_inclusive=False, max=10**9),
        metadata={
            "description": "Cost budget in the profile's currency (its prices: GET /v1/profiles). "
            "Reaching it stops the job like a cancel, stop reason cost_budget, with a partial dataset."
        },
    )

    priority = StrictInteger(
        validate=validate.Range(-10, 10),
        metadata={
            "default": 0,
            "description": "Among the team's own jobs waiting for a worker, higher goes first (teams take "
            "turns whatever their jobs' priorities).",
        },
    )
    push_to_hub = fields.Nested(
        PushToHubSchema,
        metadata={
            "description": "Also push the finished dataset (its files as downloaded, the README's Hub "
            "header included) to this Hugging Face Hub dataset repository, as one commit with the "
            "operator's token; only where the operator configured one (HUB_TOKEN_ENV). The job's `hub` "
            "event says where it went, or what the Hub answered: a failed push leaves the job "
            "succeeded, with a `warning` event."
        },
    )
    notify_url = fields.String(
        validate=validate.Length(1, MAX_URL_CHARS),
        metadata={
            "description": "Post the job's end there (the jobEnded callback), signed with the team's "
            "webhook secret (POST /v1/webhook-secret creates it first). http or https, on a host the "
            "operator allows; see the manual's Webhooks page for what is refused."
        },
    )

    @post_load
    def _recipe(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """The body's recipe fields load straight into the recipe, checked here once: `recipe` beside
        the fields as given (a stage-level job's count comes from its instruction list)."""
        # (a null threshold is given: it turns its rule off)
        given = {
            k: data[k] for k in REQUEST_FIELDS if data.get(k) is not None or (k in NULLABLE and k in data)
        }
        try:
            data["recipe"] = Recipe.build(given)
        except RecipeError as e:
            raise ValidationError({name: [message] for name, message in e.problems}) from e
        return data


class ExtensionCreateSchema(Schema):
    class Meta:
        unknown = RAISE

    num_instructions = StrictInteger(
        required=True,
        validate=validate.Range(1, MAX_INSTRUCTIONS),
        metadata={"description": "The larger target: above the job's own num_instructions."},
    )


class IdempotencyHeaderSchema(Schema):
    idempotency_key = Name(
        data_key="Idempotency-Key",
        validate=validate.Length(1, 200),
        metadata={
            "description": "The same key with the same body returns the same job; with another body, 409."
        },
    )


class ProgressSchema(Schema):
    stage_done = fields.Integer(required=True)
    stage_total = fields.Integer(required=True)
    instructions_kept = fields.Integer(required=True)
    instructions_target = fields.Integer(required=True)
    instances_kept = fields.Integer(required=True)
    requests = fields.Integer(required=True)
    prompt_tokens = fields.Integer(required=True)
    completion_tokens = fields.Integer(required=True)


class CostSchema(Schema):
    currency = fields.String(required=True)
    total = fields.Float(required=True)
    by_stage = fields.Dict(keys=fields.String(), values=fields.Float(), required=True)
    price_per_million_tokens = fields.Dict(keys=fields.String(), values=fields.Float(), required=True)


class JobSchema(Schema):
    id = fields.String(required=True)
    state = fields.String(required=True, validate=validate.OneOf(JOB_STATES))
    stage = fields.String(
        allow_none=True,
        required=True,
        metadata={"description": "instructions, classification, instances, export or done"},
    )
    seed_set_id = fields.String(required=True)
    profile = fields.String(required=True)
    config = fields.Dict(
        required=True,
        metadata={
            "description": "The generation parameters the job runs with: every recipe field a request may "
            "set, as given or by default, with what its profile's mode implies (a batch profile's "
            "round_size; instance_followup off in batch and chat); `dedup_against` as resolved, "
            "`extends` for an extension, `instructions` (a stage-level job) as their number."
        },
    )
    created_at = fields.DateTime(required=True)
    started_at = fields.DateTime(allow_none=True, required=True)
    finished_at = fields.DateTime(allow_none=True, required=True)
    progress = fields.Nested(ProgressSchema, required=True)
    eta_seconds = fields.Float(allow_none=True, required=True, metadata={"description": "Rough time left."})
    error = fields.String(allow_none=True, required=True)
    warnings = fields.List(
        fields.String(),
        required=True,
        metadata={
            "description": "What the job went on without, e.g. a sampling parameter the endpoint refused."
        },
    )
    cancel_requested = fields.Boolean(required=True)
    cost = fields.Nested(
        CostSchema,
        allow_none=True,
        required=True,
        metadata={"description": "Cost so far, in total and by stage; null when the profile has no prices."},
    )
    stop_reason = fields.String(
        allow_none=True,
        required=True,
        metadata={"description": "token_budget or cost_budget when a budget stopped the job; else null."},
    )
    dataset_available = fields.Boolean(
        required=True, metadata={"description": "GET .../dataset will answer."}
    )
    notify_url = fields.String(
        allow_none=True,
        required=True,
        metadata={"description": "Where the job's end is posted, if anywhere."},
    )
    deliveries = fields.List(
        fields.Nested(DeliverySchema),
        required=True,
        metadata={"description": "The webhook of the job's end, once it has ended with a notify_url."},
    )


class JobPageSchema(PageSchema):
    items = fields.List(fields.Nested(JobSchema), required=True)


class JobListArgsSchema(PageArgsSchema):
    state = fields.String(validate=validate.OneOf(JOB_STATES))
    seed_set_id = fields.String(validate=SHA256)
