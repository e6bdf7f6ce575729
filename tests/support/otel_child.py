"""A child process for the exporter tests: configure telemetry from the environment, run
one message through the local runtime, flush the exporters, print what was chosen."""

from __future__ import annotations

import asyncio

from opentelemetry import metrics, trace

from cadre import AgentId, LocalRuntime, observability
from tests.support.contracts import Add, make_registry


async def main() -> None:
    chosen = observability.configure()
    async with LocalRuntime(registry=make_registry()) as rt:
        await rt.send(AgentId("counter", "a"), Add(amount=1), reply_to=AgentId("recorder", "a"))
        await rt.run_until_idle()
    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        provider.force_flush()  # type: ignore[attr-defined]
        provider.shutdown()  # type: ignore[attr-defined]
    print(chosen, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
