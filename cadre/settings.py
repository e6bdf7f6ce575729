"""Every setting Cadre reads from the environment, in one typed object.

| variable                   | default            | meaning                                        |
| -------------------------- | ------------------ | ---------------------------------------------- |
| CADRE_APP                  | agents             | modules to import for agents (comma-separated) |
| CADRE_STATE                | .cadre/cadre.db    | the SQLite file of the local runtime           |
| CADRE_MAX_ATTEMPTS         | 5                  | handler attempts before dead-lettering         |
| CADRE_RETRY_BASE_SECONDS   | 0.5                | first retry delay (doubles each attempt)       |
| CADRE_RETRY_MAX_SECONDS    | 60                 | longest retry delay                            |
| CADRE_SEEN_LIMIT           | 64                 | handled envelope ids remembered per agent      |
| CADRE_CONCURRENCY          | 1024               | steps one process runs at once (local, worker) |
| CADRE_RABBITMQ_URL         | amqp://guest:guest@127.0.0.1:5672/ | the workers' broker            |
| CADRE_POSTGRES_URL         | postgresql://postgres@127.0.0.1:5432/postgres | the workers' store  |
| CADRE_POSTGRES_PREFIX      | cadre_             | table name prefix in PostgreSQL                |
| CADRE_QUEUE_NAME           | cadre              | RabbitMQ exchange/queue name prefix            |
| CADRE_PARTITIONS           | 8                  | partition queues (same in every worker)        |
| CADRE_WORKER_INDEX         | 0                  | this worker's share: partitions p % count == i |
| CADRE_WORKER_COUNT         | 1                  | how many shares the partitions are split into  |
| CADRE_HEALTH_FILE          | (none)             | a JSON status file the worker rewrites every 2s|
| CADRE_LOCAL_DELIVERY       | true               | workers run messages for partitions they own   |
| CADRE_RELAY_AFTER_SECONDS  | 5                  | workers republish outboxes left this long      |
| CADRE_STEP_BATCH           | 32                 | queued messages for one agent run as one step  |
| CADRE_COSMOS_ENDPOINT      | (none)             | Cosmos URL (or CosmosDB__accountEndpoint)      |
| CADRE_COSMOS_KEY           | (none)             | Cosmos key; none: DefaultAzureCredential       |
| CADRE_COSMOS_DATABASE      | cadre              | Cosmos database name                           |
| CADRE_COSMOS_CONTAINER     | cadre              | Cosmos container (partition key /pk)           |
| CADRE_COSMOS_TTL_SECONDS   | (none)             | agents unwritten this long expire (Cosmos TTL) |
| ServiceBusConnection       | (none)             | Service Bus connection string (local work)     |
| ServiceBusConnection__fullyQualifiedNamespace | (none) | namespace host; DefaultAzureCredential |
| CADRE_SERVICEBUS_TOPIC     | cadre              | the Service Bus topic every envelope goes to   |
| CADRE_MODEL                | offline            | the team's model: see docs/teams.md            |
| CADRE_MODEL_MAX_CONCURRENT | 64                 | calls in flight per model deployment (0: any)  |
| CADRE_MODEL_RPM            | (none)             | requests a minute to the model deployment      |
| CADRE_MODEL_TPM            | (none)             | tokens a minute to the model deployment        |
| CADRE_API_KEY              | (none)             | `cadre serve`: key clients send as x-api-key   |
| CADRE_MAX_TASK_CHARS       | 20000              | HTTP API: longest task or input text (413)     |
| CADRE_FUNCTIONS_RETRY_WAIT_SECONDS | 30 | Functions: longest retry wait in one invocation |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigurationError

if TYPE_CHECKING:  # imported when used: reading settings must not load pydantic (cold start)
    from .models.limits import ModelQuota
    from .processing import RetryPolicy

DEFAULT_CONCURRENCY = 1024
"""Steps one process (the local runtime, a worker) runs at once. A step keeps its slot while
it waits on its model, so this is sized for steps that wait, bounded by the memory of the
steps under way rather than by the CPUs (docs/workers.md, "Sizing CADRE_CONCURRENCY")."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigurationError(f"{name}={value} must be at least {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise ConfigurationError(f"{name}={value} must not be negative")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name}={raw!r} is not true or false")


@dataclass(frozen=True)
class Settings:
    """Cadre's settings; `Settings.from_env()` reads them (see the module table)."""

    app_modules: tuple[str, ...] = ("agents",)
    state_path: Path = Path(".cadre/cadre.db")
    max_attempts: int = 5
    retry_base_seconds: float = 0.5
    retry_max_seconds: float = 60.0
    seen_limit: int = 64
    concurrency: int = DEFAULT_CONCURRENCY
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    postgres_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    postgres_prefix: str = "cadre_"
    queue_name: str = "cadre"
    partitions: int = 8
    worker_index: int = 0
    worker_count: int = 1
    health_file: Path | None = None
    local_delivery: bool = True
    relay_after_seconds: float = 5.0
    step_batch: int = 32
    cosmos_endpoint: str | None = None
    cosmos_key: str | None = None
    cosmos_database: str = "cadre"
    cosmos_container: str = "cadre"
    cosmos_ttl_seconds: int | None = None
    servicebus_connection: str | None = None
    servicebus_namespace: str | None = None
    servicebus_topic: str = "cadre"
    model: str = "offline"
    model_max_concurrent: int | None = 64
    model_requests_per_minute: int | None = None
    model_tokens_per_minute: int | None = None
    api_key: str | None = None
    max_task_chars: int = 20_000
    functions_retry_wait_seconds: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings; an invalid value is a `ConfigurationError` naming it."""
        env = os.environ if env is None else env
        modules = tuple(m.strip() for m in env.get("CADRE_APP", "agents").split(",") if m.strip())
        return cls(
            app_modules=modules,
            state_path=Path(env.get("CADRE_STATE") or ".cadre/cadre.db"),
            max_attempts=_int(env, "CADRE_MAX_ATTEMPTS", 5),
            retry_base_seconds=_float(env, "CADRE_RETRY_BASE_SECONDS", 0.5),
            retry_max_seconds=_float(env, "CADRE_RETRY_MAX_SECONDS", 60.0),
            seen_limit=_int(env, "CADRE_SEEN_LIMIT", 64),
            concurrency=_int(env, "CADRE_CONCURRENCY", DEFAULT_CONCURRENCY),
            rabbitmq_url=env.get("CADRE_RABBITMQ_URL") or cls.rabbitmq_url,
            postgres_dsn=env.get("CADRE_POSTGRES_URL")
            or env.get("CADRE_POSTGRES_DSN")
            or cls.postgres_dsn,
            postgres_prefix=env.get("CADRE_POSTGRES_PREFIX") or cls.postgres_prefix,
            queue_name=env.get("CADRE_QUEUE_NAME") or cls.queue_name,
            partitions=_int(env, "CADRE_PARTITIONS", 8),
            worker_index=_int(env, "CADRE_WORKER_INDEX", 0, minimum=0),
            worker_count=_int(env, "CADRE_WORKER_COUNT", 1),
            health_file=Path(env["CADRE_HEALTH_FILE"]) if env.get("CADRE_HEALTH_FILE") else None,
            local_delivery=_bool(env, "CADRE_LOCAL_DELIVERY", True),
            relay_after_seconds=_float(env, "CADRE_RELAY_AFTER_SECONDS", 5.0),
            step_batch=_int(env, "CADRE_STEP_BATCH", 32),
            cosmos_endpoint=env.get("CADRE_COSMOS_ENDPOINT")
            or env.get("CosmosDB__accountEndpoint")
            or None,
            cosmos_key=env.get("CADRE_COSMOS_KEY") or None,
            cosmos_database=env.get("CADRE_COSMOS_DATABASE") or cls.cosmos_database,
            cosmos_container=env.get("CADRE_COSMOS_CONTAINER") or cls.cosmos_container,
            cosmos_ttl_seconds=_int(env, "CADRE_COSMOS_TTL_SECONDS", 0) or None,
            servicebus_connection=env.get("ServiceBusConnection") or None,
            servicebus_namespace=env.get("ServiceBusConnection__fullyQualifiedNamespace") or None,
            servicebus_topic=env.get("CADRE_SERVICEBUS_TOPIC") or cls.servicebus_topic,
            model=env.get("CADRE_MODEL") or "offline",
            model_max_concurrent=_int(env, "CADRE_MODEL_MAX_CONCURRENT", 64, minimum=0) or None,
            model_requests_per_minute=_int(env, "CADRE_MODEL_RPM", 0, minimum=0) or None,
            model_tokens_per_minute=_int(env, "CADRE_MODEL_TPM", 0, minimum=0) or None,
            api_key=env.get("CADRE_API_KEY") or None,
            max_task_chars=_int(env, "CADRE_MAX_TASK_CHARS", 20_000),
            functions_retry_wait_seconds=_float(env, "CADRE_FUNCTIONS_RETRY_WAIT_SECONDS", 30.0),
        )

    def retry_policy(self) -> RetryPolicy:
        """The retry policy these settings describe."""
        from .processing import RetryPolicy

        return RetryPolicy(
            max_attempts=self.max_attempts,
            base_delay=self.retry_base_seconds,
            max_delay=self.retry_max_seconds,
        )

    def model_quota(self) -> ModelQuota:
        """The quota of the configured model's deployment (`cadre.models.limits`)."""
        from .models.limits import ModelQuota

        return ModelQuota(
            max_concurrent=self.model_max_concurrent,
            requests_per_minute=self.model_requests_per_minute,
            tokens_per_minute=self.model_tokens_per_minute,
        )
