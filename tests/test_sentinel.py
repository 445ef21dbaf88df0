"""Redis Sentinel (jobs.store.connection): REDIS_URL may name a Sentinel service, and a job rides out a
failover. A real master, its replica and a sentinel (redis-server in sentinel mode); the master is
killed with SIGKILL in the middle of a job; the sentinel promotes the replica, and the job finishes
with the dataset a run without the failover makes: nothing lost, nothing twice."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from redis import Redis

from jobs.settings import get_settings
from jobs.store import api_keys, connection
from jobs.tools.local_stack import Process, free_port, redis_server, wait_for_port
from service.app import create_app
from tests.conftest import wait_until
from tests.test_api import make_seed_set
from tests.test_faults import dataset, reference

SERVICE = "selfinstruct"


def test_sentinel_urls_are_read_whole() -> None:
    parsed = connection.sentinel("redis+sentinel://:pw@s1:26379,s2:26380/mymaster/2?sentinel_password=sp")
    assert parsed == connection.SentinelURL([("s1", 26379), ("s2", 26380)], "mymaster", 2, "pw", "sp", False)
    assert connection.sentinel("rediss+sentinel://s1:26379/m").tls
    assert connection.sentinel("redis://127.0.0.1:6379/0") is None
    for bad in ("redis+sentinel://s1/m", "redis+sentinel://s1:26379", "redis+sentinel://s1:1/m/x"):
        with pytest.raises(ValueError):
            connection.sentinel(bad)


@dataclass
class Watched:
    master: Process
    replica_port: int
    url: str


@pytest.fixture
def watched(tmp_path) -> Iterator[Watched]:
    master, master_url = redis_server(tmp_path / "master")
    master_port = int(master_url.rsplit(":", 1)[1].split("/")[0])
    replica_port = free_port()
    replica, _ = redis_server(tmp_path / "replica", replica_port)
    Redis(port=replica_port).replicaof("127.0.0.1", master_port)
    wait_until(lambda: Redis(port=master_port).info("replication")["connected_slaves"] == 1, what="a replica")
    port = free_port()
    conf = tmp_path / "sentinel.conf"  # the sentinel rewrites its own configuration: a file of its own
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 1\n"
        f"sentinel down-after-milliseconds {SERVICE} 1000\n"
        f"sentinel failover-timeout {SERVICE} 10000\n"
    )
    sentinel = Process(["redis-server", str(conf), "--sentinel"], tmp_path / "sentinel.log")
    wait_for_port(port, sentinel.proc)
    yield Watched(master, replica_port, f"redis+sentinel://127.0.0.1:{port}/{SERVICE}/0")
    for proc in (sentinel, replica, master):
        proc.stop()


@pytest.mark.slow
def test_a_job_rides_out_a_failover(
    watched, settings, client, redis, worker_env, fake_llm, spawn, monkeypatch
) -> None:
    """SIGKILL to the master while a worker runs a job: the sentinel promotes the replica, the worker's
    Redis calls go on against it, and the job's dataset is the one a run on a quiet Redis makes.
    Commits wait for the replica (REDIS_WAIT_REPLICAS=1), so the failover loses none the run went on
    from."""
    body = {"num_instructions": 16, "seed": 6, "instance_followup": False}
    expected = reference(client, redis, make_seed_set(client), body)
    local = replace(settings, redis_url=watched.url, redis_wait_replicas=1)
    for name, value in local.to_env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    api = create_app(local, configure_logging=False).test_client()
    key = api_keys.create(connection.connect(watched.url), "alpha", "tests")[1]  # on the watched Redis
    api.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    fake_llm.script.delay = 0.05  # a job that lasts long enough to lose its master halfway
    job_id = api.post("/v1/jobs", json={"seed_set_id": make_seed_set(api), **body}).json["id"]
    spawn(local, "worker")
    wait_until(lambda: api.get(f"/v1/jobs/{job_id}").json["progress"]["requests"] >= 5, what="a job underway")
    watched.master.signal(signal.SIGKILL)
    # while the sentinel elects a new master the API answers 503; then the job, from the new master
    job = wait_until(
        lambda: (j := api.get(f"/v1/jobs/{job_id}").json).get("state") in ("succeeded", "failed") and j,
        timeout=180,
        what="the job to end",
    )
    assert job["state"] == "succeeded", job
    assert Redis(port=watched.replica_port).info("replication")["role"] == "master"  # promoted
    made = dataset(local, "alpha", job_id)
    assert made == expected
    ids = [json.loads(line)["id"] for line in made["decisions.jsonl"].splitlines()]
    assert len(ids) == len(set(ids))  # nothing twice
