"""Loaders and helpers for the deployment files (docker/, k8s/, environment.yml).

No Docker engine, cluster or GPU is needed: the files are parsed, linted and validated, and
checked against the code (textgen.settings.Settings, api.app.create_app, textgen.metrics).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import yaml

from textgen.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
K8S = ROOT / "k8s"

# Variables the deployment files may set that are not Settings fields, each read by something
# well known in the containers. Anything else set for a textgen container must be a Settings
# field, or the setting is silently ignored (Settings has extra="ignore").
WELL_KNOWN_ENV: dict[str, str] = {
    # the Python runtime and pip (build stages)
    "PATH": "executables of the image's virtualenv",
    "HOME": "home of the non-root user; Settings.MODEL_CACHE_DIR defaults under it",
    "PYTHONUNBUFFERED": "Python: unbuffered logs",
    "PYTHONDONTWRITEBYTECODE": "Python: no .pyc in a read-only root filesystem",
    "PIP_NO_CACHE_DIR": "pip, build stage only",
    "PIP_DISABLE_PIP_VERSION_CHECK": "pip, build stage only",
    # Hugging Face hub, read by vLLM and transformers
    "HF_HOME": "Hugging Face cache folder (vLLM's weights)",
    "HF_TOKEN": "Hugging Face token for gated models (Llama 2)",
    # vLLM's own variables
    "VLLM_NO_USAGE_STATS": "vLLM: no usage reporting",
    "VLLM_CPU_KVCACHE_SPACE": "vLLM on a CPU: KV cache GB (also a Settings field)",
    "VLLM_LOGGING_LEVEL": "vLLM: log level",
    # OpenTelemetry SDK (OTEL_EXPORTER_OTLP_ENDPOINT itself is a Settings field)
    "OTEL_SERVICE_NAME": "OpenTelemetry: service.name resource attribute",
    "OTEL_RESOURCE_ATTRIBUTES": "OpenTelemetry: extra resource attributes",
}
# Containers that are not ours read their own variables.
FOREIGN_ENV: dict[str, set[str]] = {
    "vllm": {"HF_HOME", "HF_TOKEN", "VLLM_NO_USAGE_STATS", "VLLM_LOGGING_LEVEL"},
    "redis": {"REDIS_PASSWORD", "REDISCLI_AUTH"},  # REDIS_PASSWORD: expanded in the args
}
SEED_METRICS = (
    "text_generation_seconds",
    "text_generation_errors_total",
    "text_cache_hits_total",
    "text_cache_misses_total",
)
SEED_VLLM_FLAGS = {
    "--host": "0.0.0.0",
    "--port": "8000",
    "--tensor-parallel-size": "1",
    "--gpu-memory-utilization": "0.90",
    "--max-num-batched-tokens": "8192",
}
VLLM_IMAGE = "vllm/vllm-openai"


def settings_fields() -> set[str]:
    return set(Settings.model_fields)


def settings_default(name: str) -> Any:
    return Settings.model_fields[name].default


def build_settings(env: dict[str, str]) -> Settings:
    """Settings as a container with exactly this environment would build them."""
    with mock.patch.dict(os.environ, {k: str(v) for k, v in env.items()}, clear=True):
        return Settings()


def unknown_env(names: set[str] | list[str], allowed: set[str] | None = None) -> set[str]:
    """Names neither a Settings field nor a listed well-known variable."""
    allowed = allowed if allowed is not None else settings_fields() | set(WELL_KNOWN_ENV)
    return {n for n in names if n not in allowed}


def flag_values(args: list[str]) -> dict[str, str]:
    """`--flag value` pairs of a command line (vLLM's flags take one value each)."""
    out: dict[str, str] = {}
    for i, arg in enumerate(args):
        if arg.startswith("--") and "=" in arg:
            k, v = arg.split("=", 1)
            out[k] = v
        elif arg.startswith("--") and i + 1 < len(args) and not args[i + 1].startswith("--"):
            out[arg] = args[i + 1]
        elif arg.startswith("--"):
            out[arg] = ""
    return out


# --- YAML -----------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


_INTERP = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str] | None = None) -> Any:
    """Compose's variable interpolation (${VAR}, ${VAR:-default}, ${VAR:?err}, $$)."""
    env = env or {}
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        current = env.get(name)
        if op in (":-", "-"):
            empty = current is None or (op == ":-" and current == "")
            return arg if empty else current
        if op in (":?", "?"):
            if current is None or (op == ":?" and current == ""):
                raise ValueError(f"{name} is required: {arg}")
            return current
        return current or ""

    return _INTERP.sub(sub, value)


def find(docs: list[tuple[str, dict[str, Any]]], kind: str, name: str) -> dict[str, Any]:
    hits = [d for _, d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"expected one {kind}/{name} in k8s/, found {len(hits)}"
    return hits[0]


# --- Dockerfiles ------------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [args for o, args in self.instructions if o == op]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for args in self.all("ENV"):
            for item in shlex.split(args):
                k, _, v = item.partition("=")
                out[k] = v
        return out


@dataclass
class Dockerfile:
    path: Path
    args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def _logical_lines(text: str) -> Iterator[str]:
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and buf):
            continue  # comments (also inside a continuation) and blank continuation lines
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            yield buf.strip()
        buf = ""


def parse_dockerfile(path: Path) -> Dockerfile:
    args: dict[str, str] = {}
    stages: list[Stage] = []

    def expand(s: str) -> str:
        return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), ""), s)

    for line in _logical_lines(path.read_text()):
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "ARG" and not stages:
            k, _, v = rest.partition("=")
            args[k.strip()] = v.strip().strip('"')
        elif op == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(expand(parts[0]), name))
        elif stages:
            stages[-1].instructions.append((op, rest.strip()))
    return Dockerfile(path, args, stages)


