"""Model spans of the real OpenAI-API client (its SDK, HTTP answered in-process), and the
decision labels of the swarm and orchestrator patterns."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from cadre import LocalRuntime, Registry
from cadre.errors import ModelError
from cadre.models import LLMMessage, OfflineClient, ReplayClient, traced
from cadre.models.openai import OpenAIClient
from cadre.teams import Assistant, MagenticOneTeam, MaxMessages, SwarmTeam, Tasks
from tests.models.test_openai import Recorder, http, ok

from .conftest import Otel

try:
    import httpx2 as httpx
except ImportError:  # pragma: no cover - older SDKs
    import httpx  # type: ignore[no-redef]


def test_describe_names_the_provider_and_the_request_model() -> None:
    azure = OpenAIClient.azure("my-gpt", endpoint="https://r.openai.azure.com", api_key="k")
    assert traced.describe(azure) == ("az.ai.openai", "my-gpt")
    assert traced.describe(OpenAIClient.openai("gpt-4o", api_key="k")) == ("openai", "gpt-4o")
    assert traced.describe(OfflineClient()) == ("cadre.offline", "offline")
    assert traced.describe(ReplayClient([], name="gpt-4o")) == ("cadre.replay", "gpt-4o")


async def test_an_openai_call_is_a_chat_span_with_the_response_model_and_usage(otel: Otel) -> None:
    recorder = Recorder(ok({"role": "assistant", "content": "hello"}))
    client = OpenAIClient.openai("gpt-4o", api_key="k", http_client=http(recorder), max_retries=0)
    messages = [LLMMessage(role="user", content="hi")]
    await traced.create(client, messages, agent_type="writer", agent_name="writer")
    await client.close()
    [span] = otel.finished()
    assert span.name == "chat gpt-4o" and span.kind is SpanKind.CLIENT
    attrs = span.attributes or {}
    assert attrs["gen_ai.system"] == "openai" and attrs["gen_ai.request.model"] == "gpt-4o"
    assert attrs["gen_ai.response.model"] == "gpt-test"  # what the service says it ran
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (11, 7)
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    tokens = {
        a["gen_ai.token.type"]: n for a, n in otel.histogram_sums("gen_ai.client.token.usage")
    }
    assert tokens == {"input": 11, "output": 7}


async def test_a_failed_model_call_marks_its_span(otel: Otel) -> None:
    recorder = Recorder(httpx.Response(400, json={"error": {"message": "bad request"}}))
    client = OpenAIClient.openai("gpt-4o", api_key="k", http_client=http(recorder), max_retries=0)
    with pytest.raises(ModelError):
        await traced.create(client, [LLMMessage(role="user", content="hi")])
    await client.close()
    [span] = otel.finished()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "ModelError"  # type: ignore[index]
    assert otel.histogram_sums("gen_ai.client.token.usage") == []


@pytest.fixture
async def runtime(otel: Otel) -> AsyncIterator[tuple[LocalRuntime, Registry]]:
    registry = Registry()
    async with LocalRuntime(registry=registry) as rt:
        yield rt, registry


def selections(otel: Otel) -> list[tuple[object, object]]:
    found = [
        (e.timestamp, e.attributes or {})
        for s in otel.finished()
        for e in s.events
        if e.name == "cadre.team.speaker_selected"
    ]
    return [
        (a["cadre.team.speaker"], a["cadre.team.selected_by"])
        for _, a in sorted(found, key=lambda p: p[0])
    ]


async def test_swarm_decisions_name_the_hand_off(
    otel: Otel, runtime: tuple[LocalRuntime, Registry]
) -> None:
    rt, registry = runtime
    offline = OfflineClient()
    team = SwarmTeam(
        "desk",
        [
            Assistant("desk", model=offline, handoffs=["flights"]),
            Assistant("flights", model=offline, handoffs=["desk"]),
        ],
        termination=MaxMessages(max_messages=12),
    ).register(registry)
    await Tasks(rt).submit(team, "Book a flight")
    await rt.run_until_idle()
    picks = selections(otel)
    assert picks[:3] == [
        ("desk", "swarm first participant"),
        ("flights", "swarm hand-off"),
        ("desk", "swarm hand-off"),
    ]


async def test_orchestrator_decisions_say_ledger_or_fallback(
    otel: Otel, runtime: tuple[LocalRuntime, Registry]
) -> None:
    rt, registry = runtime
    ledger = {
        "is_request_satisfied": False,
        "is_in_loop": False,
        "is_progress_being_made": True,
        "next_speaker": "writer",
        "instruction_or_question": "write",
    }
    orchestrator = ReplayClient(
        [
            "facts",
            "plan",
            json.dumps(ledger),
            "not json",
            json.dumps(ledger | {"is_request_satisfied": True}),
            "done",
        ],
        name="planner-model",
    )
    writer = Assistant("writer", model=ReplayClient(["draft", "draft 2"]))
    team = MagenticOneTeam("m", [writer], model=orchestrator).register(registry)
    await Tasks(rt).submit(team, "Write")
    await rt.run_until_idle()
    assert selections(otel) == [
        ("writer", "orchestrator progress ledger"),
        ("writer", "orchestrator fallback (invalid progress ledger)"),
    ]
    chats = [s for s in otel.finished() if s.name == "chat planner-model"]
    assert len(chats) == 6
    assert {s.attributes["gen_ai.agent.name"] for s in chats} == {"orchestrator"}  # type: ignore[index]
