"""Fixtures for the deployment tests: the files under docker/ and k8s/, parsed once; and for the
docker tier, a Docker engine, the stand-in images, the API image and a real vLLM CPU server."""

from __future__ import annotations

import contextlib
import os
import tomllib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.upstreams import VllmServer

from .docker_engine import Docker, DockerUnavailable, docker_engine, standin
from .support import (
    DOCKER,
    K8S,
    ROOT,
    Dockerfile,
    interpolate,
    load_yaml,
    load_yaml_docs,
    parse_dockerfile,
)


@pytest.fixture(scope="session")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return load_yaml(DOCKER / "compose.yaml")


@pytest.fixture(scope="session")
def compose_resolved(compose: dict[str, Any]) -> dict[str, Any]:
    """The compose file as `docker compose config` would see it with no variables set."""
    return interpolate(compose)


@pytest.fixture(scope="session")
def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, d) for p in sorted(K8S.glob("*.yaml")) for d in load_yaml_docs(p)]


@pytest.fixture(scope="session")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKER / "Dockerfile")


@pytest.fixture(scope="session")
def dockerfile_gpu() -> Dockerfile:
    return parse_dockerfile(DOCKER / "Dockerfile.gpu")


# --- the docker tier ------------------------------------------------------------------------

API_IMAGE = "textgen-test/text-generator:latest"


def _missing(what: str) -> None:
    """`make test` installs the docker tier's tools: CI fails rather than go green on a skip."""
    if os.environ.get("CI"):
        pytest.fail(f"docker tier: {what}")
    pytest.skip(f"docker tier: {what}")


@pytest.fixture(scope="package")
def docker() -> Iterator[Docker]:
    """A Docker engine: the running one, else a dockerd of ours for the package's tests."""
    stack = contextlib.ExitStack()
    try:
        engine = stack.enter_context(docker_engine(ROOT / "test-artifacts" / "dockerd.log"))
    except DockerUnavailable as exc:
        _missing(str(exc))
    with stack:
        yield engine


@pytest.fixture(scope="package")
def compose_v2(docker: Docker) -> Docker:
    """The engine, once `docker compose` is known to be Compose v2."""
    if not docker.has_compose_v2():
        _missing("Compose v2 (`docker compose`) is missing: `make system-deps` installs it")
    return docker


@pytest.fixture(scope="package")
def standin_python(docker: Docker) -> str:
    return standin(docker, "python")


@pytest.fixture(scope="package")
def api_image(docker: Docker, standin_python: str) -> Iterator[str]:
    """docker/Dockerfile built as the seed says, on the Python stand-in; removed afterwards (the
    build stage's layers stay in Docker's cache for the next run)."""
    docker.build(API_IMAGE, DOCKER / "Dockerfile", ROOT,
                 build_args={"PYTHON_IMAGE": standin_python})
    yield API_IMAGE
    docker("rmi", API_IMAGE, check=False)


@pytest.fixture(scope="package")
def vllm_server() -> Iterator[VllmServer]:
    server = VllmServer.shared()
    yield server
    server.stop()  # as tests/api does: ~3 GB freed for the tests that follow
