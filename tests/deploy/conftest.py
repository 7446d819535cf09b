"""Fixtures for the deployment tests: the files under docker/ and k8s/, parsed once."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

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
