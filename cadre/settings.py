"""Every setting Cadre reads from the environment, in one typed object of groups.

`Settings.from_env()` reads them all. Each host reads its own group (`settings.local`,
`settings.workers`, `settings.azure` and `settings.functions`, `settings.api`); every host
reads the app's settings (the top level) and `settings.retry`. A group's field is named
after its variable. Each setting has one default, the field's default in its group
(`WorkerConfig` and the runtimes take theirs from here).

The app's (every host), at the top level:

| variable                   | default            | meaning                                        |
| -------------------------- | ------------------ | ---------------------------------------------- |
| CADRE_APP                  | agents             | modules to import for agents (comma-separated) |
| CADRE_SEEN_LIMIT           | 64                 | handled envelope ids kept in an agent's record |
| CADRE_MODEL                | offline            | the team's model: see docs/teams.md            |
| CADRE_MODEL_MAX_CONCURRENT | 64                 | calls in flight per model deployment (0: any)  |
| CADRE_MODEL_RPM            | (none)             | requests a minute to the model deployment      |
| CADRE_MODEL_TPM            | (none)             | tokens a minute to the model deployment        |

Retries (every host), `settings.retry` (`max_attempts`, `base_seconds`, `max_seconds`):

| variable                   | default            | meaning                                        |
| -------------------------- | ------------------ | ---------------------------------------------- |
| CADRE_MAX_ATTEMPTS         | 5                  | handler attempts before dead-lettering         |
| CADRE_RETRY_BASE_SECONDS   | 0.5                | first retry delay (doubles each attempt)       |
| CADRE_RETRY_MAX_SECONDS    | 60                 | longest retry delay                            |

The local runtime (`cadre run`, `send`, `serve`), `settings.local`:

| variable                   | default            | meaning                                        |
| -------------------------- | ------------------ | ---------------------------------------------- |
| CADRE_STATE                | .cadre/cadre.db    | the SQLite file of the local runtime           |
| CADRE_CONCURRENCY          | 1024               | steps one process runs at once (local, worker) |

The workers (`cadre worker`, `cadre serve --transport rabbitmq`), `settings.workers`
(`CADRE_CONCURRENCY` too; `CADRE_POSTGRES_URL` is `postgres_dsn`):

| variable                   | default            | meaning                                        |
| -------------------------- | ------------------ | ---------------------------------------------- |
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
| CADRE_DELIVERY_LIMIT       | (none)             | quorum queues: dead-letter after N deliveries  |
| CADRE_HEALTH_PORT          | (none)             | worker probes: /livez, /readyz, /status        |

Azure (the Functions host), `settings.azure`, and `settings.functions` (`retry_wait_seconds`):

| variable                   | default            | meaning                                        |
| -------------------------- | ------------------ | ---------------------------------------------- |
| CADRE_COSMOS_ENDPOINT      | (none)             | Cosmos URL (or CosmosDB__accountEndpoint)      |
| CADRE_COSMOS_KEY           | (none)             | Cosmos key; none: DefaultAzureCredential       |
| CADRE_COSMOS_DATABASE      | cadre              | Cosmos database name                           |
| CADRE_COSMOS_CONTAINER     | cadre              | Cosmos container (partition key /pk)           |
| CADRE_COSMOS_TTL_SECONDS   | (none)             | agents unwritten this long expire (Cosmos TTL) |
| ServiceBusConnection       | (none)             | Service Bus connection string (local work)     |
| ServiceBusConnection__fullyQualifiedNamespace | (none) | namespace host; DefaultAzureCredential |
| CADRE_SERVICEBUS_TOPIC     | cadre              | the Service Bus topic every envelope goes to   |
| CADRE_FUNCTIONS_RETRY_WAIT_SECONDS | 30 | Functions: longest retry wait in one invocation |

The HTTP API (`cadre serve`, the Functions app), `settings.api` (`key`, `max_task_chars`):

| variable                   | default            | meaning                                        |
| -------------------------- | ------------------ | ---------------------------------------------- |
| CADRE_API_KEY              | (none)             | `cadre serve`: key clients send as x-api-key   |
| CADRE_MAX_TASK_CHARS       | 20000              | HTTP API: longest task or input text (413)     |
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError

if TYPE_CHECKING:  # imported when used: reading settings must not load pydantic (cold start)
    from .models.limits import ModelQuota
    from .retry import RetryPolicy

DEFAULT_CONCURRENCY = 1024
"""Steps one process (the local runtime, a worker) runs at once. A step keeps its slot while
it waits on its model, so this is sized for steps that wait, bounded by the memory of the
steps under way rather than by the CPUs (docs/workers.md, "Sizing CADRE_CONCURRENCY")."""

DEFAULT_SEEN_LIMIT = 64
"""Handled envelope ids each agent keeps in its record (``CADRE_SEEN_LIMIT``); older ones
are kept by the store (see `cadre.step`)."""


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


def _optional_int(env: Mapping[str, str], name: str, minimum: int) -> int | None:
    """`_int` of a setting that is off (None) unless set."""
    if not env.get(name):
        return None
    return _int(env, name, 0, minimum=minimum)


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
class RetrySettings:
    """Handler retries, in every host (``CADRE_MAX_ATTEMPTS``, ``CADRE_RETRY_*``)."""

    max_attempts: int = 5
    base_seconds: float = 0.5
    max_seconds: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RetrySettings:
        return cls(
            max_attempts=_int(env, "CADRE_MAX_ATTEMPTS", cls.max_attempts),
            base_seconds=_float(env, "CADRE_RETRY_BASE_SECONDS", cls.base_seconds),
            max_seconds=_float(env, "CADRE_RETRY_MAX_SECONDS", cls.max_seconds),
        )

    def policy(self) -> RetryPolicy:
        """The retry policy these settings describe."""
        from .retry import RetryPolicy

        return RetryPolicy(
            max_attempts=self.max_attempts, base_delay=self.base_seconds, max_delay=self.max_seconds
        )


@dataclass(frozen=True)
class LocalSettings:
    """The local runtime's (``CADRE_STATE``, ``CADRE_CONCURRENCY``)."""

    state_path: Path = Path(".cadre/cadre.db")
    concurrency: int = DEFAULT_CONCURRENCY

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LocalSettings:
        return cls(
            state_path=Path(env.get("CADRE_STATE") or cls.state_path),
            concurrency=_int(env, "CADRE_CONCURRENCY", cls.concurrency),
        )


@dataclass(frozen=True)
class WorkersSettings:
    """The self-hosted workers' (RabbitMQ, PostgreSQL, `cadre worker`)."""

    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    postgres_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    postgres_prefix: str = "cadre_"
    queue_name: str = "cadre"
    partitions: int = 8
    concurrency: int = DEFAULT_CONCURRENCY
    worker_index: int = 0
    worker_count: int = 1
    health_file: Path | None = None
    local_delivery: bool = True
    relay_after_seconds: float = 5.0
    step_batch: int = 32
    delivery_limit: int | None = None
    health_port: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WorkersSettings:
        health = env.get("CADRE_HEALTH_FILE")
        return cls(
            rabbitmq_url=env.get("CADRE_RABBITMQ_URL") or cls.rabbitmq_url,
            postgres_dsn=env.get("CADRE_POSTGRES_URL")
            or env.get("CADRE_POSTGRES_DSN")
            or cls.postgres_dsn,
            postgres_prefix=env.get("CADRE_POSTGRES_PREFIX") or cls.postgres_prefix,
            queue_name=env.get("CADRE_QUEUE_NAME") or cls.queue_name,
            partitions=_int(env, "CADRE_PARTITIONS", cls.partitions),
            concurrency=_int(env, "CADRE_CONCURRENCY", cls.concurrency),
            worker_index=_int(env, "CADRE_WORKER_INDEX", cls.worker_index, minimum=0),
            worker_count=_int(env, "CADRE_WORKER_COUNT", cls.worker_count),
            health_file=Path(health) if health else cls.health_file,
            local_delivery=_bool(env, "CADRE_LOCAL_DELIVERY", cls.local_delivery),
            relay_after_seconds=_float(env, "CADRE_RELAY_AFTER_SECONDS", cls.relay_after_seconds),
            step_batch=_int(env, "CADRE_STEP_BATCH", cls.step_batch),
            delivery_limit=_optional_int(env, "CADRE_DELIVERY_LIMIT", minimum=1),
            health_port=_optional_int(env, "CADRE_HEALTH_PORT", minimum=0),
        )


@dataclass(frozen=True)
class AzureSettings:
    """Cosmos DB and Service Bus (the Functions host); `cadre.stores.cosmos.shared_store`
    and `cadre.transports.servicebus.shared_transport` read this group."""

    cosmos_endpoint: str | None = None
    cosmos_key: str | None = None
    cosmos_database: str = "cadre"
    cosmos_container: str = "cadre"
    cosmos_ttl_seconds: int | None = None
    servicebus_connection: str | None = None
    servicebus_namespace: str | None = None
    servicebus_topic: str = "cadre"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AzureSettings:
        return cls(
            cosmos_endpoint=env.get("CADRE_COSMOS_ENDPOINT")
            or env.get("CosmosDB__accountEndpoint")
            or cls.cosmos_endpoint,
            cosmos_key=env.get("CADRE_COSMOS_KEY") or cls.cosmos_key,
            cosmos_database=env.get("CADRE_COSMOS_DATABASE") or cls.cosmos_database,
            cosmos_container=env.get("CADRE_COSMOS_CONTAINER") or cls.cosmos_container,
            cosmos_ttl_seconds=_int(env, "CADRE_COSMOS_TTL_SECONDS", 0) or cls.cosmos_ttl_seconds,
            servicebus_connection=env.get("ServiceBusConnection") or cls.servicebus_connection,
            servicebus_namespace=env.get("ServiceBusConnection__fullyQualifiedNamespace")
            or cls.servicebus_namespace,
            servicebus_topic=env.get("CADRE_SERVICEBUS_TOPIC") or cls.servicebus_topic,
        )


@dataclass(frozen=True)
class FunctionsSettings:
    """The Functions host's own (``CADRE_FUNCTIONS_*``)."""

    retry_wait_seconds: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FunctionsSettings:
        wait = _float(env, "CADRE_FUNCTIONS_RETRY_WAIT_SECONDS", cls.retry_wait_seconds)
        return cls(retry_wait_seconds=wait)


@dataclass(frozen=True)
class ApiSettings:
    """The HTTP API's (``CADRE_API_KEY``, ``CADRE_MAX_TASK_CHARS``), in every host that
    serves it."""

    key: str | None = None
    max_task_chars: int = 20_000

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ApiSettings:
        return cls(
            key=env.get("CADRE_API_KEY") or cls.key,
            max_task_chars=_int(env, "CADRE_MAX_TASK_CHARS", cls.max_task_chars),
        )


@dataclass(frozen=True)
class Settings:
    """Cadre's settings: the app's at the top, each host's in its group (see the module
    table); `Settings.from_env()` reads them, `replace` changes some."""

    app_modules: tuple[str, ...] = ("agents",)
    seen_limit: int = DEFAULT_SEEN_LIMIT
    model: str = "offline"
    model_max_concurrent: int | None = 64
    model_requests_per_minute: int | None = None
    model_tokens_per_minute: int | None = None
    retry: RetrySettings = field(default_factory=RetrySettings)
    local: LocalSettings = field(default_factory=LocalSettings)
    workers: WorkersSettings = field(default_factory=WorkersSettings)
    azure: AzureSettings = field(default_factory=AzureSettings)
    functions: FunctionsSettings = field(default_factory=FunctionsSettings)
    api: ApiSettings = field(default_factory=ApiSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings; an invalid value is a `ConfigurationError` naming it."""
        env = os.environ if env is None else env
        modules = tuple(m.strip() for m in env.get("CADRE_APP", "agents").split(",") if m.strip())
        max_concurrent = _int(env, "CADRE_MODEL_MAX_CONCURRENT", 64, minimum=0)
        return cls(
            app_modules=modules,
            seen_limit=_int(env, "CADRE_SEEN_LIMIT", cls.seen_limit),
            model=env.get("CADRE_MODEL") or cls.model,
            model_max_concurrent=max_concurrent or None,
            model_requests_per_minute=_int(env, "CADRE_MODEL_RPM", 0, minimum=0) or None,
            model_tokens_per_minute=_int(env, "CADRE_MODEL_TPM", 0, minimum=0) or None,
            retry=RetrySettings.from_env(env),
            local=LocalSettings.from_env(env),
            workers=WorkersSettings.from_env(env),
            azure=AzureSettings.from_env(env),
            functions=FunctionsSettings.from_env(env),
            api=ApiSettings.from_env(env),
        )

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes`: top-level fields by name, a group's as ``group__field``
        (``settings.replace(local__state_path=Path("x.db"))``)."""
        top: dict[str, Any] = {}
        groups: dict[str, dict[str, Any]] = {}
        for name, value in changes.items():
            group, _, attribute = name.partition("__")
            if attribute:
                groups.setdefault(group, {})[attribute] = value
            else:
                top[name] = value
        for group, values in groups.items():
            top[group] = dataclasses.replace(getattr(self, group), **values)
        return dataclasses.replace(self, **top)

    def model_quota(self) -> ModelQuota:
        """The quota of the configured model's deployment (`cadre.models.limits`)."""
        from .models.limits import ModelQuota

        return ModelQuota(
            max_concurrent=self.model_max_concurrent,
            requests_per_minute=self.model_requests_per_minute,
            tokens_per_minute=self.model_tokens_per_minute,
        )

    if not TYPE_CHECKING:  # the flat names of before the groups, for code written then

        def __getattr__(self, name: str) -> Any:
            place = _FLAT.get(name)
            if place is None:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            return getattr(getattr(self, place[0]), place[1])


_FLAT = {
    "state_path": ("local", "state_path"),
    "max_attempts": ("retry", "max_attempts"),
    "retry_base_seconds": ("retry", "base_seconds"),
    "retry_max_seconds": ("retry", "max_seconds"),
    "retry_policy": ("retry", "policy"),
    "api_key": ("api", "key"),
    "max_task_chars": ("api", "max_task_chars"),
    "functions_retry_wait_seconds": ("functions", "retry_wait_seconds"),
    **{f.name: ("azure", f.name) for f in dataclasses.fields(AzureSettings)},
    **{f.name: ("workers", f.name) for f in dataclasses.fields(WorkersSettings)},
    "concurrency": ("local", "concurrency"),  # the same variable as the workers'
}
"""Where each setting of the flat `Settings` of before the groups went (read-only)."""
