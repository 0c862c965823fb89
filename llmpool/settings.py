"""The one settings object: every variable the TT-Studio agent documents, plus llmpool's own.

Field names are the environment variables they read (case-insensitive), so `agent_max_failures`
reads `AGENT_MAX_FAILURES`. Values come from the environment and an optional `.env` file.
"""

from __future__ import annotations

import json
import logging
import sys
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from llmpool.errors import ConfigError
from llmpool.jwt_keys import read_public_key
from llmpool.redis_conn import parse_sentinel_url

__all__ = ["Settings", "EndpointLimits", "get_settings", "load_settings", "config_issues", "issues_report",
           "print_issues_report_once", "settings_or_exit"]

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
Seconds = Annotated[float, Field(gt=0)]
CommaList = Annotated[list[str], NoDecode]

DEFAULT_PRIORITY_MODELS = ["llama-3.1-70b", "llama-3.1-8b", "mistral-7b", "falcon-7b"]
# Worker slots per process: threads each hold a stack (1,000 ~ 330 MB); gevent greenlets a few KB.
MAX_THREADS = 1000
MAX_GREENLETS = 20000
SECRET_FIELDS = ("jwt_secret", "cloud_chat_ui_auth_token", "agent_flower_basic_auth", "agent_api_jwt_secret",
                 "tavily_api_key", "e2b_api_key")


class EndpointLimits(BaseModel):
    """One entry of AGENT_ENDPOINT_LIMITS; a field left out keeps the default."""

    model_config = ConfigDict(extra="forbid")

    max_concurrency: Annotated[int, Field(ge=0)] | None = None
    rpm: Annotated[int, Field(ge=0)] | None = None
    tpm: Annotated[int, Field(ge=0)] | None = None
    share: Annotated[float, Field(gt=0, le=1)] | None = None  # of the fleet's chat slots


class Settings(BaseSettings):
    """Configuration read once per process; see README for what each variable does."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # --- TT-Studio agent variables, same names and defaults ---
    agent_auto_discovery: bool = True
    agent_discovery_cache_ttl: Seconds = 30
    agent_discovery_interval: Seconds = 60
    agent_health_check_enabled: bool = True
    agent_health_check_interval: Seconds = 30
    agent_health_check_timeout: Seconds = 5
    agent_max_failures: Annotated[int, Field(ge=1)] = 3
    # llmpool's own: consecutive good probes an unhealthy endpoint needs to be used again.
    agent_fallback_to_local: bool = True
    agent_fallback_to_cloud: bool = False
    agent_priority_models: CommaList = Field(default_factory=lambda: list(DEFAULT_PRIORITY_MODELS))
    agent_backend_url: str = "http://tt-studio-backend-api:8000"
    local_llm_host: str = "localhost"
    local_llm_port: Annotated[int, Field(ge=1, le=65535)] = 7000
    local_model_name: str = "llama-3.1-70b"
    jwt_secret: SecretStr | None = None
    cloud_chat_ui_auth_token: SecretStr | None = None
    use_cloud_llm: bool = False
    cloud_chat_ui_url: str | None = None
    cloud_model_name: str | None = None
    llm_container_name: str | None = None
    agent_log_level: LogLevel = "INFO"
    agent_debug_mode: bool = False
    agent_llm_polling_enabled: bool = True
    agent_llm_polling_interval: Seconds = 180
    agent_llm_polling_max_attempts: Annotated[int, Field(ge=0)] = 0

    # --- llmpool's own ---
    redis_url: str = "redis://localhost:6379/0"
    # Breaker (llmpool.admission): AGENT_MAX_FAILURES consecutive failures open it, and so does a
    # failure rate >= AGENT_BREAKER_FAILURE_RATE over AGENT_BREAKER_WINDOW seconds with at least
    # AGENT_BREAKER_MIN_CALLS calls. The open wait doubles on each failed trial, up to the max.
    agent_breaker_window: Seconds = 60
    agent_breaker_failure_rate: Annotated[float, Field(gt=0, le=1)] = 0.5
    agent_breaker_min_calls: Annotated[int, Field(ge=1)] = 10
    agent_breaker_open_wait: Seconds = 2
    agent_breaker_open_wait_max: Seconds = 60
    agent_breaker_trial_lease: Seconds = 30  # a half-open trial not settled by then lets another try
    agent_breaker_slow_call: Annotated[float, Field(ge=0)] = 0  # > 0: slower successes count as failures
    # Admission per endpoint, shared by every worker; 0 = unlimited.
    agent_endpoint_max_concurrency: Annotated[int, Field(ge=0)] = 0
    agent_endpoint_rpm: Annotated[int, Field(ge=0)] = 0
    agent_endpoint_tpm: Annotated[int, Field(ge=0)] = 0
    # A concurrency lease lasts the call's budget plus this: a killed worker's slot returns after it.
    agent_lease_margin: Seconds = 10
    agent_rate_burst: Annotated[int, Field(ge=1)] = 2  # GCRA burst, in requests
    agent_rate_period: Seconds = 60  # the period RPM and TPM count over; tests shorten it
    # JSON: endpoint id or model-name substring -> {"max_concurrency", "rpm", "tpm", "share"} overrides.
    agent_endpoint_limits: Annotated[dict[str, EndpointLimits], NoDecode] = Field(default_factory=dict)
    agent_health_recovery_successes: Annotated[int, Field(ge=1)] = 2  # good probes before an unhealthy endpoint returns
    # Among endpoints of one model at one priority: higher-precision quantization first ("quality")
    # or lower, faster ("speed"); llmpool.server_kinds.
    agent_prefer: Literal["quality", "speed"] = "quality"
    # Seconds between two reads of the servers' own load (vLLM /metrics, llama.cpp /slots); 0: off.
    agent_load_interval: Annotated[float, Field(ge=0)] = 2
    agent_redis_prefix: str = "llmpool"
    # Above MAX_THREADS only with gevent: a greenlet costs kilobytes where a thread costs its stack.
    agent_worker_concurrency: Annotated[int, Field(ge=1, le=MAX_GREENLETS)] = 64
    agent_worker_pool: Literal["threads", "gevent", "prefork", "solo"] = "threads"
    # Redis connections per worker process with gevent (a blocking pool: greenlets wait for one);
    # the other pools keep one per thread. 0 = min(concurrency, 256) + 8.
    agent_redis_max_connections: Annotated[int, Field(ge=0, le=MAX_GREENLETS)] = 0
    agent_connect_timeout: Seconds = 10
    agent_first_token_timeout: Seconds = 60
    agent_request_timeout: Seconds = 300
    agent_job_deadline: Seconds = 600  # default deadline of a chat.default job
    agent_job_deadline_high: Seconds = 120  # ... of a chat.high job (interactive: fail fast)
    agent_job_deadline_low: Seconds = 3600  # ... of a chat.low job (batch: wait long)
    agent_job_max_attempts: Annotated[int, Field(ge=1)] = 3  # runs of one job cut short by a dead worker
    # A running job's claim lease; its worker renews it every third of this while the job runs, and
    # the sweep hands a job whose lease lapsed (its worker died) to another worker.
    agent_job_lease: Annotated[float, Field(ge=3)] = 30
    agent_sweep_interval: Seconds = 5  # how often the sweep looks for orphaned, due and unpublished jobs
    # A job whose message the broker may never have received is published again after this.
    agent_republish_after: Seconds = 10
    # A message taken by a worker that died before claiming its job is delivered again after this.
    agent_visibility_timeout: Annotated[float, Field(ge=5)] = 60
    # SIGTERM (warm shutdown): running jobs get this long to finish; then they are handed back for
    # another worker, at once rather than when their lease lapses.
    agent_shutdown_grace: Annotated[float, Field(ge=0)] = 30
    # A worker with free slots while its queues have held messages this long stops itself for its
    # supervisor to restart (a deaf consumer); 0 turns the watch off.
    agent_deaf_after: Annotated[float, Field(ge=0)] = 60
    agent_job_max_calls: Annotated[int, Field(ge=1)] = 3  # LLM calls (endpoints tried) per job
    agent_result_ttl: Seconds = 86400
    agent_stream_ttl: Seconds = 600
    agent_conversation_max_messages: Annotated[int, Field(ge=0)] = 20
    agent_conversation_ttl: Seconds = 86400
    agent_api_host: str = "0.0.0.0"
    agent_api_port: Annotated[int, Field(ge=1, le=65535)] = 8080
    agent_flower_port: Annotated[int, Field(ge=1, le=65535)] = 5555
    agent_data_dir: str = ".llmpool"
    # An endpoint its source stops listing stays this long before it leaves the registry.
    agent_discovery_grace_period: Annotated[float, Field(ge=0)] = 120
    # OpenAI-compatible and Ollama servers to list models from (comma-separated base URLs).
    agent_openai_servers: CommaList = Field(default_factory=list)
    agent_ollama_servers: CommaList = Field(default_factory=list)

    # --- hung endpoints (llmpool.ttft, admit.lua): suspicion, adaptive first-token timeouts, share ---
    # Each endpoint's recent TTFTs (a histogram in Redis, two generations of this many seconds);
    # with fewer samples than the minimum it is cold, and the ceilings apply.
    agent_ttft_window: Seconds = 300
    agent_ttft_min_samples: Annotated[int, Field(ge=1)] = 20
    # A call's first-token timeout: factor x the endpoint's p99 TTFT, at least the floor, at most
    # AGENT_FIRST_TOKEN_TIMEOUT.
    agent_first_token_factor: Annotated[float, Field(ge=1)] = 4
    agent_first_token_floor: Seconds = 3
    # Suspicion: a call without a first token for factor x p99 (within floor..max), while no call
    # on the endpoint made progress for as long, stops new calls to it; after the wait, one trial.
    agent_suspect_factor: Annotated[float, Field(ge=1)] = 3
    agent_suspect_floor: Seconds = 2
    agent_suspect_max: Seconds = 30
    agent_suspect_wait: Seconds = 1
    # Overdue: a warm endpoint with no first token for factor x its p99 while a call waits sends the
    # jobs that have another candidate there (admit.lua); 0 turns it off.
    agent_overdue_factor: Annotated[float, Field(ge=0)] = 1
    # The most of the fleet's chat slots one endpoint's calls may hold while the selection has
    # others (overridable per endpoint: "share" or "max_concurrency" in AGENT_ENDPOINT_LIMITS).
    agent_endpoint_share: Annotated[float, Field(gt=0, le=1)] = 0.5

    # --- hedging (llmpool.hedging): a call with no first token after its endpoint's p95 TTFT
    # sends the same request to the next candidate; the first to stream wins ---
    agent_hedge_enabled: bool = True
    # The shortest a call waits before it is hedged, whatever the endpoint's p95 (a fast endpoint's
    # p95 is noise-sized: hedging sooner would double calls for nothing).
    agent_hedge_min_delay: Seconds = 1

    # --- under load ---
    # Caps on one LLM answer: its whole body (JSON, or every byte of a stream) and one SSE line.
    agent_max_response_bytes: Annotated[int, Field(ge=1024)] = 8 * 1024 * 1024
    agent_max_line_bytes: Annotated[int, Field(ge=256)] = 1024 * 1024
    # The control worker (discovery, health, sweep, broadcasts): its own process, queue and
    # HTTP pool, so a chat backlog or a saturated chat pool never delays it.
    agent_control_concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    agent_probe_connections: Annotated[int, Field(ge=1, le=1000)] = 32
    # The API: Redis connections every waiting client shares, and how many clients may wait at
    # once (more get 503 overloaded).
    agent_api_redis_connections: Annotated[int, Field(ge=4, le=1000)] = 32
    agent_api_max_waiters: Annotated[int, Field(ge=1)] = 10000
    # Redis memory: the maxmemory `llmpool up` gives its embedded Redis ("0": none), and the
    # fraction of maxmemory past which the operator is warned (log and /status).
    agent_redis_maxmemory: str = "1gb"
    agent_redis_memory_warn: Annotated[float, Field(gt=0, le=1)] = 0.8
    # With REDIS_URL=sentinel://host:26379[;sentinel://host2:26379...]: the monitored master's name.
    agent_redis_master_name: Annotated[str, Field(min_length=1)] = "mymaster"

    # --- observability: logs and Flower ---
    # Every process's log lines: "human" (default) or "json" (one JSON object a line, for shippers).
    agent_log_format: Literal["human", "json"] = "human"
    # Flower's HTTP basic auth, "user:password": its UI and REST API open to these credentials only
    # (Flower 2 answers 401 on its REST API without auth). A secret: never logged, never in argv.
    agent_flower_basic_auth: SecretStr | None = None

    # --- model choice (a job's `model`) ---
    # JSON: alias -> model name or hf_model_id, e.g. {"gpt-4o": "llama-3.1-70b"}; keys match case-insensitively.
    agent_model_aliases: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    # JSON: model -> models its jobs fail over to, in order, once every endpoint of their own is
    # tried or unselectable, e.g. {"llama-3.1-70b": ["llama-3.1-8b"]}; keys match case-insensitively.
    agent_model_fallbacks: Annotated[dict[str, list[str]], NoDecode] = Field(default_factory=dict)

    # --- the API's own auth and input limits (api/auth.py, api/jwt_verify.py, api/limits.py) ---
    # Bearer JWTs on every route but GET /, /health and /metrics: HS256 with the secret, or RS256 /
    # ES256 with the public key (PEM text, or the path of a PEM file); never both. Unset: the API is open.
    agent_api_jwt_secret: SecretStr | None = None
    agent_api_jwt_public_key: str | None = None
    agent_api_jwt_audience: str | None = None  # checked against `aud` when set
    agent_api_jwt_issuer: str | None = None  # checked against `iss` when set
    # Requests past these are refused (413 for the body, 422 naming the field) before anything is enqueued.
    agent_api_max_body_bytes: Annotated[int, Field(ge=1024)] = 4 * 1024 * 1024
    agent_api_max_message_chars: Annotated[int, Field(ge=1, le=1_000_000)] = 200_000
    agent_api_max_messages: Annotated[int, Field(ge=1, le=10_000)] = 1000
    agent_api_max_thread_id: Annotated[int, Field(ge=1, le=200)] = 128  # characters; it is part of a Redis key
    agent_api_max_tokens: Annotated[int, Field(ge=1, le=1_000_000)] = 65_536
    agent_api_max_tools: Annotated[int, Field(ge=0, le=128)] = 128
    # The tool loop (llmpool.tool_loop): tool-running rounds per job before a last call without tools.
    agent_tool_max_steps: Annotated[int, Field(ge=1, le=50)] = 5
    # Endpoint ids or model names (case-insensitive) that can call tools, besides those TT-Studio
    # marks tool_calling_enabled and the OpenAI-compatible servers; "*" = every endpoint.
    agent_tool_endpoints: CommaList = Field(default_factory=list)
    # /poll_requests offers the configured built-in tools unless the client sends its own.
    agent_poll_builtin_tools: bool = True
    # --- built-in tools (llmpool.tools): offered only when configured ---
    agent_tool_timeout: Seconds = 30  # one tool run, unless its own timeout below is set
    agent_tool_max_result_bytes: Annotated[int, Field(ge=256, le=1024 * 1024)] = 16 * 1024  # to the LLM
    tavily_api_key: SecretStr | None = None  # web_search is offered with it
    agent_tavily_url: str = "https://api.tavily.com"
    agent_web_search_timeout: Seconds | None = None
    agent_web_search_max_results: Annotated[int, Field(ge=1, le=20)] = 5
    e2b_api_key: SecretStr | None = None  # run_code in E2B's sandbox is offered with it
    # E2B's own variables, read as its SDK reads them: the API at https://api.{E2B_DOMAIN} unless
    # E2B_API_URL says otherwise; the sandbox's Jupyter at https://49999-{id}.{domain} unless
    # E2B_SANDBOX_URL (one URL, the sandbox named in the E2b-Sandbox-Id header) says otherwise.
    e2b_domain: Annotated[str, Field(min_length=1)] = "e2b.app"
    e2b_api_url: str | None = None
    e2b_sandbox_url: str | None = None
    agent_e2b_template: Annotated[str, Field(min_length=1)] = "code-interpreter-v1"
    agent_run_code_timeout: Seconds | None = None
    # run_code on the worker host itself: off unless turned on; E2B wins when E2B_API_KEY is set.
    # Not a security boundary (README).
    agent_local_code_execution: bool = False
    agent_local_code_cpu_seconds: Annotated[int, Field(ge=1, le=3600)] = 10
    agent_local_code_memory_mb: Annotated[int, Field(ge=64, le=65536)] = 512
    agent_local_code_file_mb: Annotated[int, Field(ge=1, le=65536)] = 16
    agent_local_code_max_processes: Annotated[int, Field(ge=1, le=1024)] = 8
    agent_local_code_max_open_files: Annotated[int, Field(ge=16, le=65536)] = 64
    agent_local_code_user: Annotated[str, Field(min_length=1)] = "nobody"  # the child's user when the worker is root

    @field_validator("agent_priority_models", "agent_openai_servers", "agent_ollama_servers",
                     "agent_tool_endpoints", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("agent_openai_servers", "agent_ollama_servers")
    @classmethod
    def _server_urls(cls, value: list[str]) -> list[str]:
        # People copy OpenAI client base URLs (".../v1"); the sources add /v1 themselves.
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} must start with http:// or https://")
        return [_server_base(url) for url in value]

    @field_validator("agent_log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("agent_log_format", mode="before")
    @classmethod
    def _lower_log_format(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("agent_flower_basic_auth")
    @classmethod
    def _user_colon_password(cls, value: SecretStr | None) -> SecretStr | None:
        # The messages never repeat the value: it is a password.
        if value is None:
            return value
        user, sep, password = value.get_secret_value().partition(":")
        if not (sep and user.strip() and password):
            raise ValueError("must be user:password, both non-empty")
        if "," in value.get_secret_value():
            raise ValueError("may not contain a comma (Flower splits its basic auth option on commas)")
        return value

    @field_validator(
        "jwt_secret", "cloud_chat_ui_auth_token", "cloud_chat_ui_url", "cloud_model_name",
        "llm_container_name", "agent_flower_basic_auth", "agent_api_jwt_secret", "agent_api_jwt_public_key",
        "agent_api_jwt_audience", "agent_api_jwt_issuer", "tavily_api_key", "e2b_api_key", "e2b_api_url",
        "e2b_sandbox_url", mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # docker-compose passes `VAR=` for unset variables; treat that as not configured.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if value.startswith("sentinel://"):
            # kombu's form for several sentinels: sentinel://h1:26379;sentinel://h2:26379
            parse_sentinel_url(value)  # a ValueError names what is wrong
            return value
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss://, unix:// or sentinel://")
        return value

    @field_validator("agent_backend_url", "cloud_chat_ui_url", "agent_tavily_url", "e2b_api_url", "e2b_sandbox_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    @field_validator("agent_worker_pool")
    @classmethod
    def _pool_holds_concurrency(cls, value: str, info: ValidationInfo) -> str:
        concurrency = info.data.get("agent_worker_concurrency", 0)
        if value != "gevent" and concurrency > MAX_THREADS:
            raise ValueError(f"AGENT_WORKER_CONCURRENCY={concurrency} needs gevent (at most {MAX_THREADS} "
                             f"with {value})")
        return value

    @field_validator("agent_breaker_open_wait_max")
    @classmethod
    def _wait_cap(cls, value: float, info: ValidationInfo) -> float:
        if value < info.data.get("agent_breaker_open_wait", 0):
            raise ValueError("must be at least AGENT_BREAKER_OPEN_WAIT")
        return value

    @field_validator("agent_suspect_max")
    @classmethod
    def _suspect_cap(cls, value: float, info: ValidationInfo) -> float:
        if value < info.data.get("agent_suspect_floor", 0):
            raise ValueError("must be at least AGENT_SUSPECT_FLOOR")
        return value

    @field_validator("agent_overdue_factor")
    @classmethod
    def _overdue_factor(cls, value: float) -> float:
        if 0 < value < 1:
            raise ValueError("must be 0 (off) or at least 1: below 1 x p99 a usual first token is overdue")
        return value

    @field_validator("agent_endpoint_limits", mode="before")
    @classmethod
    def _limits_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}  # bad JSON: a ValueError naming it
        if isinstance(value, dict) and any(not str(key).strip() for key in value):
            raise ValueError("an empty key would match every endpoint")
        return value

    @field_validator("agent_model_aliases", mode="before")
    @classmethod
    def _aliases_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}  # bad JSON: a ValueError naming it
        if isinstance(value, dict):
            if any(not str(k).strip() or not str(v).strip() for k, v in value.items()):
                raise ValueError("aliases and the models they name must not be empty")
            return {str(k).strip().lower(): str(v).strip() for k, v in value.items()}
        return value

    @field_validator("agent_api_jwt_public_key")
    @classmethod
    def _public_key_pem(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A path is read here, so a missing file or a bad key stops start-up with the variable named.
        if value is None:
            return value
        if info.data.get("agent_api_jwt_secret") is not None:
            raise ValueError("set AGENT_API_JWT_SECRET or AGENT_API_JWT_PUBLIC_KEY, not both")
        return read_public_key(value)

    @field_validator("agent_model_fallbacks", mode="before")
    @classmethod
    def _fallbacks_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}  # bad JSON: a ValueError naming it
        if isinstance(value, dict):
            if any(not isinstance(v, list) or not all(isinstance(m, str) and m.strip() for m in v)
                   for v in value.values()):
                raise ValueError('each model names a list of fallback models, e.g. {"a": ["b"]}')
            return {str(k).strip().lower(): [m.strip() for m in v] for k, v in value.items()}
        return value

    def redacted(self) -> dict[str, Any]:
        """Every setting as plain JSON, secrets shown only as set or not."""
        data = self.model_dump(mode="json")
        for name in SECRET_FIELDS:
            data[name] = "***" if getattr(self, name) is not None else None
        return data

    @property
    def log_level(self) -> int:
        return logging.DEBUG if self.agent_debug_mode else getattr(logging, self.agent_log_level)


def _server_base(url: str) -> str:
    """A server's base URL without trailing slashes or a trailing /v1."""
    url = url.rstrip("/")
    return url[: -len("/v1")].rstrip("/") if url.endswith("/v1") else url


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, turning validation errors into one ConfigError."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False, include_input=False):
            variable = str(err["loc"][0]).upper() if err["loc"] else "settings"
            lines.append(f"Invalid value for {variable}: {err['msg']}")
        raise ConfigError("\n".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; `get_settings.cache_clear()` re-reads them."""
    return load_settings()


def settings_or_exit() -> Settings:
    """The settings, or a message naming each bad variable on stderr and exit status 2."""
    try:
        return get_settings()
    except ConfigError as exc:
        print(f"llmpool: configuration error\n{exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def config_issues(settings: Settings) -> list[str]:
    """The TT-Studio agent's configuration warnings, plus llmpool's own, that apply."""
    issues = []
    if settings.jwt_secret is None and settings.cloud_chat_ui_auth_token is None:
        issues.append(
            "WARNING: No authentication configured (neither JWT_SECRET nor CLOUD_CHAT_UI_AUTH_TOKEN)"
        )
    if settings.use_cloud_llm and settings.cloud_chat_ui_auth_token is None:
        issues.append("WARNING: Cloud LLM enabled but no CLOUD_CHAT_UI_AUTH_TOKEN provided")
    if settings.agent_health_check_interval < 10:
        issues.append("WARNING: Health check interval too low (minimum 10 seconds)")
    if settings.agent_health_check_timeout < 1:
        issues.append("WARNING: Health check timeout too low (minimum 1 second)")
    cloud_wanted = settings.use_cloud_llm or settings.agent_fallback_to_cloud
    if cloud_wanted and settings.cloud_chat_ui_url is None:
        issues.append("WARNING: Cloud LLM enabled but no CLOUD_CHAT_UI_URL provided")
    if settings.agent_first_token_timeout > settings.agent_request_timeout:
        issues.append(
            "WARNING: AGENT_FIRST_TOKEN_TIMEOUT is above AGENT_REQUEST_TIMEOUT (the total wins)"
        )
    if settings.agent_first_token_floor >= settings.agent_first_token_timeout:
        issues.append(
            "WARNING: AGENT_FIRST_TOKEN_FLOOR is not below AGENT_FIRST_TOKEN_TIMEOUT "
            "(first-token timeouts cannot adapt to an endpoint's TTFT)"
        )
    if settings.agent_api_jwt_secret is None and settings.agent_api_jwt_public_key is None:
        issues.append("WARNING: The API is open: no AGENT_API_JWT_SECRET or AGENT_API_JWT_PUBLIC_KEY, so anyone "
                      "who reaches it can pin models, reload the configuration and read any thread")
    elif settings.agent_api_jwt_secret is not None and len(settings.agent_api_jwt_secret.get_secret_value()) < 32:
        issues.append("WARNING: AGENT_API_JWT_SECRET is shorter than 32 characters (HS256 wants 256 bits)")
    return issues + _tool_issues(settings)


def _tool_issues(settings: Settings) -> list[str]:
    if settings.agent_local_code_execution and settings.e2b_api_key is None:
        return ["WARNING: AGENT_LOCAL_CODE_EXECUTION is on: run_code runs LLM-written code on the worker host, "
                "in a limited process that is not a security boundary"]
    return []


def issues_report(settings: Settings) -> str:
    """The configuration issues block printed at start, or "" when nothing is wrong."""
    issues = config_issues(settings)
    if not issues:
        return ""
    return "\n".join(["=== CONFIGURATION ISSUES ===", *issues, "============================"])


_reported = False


def print_issues_report_once(settings: Settings) -> None:
    """Print the issues report at most once per process (worker, beat, Flower, API, `up`)."""
    global _reported
    report = issues_report(settings)
    if report and not _reported:
        print(report, flush=True)
    _reported = True
