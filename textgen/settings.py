"""The one settings object: the seed's environment variables plus the lab's own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
# The same embedded weights served as an embedding model (vLLM's `--convert embed`).
EMBEDDING_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct-embed"
SEED_VLLM_ENDPOINT = "http://vllm:8000/v1/completions"


class Settings(BaseSettings):
    """Every knob of the service, named exactly as its environment variable."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True)

    # --- the seed's variables -------------------------------------------------------------
    API_TOKEN: SecretStr | None = Field(None, description="Bearer token accepted by the API.")
    TEXT_GEN_API_TOKEN: SecretStr | None = Field(
        None, description="Second accepted bearer token, specific to the text-generation service."
    )
    VLLM_ENDPOINT: str = Field(
        SEED_VLLM_ENDPOINT,
        description="Remote OpenAI-compatible vLLM server (completions URL or base URL). "
        "Empty disables the remote backend.",
    )
    REDIS_URL: str | None = Field(
        None, description="Redis for the response cache and rate limits; unset = in-process."
    )
    REDIS_PASSWORD: SecretStr | None = Field(None, description="Password for REDIS_URL.")
    API_PORT: int = Field(8000, description="Port of the HTTP API (and the UI under /ui).")
    METRICS_PORT: int = Field(8001, description="Port of the Prometheus metrics endpoint; 0 = off.")
    METRICS_HOST: str | None = Field(
        None, description="Interface the metrics endpoint binds to; unset = API_HOST's (a laptop "
        "lab keeps its metrics on loopback, a container sets 0.0.0.0 for Prometheus).",
    )

    # --- serving ---------------------------------------------------------------------------
    API_HOST: str = Field("127.0.0.1", description="Interface the API binds to.")
    ADMIN_TOKEN: SecretStr | None = Field(
        None,
        description="The one bearer token that may change what is loaded: load and unload "
        "models and LoRA adapters, in the API and the UI's Models tab (an API token gets a 403 "
        "there). It is accepted wherever an API token is. Unset: any API token may.",
    )
    SHUTDOWN_GRACE_SECONDS: float = Field(
        10.0, ge=0,
        description="On SIGTERM/Ctrl-C, how long open requests and streams may finish before "
        "they are cut and the engines stopped.",
    )
    MODEL: str = Field(DEFAULT_MODEL, description="Model loaded in-process at start ('' = none).")
    MODEL_CACHE_DIR: Path = Field(
        Path.home() / ".cache" / "textgen" / "models",
        description="Where embedded models are converted to Hugging Face folders.",
    )
    MODEL_PATHS: dict[str, Path] = Field(
        default_factory=dict,
        description="JSON object: model id -> local Hugging Face folder with its weights.",
    )

    # --- remote vLLM servers ----------------------------------------------------------------
    VLLM_ENDPOINTS: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="More remote vLLM servers beside VLLM_ENDPOINT (e.g. one per model): a JSON "
        "list or a comma-separated list of URLs.",
    )
    REMOTE_CONNECT_TIMEOUT_SECONDS: float = Field(
        2.0, description="Time to open a connection to a remote vLLM server before it counts as down."
    )
    REMOTE_READ_TIMEOUT_SECONDS: float = Field(
        60.0, description="Longest wait for the next chunk of a remote server's stream, or for its "
        "response headers (504 after)."
    )
    REMOTE_REQUEST_TIMEOUT_SECONDS: float = Field(
        600.0, description="Longest wait for a remote server's whole answer to a plain (not "
        "streamed) request, which comes in one piece when the generation ends (504 after).",
    )
    REMOTE_DISCOVERY_INTERVAL_SECONDS: float = Field(
        30.0, description="How often remote servers are asked for their models (every 2 s while down)."
    )
    REMOTE_MAX_CONNECTIONS: int = Field(
        256, description="Pooled keep-alive connections per remote server."
    )
    REMOTE_WRITE_TIMEOUT_SECONDS: float = Field(
        10.0, gt=0, description="Longest wait to write a request to a remote server (504 after)."
    )
    VLLM_API_KEY: SecretStr | None = Field(
        None, description="API key of the remote vLLM servers (their --api-key), sent as a "
        "bearer token; unset = none (a URL's user:pass@ is sent as basic auth instead).",
    )
    VLLM_API_KEYS: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="JSON object: endpoint URL -> API key of that server, for servers with keys "
        "of their own (others get VLLM_API_KEY).",
    )
    REMOTE_TLS_VERIFY: bool = Field(
        True, description="Verify https backends' certificates (false: accept any; for tests)."
    )
    REMOTE_TLS_CA_FILE: Path | None = Field(
        None, description="CA bundle (PEM) that https backends' certificates are checked "
        "against; unset = the system's CAs.",
    )
    REMOTE_PROXY: str | None = Field(
        None, description="HTTP proxy for remote backends (http://[user:pass@]host:port; https "
        "backends through CONNECT); the proxy resolves their names, so a name is one replica. "
        "Unset = direct (HTTP_PROXY is not read).",
    )
    REMOTE_ROUTING_POLICY: Literal["least_outstanding", "prefix_affinity", "round_robin"] = Field(
        "least_outstanding",
        description="How a model's replicas share its requests: least_outstanding (fewest in "
        "flight), prefix_affinity (same prompt prefix, same replica, bounded by load), or "
        "round_robin.",
    )
    REMOTE_ROUTING_POLICIES: dict[
        str, Literal["least_outstanding", "prefix_affinity", "round_robin"]
    ] = Field(
        default_factory=dict,
        description="JSON object: model id -> routing policy for that model.",
    )
    REMOTE_PREFIX_CHARS: int = Field(
        256, ge=1, description="prefix_affinity: leading characters of the prompt (chat: of the "
        "messages, role and content) that pick the replica.",
    )
    REMOTE_PREFIX_LOAD_FACTOR: float = Field(
        1.25, ge=1.0, description="prefix_affinity: a replica carrying this times the average "
        "load (in flight, counting the new request) plus one is passed over for the next one on "
        "the hash ring.",
    )
    REMOTE_EJECT_SECONDS: float = Field(
        2.0, gt=0, description="A remote server that cannot be reached or answers a 5xx is "
        "taken out of rotation this long before a probe; doubles while it keeps failing.",
    )
    REMOTE_EJECT_MAX_SECONDS: float = Field(
        10.0, gt=0, description="Longest wait between probes of a server that is out.",
    )
    REMOTE_DNS_INTERVAL_SECONDS: float = Field(
        10.0, ge=0, description="How often backend host names are resolved again, each address "
        "a replica (a Kubernetes headless Service: one per ready pod); 0 = at discovery only.",
    )
    REMOTE_LOAD_METRICS_INTERVAL_SECONDS: float = Field(
        5.0, ge=0, description="How often each remote server's own /metrics (queue, KV cache, "
        "prefix cache) is read as a load signal beside our own count; 0 = never.",
    )

    # --- the in-process vLLM engine (the seed's `vllm serve` flags) --------------------------
    DTYPE: str = Field(
        "auto",
        description="Weights dtype: auto (the model's, or float32 on a CPU without native bf16), "
        "bfloat16, float16, float32.",
    )
    MAX_MODEL_LEN: int | None = Field(2048, description="Context length; None = model's own.")
    TENSOR_PARALLEL_SIZE: int = Field(1, description="GPUs one model is split over.")
    PIPELINE_PARALLEL_SIZE: int = Field(
        1, description="Pipeline stages one model is split over (GPUs or nodes, with Ray)."
    )
    DISTRIBUTED_EXECUTOR_BACKEND: str | None = Field(
        None,
        description="vLLM's executor for a model spread over GPUs: mp (one node) or ray "
        "(several nodes); None = vLLM's choice.",
    )
    GPU_MEMORY_UTILIZATION: float = Field(0.90, description="Share of GPU memory vLLM may use.")
    MAX_NUM_BATCHED_TOKENS: int | None = Field(8192, description="Tokens per engine step.")
    ENFORCE_EAGER: bool | None = Field(
        None, description="Disable graph compilation; None = eager on CPU, compiled on GPU."
    )
    VLLM_SERVE_ARGS: dict[str, str] = Field(
        default_factory=dict,
        description="JSON object: model id -> more `vllm serve` flags for it (e.g. "
        "'--tool-call-parser hermes --enable-auto-tool-choice', '--chat-template t.jinja', "
        "'--reasoning-parser deepseek_r1'); replaces the catalog's defaults for that model.",
    )
    VLLM_CPU_KVCACHE_SPACE: int = Field(1, description="GB of KV cache for vLLM on a CPU.")
    ENGINE_NICENESS: int = Field(
        0, ge=0, le=19,
        description="CPU priority (nice) of in-process engines' processes, 0-19: 19 keeps the "
                    "lab's web server and API responsive while the engine takes the cores that "
                    "are left. Linux orders nice values within a session (autogroups, on in most "
                    "distributions): a browser started from another session still competes with "
                    "the whole lab as an equal. To keep such a browser responsive on a CPU-only "
                    "box, start the lab in a session of its own at a lower group priority "
                    "(`setsid sh -c 'echo 19 > /proc/self/autogroup; exec textgen serve'`).",
    )
    ENABLE_LORA: bool = Field(
        False,
        description="Start in-process engines with LoRA enabled (vLLM's --enable-lora), so "
                    "adapters can be loaded next to the model at run time. Off by default: it "
                    "cost requests without an adapter 7 percent of throughput on a 2-core CPU "
                    "(benchmarks/lora_cost.py).",
    )
    MAX_LORA_RANK: int = Field(16, ge=1, description="vLLM's --max-lora-rank: the largest "
                               "adapter rank an engine accepts.")
    MAX_LORAS: int = Field(4, ge=1, description="vLLM's --max-loras: adapters one engine "
                           "batch may mix.")
    # NoDecode: the `name=path` form reaches the validator below as written (pydantic-settings
    # would read a dict from the environment as JSON only, and refuse vLLM's form).
    LORA_MODULES: Annotated[dict[str, Path], NoDecode] = Field(
        default_factory=dict,
        description="Adapters loaded when their base model loads: vLLM's `name=path` form "
                    "(several separated by spaces or commas) or a JSON object name -> path.",
    )
    MAX_LOADED_MODELS: int = Field(
        1, description="In-process models kept loaded; loading one more unloads the LRU."
    )
    UNLOAD_DRAIN_SECONDS: float = Field(
        10.0, ge=0,
        description="When a model is unloaded or evicted, how long its running requests may "
        "finish before they are ended with an error (generation_interrupted).",
    )
    LOAD_WAIT_SECONDS: float = Field(
        120.0, description="How long a request waits for its model to finish loading."
    )
    MAX_REQUEST_BYTES: int = Field(
        10 * 1024 * 1024, ge=1024,
        description="Largest request body accepted (413 past it, before it is read whole): a "
        "2048-token context is a few kB of text; 10 MiB leaves room for long contexts and "
        "token-id prompts.",
    )
    MAX_CONCURRENT_REQUESTS: int = Field(
        64, description="Requests one engine holds at once; past it the API answers 503."
    )

    # --- cache and limits ------------------------------------------------------------------
    CACHE_TTL_SECONDS: int = Field(3600, description="Lifetime of a cached response.")
    CACHE_SAMPLED: bool = Field(
        True, description="Cache sampled requests (temperature > 0 or unset, no seed) too, as "
        "gateways do and the seed's example expects; false = each such request is a fresh "
        "sample (X-Cache: BYPASS).",
    )
    CACHE_MAX_ENTRIES: int = Field(1024, description="Size of the in-process LRU (no Redis).")
    REDIS_TIMEOUT_SECONDS: float = Field(0.25, description="Socket timeout for Redis calls.")
    RATE_LIMITS: dict[str, int] = Field(
        default_factory=dict,
        description="JSON object: model id -> requests per minute (0 = unlimited).",
    )

    # --- kept runs (textgen.runs) ------------------------------------------------------------
    LAB_DATA_DIR: Path = Field(
        Path.home() / ".local" / "share" / "textgen",
        description="Where the lab keeps its own data: the run store's SQLite file.",
    )
    RUNS_DATABASE_URL: SecretStr | None = Field(
        None,
        description="SQLAlchemy URL of the run store: unset = a SQLite file in LAB_DATA_DIR; "
        "postgresql+asyncpg://user:pass@host/db for several replicas sharing one store; "
        "empty = no run store (nothing is kept).",
    )
    RECORD_API_REQUESTS: bool = Field(
        False, description="Keep every API request in the run store; false = only those sent "
        "with the header X-Lab-Record: 1 (the UI's runs are always kept).",
    )
    RUNS_MAX_AGE_DAYS: float = Field(
        0, ge=0, description="Runs older than this many days are deleted; 0 = kept for ever."
    )
    RUNS_MAX_RUNS: int = Field(
        100_000, ge=0, description="Most runs kept; past it the oldest are deleted; 0 = no limit."
    )
    EVALUATION_LEASE_SECONDS: float = Field(
        30.0, gt=0, description="How long a lab's claim on an evaluation it runs holds unless "
        "renewed (every third of it): an evaluation whose lab stopped without a word (killed, "
        "or a replica on the same database that died) is taken over once its claim lapses.",
    )
    RUNS_BUFFER_MAX: int = Field(
        10_000, ge=1, description="Runs held in memory while the database is down; past it the "
        "oldest are dropped (text_run_store_dropped_total).",
    )

    # --- observability ---------------------------------------------------------------------
    OTEL_EXPORTER_OTLP_ENDPOINT: str | None = Field(
        None, description="OTLP/HTTP endpoint for traces; unset = tracing off."
    )
    TELEMETRY_INTERVAL_SECONDS: float = Field(2.0, description="GPU/system sampling period.")
    TELEMETRY_HISTORY: int = Field(900, description="Samples kept in the telemetry ring.")
    LOG_LEVEL: str = Field("INFO", description="Python logging level.")

    @field_validator("MODEL_PATHS", "RATE_LIMITS", "VLLM_SERVE_ARGS", mode="before")
    @classmethod
    def _parse_json_object(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("VLLM_API_KEYS", "REMOTE_ROUTING_POLICIES", mode="before")
    @classmethod
    def _parse_remote_json_object(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("VLLM_ENDPOINTS", mode="before")
    @classmethod
    def _parse_endpoint_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("LORA_MODULES", mode="before")
    @classmethod
    def _parse_lora_modules(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("{"):
            return json.loads(text)
        pairs = [part for part in text.replace(",", " ").split() if part]
        if any("=" not in pair for pair in pairs):
            raise ValueError("LORA_MODULES: each adapter is name=path")
        return dict(pair.split("=", 1) for pair in pairs)

    @field_validator("VLLM_ENDPOINT", mode="before")
    @classmethod
    def _blank_endpoint(cls, value: Any) -> Any:
        return (value or "").strip()

    def runs_database_url(self) -> str | None:
        """The run store's URL (None: no store): RUNS_DATABASE_URL, or SQLite in LAB_DATA_DIR."""
        if self.RUNS_DATABASE_URL is None:
            return f"sqlite+aiosqlite:///{self.LAB_DATA_DIR.expanduser() / 'runs.db'}"
        return self.RUNS_DATABASE_URL.get_secret_value().strip() or None

    def api_tokens(self) -> list[str]:
        """The bearer tokens accepted on every route (the admin token among them when there
        are API tokens); empty means the lab is open."""
        tokens = (self.API_TOKEN, self.TEXT_GEN_API_TOKEN)
        accepted = [t.get_secret_value() for t in tokens if t is not None and t.get_secret_value()]
        admin = self.admin_token()
        return accepted + [admin] if accepted and admin else accepted

    def admin_token(self) -> str | None:
        """The token that alone may load and unload (None: any accepted token may)."""
        return (self.ADMIN_TOKEN.get_secret_value() or None) if self.ADMIN_TOKEN else None
