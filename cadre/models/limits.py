"""Model quotas: one limiter per model deployment, shared by every agent in the process.

    quota = ModelQuota(requests_per_minute=900, tokens_per_minute=150_000)
    Assistant("writer", model=limited(OpenAIClient.azure("gpt-4o", endpoint=...), quota))

Providers publish a quota per deployment (Azure OpenAI and OpenAI: requests and tokens per
minute), and answer HTTP 429 past it. Steps run by the hundred; each waits for its model
call, so the quota is what bounds a team, and the steps must share it instead of racing
into a storm of throttled calls. So every client of a deployment wraps one `Limiter`
(`limiter_for(key)`), and a `LimitedModel` asks it before each call:

- at most ``max_concurrent`` calls in flight;
- ``requests_per_minute`` and ``tokens_per_minute`` as token buckets refilled continuously,
  holding at most `BURST_SECONDS` of the rate (Azure enforces its quotas over 1 to 10 s
  windows, not per minute). A call reserves an estimate of its tokens (UTF-8 bytes / 4 of
  its prompt, plus ``reserved_completion_tokens``), corrected by the real usage after;
- a 429 (`ModelThrottled`) pauses the whole deployment for its ``Retry-After``: every
  caller waits, then the call is retried, at most ``throttle_retries`` times.

Waiting happens before the call and holds nothing else: the step just awaits. Waiters are
served in arrival order and only the first watches the clock, so a pause costs one timer,
not one per step. Time waited is a ``cadre.model.limiter.wait`` event on the current span
(the call's ``chat`` span) and a data point of the histogram of that name. Quotas are
per process: with N processes on one deployment, give each 1/N of it (a 429 still pauses
the one that hit it).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigurationError, ModelThrottled
from .base import LLMMessage, ModelClient, ModelResult, ToolSpec

BURST_SECONDS = 10.0
"""A bucket holds this many seconds of its rate (at least one request)."""

WAIT_EVENT = "cadre.model.limiter.wait"
THROTTLED_EVENT = "cadre.model.throttled"

_EPSILON = 1e-9
_MAX_BACKOFF_SECONDS = 30.0
_limited_call: ContextVar[bool] = ContextVar("cadre_limited_call", default=False)


class ModelQuota(BaseModel):
    """What one process may ask of a model deployment; None means no limit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_concurrent: int | None = Field(default=64, ge=1)
    """Calls in flight at once."""
    requests_per_minute: int | None = Field(default=None, ge=1)
    """The deployment's RPM (Azure: 6 per 1,000 TPM of a standard deployment)."""
    tokens_per_minute: int | None = Field(default=None, ge=1)
    """The deployment's TPM, prompt and completion tokens together."""
    reserved_completion_tokens: int = Field(default=1_000, ge=0)
    """Tokens reserved for each answer before a call (the real usage corrects it after)."""
    throttle_retries: int = Field(default=3, ge=0)
    """How many times a throttled call is retried (after the pause) before it fails."""
    max_pause_seconds: float = Field(default=60.0, gt=0)
    """A longer pause fails calls at once (`ModelThrottled`) instead of holding the steps:
    the host retries them later with its backoff."""


@dataclass(frozen=True)
class Permit:
    """One call's place at the deployment: the tokens it reserved and the seconds it waited."""

    tokens: int
    waited: float


class _Bucket:
    """A token bucket: `per_minute` refilled continuously, holding `BURST_SECONDS` of it.

    The level may go below zero when a call used more than it reserved: a debt the next
    callers wait off."""

    def __init__(self, per_minute: int, now: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(self.rate * BURST_SECONDS, 1.0)
        self.level = self.capacity
        self._stamp = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait(self, amount: float, now: float) -> float:
        """Seconds until `amount` is there (0: now)."""
        self.refill(now)
        short = amount - self.level
        return short / self.rate if short > _EPSILON else 0.0


class Limiter:
    """The calls one model deployment takes from this process, within its `ModelQuota`.

    `acquire` before a call, `release` after it with the tokens it used, `pause` when the
    deployment answered 429. Usable from one event loop at a time (a registry entry outlives
    `asyncio.run`, as in tests, and works in the next loop); not from several threads at once.
    """

    def __init__(
        self,
        quota: ModelQuota | None = None,
        *,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.quota = quota or ModelQuota()
        self.name = name
        self._clock = clock
        self._sleep = sleep
        now = clock()
        rpm, tpm = self.quota.requests_per_minute, self.quota.tokens_per_minute
        self._requests = _Bucket(rpm, now) if rpm else None
        self._tokens = _Bucket(tpm, now) if tpm else None
        self._in_flight = 0
        self._paused_until = -math.inf
        self._queue: deque[asyncio.Future[None]] = deque()
        self._changed: asyncio.Future[None] | None = None

    @property
    def in_flight(self) -> int:
        """Calls between `acquire` and `release`."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Callers waiting in `acquire`."""
        return len(self._queue)

    async def acquire(self, tokens: int = 0) -> Permit:
        """Wait (in arrival order) until a call of about `tokens` fits the quota, and take
        its place. Raises `ModelThrottled` while a pause longer than ``max_pause_seconds``
        lasts. A cancelled waiter leaves the queue and takes nothing."""
        if self._tokens is not None:
            tokens = min(tokens, math.floor(self._tokens.capacity))  # else it never fits
        start = self._clock()
        if not self._queue and self._try_take(tokens) == 0.0:
            return Permit(tokens, 0.0)
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(turn)
        try:
            if self._queue[0] is not turn:
                await turn  # the waiter ahead wakes this one when it leaves
            while (delay := self._try_take(tokens)) > 0:
                await self._wait(delay)
        finally:
            self._queue.remove(turn)
            if self._queue:
                _wake(self._queue[0])
        return Permit(tokens, self._clock() - start)

    def release(self, permit: Permit, used_tokens: int | None = None) -> None:
        """A call ended: free its place; `used_tokens` (the real usage; None: unknown, keep
        the reservation) corrects what it reserved."""
        self._in_flight -= 1
        if self._tokens is not None and used_tokens is not None:
            self._tokens.refill(self._clock())
            self._tokens.level = min(
                self._tokens.capacity, self._tokens.level + permit.tokens - used_tokens
            )
        if self._changed is not None:
            _wake(self._changed)

    def pause(self, seconds: float) -> None:
        """The deployment throttled a call: no caller starts one for `seconds`."""
        self._paused_until = max(self._paused_until, self._clock() + max(seconds, 0.0))

    def _try_take(self, tokens: int) -> float:
        """Take a place for a call of `tokens` and return 0, or return how long to wait
        (infinity: until a call ends)."""
        now = self._clock()
        paused = self._paused_until - now
        if paused > _EPSILON:
            if paused > self.quota.max_pause_seconds:
                raise ModelThrottled(
                    f"{self.name or 'model'}: throttled (HTTP 429) for {paused:.0f} s more, "
                    f"longer than max_pause_seconds={self.quota.max_pause_seconds:g}; "
                    "the step is retried later, or raise the deployment's quota",
                    retry_after=paused,
                )
            return paused
        limit = self.quota.max_concurrent
        if limit is not None and self._in_flight >= limit:
            return math.inf
        wait = 0.0
        if self._requests is not None:
            wait = self._requests.wait(1, now)
        if self._tokens is not None:
            wait = max(wait, self._tokens.wait(tokens, now))
        if wait > 0:
            return wait
        self._in_flight += 1
        if self._requests is not None:
            self._requests.level -= 1
        if self._tokens is not None:
            self._tokens.level -= tokens
        return 0.0

    async def _wait(self, delay: float) -> None:
        """Until `delay` has passed or a call has ended (a place or tokens came back)."""
        changed = self._changed = asyncio.get_running_loop().create_future()
        try:
            if math.isinf(delay):
                await changed
                return
            sleeper = asyncio.ensure_future(self._sleep(delay))
            try:
                await asyncio.wait((sleeper, changed), return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
        finally:
            if self._changed is changed:
                self._changed = None


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done() and not future.get_loop().is_closed():
        future.set_result(None)


_limiters: dict[str, Limiter] = {}


def limiter_for(key: str, quota: ModelQuota | None = None) -> Limiter:
    """The process's limiter of deployment `key`, made on first use (default `ModelQuota()`).

    One deployment has one quota: a different `quota` for a key that has a limiter is a
    `ConfigurationError`; None takes the limiter as it is."""
    limiter = _limiters.get(key)
    if limiter is None:
        limiter = _limiters[key] = Limiter(quota, name=key)
    elif quota is not None and quota != limiter.quota:
        raise ConfigurationError(
            f"model deployment {key!r} already has a limiter with {limiter.quota!r}, not "
            f"{quota!r}: give every client of one deployment the same quota"
        )
    return limiter


@runtime_checkable
class HasDeployment(Protocol):
    """A model client that names what its provider's quota applies to."""

    @property
    def deployment(self) -> str:
        """The deployment's key, e.g. ``azure-openai:gpt-4o@https://res.openai.azure.com/...``."""
        ...


def deployment_key(client: ModelClient) -> str:
    """The registry key of `client`'s deployment: its ``deployment``, else its model name."""
    return client.deployment if isinstance(client, HasDeployment) else client.model_name


def limited(
    client: ModelClient, quota: ModelQuota | None = None, *, key: str | None = None
) -> LimitedModel:
    """`client` behind the process's limiter of its deployment (`deployment_key`)."""
    return LimitedModel(client, limiter_for(key or deployment_key(client), quota))


def limiter_handles_throttling() -> bool:
    """True inside a `LimitedModel` call: the client must not retry a 429 itself (the
    limiter pauses the deployment and retries; two retry loops would multiply)."""
    return _limited_call.get()


class LimitedModel:
    """A `ModelClient` that waits for its deployment's `Limiter` before each call, and
    retries a throttled call (`ModelThrottled`) after the deployment's pause."""

    def __init__(self, client: ModelClient, limiter: Limiter) -> None:
        self.client = client
        self.limiter = limiter

    @property
    def model_name(self) -> str:
        """The wrapped client's label."""
        return self.client.model_name

    @property
    def context_window(self) -> int:
        """The wrapped client's context window (absent when it declares none); setting it
        sets the wrapped client's."""
        from .context import HasContextWindow

        if isinstance(self.client, HasContextWindow):
            return self.client.context_window
        raise AttributeError("context_window")

    @context_window.setter
    def context_window(self, tokens: int) -> None:
        client: Any = self.client  # an optional attribute, not part of `ModelClient`
        client.context_window = tokens

    async def create(
        self,
        messages: list[LLMMessage],
        tools: list[ToolSpec] | None = None,
        output_schema: type[BaseModel] | None = None,
    ) -> ModelResult:
        """One completion within the quota; after ``throttle_retries`` retries of a
        throttled call, its `ModelThrottled` (a `ModelError`) propagates."""
        quota = self.limiter.quota
        estimate = estimate_prompt_tokens(messages, tools, output_schema)
        estimate += quota.reserved_completion_tokens
        attempt = 0
        while True:
            permit = await self.limiter.acquire(estimate)
            if permit.waited > 0:
                _waited(self.limiter, permit.waited, attempt)
            reset = _limited_call.set(True)
            try:
                result = await self.client.create(
                    messages, tools=tools, output_schema=output_schema
                )
            except ModelThrottled as exc:
                self.limiter.release(permit, used_tokens=0)  # a refused call used no tokens
                pause = exc.retry_after if exc.retry_after is not None else _backoff(attempt)
                self.limiter.pause(pause)
                _event(THROTTLED_EVENT, self.limiter, retry_after_seconds=pause, attempt=attempt)
                if attempt >= quota.throttle_retries:
                    raise
                attempt += 1
                continue
            except BaseException:
                self.limiter.release(permit)
                raise
            finally:
                _limited_call.reset(reset)
            self.limiter.release(permit, used_tokens=result.usage.total_tokens or None)
            return result


def estimate_prompt_tokens(
    messages: list[LLMMessage],
    tools: list[ToolSpec] | None = None,
    output_schema: type[BaseModel] | None = None,
) -> int:
    """A cheap estimate of a prompt's tokens: UTF-8 bytes / 4, plus 4 tokens a message."""
    size = 0
    for message in messages:
        size += 16 + len(message.content.encode())
        for call in message.tool_calls:
            size += len(call.name) + len(call.arguments.encode())
    for tool in tools or ():
        size += len(tool.name) + len(tool.description.encode()) + len(json.dumps(tool.parameters))
    if output_schema is not None:
        size += len(json.dumps(output_schema.model_json_schema()))
    return -(-size // 4)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds a throttled caller should wait, from a 429's headers: ``retry-after-ms``,
    ``retry-after`` (seconds or an HTTP date), else OpenAI's ``x-ratelimit-reset-requests``
    / ``-tokens`` (``1s``, ``6m0s``) of an exhausted limit. None: the headers do not say."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(float(value) * scale, 0.0)
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        if when.tzinfo is not None:
            return max(when.timestamp() - time.time(), 0.0)
    resets = [
        _duration(headers.get(f"x-ratelimit-reset-{kind}", ""))
        for kind in ("requests", "tokens")
        if headers.get(f"x-ratelimit-remaining-{kind}", "0") == "0"
    ]
    known = [r for r in resets if r is not None]
    return max(known) if known else None


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(text: str) -> float | None:
    """``6m0s``, ``1.5s``, ``20ms`` in seconds; None when it is not one."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def _backoff(attempt: int) -> float:
    """The pause after a 429 that did not say how long: 1, 2, 4, ... s, at most 30 s."""
    return min(2.0**attempt, _MAX_BACKOFF_SECONDS)


def _waited(limiter: Limiter, seconds: float, attempt: int) -> None:
    """A call waited `seconds` for `limiter`: an event on the current span, and a data point
    of the ``cadre.model.limiter.wait`` histogram."""
    from .. import telemetry

    _event(WAIT_EVENT, limiter, waited_seconds=seconds, attempt=attempt)
    telemetry.current().record_limiter_wait(seconds, limiter.name)


def _event(name: str, limiter: Limiter, **values: Any) -> None:
    from .. import telemetry  # loaded when a call waits or is throttled, not at import

    attributes: dict[str, Any] = {"cadre.model.deployment": limiter.name}
    attributes.update({f"cadre.model.limiter.{k}": v for k, v in values.items()})
    telemetry.current().event(name, attributes)
