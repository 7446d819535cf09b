"""docker/compose.yaml, Prometheus' scrape config and Grafana's provisioning, by structure.

Fast, no engine: the file is parsed, its variables interpolated as Compose would with none set,
and checked against the code. test_deploy_compose_up.py brings the stack up for real (API,
Redis, Prometheus); Grafana's provisioning is only checked here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from textgen.metrics import Metrics

from .support import (
    DOCKER,
    FOREIGN_ENV,
    SEED_METRICS,
    SEED_VLLM_FLAGS,
    VLLM_IMAGE,
    build_settings,
    flag_values,
    load_yaml,
    settings_default,
    unknown_env,
)

OURS = ("api", "lab")  # services that run textgen


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _container_port(mapping: str) -> int:
    return int(str(mapping).split(":")[-1].split("/")[0])


def test_services(compose: dict[str, Any]) -> None:
    assert {"vllm", "api", "redis", "prometheus", "grafana"} <= set(compose["services"])
    assert compose["services"]["lab"]["profiles"] == ["lab"], "the GPU lab is opt-in"


def test_vllm_is_the_seeds_command_on_a_gpu(compose_resolved: dict[str, Any]) -> None:
    vllm = compose_resolved["services"]["vllm"]
    assert vllm["image"].startswith(VLLM_IMAGE + ":")
    flags = flag_values([str(a) for a in vllm["command"]])
    assert flags["--model"] == "mistralai/Mistral-7B-v0.1"
    for flag, value in SEED_VLLM_FLAGS.items():
        assert flags.get(flag) == value, f"vllm {flag}"
    (device,) = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert set(_env(vllm)) <= FOREIGN_ENV["vllm"]


def test_redis_memory_policy_and_password(compose_resolved: dict[str, Any]) -> None:
    redis = compose_resolved["services"]["redis"]
    flags = flag_values([str(a) for a in redis["command"][1:]])
    assert redis["command"][0] == "redis-server"
    assert flags["--maxmemory"] == "2gb"
    assert flags["--maxmemory-policy"] == "allkeys-lru"
    password = flags["--requirepass"]
    assert password, "Redis is shared by the API replicas: it takes a password"
    for name in OURS:
        assert _env(compose_resolved["services"][name])["REDIS_PASSWORD"] == password
    assert _env(redis)["REDISCLI_AUTH"] == password  # the health check's redis-cli
    assert set(_env(redis)) <= FOREIGN_ENV["redis"]


@pytest.mark.parametrize("name", OURS)
def test_textgen_env_is_settings(compose_resolved: dict[str, Any], name: str) -> None:
    env = _env(compose_resolved["services"][name])
    assert not unknown_env(set(env)), f"{name}: not Settings fields: {unknown_env(set(env))}"
    s = build_settings(env)  # every value parses as its Settings field
    assert s.API_HOST == "0.0.0.0"
    assert s.API_PORT == settings_default("API_PORT") == 8000
    assert s.METRICS_PORT == settings_default("METRICS_PORT") == 8001


def test_api_ports_and_backends(compose_resolved: dict[str, Any]) -> None:
    services = compose_resolved["services"]
    api = services["api"]
    assert "8006:8000" in api["ports"], "the seed's -p 8006:8000"
    assert {_container_port(p) for p in api["ports"]} == {8000}
    assert "8001" in [str(p) for p in api["expose"]]
    s = build_settings(_env(api))
    assert s.MODEL == "", "the headless API has no in-process engine"
    endpoint = urlparse(s.VLLM_ENDPOINT)
    vllm_port = flag_values([str(a) for a in services["vllm"]["command"]])["--port"]
    assert (endpoint.hostname, str(endpoint.port)) == ("vllm", vllm_port)
    assert endpoint.path == "/v1/completions"
    redis_url = urlparse(s.REDIS_URL)
    assert (redis_url.hostname, redis_url.port) == ("redis", 6379)
    assert api["build"]["dockerfile"] == "docker/Dockerfile"
    assert (DOCKER / api["build"]["context"] / api["build"]["dockerfile"]).is_file()
    for dep in api["depends_on"]:
        assert dep in services


def test_lab_runs_the_gpu_image_in_process(compose_resolved: dict[str, Any]) -> None:
    lab = compose_resolved["services"]["lab"]
    assert (DOCKER / lab["build"]["context"] / lab["build"]["dockerfile"]).is_file()
    assert lab["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    s = build_settings(_env(lab))
    assert s.VLLM_ENDPOINT == ""
    assert (s.TENSOR_PARALLEL_SIZE, s.GPU_MEMORY_UTILIZATION, s.MAX_NUM_BATCHED_TOKENS) == (
        1, 0.90, 8192)


def test_bind_mounts_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), f"{name} mounts missing {source}"


def _mount_target(service: dict[str, Any], source: str) -> str:
    for volume in service["volumes"]:
        parts = str(volume).split(":")
        if Path(parts[0]) == Path(source):
            return parts[1]
    raise AssertionError(f"{source} is not mounted")


def test_prometheus_scrapes_the_metrics_port(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    target = _mount_target(prometheus, "./prometheus/prometheus.yml")
    assert f"--config.file={target}" in prometheus["command"]
    config = load_yaml(DOCKER / "prometheus" / "prometheus.yml")
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}
    metrics_port = settings_default("METRICS_PORT")
    assert metrics_port == 8001
    assert f"api:{metrics_port}" in targets
    for t in targets:
        host = t.split(":")[0]
        assert host == "localhost" or host in compose["services"], f"unknown target {t}"


def test_grafana_provisioning(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    assert _mount_target(grafana, "./grafana/provisioning") == "/etc/grafana/provisioning"
    dashboards_dir = _mount_target(grafana, "./grafana/dashboards")
    (ds,) = load_yaml(DOCKER / "grafana/provisioning/datasources/prometheus.yml")["datasources"]
    url = urlparse(ds["url"])
    assert ds["type"] == "prometheus" and url.hostname == "prometheus"
    assert f"{url.port}:{url.port}" in compose["services"]["prometheus"]["ports"]
    (provider,) = load_yaml(DOCKER / "grafana/provisioning/dashboards/textgen.yml")["providers"]
    assert provider["options"]["path"] == dashboards_dir
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dashboards_dir + "/")
    assert (DOCKER / "grafana/dashboards" / Path(home).name).is_file()


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_dashboard_plots_the_seeds_metrics_by_model() -> None:
    dashboard = json.loads((DOCKER / "grafana/dashboards/textgen.json").read_text())
    (ds,) = load_yaml(DOCKER / "grafana/provisioning/datasources/prometheus.yml")["datasources"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == ds["uid"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == ds["uid"]
    exprs = _exprs(dashboard)
    for metric in SEED_METRICS:
        uses = [e for e in exprs if re.search(rf"\b{metric}(_bucket|_sum|_count)?\b", e)]
        assert uses, f"no panel plots {metric}"
        assert all(re.search(r"by \([^)]*\bmodel\b", e) for e in uses), f"{metric} by model"
    assert any("histogram_quantile" in e and "text_generation_seconds_bucket" in e for e in exprs)


def test_dashboard_metric_names_are_the_codes() -> None:
    """The names the dashboard plots are the ones textgen.metrics exports, labelled by model."""
    metrics = Metrics()
    exported: dict[str, list[str]] = {}
    for family in metrics.registry.collect():
        suffix = "_total" if family.type == "counter" else ""
        exported[family.name + suffix] = []
    for attr in ("generation_seconds", "errors", "cache_hits", "cache_misses"):
        metric = getattr(metrics, attr)
        name = metric._name + ("_total" if metric._type == "counter" else "")
        exported[name] = list(metric._labelnames)
    for metric in SEED_METRICS:
        assert metric in exported, f"textgen.metrics does not export {metric}"
        assert "model" in exported[metric]
    dashboard = json.loads((DOCKER / "grafana/dashboards/textgen.json").read_text())
    used = set()
    for expr in _exprs(dashboard):
        used |= set(re.findall(r"\b(text_[a-z_]+?)(?:_bucket|_sum|_count)?\b(?=[{\[ )])", expr))
    assert used and used <= set(exported), used - set(exported)
