"""/v1/jobs/{id}/dataset: the manifest of a finished job, and downloads through presigned S3 URLs."""

from __future__ import annotations

import json
from typing import Any

from flask import redirect
from flask.views import MethodView
from flask_smorest import Blueprint
from werkzeug.wrappers import Response

from api_spec.datasets import ManifestSchema, ReportSchema
from service.context import services
from service.errors import problem
from service.generation_jobs import get_job

blp = Blueprint("datasets", __name__, url_prefix="/v1/jobs", description="Download generated datasets.")


def _manifest(job_id: str) -> tuple[str, dict[str, Any]]:
    job = get_job(job_id)
    if not job.dataset:
        problem(409, f"the job is {job.state}; its dataset is not ready")
    manifest = services().artifacts.manifest(job.team, job.id)
    if manifest is None:
        problem(409, "the dataset is not ready")
    return job.team, manifest


@blp.route("/<job_id>/dataset")
class Dataset(MethodView):
    @blp.response(200, ManifestSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    @blp.alt_response(410, response="GONE")
    def get(self, job_id: str) -> dict[str, Any]:
        """Files, formats, record counts, sizes and sha256, each with a presigned URL."""
        team, manifest = _manifest(job_id)
        artifacts = services().artifacts
        files = [{**f, "url": artifacts.presign(team, job_id, f["name"])} for f in manifest["files"]]
        return {**manifest, "files": files, "expires_in": artifacts.presign_ttl}


@blp.route("/<job_id>/report")
class Report(MethodView):
    @blp.response(200, ReportSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    @blp.alt_response(410, response="GONE")
    def get(self, job_id: str) -> dict[str, Any]:
        """The dataset's quality report: Table 1 beside the paper's, Figures 3 and 4's data, filter counts."""
        team, manifest = _manifest(job_id)
        if "report.json" not in {f["name"] for f in manifest["files"]}:
            problem(404, "this job's dataset has no quality report (made before reports existed)")
        body = services().artifacts.dataset_file(team, job_id, "report.json")
        if body is None:
            problem(404, "the quality report is gone")
        return json.loads(body)


@blp.route("/<job_id>/dataset/<name>")
class DatasetFile(MethodView):
    @blp.response(
        302,
        description="Redirect to a presigned S3 URL.",
        headers={"Location": {"schema": {"type": "string"}}},
    )
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    @blp.alt_response(410, response="GONE")
    def get(self, job_id: str, name: str) -> Response:
        """Download one file: a redirect to a presigned URL, valid for PRESIGN_TTL_SECONDS."""
        team, manifest = _manifest(job_id)
        if name not in {f["name"] for f in manifest["files"]}:
            problem(404, f"the dataset has no file {name}")
        return redirect(services().artifacts.presign(team, job_id, name), code=302)
