"""The recipe: built and checked once (Recipe.build), carried as its canonical dict, loaded unchecked,
and run.json's layout kept."""

from __future__ import annotations

import json

import pytest
from marshmallow import ValidationError

from api_spec.jobs import JobCreateSchema
from jobs.method.recipe import REQUEST_FIELDS, Execution, Recipe, RecipeError, paper_decoding

BODY = {"seed_set_id": "a" * 64, "num_instructions": 3}


def test_build_fills_defaults_and_merges_decoding_over_the_papers() -> None:
    recipe = Recipe.build({"num_instructions": 7, "decoding": {"instructions": {"temperature": 0.9, "n": 2}}})
    paper = paper_decoding()
    assert recipe.num_instructions == 7 and recipe.seed == Recipe().seed
    assert recipe.decoding["instructions"].temperature == 0.9 and recipe.decoding["instructions"].n == 2
    assert recipe.decoding["instructions"].stop == paper["instructions"].stop  # the rest is the paper's
    assert recipe.decoding["classification"] == paper["classification"]
    assert Recipe.build({"max_instances_per_task": 3}).decoding["instances"].stop[0] == "Example 4"
    assert Recipe.build({"export_formats": ["chat", "chat", "alpaca"]}).export_formats == ("chat", "alpaca")


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"num_instructions": 0}, "num_instructions"),
        ({"similarity_threshold": 1.5}, "similarity_threshold"),
        ({"classification_method": "coin"}, "classification_method"),
        ({"export_formats": ["csv"]}, "export_formats"),
        ({"prompt_machine_instructions": 8}, "prompt_machine_instructions"),
        ({"decoding": {"summaries": {}}}, "decoding"),
        ({"decoding": {"instructions": {"beam": 4}}}, "decoding"),
        ({"concurrency": 3}, "concurrency"),  # an execution setting, not the recipe's
    ],
)
def test_build_names_the_field_at_fault(given: dict, field: str) -> None:
    with pytest.raises(RecipeError) as refused:
        Recipe.build(given)
    assert [name for name, _ in refused.value.problems] == [field]


def test_the_canonical_dict_round_trips_through_json() -> None:
    recipe = Recipe.build(
        {"num_instructions": 4, "max_cost": 0.5, "decoding": {"instances": {"max_tokens": 99}}}
    )
    canonical = json.loads(json.dumps(recipe.to_dict()))
    assert Recipe.from_dict(canonical) == recipe
    assert canonical == recipe.to_dict()


def test_from_dict_does_not_check_again() -> None:
    """Workers load what was checked when it was built: no second validation."""
    canonical = Recipe().to_dict() | {"similarity_threshold": 2.0}
    assert Recipe.from_dict(canonical).similarity_threshold == 2.0


def test_run_json_keeps_the_execution_settings_where_they_were() -> None:
    record = Recipe(num_instructions=5).record(Execution(concurrency=3, checkpoint_every=2))
    names = list(record)
    assert names[:4] == ["num_instructions", "seed", "concurrency", "window"]
    assert names[-1] == "checkpoint_every" and (record["concurrency"], record["checkpoint_every"]) == (3, 2)
    recipe_only = {k: v for k, v in record.items() if k not in ("concurrency", "checkpoint_every")}
    assert Recipe.build(recipe_only) == Recipe(num_instructions=5)  # run.json builds the same recipe


def test_the_api_schema_loads_the_body_into_a_recipe() -> None:
    """The body's fields over the recipe's own defaults: the schema fills in none of its own."""
    loaded = JobCreateSchema().load({**BODY, "classification_method": "text", "max_tokens": 500})
    assert loaded["recipe"] == Recipe(num_instructions=3, classification_method="text", max_tokens=500)
    assert set(loaded) == {*BODY, "classification_method", "max_tokens", "recipe"}


@pytest.mark.parametrize("bad", [0, 1001, "16", 2.5, None, True])
def test_the_api_takes_stage_1s_window_and_names_a_bad_one(bad) -> None:
    assert JobCreateSchema().load({**BODY, "window": 16})["recipe"].window == 16
    with pytest.raises(ValidationError) as refused:
        JobCreateSchema().load({**BODY, "window": bad})
    assert list(refused.value.messages) == ["window"]


def test_the_schema_documents_the_recipes_defaults() -> None:
    """What the API description says a left-out field means is what Recipe holds."""
    documented = {
        name: field.metadata["default"]
        for name, field in JobCreateSchema().fields.items()
        if "default" in field.metadata and name in REQUEST_FIELDS  # the recipe's (priority is the queue's)
    }
    assert documented and all(getattr(Recipe(), name) == value for name, value in documented.items())
    assert {"seed", "window", "similarity_threshold", "instance_followup", "classification_method"} <= set(
        documented
    )


def test_execution_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Execution(concurrency=0)


def test_a_job_recorded_before_records_held_its_recipe_still_runs(client, redis, worker_env) -> None:
    """An upgrade finds jobs whose record holds only the request as given: the worker builds the
    recipe from it, and the run is the one that request asked for."""
    from jobs.store import keyspace
    from tests.conftest import work
    from tests.test_api import make_seed_set

    sid = make_seed_set(client)
    body = {"seed_set_id": sid, "num_instructions": 3, "seed": 9, "export_formats": ["alpaca"]}
    old = client.post("/v1/jobs", json={**body, "classification_method": "text"}).json["id"]
    redis.hdel(keyspace.job(old), "recipe")
    work(redis)
    job = client.get(f"/v1/jobs/{old}").json
    assert job["state"] == "succeeded", job
    names = {f["name"] for f in client.get(f"/v1/jobs/{old}/dataset").json["files"]}
    assert "alpaca.json" in names and "finetune.jsonl" not in names


def test_a_recipe_recorded_before_instance_followup_asks_once_per_task() -> None:
    """Jobs and run.json files made before the field resume as they were made: one request a task."""
    old = {k: v for k, v in Recipe().to_dict().items() if k != "instance_followup"}
    assert Recipe.from_dict(old).instance_followup is False
    assert Recipe().instance_followup is True and Recipe.from_dict(Recipe().to_dict()).instance_followup
