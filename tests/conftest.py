"""Shared fixtures. Real parts where they can run here: the local model is started once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.llm import Endpoint
from jobs.seed_tasks import SeedTask, load_file
from tests.fake_llm import FakeLLM, Script

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
SHARED = Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def seed_tasks() -> list[SeedTask]:
    return load_file(DATA / "seed_tasks.jsonl")


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    with FakeLLM(Script()) as server:
        yield server


def fake_endpoint(server: FakeLLM, **kwargs: object) -> Endpoint:
    options: dict = {"timeout": 5.0, "max_attempts": 8, "max_wait": 0.5, **kwargs}
    return Endpoint(base_url=server.base_url, model="fake", **options)


@pytest.fixture(scope="session")
def local_model() -> Iterator[Endpoint]:
    """The real embedded model, once per test session (the slow part: keep its tests few and small)."""
    from jobs.local_model import MODEL_ALIAS, LocalModel

    (ROOT / ".run").mkdir(exist_ok=True)
    with LocalModel(log_file=ROOT / ".run" / "test-local-model.log") as model:
        yield Endpoint(base_url=model.base_url, model=MODEL_ALIAS, timeout=300.0)
