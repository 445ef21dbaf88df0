"""Property-based API tests from the app's own OpenAPI document: no server errors, and every response
conforms to the spec (status, content type, headers, schema). In-process, on real Redis and S3."""

from __future__ import annotations

from dataclasses import replace

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from service.app import create_app
from tests.test_api import make_seed_set, run_job

# Bodies whose validity the schema cannot state: a JSONL file's content (any bytes fit "binary"),
# and a job naming a seed set or an operator profile that may not exist. Every other check applies.
CONTENT_BEYOND_SCHEMA = {
    "POST /v1/seed-sets",
    "POST /v1/reference-sets",
    "POST /v1/jobs",
    "POST /v1/previews",
    "POST /v1/jobs/{job_id}/extensions",  # the target must be above the job's own
}


@pytest.mark.slow
def test_api_conforms_to_its_spec(settings, client, redis, worker_env, api_key):
    # real resources, so that generated requests also reach the code behind a successful lookup
    seed_set_id = make_seed_set(client)
    job = run_job(client, redis, seed_set_id, num_instructions=3)
    decision = client.get(f"/v1/jobs/{job['id']}/decisions?limit=1").json["items"][0]["id"]
    preview = client.post("/v1/previews?wait=0", json={"seed_set_id": seed_set_id, "num_instructions": 2})
    real_values = {
        "preview_id": preview.json["id"],
        "job_id": job["id"],
        "seed_set_id": seed_set_id,
        "decision_id": decision,
        "name": "alpaca.json",
    }
    # a preview the fuzzer makes on the real seed set is never run here: its POST waits 1 s, not 30
    app = create_app(replace(settings, preview_wait_seconds=1), configure_logging=False)
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)

    @schema.hook
    def flatmap_path_parameters(context, parameters):
        if not parameters:
            return st.just(parameters)
        real = {k: real_values.get(k, v) for k, v in parameters.items()}
        return st.sampled_from([parameters, real])

    cases = {}

    def fuzz(operation) -> None:
        label = f"{operation.method.upper()} {operation.path}"
        cases[label] = 0

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def check(case):
            cases[label] += 1
            skip = [positive_data_acceptance] if label in CONTENT_BEYOND_SCHEMA else []
            case.call_and_validate(headers={"Authorization": f"Bearer {api_key}"}, excluded_checks=skip)

        check()

    operations = [result.ok() for result in schema.get_all_operations()]
    # deletions last: a deleted job answers 410 Gone, which would fail every later check on it
    for operation in sorted(operations, key=lambda op: op.method.upper() == "DELETE"):
        fuzz(operation)
    print(f"\nschemathesis: {sum(cases.values())} cases over {len(cases)} operations")
    assert len(cases) == len(operations) >= 19 and all(n > 0 for n in cases.values())
