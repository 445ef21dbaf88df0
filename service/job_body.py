"""What a job's body and a preview's body share: the checks of the profile the operator offers and of
the seed set, and the body's recipe fields as requested.

Each check adds what is wrong to `errors`, so that a request gets every fault in one problem.
"""

from __future__ import annotations

from typing import Any

from api_spec.jobs import MAX_DEDUP_JOBS
from jobs.method.recipe import REQUEST_FIELDS, Recipe
from jobs.store import job as jobs_
from jobs.store import reference_sets as reference_set_store
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
    elif (
        args.get("semantic_threshold") is not None
        and name in settings.profiles
        and settings.profiles[name].embeddings is None
    ):
        message = f"profile {name} has no embedding endpoint to compare meanings with"
        errors.append({"field": "semantic_threshold", "message": message})
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


def dedup_against(args: dict[str, Any], errors: list[dict[str, Any]]) -> None:
    """`dedup_against` resolved to the team's job ids with a dataset, oldest first for "team". A job of
    another team is a job that does not exist (404 when it is the only fault, else one of the 422's
    errors): its existence is not revealed."""
    if "dedup_against" not in args:
        return
    r, asked = services().redis, args["dedup_against"]
    if asked == "team":
        found, after = [], None
        while True:
            page, after = jobs_.page(r, team(), after, 500)
            found += [j for j in page if j.dataset and not j.expired()]
            if after is None:
                break
        if len(found) > MAX_DEDUP_JOBS:
            message = f"the team has {len(found)} datasets, more than {MAX_DEDUP_JOBS}: name the jobs"
            errors.append({"field": "dedup_against", "message": message})
        args["dedup_against"] = [j.id for j in sorted(found, key=lambda j: (j.created_at, j.id))]
        return
    missing = []
    for i, job_id in enumerate(asked):
        job = jobs_.get(r, job_id)
        if job is None or job.team != team():
            missing.append(job_id)
            errors.append({"field": f"dedup_against[{i}]", "message": "no such job"})
        elif not job.dataset or job.expired():
            errors.append({"field": f"dedup_against[{i}]", "message": f"job {job_id} has no dataset"})
    if missing and len(errors) == len(missing):
        problem(404, f"no job {missing[0]}")


def decontaminate_against(args: dict[str, Any], errors: list[dict[str, Any]]) -> None:
    """Every reference set named must be the team's (404 when that is the only fault)."""
    missing = []
    for i, sha in enumerate(args.get("decontaminate_against", [])):
        if reference_set_store.get(services().redis, team(), sha) is None:
            missing.append(sha)
            errors.append({"field": f"decontaminate_against[{i}]", "message": "no such reference set"})
    if missing and len(errors) == len(missing):
        problem(404, f"no reference set {missing[0]}")
    if "decontaminate_against" in args:
        args["decontaminate_against"] = list(dict.fromkeys(args["decontaminate_against"]))


def recipe(args: dict[str, Any], profile: str) -> Recipe:
    """The body's recipe (built and checked when the schema loaded it) as the profile's endpoint carries
    it out (Recipe.for_endpoint), which is what the job or preview records and runs."""
    endpoint = services().settings.profiles[profile].endpoint
    return args.pop("recipe").for_endpoint(endpoint.mode, endpoint.api)


def config(args: dict[str, Any], recipe: Recipe) -> dict[str, Any]:
    """What the API shows of a job's parameters: every request field (REQUEST_FIELDS) as the job's
    recipe holds it, given or by default, the job's earlier jobs not to repeat, and its priority."""
    held = recipe.to_dict()
    config = {k: held[k] for k in REQUEST_FIELDS}
    for name in ("dedup_against", "decontaminate_against", "push_to_hub"):
        if name in args:
            config[name] = args[name]
    if args.get("priority"):
        config["priority"] = args["priority"]
    return config
