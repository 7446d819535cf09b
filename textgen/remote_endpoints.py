"""The configured remote endpoints: their base URLs (VLLM_ENDPOINT, VLLM_ENDPOINTS), the key
each is sent, the addresses a name resolves to, and `Backend`, one endpoint with the servers
its name resolves to now (textgen.backends keeps them discovered and healthy)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from .engines.endpoint import Endpoint, base_url, redact
from .engines.remote import RemoteServer
from .settings import Settings


def endpoints(settings: Settings) -> list[str]:
    """Base URLs of every configured backend: VLLM_ENDPOINT, then VLLM_ENDPOINTS, deduplicated."""
    urls: list[str] = []
    for endpoint in [settings.VLLM_ENDPOINT, *settings.VLLM_ENDPOINTS]:
        if endpoint and (url := base_url(endpoint)) not in urls:
            urls.append(url)
    return urls


def api_key(settings: Settings, url: str) -> str | None:
    """The key to send to one backend: its own from VLLM_API_KEYS, else VLLM_API_KEY."""
    shown = redact(url)
    for endpoint, key in settings.VLLM_API_KEYS.items():
        if redact(base_url(endpoint)) == shown:
            return key.get_secret_value()
    return settings.VLLM_API_KEY.get_secret_value() if settings.VLLM_API_KEY else None


async def resolve(host: str, port: int) -> list[str]:
    """The addresses a name resolves to, IPv4 first when it has both (`localhost` is one
    server, not two); raises OSError when it does not resolve."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    v4 = [i[4][0] for i in infos if i[0] == socket.AF_INET]
    v6 = [i[4][0] for i in infos if i[0] == socket.AF_INET6]
    return sorted(set(v4 or v6))


class Backend:
    """One configured endpoint and the servers its name resolves to now."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.servers: dict[str | None, RemoteServer] = {}  # by address; None: the URL's host
        self.resolve_error: str | None = None

    @property
    def url(self) -> str:
        return self.endpoint.shown

    def in_flight(self) -> int:
        return sum(s.in_flight() for s in self.servers.values())

    def status(self) -> str:
        states = [s.state for s in self.servers.values()]
        if not states:
            return "down" if self.resolve_error else "unknown"
        if all(state == "unknown" for state in states):
            return "unknown"
        if all(state == "up" for state in states):
            return "up"
        return "degraded" if "up" in states else "down"

    def health(self) -> dict[str, Any]:
        status = self.status()
        models = list(dict.fromkeys(m for s in self.servers.values() for m in s.models))
        errors = [s.last_error for s in self.servers.values() if s.last_error]
        error = None if status in ("up", "unknown") else (errors or [self.resolve_error])[0]
        return {
            "url": self.url, "status": status, "models": models, "error": error,
            "replicas": [_replica(s) for s in self.servers.values()],
        }


def _replica(server: RemoteServer) -> dict[str, Any]:
    info = server.info()
    return {field: getattr(info, field) for field in info.__dataclass_fields__}
