"""k8s/: Kubernetes' own schemas (kubernetes-validate, offline), and consistency with the code.

No cluster runs here: every document is validated strictly against the JSON schemas that
kubernetes-validate ships, with the network blocked, then cross-checked (names, ports, probes,
env vars, selectors) against each other and against textgen's Settings and the API's routes.
"""

from __future__ import annotations

import copy
import socket
from typing import Any
from urllib.parse import urlparse

import kubernetes_validate
import pytest
from packaging.requirements import Requirement

from .support import (
    FOREIGN_ENV,
    K8S,
    SEED_VLLM_FLAGS,
    VLLM_IMAGE,
    build_settings,
    find,
    flag_values,
    load_yaml_docs,
    settings_default,
    settings_fields,
    unknown_env,
)

K8S_VERSIONS = [kubernetes_validate.latest_version(), "1.30.0"]
FILES = sorted(p.name for p in K8S.glob("*.yaml"))
Docs = list[tuple[str, dict[str, Any]]]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation must not fetch anything: there is no internet where this runs."""

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("kubernetes-validate tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_the_seeds_files_exist() -> None:
    assert {"text-generation-deployment.yaml", "text-generation-service.yaml"} <= set(FILES)


@pytest.mark.parametrize("name", FILES)
def test_multi_doc_yaml(name: str) -> None:
    docs = load_yaml_docs(K8S / name)
    assert docs
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(doc), f"{name}: not a k8s object"
        assert doc["metadata"]["name"]
        assert "namespace" not in doc["metadata"], "kubectl apply -n chooses the namespace"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", FILES)
def test_schema_strict(name: str, version: str, no_network: None) -> None:
    for doc in load_yaml_docs(K8S / name):
        kubernetes_validate.validate(doc, version, strict=True)


def test_schema_validation_catches_mistakes(k8s_docs: Docs, no_network: None) -> None:
    deployment = copy.deepcopy(find(k8s_docs, "Deployment", "text-generation"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)
    deployment = copy.deepcopy(find(k8s_docs, "Deployment", "text-generation"))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_kinds_present(k8s_docs: Docs) -> None:
    by_file = {(f, d["kind"], d["metadata"]["name"]) for f, d in k8s_docs}
    assert ("text-generation-deployment.yaml", "Deployment", "text-generation") in by_file
    assert ("text-generation-service.yaml", "Service", "text-generation") in by_file
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in k8s_docs}
    assert {
        ("Deployment", "redis"), ("Service", "redis"), ("Deployment", "vllm"), ("Service", "vllm"),
        ("Secret", "text-generation-secrets"), ("ConfigMap", "text-generation-config"),
        ("HorizontalPodAutoscaler", "text-generation"),
    } <= kinds


def _pod(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]


def _container(deployment: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    containers = _pod(deployment)["spec"]["containers"]
    return next(c for c in containers if name is None or c["name"] == name)


def _env_names(docs: Docs, container: dict[str, Any]) -> set[str]:
    names = {e["name"] for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            names |= set(find(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            names |= set(find(docs, "Secret", source["secretRef"]["name"])["stringData"])
    return names


def _api_env(docs: Docs) -> dict[str, str]:
    """The API container's environment as the kubelet would build it."""
    container = _container(find(docs, "Deployment", "text-generation"))
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env |= find(docs, "ConfigMap", source["configMapRef"]["name"])["data"]
    secrets = {d["metadata"]["name"]: d["stringData"] for _, d in docs if d["kind"] == "Secret"}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        if ref.get("optional") and ref["key"] not in secrets.get(ref["name"], {}):
            continue  # a Secret the operator creates (vllm-secrets), or leaves out
        env[item["name"]] = secrets[ref["name"]][ref["key"]]
    return env


def test_api_env_vars_are_settings(k8s_docs: Docs) -> None:
    container = _container(find(k8s_docs, "Deployment", "text-generation"))
    names = _env_names(k8s_docs, container)
    assert not unknown_env(names), f"not Settings fields: {sorted(unknown_env(names))}"
    config = find(k8s_docs, "ConfigMap", "text-generation-config")["data"]
    assert set(config) <= settings_fields()
    secret = find(k8s_docs, "Secret", "text-generation-secrets")["stringData"]
    assert set(secret) == {"API_TOKEN", "TEXT_GEN_API_TOKEN", "REDIS_PASSWORD"}
    assert not set(config) & set(secret), "a secret in the ConfigMap"
    s = build_settings(_api_env(k8s_docs))  # every value parses as its field
    assert s.API_HOST == "0.0.0.0" and s.MODEL == ""
    assert len(s.api_tokens()) == 2


# vLLM reads VLLM_API_KEY as its --api-key; the API sends the same key (one Secret).
VLLM_ENV = FOREIGN_ENV["vllm"] | {"VLLM_API_KEY"}


def test_foreign_containers_env(k8s_docs: Docs) -> None:
    for name, allowed in (("vllm", VLLM_ENV), ("redis", FOREIGN_ENV["redis"])):
        container = _container(find(k8s_docs, "Deployment", name))
        assert _env_names(k8s_docs, container) <= allowed, name
    for name in ("vllm-llama-70b-head", "vllm-llama-70b-worker"):
        container = _container(find(k8s_docs, "StatefulSet", name))
        assert _env_names(k8s_docs, container) <= VLLM_ENV, name


def test_secret_and_config_refs_resolve(k8s_docs: Docs) -> None:
    for _, doc in k8s_docs:
        if doc["kind"] != "Deployment":
            continue
        for container in _pod(doc)["spec"]["containers"]:
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    secret = find(k8s_docs, "Secret", ref["name"])
                    assert ref["key"] in secret["stringData"], f"{ref} in {doc['metadata']}"
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef") or source.get("secretRef")
                kind = "ConfigMap" if "configMapRef" in source else "Secret"
                find(k8s_docs, kind, ref["name"])


def test_api_ports_probes_and_scrape_annotations(k8s_docs: Docs) -> None:
    deployment = find(k8s_docs, "Deployment", "text-generation")
    container = _container(deployment)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": settings_default("API_PORT"), "metrics": settings_default("METRICS_PORT")}
    config = find(k8s_docs, "ConfigMap", "text-generation-config")["data"]
    assert int(config.get("API_PORT", ports["http"])) == ports["http"]
    assert int(config.get("METRICS_PORT", ports["metrics"])) == ports["metrics"]
    # Liveness on /health (a dead engine is a 503: the pod restarts), readiness on /ready
    # (model loaded, backends asked, not draining).
    paths = {"startupProbe": "/health", "readinessProbe": "/ready", "livenessProbe": "/health"}
    for probe, path in paths.items():
        http = container[probe]["httpGet"]
        assert http["path"] == path and ports[http["port"]] == 8000, probe
    annotations = _pod(deployment)["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ports["metrics"] == 8001
    assert annotations["prometheus.io/path"] == "/metrics"
    assert container["image"].startswith("text-generator")
    security = _pod(deployment)["spec"]["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] == 10001  # docker/Dockerfile's USER


def test_probe_path_is_an_api_route() -> None:
    """/health and /ready, which the probes call, are GET routes of the API, open without a token."""
    from api.app import create_app
    from textgen.settings import Settings

    app = create_app(Settings(MODEL="", METRICS_PORT=0, VLLM_ENDPOINT=""), ui=False)
    routes = {(r.path, m) for r in app.routes for m in getattr(r, "methods", None) or ()}
    assert {("/health", "GET"), ("/ready", "GET")} <= routes


def _selected(docs: Docs, service: dict[str, Any]) -> list[dict[str, Any]]:
    """The workloads (Deployments, StatefulSets) whose pods a Service selects."""
    selector = service["spec"]["selector"]
    return [d for _, d in docs if d["kind"] in ("Deployment", "StatefulSet")
            and selector.items() <= _pod(d)["metadata"]["labels"].items()]


def test_services_select_their_pods(k8s_docs: Docs) -> None:
    for _, doc in k8s_docs:
        if doc["kind"] != "Service":
            continue
        targets = _selected(k8s_docs, doc)
        assert len(targets) == 1, f"Service {doc['metadata']['name']} selects {len(targets)}"
        container_ports = {p["name"]: p["containerPort"] for p in _container(targets[0])["ports"]}
        for port in doc["spec"]["ports"]:
            assert port["targetPort"] in container_ports, port
    service = find(k8s_docs, "Service", "text-generation")
    assert {p["port"] for p in service["spec"]["ports"]} == {8000, 8001}


def test_hpa_scales_the_api(k8s_docs: Docs) -> None:
    hpa = find(k8s_docs, "HorizontalPodAutoscaler", "text-generation")
    ref = hpa["spec"]["scaleTargetRef"]
    deployment = find(k8s_docs, ref["kind"], ref["name"])
    assert deployment["metadata"]["name"] == "text-generation"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    resources = {m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"}
    for name in resources:  # utilisation is relative to the requests
        assert name in _container(deployment)["resources"]["requests"]


def test_backends_resolve(k8s_docs: Docs) -> None:
    config = find(k8s_docs, "ConfigMap", "text-generation-config")["data"]
    seed = settings_default("VLLM_ENDPOINT")
    for url, service_name in ((config["VLLM_ENDPOINT"], "vllm-headless"), (seed, "vllm"),
                              (config["REDIS_URL"], "redis")):
        parsed = urlparse(url)
        assert parsed.hostname == service_name
        service = find(k8s_docs, "Service", service_name)
        assert parsed.port in {p["port"] for p in service["spec"]["ports"]}


def test_the_api_routes_over_the_vllm_pods_through_a_headless_service(k8s_docs: Docs) -> None:
    """The API's endpoint names a headless Service (one DNS address per ready pod) over the
    same pods and port as the seed's `vllm` Service, and there are several pods to route to."""
    env = _api_env(k8s_docs)
    headless, seed = find(k8s_docs, "Service", "vllm-headless"), find(k8s_docs, "Service", "vllm")
    assert headless["spec"]["clusterIP"] == "None"
    assert not headless["spec"].get("publishNotReadyAddresses")  # a loading pod is not listed
    assert seed["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert _selected(k8s_docs, headless) == _selected(k8s_docs, seed)
    assert headless["spec"]["ports"] == seed["spec"]["ports"]
    [deployment] = _selected(k8s_docs, headless)
    assert deployment["spec"]["replicas"] >= 2
    # One GPU a pod: a rolling update takes one away before it adds one.
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    s = build_settings(env)
    assert urlparse(s.VLLM_ENDPOINT).hostname == "vllm-headless"
    assert s.REMOTE_DNS_INTERVAL_SECONDS > 0  # pods that come and go are followed
    assert s.REMOTE_ROUTING_POLICY == "prefix_affinity"


def _secret_env(container: dict[str, Any], name: str) -> tuple[str, str] | None:
    for item in container.get("env", []):
        if item["name"] == name and "valueFrom" in item:
            ref = item["valueFrom"]["secretKeyRef"]
            return ref["name"], ref["key"]
    return None


def test_the_vllm_api_key_is_one_secret_for_servers_and_api(k8s_docs: Docs) -> None:
    api = _container(find(k8s_docs, "Deployment", "text-generation"))
    servers = [_container(find(k8s_docs, "Deployment", "vllm")),
               _container(find(k8s_docs, "StatefulSet", "vllm-llama-70b-head"))]
    key = _secret_env(api, "VLLM_API_KEY")
    assert key == ("vllm-secrets", "VLLM_API_KEY")
    assert all(_secret_env(c, "VLLM_API_KEY") == key for c in servers)
    config = find(k8s_docs, "ConfigMap", "text-generation-config")["data"]
    assert "VLLM_API_KEY" not in config  # a secret, never in the ConfigMap


def test_one_model_over_two_nodes_with_vllms_ray_executor(k8s_docs: Docs) -> None:
    head = find(k8s_docs, "StatefulSet", "vllm-llama-70b-head")
    worker = find(k8s_docs, "StatefulSet", "vllm-llama-70b-worker")
    head_args, worker_args = _container(head)["args"][0], _container(worker)["args"][0]
    flags = flag_values(head_args.split("vllm serve", 1)[1].split())
    assert flags["--distributed-executor-backend"] == "ray"
    gpus = sum(_container(d)["resources"]["limits"]["nvidia.com/gpu"] * d["spec"]["replicas"]
               for d in (head, worker))
    stages = int(flags["--tensor-parallel-size"]) * int(flags["--pipeline-parallel-size"])
    assert stages == gpus == 8
    assert int(flags["--pipeline-parallel-size"]) == 1 + worker["spec"]["replicas"]  # a node each
    assert f"ray.cluster_resources().get(\"GPU\", 0) < {gpus}" in head_args
    assert _container(head)["resources"]["limits"]["nvidia.com/gpu"] == int(
        flags["--tensor-parallel-size"])
    # The workers join the head's Ray port through the headless Service that selects the head.
    address = next(a for a in worker_args.split() if a.startswith("--address="))
    host, port = address.split("=", 1)[1].rsplit(":", 1)
    ray_service = find(k8s_docs, "Service", host)
    assert ray_service["spec"]["clusterIP"] == "None"
    assert _selected(k8s_docs, ray_service) == [head]
    head_ports = {p["name"]: p["containerPort"] for p in _container(head)["ports"]}
    assert int(port) == head_ports["ray"]
    assert {p["port"] for p in ray_service["spec"]["ports"]} == {head_ports["ray"]}
    # The OpenAI server runs on the head only, behind the Service the API would name.
    api_service = find(k8s_docs, "Service", "vllm-llama-70b")
    assert _selected(k8s_docs, api_service) == [head]
    assert flags["--port"] == str(head_ports["http"])
    for doc in (head, worker):
        assert _container(doc)["image"] == _container(find(k8s_docs, "Deployment", "vllm"))["image"]
    config_text = (K8S / "text-generation-deployment.yaml").read_text()
    assert "http://vllm-llama-70b:8000/v1" in config_text  # how the API would reach it


def test_redis_memory_policy(k8s_docs: Docs) -> None:
    container = _container(find(k8s_docs, "Deployment", "redis"))
    flags = flag_values(container["args"])
    assert flags["--maxmemory"] == "2gb"
    assert flags["--maxmemory-policy"] == "allkeys-lru"
    assert flags["--requirepass"] == "$(REDIS_PASSWORD)"
    assert "REDIS_PASSWORD" in {e["name"] for e in container["env"]}
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Mi") and int(limit[:-2]) > 2048, "room above maxmemory 2gb"


def test_vllm_gpu_deployment(k8s_docs: Docs, pyproject: dict[str, Any]) -> None:
    container = _container(find(k8s_docs, "Deployment", "vllm"))
    image, _, tag = container["image"].partition(":")
    assert image == VLLM_IMAGE
    gpu_vllm = next(Requirement(r) for r in pyproject["project"]["optional-dependencies"]["gpu"]
                    if Requirement(r).name == "vllm")
    assert gpu_vllm.specifier.contains(tag.lstrip("v"))
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    flags = flag_values(container["args"])
    assert flags["--model"] == "mistralai/Mistral-7B-v0.1"
    for flag, value in SEED_VLLM_FLAGS.items():
        assert flags.get(flag) == value, flag
    assert {p["containerPort"] for p in container["ports"]} == {int(SEED_VLLM_FLAGS["--port"])}
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"  # vLLM's own route
