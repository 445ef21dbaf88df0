"""The HTTP client: seed sets, jobs, waiting with progress, decisions and verified downloads."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

TERMINAL = ("succeeded", "failed", "canceled")


class ApiError(Exception):
    """A problem+json answer, with every field (and line) at fault in the message."""

    def __init__(self, status: int, problem: dict[str, Any]):
        self.status = status
        self.problem = problem
        lines = [f"HTTP {status}: {problem.get('detail') or problem.get('title') or 'error'}"]
        for err in problem.get("errors") or []:
            where = f"line {err['line']}: " if err.get("line") else ""
            lines.append(f"  {where}{err.get('field')}: {err.get('message')}")
        super().__init__("\n".join(lines))


class Client:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(5):
            response = self.http.request(method, path, **kwargs)
            if response.status_code in (429, 503) and attempt < 4:  # back off as the server asks
                time.sleep(float(response.headers.get("Retry-After", 2**attempt)))
                continue
            break
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text[:300]}
            raise ApiError(response.status_code, problem)
        return response

    # --- seed sets ---

    def create_seed_set(self, jsonl: bytes | str | Path, name: str | None = None) -> dict[str, Any]:
        return self._upload("/v1/seed-sets", jsonl, name)

    def create_reference_set(self, jsonl: bytes | str | Path, name: str | None = None) -> dict[str, Any]:
        """Texts a job's data must not overlap: JSONL, one {"text", "id"?} object a line."""
        return self._upload("/v1/reference-sets", jsonl, name)

    def _upload(self, path: str, jsonl: bytes | str | Path, name: str | None) -> dict[str, Any]:
        data = Path(jsonl).read_bytes() if isinstance(jsonl, str | Path) else jsonl
        params = {"name": name} if name else {}
        headers = {"Content-Type": "application/x-ndjson"}
        return self._call("POST", path, content=data, params=params, headers=headers).json()

    # --- jobs ---

    def create_job(
        self, seed_set_id: str, num_instructions: int, idempotency_key: str | None = None, **options: Any
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = {"seed_set_id": seed_set_id, "num_instructions": num_instructions, **options}
        return self._call("POST", "/v1/jobs", json=body, headers=headers).json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{job_id}").json()

    def extend(self, job_id: str, num_instructions: int) -> dict[str, Any]:
        """A new job that continues a finished one to a larger target."""
        body = {"num_instructions": num_instructions}
        return self._call("POST", f"/v1/jobs/{job_id}/extensions", json=body).json()

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/jobs/{job_id}/cancel").json()

    def wait(
        self,
        job_id: str,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        poll: float = 2.0,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Poll until the job is succeeded, failed or canceled; returns its last state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_progress:
                on_progress(job)
            if job["state"] in TERMINAL:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job['state']} after {timeout} s")
            time.sleep(poll)

    def events(
        self, job_id: str, cursor: str | None = None, follow: bool = False, page_size: int = 100
    ) -> Iterator[dict[str, Any]]:
        """A job's events, oldest first; with `follow`, long-poll for more until the job has finished."""
        while True:
            params: dict[str, Any] = {"limit": page_size, **({"cursor": cursor} if cursor else {})}
            if follow:
                params["follow"] = "true"
            page = self._call("GET", f"/v1/jobs/{job_id}/events", params=params).json()
            yield from page["items"]
            cursor = page["next_cursor"] or cursor
            if page["done"] or (not follow and len(page["items"]) < page_size):
                return

    # --- previews ---

    def preview(
        self, seed_set_id: str, num_instructions: int | None = None, poll: float = 1.0, **options: Any
    ) -> dict[str, Any]:
        """Run a preview and return it finished (polling when the service answers 202)."""
        body = {"seed_set_id": seed_set_id, **options}
        if num_instructions is not None:
            body["num_instructions"] = num_instructions
        response = self._call("POST", "/v1/previews", json=body)
        preview = response.json()
        while preview["state"] not in ("succeeded", "failed"):
            time.sleep(poll)
            preview = self._call("GET", f"/v1/previews/{preview['id']}").json()
        return preview

    def decisions(self, job_id: str, page_size: int = 200, **filters: str) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            params = {"limit": page_size, **filters, **({"cursor": cursor} if cursor else {})}
            page = self._call("GET", f"/v1/jobs/{job_id}/decisions", params=params).json()
            yield from page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return

    # --- datasets ---

    def manifest(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{job_id}/dataset").json()

    def download(self, job_id: str, out_dir: str | Path) -> list[Path]:
        """Every file of the dataset through its presigned URL, checked against the manifest's sha256."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for f in self.manifest(job_id)["files"]:
            with httpx.stream("GET", f["url"], timeout=300) as response:
                response.raise_for_status()
                digest = hashlib.sha256()
                tmp = out / f".{f['name']}.part"
                with tmp.open("wb") as fh:
                    for chunk in response.iter_bytes():
                        digest.update(chunk)
                        fh.write(chunk)
            if digest.hexdigest() != f["sha256"]:
                tmp.unlink()
                raise ValueError(f"{f['name']}: checksum mismatch")
            tmp.replace(out / f["name"])
            paths.append(out / f["name"])
        return paths
