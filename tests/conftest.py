"""Shared fixtures. Real parts where they can run here: the local model is started once per session."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.method.endpoint import EmbeddingEndpoint, Endpoint
from jobs.method.seed_tasks import SeedTask, load_file
from jobs.tools.local_stack import Process, rq_worker
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
    from jobs.tools.local_model import MODEL_ALIAS, LocalModel

    (ROOT / ".run").mkdir(exist_ok=True)
    with LocalModel(log_file=ROOT / ".run" / "test-local-model.log") as model:
        yield Endpoint(base_url=model.base_url, model=MODEL_ALIAS, timeout=300.0)


@pytest.fixture(scope="session")
def embedding_model() -> Iterator[EmbeddingEndpoint]:
    """The embedded embedding model (all-MiniLM-L6-v2 on llama-server), once per test session."""
    from jobs.tools.embedding_model import EMBEDDING_ALIAS, EmbeddingModel

    (ROOT / ".run").mkdir(exist_ok=True)
    with EmbeddingModel(log_file=ROOT / ".run" / "test-embedding-model.log") as model:
        yield EmbeddingEndpoint(model.base_url, EMBEDDING_ALIAS)


# --- real Redis and S3 for the service, once per session ---


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    from jobs.tools.local_stack import redis_server

    proc, url = redis_server(tmp_path_factory.mktemp("redis"))
    yield url
    proc.stop()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> Iterator[str]:
    from jobs.tools.local_stack import S3_KEY, S3_SECRET, s3_server

    os.environ.setdefault("AWS_ACCESS_KEY_ID", S3_KEY)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    proc, endpoint = s3_server(tmp_path_factory.mktemp("s3"))
    yield endpoint
    proc.stop()


@pytest.fixture
def redis(redis_url):
    from redis import Redis

    client = Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def settings(redis, redis_url, s3_endpoint, fake_llm):
    """Service settings on the real Redis and S3, with a fresh bucket and the scripted LLM as profile."""
    import uuid

    from jobs.blobs.artifacts import Artifacts
    from jobs.settings import Profile, Settings

    settings = Settings(
        redis_url=redis_url,
        s3_endpoint_url=s3_endpoint,
        s3_public_endpoint_url=s3_endpoint,
        s3_bucket=f"t-{uuid.uuid4().hex[:12]}",
        profiles={
            "fake": Profile.of(
                "fake",
                fake_llm.base_url,
                "fake",
                timeout=5,
                max_attempts=4,
                max_wait=0.2,
                embeddings={"base_url": fake_llm.base_url, "model": "fake-embed"},
            )
        },
        default_profile="fake",
        instance_chunk_size=1000,
        max_seed_tasks=500,
        max_request_bytes=1024 * 1024,
        log_level="WARNING",
    )
    Artifacts(settings).ensure_bucket()
    return settings


@pytest.fixture
def app(settings):
    from service.app import create_app

    return create_app(settings, configure_logging=False)


@pytest.fixture
def api_key(redis) -> str:
    """A key for team "alpha"."""
    from jobs.store import api_keys

    return api_keys.create(redis, "alpha", "tests")[1]


@pytest.fixture
def client(app, api_key):
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {api_key}"
    return client


@pytest.fixture
def worker_env(settings, monkeypatch):
    """Workers read their settings from the environment, as in production."""
    from jobs.settings import get_settings

    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield settings.to_env()
    get_settings.cache_clear()


def work(redis_client) -> None:
    """Run every queued RQ job in this process (RQ's SimpleWorker, burst mode), on the real Redis."""
    from rq import SimpleWorker

    from jobs.runner.queue import queue
    from jobs.settings import get_settings

    SimpleWorker([queue(redis_client, get_settings())], connection=redis_client).work(burst=True)


def env_for(settings) -> dict[str, str]:
    """Settings as a worker or gunicorn process's environment, with the S3 credentials."""
    return {
        **settings.to_env(),
        "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
    }


@pytest.fixture
def spawn(tmp_path):
    """Start RQ worker processes; every one is stopped at the end of the test, whatever happens."""
    started: list[Process] = []

    def start(settings, name: str) -> Process:
        started.append(rq_worker(env_for(settings), tmp_path / f"{name}.log"))
        return started[-1]

    yield start
    for proc in started:
        proc.stop()


def wait_until(predicate, timeout: float = 60, interval: float = 0.1, what: str = "condition"):
    """Poll `predicate` until it returns something true and return that; TimeoutError after `timeout` s.
    What a test waits for is a condition, never a fixed time: on a loaded machine things are late."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached in {timeout} s")
