"""What a job's body and a preview's body share: the checks of the profile the operator offers and of
the seed set, and the body's recipe fields as requested.

Each check adds what is wrong to `errors`, so that a request gets every fault in one problem.
"""

from __future__ import annotations

from typing import Any

from jobs.store import seed_sets as seed_set_store
from service.context import services, team
from service.errors import problem


def profile(args: dict[str, Any], body: dict[str, Any], errors: list[dict[str, Any]]) -> str:
    """The profile asked for (or the default); one the operator does not offer is an error."""
    settings = services().settings
    name = args.get("profile") or settings.default_profile or ""
    # (a profile that is not a valid name is reported already)
    if ("profile" in args or "profile" not in body) and name not in settings.profiles:
        offered = ", ".join(sorted(settings.profiles)) or "none configured"
        errors.append({"field": "profile", "message": f"one of: {offered}"})
    return name


def seed_set(args: dict[str, Any], errors: list[dict[str, Any]]) -> None:
    """The seed set must be the team's, with classification tasks for `classification_only`. A missing
    one is a 404 when it is the only fault, else one of the 422's errors."""
    found = None
    if "seed_set_id" in args:
        found = seed_set_store.get(services().redis, team(), args["seed_set_id"])
    if found is not None and args.get("classification_only") and not found.classification_tasks:
        errors.append({"field": "classification_only", "message": "the seed set has no classification tasks"})
    if found is None and "seed_set_id" in args:
        if not errors:
            problem(404, f"no seed set {args['seed_set_id']}")
        errors.append({"field": "seed_set_id", "message": "no such seed set"})


RECIPE_FIELDS = (
    "num_instructions",
    "seed",
    "classification_only",
    "classification_method",
    "include_seed_tasks",
    "similarity_threshold",
    "decoding",
)
BUDGETS = ("max_requests", "max_tokens", "max_cost")


def config(args: dict[str, Any]) -> dict[str, Any]:
    """The body's recipe fields as requested (what the API shows of a job); the recipe itself is
    args["recipe"], built and checked when the schema loaded the body."""
    config = {k: args[k] for k in RECIPE_FIELDS if k in args}
    config |= {k: args[k] for k in BUDGETS if args.get(k) is not None}
    if "export_formats" in args:
        config["export_formats"] = list(dict.fromkeys(args["export_formats"]))
    return config
