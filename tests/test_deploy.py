"""Deployment, checked without a cluster: hadolint on the Dockerfile; the Helm chart linted (strict)
and rendered for several value sets, the manifests validated against Kubernetes' schemas and
yamllint; and the rendered configuration read back by the service's own settings loader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import helm_python
import pytest
import yaml
from helm_python import chart as hp

from jobs.settings import Settings
from tests.conftest import ROOT

CHART = ROOT / "helm" / "selfinstruct"
BIN = Path(sys.executable).parent
KUBE_VERSION = "1.34.0"
VALUE_SETS = {
    "defaults": {},
    "everything": {
        "api": {
            "ingress": {"enabled": True, "className": "nginx", "tlsSecret": "tls"},
            "autoscaling": {"enabled": True},
        },
        "worker": {"keda": {"enabled": True}},
        "config": {
            "webhookAllowedHosts": ["ci.example.com", "*.hooks.example.com"],
            "webhookRetrySeconds": 300,
            "hub": {"tokenSecret": {"name": "hub", "key": "token"}},
        },
        "redis": {"internal": {"enabled": True, "storageClassName": "fast"}},
        "s3": {
            "endpoint": "http://minio:9000",
            "publicEndpoint": "https://s3.example.com",
            "bucket": "data",
            "existingSecret": "s3",
        },
        "llm": {
            "defaultProfile": "local",
            "profiles": {
                "local": {
                    "baseUrl": "http://llama:8080/v1",
                    "model": "gemma3-270m",
                    "concurrency": 1,
                    "api": "chat",
                    "responseFormat": "json_object",
                    "maxTokensParam": "max_tokens",
                    "sendSeed": True,
                },
                "reasoner": {
                    "baseUrl": "https://api.example.com/v1",
                    "model": "o4-mini",
                    "api": "chat",
                    "responseFormat": "json_schema",
                    "reasoning": True,
                    "sendSeed": False,
                    "mode": "batch",
                    "pricePerMillionTokens": {"prompt": 1.1, "completion": 4.4},
                    "batchPricePerMillionTokens": {"prompt": 0.55, "completion": 2.2},
                },
                "big-model": {
                    "baseUrl": "https://api.example.com/v1",
                    "model": "m",
                    "timeout": 300,
                    "apiKeySecret": {"name": "llm", "key": "big"},
                    "maxInFlight": 64,
                    "requestsPerMinute": 5000,
                    "tokensPerMinute": 2000000,
                    "embeddings": {
                        "baseUrl": "https://e.example.com/v1",
                        "model": "e",
                        "pricePerMillionTokens": 0.02,
                    },
                },
            },
        },
    },
    "keda-redis": {
        "worker": {"keda": {"enabled": True, "trigger": "redis", "tls": True}},
        "redis": {"address": "redis.example.com:6380", "passwordSecret": {"name": "redis-auth", "key": "pw"}},
    },
    "minimal": {
        "api": {"replicas": 1, "podDisruptionBudget": {"enabled": False}},
        "worker": {"replicas": 0, "podDisruptionBudget": {"enabled": False}},
    },
}


def rendered(values: dict) -> dict[str, str]:
    """Each YAML template's text as Helm renders it."""
    manifests = helm_python.Chart.load(str(CHART)).render(values, name="rel", namespace="ns")
    return {path: text for path, text in manifests.items() if path.endswith(".yaml")}


def render(values: dict) -> list[dict]:
    return [d for text in rendered(values).values() for d in yaml.safe_load_all(text) if d]


# yamllint's defaults, strict; but `helm template` writes the `---` between templates itself, and lines
# may be as long as the project's code, or longer for one unbreakable value (the profiles' JSON).
YAMLLINT = (
    "{extends: default, rules: {document-start: disable,"
    " line-length: {max: 110, allow-non-breakable-inline-mappings: true}}}"
)


def test_dockerfile_passes_hadolint():
    result = subprocess.run([str(BIN / "hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", VALUE_SETS)
def test_chart_lints_renders_and_validates(name, tmp_path):
    values = VALUE_SETS[name]
    report = hp.lint(str(CHART), values, strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == [], report
    texts = rendered(values)
    docs = [d for text in texts.values() for d in yaml.safe_load_all(text) if d]
    for path, text in texts.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    crds = [d for d in docs if d["apiVersion"].startswith("keda.sh/")]
    core = tmp_path / "core.yaml"
    core.write_text(yaml.safe_dump_all([d for d in docs if d not in crds], sort_keys=False))
    check = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "-k", KUBE_VERSION, str(core)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    lint = subprocess.run(
        [
            str(BIN / "yamllint"),
            "--strict",
            "-d",
            YAMLLINT,
            *(str(tmp_path / path) for path in texts),
            str(CHART / "Chart.yaml"),
            str(CHART / "values.yaml"),
        ],
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap"} <= kinds
    if name == "everything":
        assert {"Ingress", "HorizontalPodAutoscaler", "StatefulSet", "PodDisruptionBudget"} <= kinds
        assert [d["kind"] for d in crds] == ["ScaledObject"]
    if name == "keda-redis":
        assert sorted(d["kind"] for d in crds) == ["ScaledObject", "TriggerAuthentication"]
        assert crds[-1]["spec"]["triggers"][0]["metadata"]["listName"] == "rq:queue:generation"


def test_rendered_workloads_are_locked_down_and_probed():
    docs = render(VALUE_SETS["everything"])
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet")}
    for d in deployments.values():
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert (
                sc["readOnlyRootFilesystem"]
                and not sc["allowPrivilegeEscalation"]
                and sc["capabilities"]["drop"] == ["ALL"]
            )
            assert c["resources"]["requests"] and c["resources"]["limits"]
    api = deployments["rel-selfinstruct-api"]["spec"]["template"]["spec"]["containers"][0]
    assert (
        api["livenessProbe"]["httpGet"]["path"] == "/healthz"
        and api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    )
    worker = deployments["rel-selfinstruct-worker"]["spec"]["template"]["spec"]
    # the grace period covers the slowest profile's request (300 s here), so a stopping worker can checkpoint
    assert worker["terminationGracePeriodSeconds"] == 300 + 60
    keys = {e["name"]: e for e in worker["containers"][0]["env"]}
    assert keys["LLM_KEY_BIG_MODEL"]["valueFrom"]["secretKeyRef"] == {"name": "llm", "key": "big"}
    assert "LLM_KEY_BIG_MODEL" not in {e["name"] for e in api["env"]}  # the API never calls the LLM
    # jobs' push_to_hub: the token reaches the workers only
    assert keys["HUB_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hub", "key": "token"}
    assert "HUB_TOKEN" not in {e["name"] for e in api["env"]}


def test_rendered_configuration_loads_in_the_service():
    docs = render(VALUE_SETS["everything"])
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert all(isinstance(v, str) for v in config.values())
    settings = Settings.from_env({**config, "REDIS_URL": "redis://x:6379/0"})
    assert (
        settings.max_request_bytes == 8_388_608
        and settings.s3_public_endpoint_url == "https://s3.example.com"
    )
    assert set(settings.profiles) == {"openai", "local", "big-model", "reasoner"}
    assert settings.default_profile == "local"
    assert (
        settings.profiles["big-model"].api_key_env == "LLM_KEY_BIG_MODEL"
        and settings.profiles["big-model"].endpoint.timeout == 300
        and settings.profiles["big-model"].endpoint.api == "completions"
    )
    assert (settings.team_job_slots, settings.redis_memory_limit) == (8, 0.9)
    assert (settings.hub_token_env, settings.hub_endpoint) == ("HUB_TOKEN", "https://huggingface.co")
    minimal = next(d for d in render(VALUE_SETS["minimal"]) if d["kind"] == "ConfigMap")["data"]
    assert Settings.from_env({**minimal, "REDIS_URL": "redis://x:6379/0"}).hub_token_env is None
    big = settings.profiles["big-model"].endpoint  # the provider's limits, held for every worker
    assert (big.max_in_flight, big.requests_per_minute, big.tokens_per_minute) == (64, 5000, 2000000)
    embeddings = settings.profiles["big-model"].keyed_embeddings()  # the profile's key: its variable's
    assert embeddings is not None and (embeddings.base_url, embeddings.model, embeddings.price) == (
        "https://e.example.com/v1",
        "e",
        0.02,
    )
    assert settings.profiles["big-model"].embeddings_key_env is None
    assert settings.profiles["openai"].embeddings is None
    local, reasoner = settings.profiles["local"].endpoint, settings.profiles["reasoner"].endpoint
    assert local.api == "chat" and local.response_format == "json_object"
    assert local.max_tokens_param == "max_tokens" and local.send_seed is True and local.reasoning is False
    assert reasoner.reasoning is True and reasoner.send_seed is False and reasoner.max_tokens_param is None
    assert settings.profiles["openai"].endpoint.send_seed is None  # unset: the API's default
    assert reasoner.mode == "batch" and reasoner.prices == (0.55, 2.2)  # the batch prices, in batch mode
    assert local.mode == settings.profiles["openai"].mode == "online"
    assert settings.webhook_allowed_hosts == ("ci.example.com", "*.hooks.example.com")
    assert (settings.webhook_timeout_seconds, settings.webhook_retry_seconds) == (10, 300)
    defaults = next(d for d in render(VALUE_SETS["defaults"]) if d["kind"] == "ConfigMap")["data"]
    loaded, fallback = Settings.from_env(defaults), Settings()
    assert loaded.webhook_allowed_hosts == ()  # no webhooks unless allowed
    assert loaded.webhook_timeout_seconds == fallback.webhook_timeout_seconds
    assert loaded.webhook_retry_seconds == fallback.webhook_retry_seconds
    assert "secret" not in json.dumps(config).lower()


def test_values_schema_rejects_bad_values():
    report = hp.lint(
        str(CHART),
        {
            "api": {"replicas": 0},
            "llm": {"profiles": {"x": {"baseUrl": "ftp://x", "model": "m", "maxTokensParam": "max_new"}}},
            "config": {"webhookAllowedHosts": ["https://ci.example.com"]},
        },
        strict=True,
    )
    errors = " ".join(m["error"] for m in report["messages"] if m["severity"] >= 3) + " ".join(
        report["errors"]
    )
    assert "replicas" in errors and "baseUrl" in errors and "maxTokensParam" in errors
    assert "webhookAllowedHosts" in errors


def test_keda_scales_on_all_generation_work_or_on_the_queue_with_auth():
    """Prometheus (the default): the workers' gauge of queued, running and waiting RQ jobs, so a
    scale-down never counts running work as gone. Redis: the queue's list, through the password's Secret
    and TLS. Either way the workers' grace period covers the slowest profile's request and a minute, the
    time a stopped worker takes to checkpoint and hand its job back."""
    docs = render(VALUE_SETS["everything"])
    (scaled,) = [d for d in docs if d["kind"] == "ScaledObject"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert all(
        f'"{r}' in trigger["metadata"]["query"] or r in trigger["metadata"]["query"]
        for r in ("queued", "started", "waiting")
    )
    worker = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "rel-selfinstruct-worker"
    )
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 300 + 60  # big-model's
    redis = next(d for d in docs if d["kind"] == "StatefulSet")
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction" and "--maxmemory" in args
    docs = render(VALUE_SETS["keda-redis"])
    (auth,) = [d for d in docs if d["kind"] == "TriggerAuthentication"]
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "password", "name": "redis-auth", "key": "pw"}]
    (scaled,) = [d for d in docs if d["kind"] == "ScaledObject"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis" and trigger["metadata"]["enableTLS"] == "true"
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}


def test_the_prometheus_trigger_keeps_a_worker_to_export_its_gauge():
    """The gauge KEDA's prometheus trigger reads comes from the workers: scaled to none, nothing would
    ever scale them up again, so the chart refuses minReplicaCount 0 with that trigger."""
    with pytest.raises(Exception, match="minReplicaCount must be at least 1"):
        render({"worker": {"keda": {"enabled": True, "minReplicaCount": 0}}})
    assert render({"worker": {"keda": {"enabled": True, "trigger": "redis", "minReplicaCount": 0}}})
