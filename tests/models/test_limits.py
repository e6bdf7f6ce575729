"""Model quotas: one limiter per deployment, shared by every agent, pausing them all on a 429.

Timing runs on a fake clock: only the first waiter of a limiter sleeps, so a fake sleep that
advances the clock at once is exact, and no assertion depends on the machine's speed."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel, ValidationError

from cadre import telemetry
from cadre.errors import ConfigurationError, ModelError, ModelThrottled
from cadre.models import (
    LimitedModel,
    Limiter,
    LLMMessage,
    ModelQuota,
    ModelResult,
    OfflineClient,
    ToolSpec,
    Usage,
    client_from_spec,
    limited,
    limiter_for,
    traced,
)
from cadre.models.limits import estimate_prompt_tokens, retry_after
from cadre.models.openai import OpenAIClient
from cadre.settings import Settings
from cadre.telemetry import Telemetry

pytestmark = pytest.mark.timeout(30)

HI = [LLMMessage(role="user", content="hi")]


class FakeTime:
    """A clock that sleeping advances at once."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class Meter:
    """How many calls run at once, across every client that shares it."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0


class Scripted:
    """A model client answering from a script (an exception to raise, or the total tokens to
    report; then plain answers), noting when each call started and how many ran at once."""

    def __init__(
        self,
        time: FakeTime,
        *script: Exception | int,
        tokens: int = 10,
        yields: int = 0,
        meter: Meter | None = None,
    ) -> None:
        self.time = time
        self.script = list(script)
        self.tokens = tokens
        self.yields = yields
        self.meter = meter or Meter()
        self.calls: list[float] = []

    @property
    def model_name(self) -> str:
        return "fake:model"

    async def create(
        self,
        messages: list[LLMMessage],
        tools: list[ToolSpec] | None = None,
        output_schema: type[BaseModel] | None = None,
    ) -> ModelResult:
        self.calls.append(self.time.now)
        step = self.script.pop(0) if self.script else self.tokens
        if isinstance(step, Exception):
            raise step
        self.meter.in_flight += 1
        self.meter.peak = max(self.meter.peak, self.meter.in_flight)
        for _ in range(self.yields):  # others run meanwhile, as they would during a real call
            await asyncio.sleep(0)
        self.meter.in_flight -= 1
        return ModelResult(content=f"answer {len(self.calls)}", usage=Usage(prompt_tokens=step))


def fake_limiter(time: FakeTime, **quota: Any) -> Limiter:
    return Limiter(ModelQuota(**quota), name="fake", clock=time.clock, sleep=time.sleep)


def throttled(seconds: float | None) -> ModelThrottled:
    return ModelThrottled("429 Too Many Requests", retry_after=seconds)


async def test_a_429_pauses_every_caller_of_the_deployment_for_its_retry_after() -> None:
    time = FakeTime()
    client = Scripted(time, throttled(2.0))
    limiter = fake_limiter(time)
    writer, critic = LimitedModel(client, limiter), LimitedModel(client, limiter)
    results = await asyncio.gather(
        writer.create(HI), critic.create(HI), critic.create(HI), writer.create(HI)
    )
    # the first call was refused at 0; nobody called again before the deployment's 2 s
    assert client.calls == [0.0, 2.0, 2.0, 2.0, 2.0]
    assert time.sleeps == [2.0]  # one timer for the whole deployment, not one per caller
    assert sorted(r.content for r in results) == [f"answer {i}" for i in range(2, 6)]
    assert (limiter.in_flight, limiter.waiting) == (0, 0)


async def test_throttled_calls_are_retried_a_bounded_number_of_times_then_fail() -> None:
    time = FakeTime()
    client = Scripted(time, *(throttled(1.0) for _ in range(5)))
    model = LimitedModel(client, fake_limiter(time, throttle_retries=2))
    with pytest.raises(ModelError) as raised:
        await model.create(HI)
    assert isinstance(raised.value, ModelThrottled)
    assert client.calls == [0.0, 1.0, 2.0]  # the call and two retries, each after its pause
    # a 429 that does not say how long backs off 1, 2, 4 ... s
    time = FakeTime()
    client = Scripted(time, throttled(None), throttled(None))
    assert (await LimitedModel(client, fake_limiter(time)).create(HI)).content == "answer 3"
    assert client.calls == [0.0, 1.0, 3.0]


async def test_a_pause_longer_than_the_limit_fails_calls_at_once_instead_of_holding_steps() -> None:
    time = FakeTime()
    client = Scripted(time, throttled(300.0))
    limiter = fake_limiter(time, max_pause_seconds=60)
    model = LimitedModel(client, limiter)
    with pytest.raises(ModelThrottled, match="max_pause_seconds") as raised:
        await model.create(HI)
    assert raised.value.retry_after == pytest.approx(300.0)
    with pytest.raises(ModelThrottled):  # another step of the deployment: no call, no wait
        await model.create(HI)
    assert client.calls == [0.0] and time.sleeps == []
    time.now = 250.0  # once the pause is short enough, callers wait it out
    assert (await model.create(HI)).content == "answer 2"
    assert client.calls == [0.0, 300.0]


async def test_two_assistants_on_one_limiter_never_exceed_max_concurrent() -> None:
    time = FakeTime()
    limiter, meter = fake_limiter(time, max_concurrent=3), Meter()
    writer_client = Scripted(time, yields=3, meter=meter)
    critic_client = Scripted(time, yields=3, meter=meter)
    writer, critic = LimitedModel(writer_client, limiter), LimitedModel(critic_client, limiter)
    results = await asyncio.gather(*(m.create(HI) for m in [writer, critic] * 10))
    assert len(results) == 20
    assert len(writer_client.calls) == len(critic_client.calls) == 10
    assert meter.peak == 3  # the two assistants together, never more
    assert (limiter.in_flight, limiter.waiting) == (0, 0)
    unlimited, meter = Limiter(ModelQuota(max_concurrent=None)), Meter()
    many = LimitedModel(Scripted(time, yields=3, meter=meter), unlimited)
    await asyncio.gather(*(many.create(HI) for _ in range(20)))
    assert meter.peak == 20  # the same calls without the cap: the cap above did the work


async def test_requests_per_minute_hold_across_assistants() -> None:
    time = FakeTime()
    limiter = fake_limiter(time, requests_per_minute=60)  # 1 a second, a burst of 10
    writer_client, critic_client = Scripted(time), Scripted(time)
    writer, critic = LimitedModel(writer_client, limiter), LimitedModel(critic_client, limiter)
    await asyncio.gather(*(m.create(HI) for m in [writer, critic] * 12))
    starts = sorted(writer_client.calls + critic_client.calls)
    assert starts == pytest.approx([0.0] * 10 + [float(s) for s in range(1, 15)])
    for n, start in enumerate(starts, 1):  # never more than the burst plus the rate
        assert n <= 10 + start * 1.0 + 1e-6


async def test_tokens_per_minute_hold_across_assistants() -> None:
    time = FakeTime()
    # 10 tokens a second, a burst of 100; each call reserves 4 (prompt) + 50 and uses 54
    limiter = fake_limiter(time, tokens_per_minute=600, reserved_completion_tokens=50)
    empty = [LLMMessage(role="user")]
    assert estimate_prompt_tokens(empty) == 4
    writer_client, critic_client = Scripted(time, tokens=54), Scripted(time, tokens=54)
    writer, critic = LimitedModel(writer_client, limiter), LimitedModel(critic_client, limiter)
    await asyncio.gather(*(m.create(empty) for m in [writer, critic] * 5))
    starts = sorted(writer_client.calls + critic_client.calls)
    for n, start in enumerate(starts, 1):
        assert n * 54 <= 100 + 10 * start + 1e-6
    assert starts[-1] == pytest.approx((10 * 54 - 100) / 10)  # as soon as the rate allows


async def test_the_token_reservation_is_corrected_by_the_real_usage() -> None:
    time = FakeTime()
    limiter = fake_limiter(time, tokens_per_minute=600, reserved_completion_tokens=96)
    client = Scripted(time, tokens=10)  # reserves 100, the whole burst; uses 10
    model = LimitedModel(client, limiter)
    await model.create([LLMMessage(role="user")])
    await model.create([LLMMessage(role="user")])
    assert client.calls == [0.0, pytest.approx(1.0)]  # 90 came back: 10 tokens to wait for, not 100


async def test_a_cancelled_waiter_gives_up_its_place() -> None:
    limiter = Limiter(ModelQuota(max_concurrent=1))
    permit = await limiter.acquire()
    first, second = (
        asyncio.ensure_future(limiter.acquire()),
        asyncio.ensure_future(limiter.acquire()),
    )
    await asyncio.sleep(0)
    assert limiter.waiting == 2
    first.cancel()
    limiter.release(permit)
    limiter.release(await asyncio.wait_for(second, 5))
    assert (limiter.in_flight, limiter.waiting) == (0, 0) and first.cancelled()


async def test_time_waited_is_an_event_on_the_model_call_span() -> None:
    time = FakeTime()
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    limiter = fake_limiter(time)
    limiter.pause(2.5)
    with telemetry.installed(Telemetry(provider, MeterProvider())):
        await traced.create(LimitedModel(Scripted(time), limiter), HI, agent_name="writer")
    (span,) = spans.get_finished_spans()
    (event,) = [e for e in span.events if e.name == "cadre.model.limiter.wait"]
    assert event.attributes is not None
    assert event.attributes["cadre.model.limiter.waited_seconds"] == 2.5
    assert event.attributes["cadre.model.deployment"] == "fake"
    provider.shutdown()


def test_quotas_refuse_unknown_and_impossible_limits() -> None:
    with pytest.raises(ValidationError, match="requests_per_minte"):
        ModelQuota(requests_per_minte=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        ModelQuota(max_concurrent=0)
    with pytest.raises(ValidationError):
        ModelQuota().max_concurrent = 1  # type: ignore[misc]
    assert ModelQuota() == ModelQuota(max_concurrent=64)


async def test_one_limiter_per_deployment_in_the_process() -> None:
    key = f"azure-openai:dep-{uuid.uuid4().hex[:8]}"
    quota = ModelQuota(requests_per_minute=300, tokens_per_minute=150_000)
    assert limiter_for(key, quota) is limiter_for(key) is limiter_for(key, quota)
    with pytest.raises(ConfigurationError, match="same quota"):
        limiter_for(key, ModelQuota(requests_per_minute=30))
    writer, critic = limited(OfflineClient(), key=key), limited(OfflineClient(), key=key)
    assert writer.limiter is critic.limiter is limiter_for(key)
    assert writer.model_name == "offline"


async def test_the_configured_model_comes_behind_its_deployments_limiter() -> None:
    spec = f"openai-compatible:m{uuid.uuid4().hex[:8]}@http://127.0.0.1:9/v1"
    env = {"CADRE_MODEL_MAX_CONCURRENT": "8", "CADRE_MODEL_RPM": "300", "CADRE_MODEL_TPM": "9000"}
    writer, critic = client_from_spec(spec, env=env), client_from_spec(spec, env=env)
    assert isinstance(writer, LimitedModel) and isinstance(critic, LimitedModel)
    assert writer.limiter is critic.limiter  # two assistants, one deployment, one quota
    assert writer.limiter.quota == ModelQuota(
        max_concurrent=8, requests_per_minute=300, tokens_per_minute=9000
    )
    assert writer.limiter.name == f"{writer.model_name}@http://127.0.0.1:9/v1/"
    for model in (writer, critic):
        assert isinstance(model.client, OpenAIClient)
        await model.client.close()
    assert isinstance(client_from_spec("offline", env=env), OfflineClient)
    assert Settings.from_env({}).model_quota() == ModelQuota(max_concurrent=64)
    assert (
        Settings.from_env({"CADRE_MODEL_MAX_CONCURRENT": "0"}).model_quota().max_concurrent is None
    )
    with pytest.raises(ConfigurationError, match="CADRE_MODEL_RPM"):
        Settings.from_env({"CADRE_MODEL_RPM": "fast"})


def test_the_wrapper_keeps_what_the_client_declares() -> None:
    from cadre.models.context import context_window

    limiter = Limiter()
    assert context_window(LimitedModel(OfflineClient(), limiter)) == OfflineClient.context_window
    assert not hasattr(LimitedModel(Scripted(FakeTime()), limiter), "context_window")


def test_retry_after_reads_what_providers_send() -> None:
    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({"retry-after-ms": "1500", "retry-after": "2"}) == 1.5
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    reset = {"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0.5s"}
    requests_out = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-remaining-tokens": "900"}
    assert retry_after({**reset, **requests_out}) == 1.0  # the reset of the exhausted limit
    tokens_out = {"x-ratelimit-remaining-requests": "5", "x-ratelimit-remaining-tokens": "0"}
    assert retry_after({**reset, **tokens_out}) == 360.5
    assert retry_after(reset) == 360.5  # not saying which: the longer
    assert retry_after({"retry-after": "soon"}) is None and retry_after({}) is None


class ThrottlingServer:
    """A local chat-completions endpoint that answers its first request with 429 and
    ``Retry-After: 1``, the others with a completion; it keeps every request body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                server.bodies.append(
                    json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                )
                if len(server.bodies) == 1:
                    self.answer(429, {"error": {"message": "slow down"}}, {"Retry-After": "1"})
                else:
                    self.answer(200, completion("pong"), {})

            def answer(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in {**headers, "Content-Type": "application/json"}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)


def completion(text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-test",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


@pytest.fixture
def throttling_server() -> Iterator[ThrottlingServer]:
    server = ThrottlingServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()
    server.thread.join(5)


async def test_a_real_http_429_is_retried_once_by_the_limiter_not_by_the_sdk(
    throttling_server: ThrottlingServer,
) -> None:
    time = FakeTime()
    # the SDK may retry twice: inside a LimitedModel it leaves the 429 to the limiter
    client = OpenAIClient.openai(
        "gpt-test", api_key="k", base_url=throttling_server.url, max_retries=2, timeout=10
    )
    limiter = fake_limiter(time, tokens_per_minute=60_000)
    result = await LimitedModel(client, limiter).create(HI)
    await client.close()
    assert result.content == "pong" and result.usage.total_tokens == 18
    assert len(throttling_server.bodies) == 2  # the refused call and one retry
    assert time.sleeps == [1.0]  # after the Retry-After
    assert throttling_server.bodies[1]["messages"] == [{"role": "user", "content": "hi"}]


async def test_outside_a_limiter_a_429_is_a_model_throttled_with_its_retry_after(
    throttling_server: ThrottlingServer,
) -> None:
    client = OpenAIClient.openai(
        "gpt-test", api_key="k", base_url=throttling_server.url, max_retries=0
    )
    with pytest.raises(ModelThrottled, match="RateLimitError") as raised:
        await client.create(HI)
    await client.close()
    assert raised.value.retry_after == 1.0 and len(throttling_server.bodies) == 1


async def test_time_waited_is_a_data_point_of_the_limiter_wait_histogram() -> None:
    time = FakeTime()
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    limiter = fake_limiter(time)
    limiter.pause(2.5)
    with telemetry.installed(Telemetry(TracerProvider(), meters)):
        await LimitedModel(Scripted(time), limiter).create(HI)  # waits out the pause
        await LimitedModel(Scripted(time), limiter).create(HI)  # does not wait: no data point
    data = reader.get_metrics_data()
    assert data is not None
    (point,) = [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "cadre.model.limiter.wait"
        for point in metric.data.data_points
    ]
    assert dict(point.attributes or {}) == {"cadre.model.deployment": "fake"}
    assert (point.count, point.sum) == (1, 2.5)  # type: ignore[union-attr]
    meters.shutdown()


def test_setting_the_context_window_sets_the_wrapped_clients() -> None:
    from cadre.models.context import context_window

    model = LimitedModel(OfflineClient(), Limiter())
    model.context_window = 32_768
    assert context_window(model.client) == model.context_window == 32_768
    assert OfflineClient.context_window == 4_096  # the instance's, not the class's
