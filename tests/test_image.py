"""The container image, built from the committed Dockerfile with buildah and run.

No container registry is reachable here, so the build's base is a stand-in for the official python image:
a Debian bookworm root filesystem made by mmdebstrap, with Debian's python3.11 (the official image builds
its own) and this machine's CA certificates (so that pip reaches PyPI). The stand-in, the image and
buildah's layer cache live in a private container storage under ~/.cache/selfinstruct-image.

The API's own CMD and a worker run from the image with `buildah run` (the image's USER, the host's
network) against the test Redis, S3 endpoint and scripted LLM, with the root filesystem read-only but
for the emptyDir mounts of the Helm chart's Deployments, as the chart runs them."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from client.api import Client
from jobs.tools.local_stack import Process, free_port
from tests.conftest import DATA, ROOT
from tests.test_deploy import render
from tests.test_faults import env_for, wait_until
from tests.test_metrics import value

pytestmark = pytest.mark.image  # builds and runs the container image: left out of scripts/test.sh --fast

CACHE = Path(os.environ.get("SELFINSTRUCT_IMAGE_CACHE", Path.home() / ".cache" / "selfinstruct-image"))
# locks and mount state, one directory a storage: not kept across reboots
RUNROOT = (
    Path(tempfile.gettempdir()) / f"selfinstruct-image-run-{hashlib.sha256(bytes(CACHE)).hexdigest()[:8]}"
)
IMAGE = "localhost/selfinstruct-service:test"
SUITE = "bookworm"
BASE_PACKAGES = ("python3.11", "python3.11-venv", "python-is-python3", "ca-certificates")
HOST_CAS = sorted(Path("/usr/local/share/ca-certificates").glob("**/*.crt"))
WORKER_ARGV = ["python", "-m", "jobs.runner.worker"]
APP_ID = "10001"  # the image's USER, and the chart's runAsUser/runAsGroup
NAME_PREFIX = "selfinstruct-test-"
STEP = re.compile(r"^(?:\[\d+/\d+\] )?STEP \d+/\d+: .*$", re.M)


def tools_env() -> dict[str, str]:
    """The environment for buildah and podman: a private storage and the ulimits these machines allow."""
    missing = [tool for tool in ("buildah", "podman", "mmdebstrap") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"not installed: {', '.join(missing)} (scripts/setup.sh installs them)")
    CACHE.mkdir(parents=True, exist_ok=True)
    confs = {
        # the default ulimits are refused on these machines
        "containers.conf": "[containers]\ndefault_ulimits = []\n",
        "storage.conf": f'[storage]\ndriver = "overlay"\ngraphroot = "{CACHE / "storage"}"\n'
        f'runroot = "{RUNROOT}"\n',
    }
    for name, text in confs.items():
        path = CACHE / name
        if not path.exists() or path.read_text() != text:
            tmp = path.with_suffix(f".{os.getpid()}")
            tmp.write_text(text)
            tmp.replace(path)
    return {
        "CONTAINERS_CONF": str(CACHE / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(CACHE / "storage.conf"),
    }


def run(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout, check=False
    )


def checked(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    done = run(env, *args, timeout=timeout)
    if done.returncode != 0:
        pytest.fail(
            f"{' '.join(args[:3])} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
        )
    return done.stdout


def base_image(env: dict[str, str]) -> str:
    """The stand-in base, made once for its package list and this machine's CA certificates."""
    key = hashlib.sha256(" ".join((SUITE, *BASE_PACKAGES)).encode())
    for ca in HOST_CAS:
        key.update(ca.read_bytes())
    tag = f"localhost/selfinstruct-test-base:{key.hexdigest()[:12]}"
    if run(env, "podman", "image", "exists", tag).returncode == 0:
        return tag
    hooks = []
    if HOST_CAS:
        hooks = [
            f"--customize-hook=copy-in {' '.join(map(str, HOST_CAS))} /usr/local/share/ca-certificates/",
            '--customize-hook=chroot "$1" update-ca-certificates',
        ]
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        tar = f"{tmp}/base.tar"
        checked(
            env,
            "mmdebstrap",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            *hooks,
            SUITE,
            tar,
            timeout=600,
        )
        # pip trusts its own CA bundle unless told otherwise
        checked(
            env, "podman", "import", "--change", "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt", tar, tag
        )
    return tag


def build_failure(output: str) -> str:
    """The failing Dockerfile step (buildah builds the steps in order and prints each as it starts)."""
    steps = STEP.findall(output)
    errors = [line for line in output.splitlines() if "error building at STEP" in line or "Error:" in line]
    return (
        f"the image build failed at {steps[-1] if steps else 'no step (before the first)'}\n"
        + "\n".join(errors[-3:])
        + "\n--- the build's last lines ---\n"
        + "\n".join(output.splitlines()[-25:])
    )


@dataclass(frozen=True)
class Image:
    env: dict[str, str]  # for buildah and podman
    name: str
    config: dict  # the image's OCI config: Cmd, Entrypoint, User, Env, WorkingDir
    healthcheck: list[str]
    build_seconds: float


@pytest.fixture(scope="session")
def image(tmp_path_factory) -> Image:
    env = tools_env()
    base = base_image(env)
    log = tmp_path_factory.mktemp("image") / "build.log"
    started = time.monotonic()
    done = run(
        env,
        "buildah",
        "bud",
        "--force-rm",  # no working container left behind by a failed step
        "--isolation",
        "chroot",
        "--layers",  # the layer cache: a code change does not reinstall the dependencies
        "--format",
        "docker",  # keeps the HEALTHCHECK
        "--build-arg",
        f"BASE_IMAGE={base}",
        "-t",
        IMAGE,
        "-f",
        str(ROOT / "Dockerfile"),
        str(ROOT),
        timeout=900,
    )
    seconds = time.monotonic() - started
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        pytest.fail(build_failure(done.stdout + done.stderr) + f"\n(whole log: {log})", pytrace=False)
    # the images that earlier builds left untagged (not the layer cache, which later images reference)
    run(env, "podman", "image", "prune", "--force", "--filter", "until=10m")
    inspected = json.loads(checked(env, "buildah", "inspect", "--type", "image", IMAGE))
    return Image(
        env,
        IMAGE,
        inspected["OCIv1"]["config"],
        inspected["Docker"]["config"]["Healthcheck"]["Test"],
        seconds,
    )


def effective_argv(container: dict, image_config: dict) -> list[str]:
    """What a container runs, by Kubernetes' rules: `command` replaces ENTRYPOINT, `args` replaces CMD."""
    if "command" in container:
        return container["command"] + container.get("args", [])
    return (image_config.get("Entrypoint") or []) + container.get("args", image_config.get("Cmd") or [])


def chart_containers() -> dict[str, tuple[dict, dict]]:
    """Each Deployment's container and pod spec, as the chart renders them with its default values."""
    return {
        d["metadata"]["name"].rsplit("-", 1)[1]: (
            d["spec"]["template"]["spec"]["containers"][0],
            d["spec"]["template"]["spec"],
        )
        for d in render({})
        if d["kind"] == "Deployment"
    }


def empty_dir_mounts(role: str) -> list[str]:
    container, pod = chart_containers()[role]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    assert all("emptyDir" in volumes[m["name"]] for m in container["volumeMounts"]), "only emptyDirs emulated"
    return mounts


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def in_container(pid: int) -> bool:
    """A process of the container, not of buildah: its root is the image's filesystem."""
    try:
        return os.readlink(f"/proc/{pid}/root") != "/"
    except OSError:
        return False


def ids(pid: int) -> tuple[list[str], list[str]]:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return status["Uid"].split(), status["Gid"].split()


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


@dataclass
class Container:
    """A working container of the image: its root filesystem mounted read-only in `buildah run` but for
    the chart's emptyDir mounts (host directories under `volumes`)."""

    image: Image
    name: str
    volumes: Path
    mounts: list[str]
    rootfs: Path = Path()  # where `buildah mount` mounted it
    flags: list[str] = field(default_factory=list)  # the mounts, for `buildah run`

    def create(self) -> Container:
        checked(self.image.env, "buildah", "from", "--pull=never", "--name", self.name, self.image.name)
        self.rootfs = rootfs = Path(checked(self.image.env, "buildah", "mount", self.name).strip())
        # every top-level directory read-only; /run's subdirectories instead of /run itself, where buildah
        # mounts /run/.containerenv
        skip = {"proc", "sys", "dev", "run", *(m.strip("/").split("/")[0] for m in self.mounts)}
        read_only = [d for d in rootfs.iterdir() if d.is_dir() and not d.is_symlink() and d.name not in skip]
        read_only += [d for d in (rootfs / "run").iterdir() if d.is_dir() and not d.is_symlink()]
        self.flags = [f"--volume={d}:/{d.relative_to(rootfs)}:ro" for d in read_only]
        for mount in self.mounts:
            host = self.volumes / mount.strip("/")
            host.mkdir(parents=True)
            host.chmod(0o777)  # an emptyDir's mode
            self.flags.append(f"--volume={host}:{mount}")
        return self

    def argv(self, command: list[str], env: dict[str, str]) -> list[str]:
        return [
            "buildah",
            "run",
            "--isolation",
            "chroot",
            *self.flags,
            *(f"--env={k}={v}" for k, v in env.items()),
            self.name,
            "--",
            *command,
        ]

    def start(self, command: list[str], env: dict[str, str], log: Path) -> Process:
        return Process(self.argv(command, env), log, self.image.env)

    def run(self, command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return run(self.image.env, *self.argv(command, env or {}))

    def changes(self) -> list[str]:
        """What was written to the container's own layer (outside every mount): its overlay upper
        directory. (`podman diff` would do, but here it unmounted another working container's root.)"""
        upper = self.rootfs.parent / "diff"
        assert upper.is_dir(), upper
        found = sorted(str(p.relative_to(upper)) for p in upper.rglob("*"))
        # buildah's own: /run, copied up for the /run/.containerenv it mounts while a command runs
        return [f for f in found if not (f == "run" and not any((upper / "run").iterdir()))]

    def remove(self) -> None:
        run(self.image.env, "buildah", "umount", self.name)
        run(self.image.env, "buildah", "rm", self.name)


@pytest.fixture
def containers(image, tmp_path) -> Iterator[dict[str, Container]]:
    # working containers left by a test session that was killed
    listed = json.loads(checked(image.env, "buildah", "containers", "--json")) or []
    for c in listed:
        pid = re.match(rf"{NAME_PREFIX}(\d+)-", c["containername"])
        if pid and not Path(f"/proc/{pid.group(1)}").exists():
            run(image.env, "buildah", "rm", c["containername"])
    made = {}
    try:
        for role in ("api", "worker"):
            name = f"{NAME_PREFIX}{os.getpid()}-{role}"
            run(image.env, "buildah", "rm", name)  # from an earlier test of this session
            made[role] = Container(image, name, tmp_path / role, empty_dir_mounts(role)).create()
        yield made
    finally:
        for c in made.values():
            c.remove()


WRITABLE_PROBE = """
import json, os
found = []
for top, dirs, _ in os.walk("/"):
    if top in ("/proc", "/sys", "/dev"):
        dirs[:] = []
        continue
    if os.access(top, os.W_OK):
        found.append(top)
try:
    open("/var/tmp/probe", "w")
    denied = None
except OSError as e:
    denied = e.strerror
print(json.dumps({"writable": found, "var_tmp": denied}))
"""


def test_api_and_worker_run_from_the_image(image, containers, settings, redis, api_key, tmp_path):
    env = {**env_for(settings), "LOG_LEVEL": "INFO"}
    api_port, metrics_port = free_port(), free_port()
    api_argv = effective_argv({}, image.config)  # the image's own CMD
    api = containers["api"].start(api_argv, {**env, "PORT": str(api_port)}, tmp_path / "api.log")
    worker = containers["worker"].start(
        WORKER_ARGV, {**env, "METRICS_PORT": str(metrics_port)}, tmp_path / "worker.log"
    )
    url = f"http://127.0.0.1:{api_port}"
    ran: list[int] = []

    def logs() -> str:
        return "\n".join(f"--- {p.log.name}\n{p.log.read_text()[-3000:]}" for p in (api, worker) if p.log)

    try:

        def healthy() -> bool:
            assert api.proc.poll() is None and worker.proc.poll() is None, "a container exited"
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_until(healthy, timeout=60, interval=0.2, what="the API from the image")
        except (AssertionError, TimeoutError) as e:
            pytest.fail(f"{e}\n{logs()}")
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200, logs()
        assert containers["api"].run(image.healthcheck[1:], {"PORT": str(api_port)}).returncode == 0

        # every process of both containers: the image's user, running what was started
        for process, marker in ((api, "gunicorn"), (worker, "jobs.runner.worker")):
            pids = [p for p in descendants(process.pid) if in_container(p)]
            assert pids and all(marker in cmdline(p) for p in pids), [cmdline(p) for p in pids]
            ran += pids
            for pid in pids:
                uids, gids = ids(pid)
                assert set(uids) == {APP_ID} and set(gids) == {APP_ID}, (cmdline(pid), uids, gids)

        client = Client(url, api_key)
        seed_set = client.create_seed_set(DATA / "seed_tasks.jsonl", name="image")
        job = client.create_job(seed_set["id"], 4)
        done = client.wait(job["id"], poll=0.5, timeout=180)
        assert done["state"] == "succeeded", (done, logs())
        files = client.download(job["id"], tmp_path / "dataset")  # each checked against its sha256
        assert {"alpaca.json", "decisions.jsonl"} <= {f.name for f in files}
        assert done["progress"]["instructions_kept"] == 4
        assert json.loads((tmp_path / "dataset" / "alpaca.json").read_text())

        api_metrics = httpx.get(f"{url}/metrics", timeout=10).text
        count = "selfinstruct_http_request_duration_seconds_count"
        assert value(api_metrics, count, url_rule="/v1/jobs", status="202") == 1
        worker_metrics = wait_until(
            lambda: (
                (t := httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text)
                and "selfinstruct_llm_requests_total{" in t
                and t
            ),
            what="the worker's metrics",
        )
        assert value(worker_metrics, "selfinstruct_jobs", state="succeeded") == 1

        # writable: only the chart's emptyDir mounts, and the processes wrote nowhere else
        for role, c in containers.items():
            probe = c.run(["python", "-c", WRITABLE_PROBE])
            assert probe.returncode == 0, (role, probe.stderr)
            found = json.loads(probe.stdout)
            outside = [
                d for d in found["writable"] if not any(d == m or d.startswith(m + "/") for m in c.mounts)
            ]
            assert outside == [] and found["var_tmp"] == "Read-only file system", (role, found)
            assert c.changes() == [], (role, c.changes())
        # the multiprocess metrics of the gunicorn workers and of the work horse, in the mounted /tmp
        for role in ("api", "worker"):
            assert list((tmp_path / role / "tmp" / "metrics").glob("*.db")), role
    finally:
        worker.stop()
        api.stop()
    assert api.proc.returncode is not None and worker.proc.returncode is not None
    # buildah returns once it has signalled; the container's processes end on their own SIGTERM
    wait_until(
        lambda: not [p for p in ran if in_container(p)], timeout=30, what="the containers' processes to end"
    )


def test_the_chart_runs_the_entry_points_that_ran_from_the_image(image):
    deployed = chart_containers()
    api, _ = deployed["api"]
    assert effective_argv(api, image.config) == effective_argv({}, image.config)
    env = {e["name"]: e.get("value") for e in api["env"]}
    assert env.get("GUNICORN_WORKERS") == "2"  # values.yaml api.gunicornWorkers
    default_port = re.search(r"\$\{PORT:-(\d+)\}", " ".join(image.config["Cmd"])).group(1)
    assert "PORT" not in env and api["ports"][0]["containerPort"] == int(default_port)
    worker, _ = deployed["worker"]
    assert effective_argv(worker, image.config) == WORKER_ARGV
    assert {"api", "worker"} == set(deployed)
