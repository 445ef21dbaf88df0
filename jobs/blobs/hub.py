"""Pushing a finished dataset to a Hugging Face Hub dataset repository (a job's `push_to_hub`).

Optional, off unless the operator names the variable holding a Hub token (HUB_TOKEN_ENV). The files
pushed are the dataset's own (the same as its download, README with the Hub's YAML header included), as
one commit through huggingface_hub's HTTP API. A push that fails does not fail the job: its dataset is in
S3 either way, and the job's events and warnings say what the Hub answered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class HubError(RuntimeError):
    """The Hub refused or failed the push (its words, without the token)."""


def push(
    folder: Path, repo_id: str, private: bool, token: str, endpoint: str, message: str
) -> dict[str, Any]:
    """Create the dataset repository if needed and commit every file of `folder` to it; what the
    commit is ({repo_id, url, commit})."""
    from huggingface_hub import CommitOperationAdd, HfApi  # the worker's only: the API never pushes
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(endpoint=endpoint, token=token)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.create_commit(
            repo_id,
            [CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=str(p)) for p in files],
            commit_message=message,
            repo_type="dataset",
        )
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise HubError(str(e).replace(token, "[redacted]")[:500]) from None
    return {"repo_id": repo_id, "url": f"{endpoint.rstrip('/')}/datasets/{repo_id}", "commit": commit.oid}
