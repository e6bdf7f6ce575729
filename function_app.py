"""The Azure Functions app: the HTTP API and one Service Bus trigger per agent type.

Python v2 programming model. Adding an agent in ``agents/`` adds its function: the list comes
from the registry (through ``cadre-functions.json``, a cached copy checked against the app's
sources, so a cold start does not import the app; see `cadre.hosts.functions_index`).

Every function only decodes and hands over to `cadre.hosts.functions`, which builds the
runtime (Cosmos DB store, Service Bus transport, the app's agents) on first use.
Names, settings and host.json are explained in docs/azure.md.
"""

from pathlib import Path

import azure.functions as func

from cadre.hosts.functions_index import CONNECTION, AgentFunction, load_index
from cadre.settings import Settings

settings = Settings.from_env()
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.function_name("http_api")
@app.route(
    route="{*path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
    auth_level=func.AuthLevel.FUNCTION,
)
async def http_api(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    """The HTTP API (`cadre.api`): submit tasks, read status, give input, cancel, health."""
    from cadre.hosts.functions import handle_http

    response: func.HttpResponse = await handle_http(req, context)
    return response


def add_agent_function(spec: AgentFunction) -> None:
    """Register the session-enabled Service Bus topic trigger of one agent type."""

    async def trigger(msg: func.ServiceBusMessage, context: func.Context) -> None:
        from cadre.hosts.functions import deliver

        await deliver(msg, context)

    trigger.__name__ = trigger.__qualname__ = spec.function_name
    trigger.__doc__ = f"Messages for agent type {spec.agent_type!r}."
    app.function_name(spec.function_name)(
        app.service_bus_topic_trigger(
            arg_name="msg",
            connection=CONNECTION,
            topic_name=settings.azure.servicebus_topic,
            subscription_name=spec.subscription,
            is_sessions_enabled=True,
        )(trigger)
    )


index = load_index(Path(__file__).resolve().parent, settings.app_modules)
for spec in index.functions:
    add_agent_function(spec)
