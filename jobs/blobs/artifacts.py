"""Objects in S3: seed sets (content-addressed) and datasets, whose manifest is written last.

Layout: `teams/<team>/seed-sets/<sha256>.jsonl`, `teams/<team>/jobs/<job id>/<file>`,
`teams/<team>/jobs/<job id>/manifest.json` and, outside the dataset, the job's archived decision log
`teams/<team>/jobs/<job id>/archive/decisions.sqlite`. A manifest exists only once every file it lists
is in place, so a half-written dataset is never visible.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import structlog
from botocore.config import Config
from botocore.exceptions import ClientError

from jobs import retry
from jobs.method.vocabulary import FORMATS
from jobs.settings import Settings

log = structlog.get_logger(__name__)


def _client(settings: Settings, endpoint: str | None) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=settings.s3_region,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        ),
    )


class Artifacts:
    """`patient` (workers): ride out an S3 outage for S3_RETRY_SECONDS; otherwise (HTTP requests)
    fail fast after botocore's own few attempts."""

    def __init__(self, settings: Settings, patient: bool = False):
        self.bucket = settings.s3_bucket
        self.region = settings.s3_region
        self.s3 = _client(settings, settings.s3_endpoint_url)
        # presigned URLs are signed for the host that callers will use
        self.presigner = _client(settings, settings.s3_public_endpoint_url)
        self.presign_ttl = settings.presign_ttl
        self._retry = retry.s3(settings.s3_retry_seconds if patient else 0)

    def ensure_bucket(self) -> None:
        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except ClientError:
            where = {"LocationConstraint": self.region}
            extra = {} if self.region == "us-east-1" else {"CreateBucketConfiguration": where}
            self.s3.create_bucket(Bucket=self.bucket, **extra)

    def ping(self) -> None:
        self.s3.head_bucket(Bucket=self.bucket)

    # --- seed sets ---

    @staticmethod
    def seed_set_key(team: str, sha: str) -> str:
        return f"teams/{team}/seed-sets/{sha}.jsonl"

    def put_seed_set(self, team: str, sha: str, data: bytes) -> None:
        self._retry(self.s3.put_object, Bucket=self.bucket, Key=self.seed_set_key(team, sha), Body=data)

    def get_seed_set(self, team: str, sha: str) -> bytes:
        key = self.seed_set_key(team, sha)
        return self._retry(lambda: self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def delete_seed_set(self, team: str, sha: str) -> None:
        self._retry(self.s3.delete_object, Bucket=self.bucket, Key=self.seed_set_key(team, sha))

    # --- reference sets ---

    @staticmethod
    def reference_set_key(team: str, sha: str) -> str:
        return f"teams/{team}/reference-sets/{sha}.jsonl"

    def put_reference_set(self, team: str, sha: str, data: bytes) -> None:
        key = self.reference_set_key(team, sha)
        self._retry(self.s3.put_object, Bucket=self.bucket, Key=key, Body=data)

    def get_reference_set(self, team: str, sha: str) -> bytes:
        key = self.reference_set_key(team, sha)
        return self._retry(lambda: self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def delete_reference_set(self, team: str, sha: str) -> None:
        self._retry(self.s3.delete_object, Bucket=self.bucket, Key=self.reference_set_key(team, sha))

    # --- datasets ---

    @staticmethod
    def dataset_key(team: str, job_id: str, name: str) -> str:
        return f"teams/{team}/jobs/{job_id}/{name}"

    def upload_dataset(
        self,
        team: str,
        job_id: str,
        directory: Path,
        records: dict[str, int],
        partial: bool,
        extends: str | None = None,
    ) -> dict[str, Any]:
        """Upload every file, then the manifest; returns the manifest. `extends`: the job whose
        dataset this one continues (its lineage)."""
        files = []
        for path in sorted(p for p in directory.iterdir() if p.is_file()):
            data = path.read_bytes()
            content_type = _content_type(path.name)
            self._put(self.dataset_key(team, job_id, path.name), data, content_type)
            files.append(
                {
                    "name": path.name,
                    "format": FORMATS.get(path.name, "other"),
                    "records": records.get(path.name),
                    "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "content_type": content_type,
                }
            )
        manifest = {
            "job_id": job_id,
            "created_at": datetime.now(UTC).isoformat(),
            "partial": partial,
            **({"extends": extends} if extends else {}),
            "files": files,
        }
        body = json.dumps(manifest, indent=2).encode()
        self._put(self.dataset_key(team, job_id, "manifest.json"), body, "application/json")
        return manifest

    def _put(self, key: str, data: bytes, content_type: str) -> None:
        self._retry(self.s3.put_object, Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def manifest(self, team: str, job_id: str) -> dict[str, Any] | None:
        """None until the dataset is complete. Not retried: callers are HTTP requests."""
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self.dataset_key(team, job_id, "manifest.json"))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return json.loads(body["Body"].read())

    def dataset_file(self, team: str, job_id: str, name: str) -> bytes | None:
        """One stored dataset file, None if absent. Not retried: callers are HTTP requests."""
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self.dataset_key(team, job_id, name))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return body["Body"].read()

    def download_dataset_file(self, team: str, job_id: str, name: str, path: Path) -> None:
        """One dataset file to a local path (retried like every worker call: a partial download is
        written again whole)."""
        self._retry(self.s3.download_file, self.bucket, self.dataset_key(team, job_id, name), str(path))

    def upload_archive(self, team: str, job_id: str, path: Path) -> None:
        key = self.dataset_key(team, job_id, f"archive/{path.name}")
        self._retry(self.s3.upload_file, str(path), self.bucket, key)

    def download_archive(self, team: str, job_id: str, name: str, path: Path) -> None:
        self._retry(
            self.s3.download_file, self.bucket, self.dataset_key(team, job_id, f"archive/{name}"), str(path)
        )

    def delete_job(self, team: str, job_id: str) -> int:
        """Remove every object of a job (dataset, manifest first, and archive); returns how many."""

        def run() -> int:
            prefix = self.dataset_key(team, job_id, "")
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
            # the manifest first: a dataset is never visible half deleted
            for key in sorted(keys, key=lambda k: not k.endswith("/manifest.json")):
                self.s3.delete_object(Bucket=self.bucket, Key=key)
            return len(keys)

        return self._retry(run)

    def presign(self, team: str, job_id: str, name: str) -> str:
        return self.presigner.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self.dataset_key(team, job_id, name),
                "ResponseContentDisposition": f'attachment; filename="{name}"',
            },
            ExpiresIn=self.presign_ttl,
        )


def _content_type(name: str) -> str:
    if name.endswith(".jsonl"):
        return "application/x-ndjson"
    if name.endswith(".parquet"):
        return "application/vnd.apache.parquet"
    return mimetypes.guess_type(name)[0] or "application/octet-stream"
