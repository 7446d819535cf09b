"""A configured remote vLLM server's URL: where it is, how we authenticate, how it is shown.

Credentials never leave this module in a form anyone reads: `shown` (used in error messages,
/health, metric labels and logs) has no `user:pass@` and no query string, and the API key or
the URL's user and password become one `Authorization` header value.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

_API_SUFFIXES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/v1")


def base_url(endpoint: str) -> str:
    """`http://vllm:8000/v1/completions` (the seed's form), `.../v1` or a bare base URL -> base."""
    # A query string means nothing to vLLM (its --api-key is a header): it is dropped.
    url = endpoint.strip().split("?", 1)[0].split("#", 1)[0].rstrip("/")
    for suffix in _API_SUFFIXES:
        if url.endswith(suffix):
            url = url[: -len(suffix)]
            break
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL of a vLLM server: {redact(endpoint)!r}")
    return url


def redact(url: str) -> str:
    """The URL without `user:pass@` and without a query string (where keys hide)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{netloc}{parts.path}".rstrip("/") if parts.scheme else "<URL>"


def is_address(host: str) -> bool:
    """An IP literal, which needs no resolving."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One configured server URL (VLLM_ENDPOINT or an entry of VLLM_ENDPOINTS)."""

    scheme: str
    host: str
    port: int
    prefix: str  # a path in front of /v1 (a server behind a path-routing proxy); '' normally
    shown: str
    authorization: str | None = None

    @classmethod
    def parse(cls, endpoint: str, api_key: str | None = None) -> Endpoint:
        """Parse a URL; `api_key` (a vLLM `--api-key`) wins over the URL's user and password."""
        url = base_url(endpoint)
        parts = urlsplit(url)
        assert parts.hostname is not None  # base_url checked it
        authorization = None
        if api_key:
            authorization = f"Bearer {api_key}"
        elif parts.username:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(pair.encode()).decode()
        return cls(
            scheme=parts.scheme,
            host=parts.hostname,
            port=parts.port or (443 if parts.scheme == "https" else 80),
            prefix=parts.path.rstrip("/"),
            shown=redact(url),
            authorization=authorization,
        )

    @property
    def host_header(self) -> str:
        """`host[:port]` as a server expects it in `Host` (and TLS checks it)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def at(self, address: str | None) -> str:
        """The base URL to connect to: the host itself, or one address it resolved to."""
        host = address or self.host
        host = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{host}:{self.port}{self.prefix}"
