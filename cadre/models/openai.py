"""The OpenAI-API client: OpenAI, Azure OpenAI and any OpenAI-compatible endpoint.

- ``openai:<model>`` reads OPENAI_API_KEY and OPENAI_BASE_URL (optional);
- ``azure-openai:<deployment>`` reads AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_VERSION and
  AZURE_OPENAI_API_KEY; with no key it signs in with Entra ID (DefaultAzureCredential:
  managed identity in Azure, ``az login`` locally) through a bearer-token provider;
- ``openai-compatible:<model>@<base_url>`` (Ollama, vLLM, LM Studio) reads
  CADRE_MODEL_API_KEY (optional; local servers need none).

Every kind reads CADRE_MODEL_TIMEOUT (seconds, default 60) and CADRE_MODEL_MAX_RETRIES
(default 3): the SDK retries 408/409/429/5xx and connection errors with exponential
backoff (honouring ``retry-after``). A call that still fails is a `ModelError`; a 429 is a
`ModelThrottled` carrying the ``Retry-After``. Inside a `LimitedModel` call the SDK does not
retry 429s: the deployment's limiter does, pausing every caller (`cadre.models.limits`), so
the two retry loops never multiply; 408/409/5xx stay with the SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from ..errors import ConfigurationError, ModelError, ModelThrottled
from .base import FinishReason, LLMMessage, ModelResult, ToolCall, ToolSpec, Usage
from .limits import limiter_handles_throttling, retry_after

try:
    import openai
except ImportError:  # pragma: no cover - exercised only without the extra
    raise ConfigurationError(
        "the OpenAI model clients need the openai SDK: pip install -e '.[openai]'"
    ) from None

DEFAULT_AZURE_API_VERSION = "2024-10-21"
_ENTRA_SCOPE = "https://cognitiveservices.azure.com/.default"
_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "length": "length",
    "content_filter": "content_filter",
}


class OpenAIClient:
    """A `ModelClient` over the ``openai`` SDK's chat completions."""

    context_window = 128_000
    """The model's context window in tokens (gpt-4o's); set it on the client for another."""

    def __init__(self, sdk_client: Any, model: str, label: str) -> None:
        self._client = sdk_client
        self.model = model
        self._label = label

    @property
    def model_name(self) -> str:
        """``<kind>:<model>`` as configured."""
        return self._label

    @property
    def deployment(self) -> str:
        """What the provider's quota applies to: ``<kind>:<model>@<base URL>`` (the key of
        its limiter, `cadre.models.limits.limiter_for`)."""
        return f"{self._label}@{self._client.base_url}"

    @classmethod
    def openai(cls, model: str, **options: Any) -> OpenAIClient:
        """OpenAI (or a compatible server when `base_url` is given)."""
        sdk = openai.AsyncOpenAI(**_common(options))
        return cls(sdk, model, f"openai:{model}")

    @classmethod
    def azure(
        cls,
        deployment: str,
        *,
        endpoint: str,
        api_key: str | None = None,
        api_version: str = DEFAULT_AZURE_API_VERSION,
        azure_ad_token_provider: Any = None,
        **options: Any,
    ) -> OpenAIClient:
        """Azure OpenAI: an API key, or Entra ID (a bearer-token provider; default:
        DefaultAzureCredential, i.e. managed identity in Azure, `az login` locally)."""
        if not endpoint:
            raise ConfigurationError("azure-openai needs AZURE_OPENAI_ENDPOINT")
        if api_key is None and azure_ad_token_provider is None:
            from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider

            azure_ad_token_provider = get_bearer_token_provider(
                DefaultAzureCredential(), _ENTRA_SCOPE
            )
        sdk = openai.AsyncAzureOpenAI(
            azure_endpoint=endpoint,
            azure_deployment=deployment,
            api_version=api_version,
            api_key=api_key,
            azure_ad_token_provider=azure_ad_token_provider,
            **_common(options),
        )
        return cls(sdk, deployment, f"azure-openai:{deployment}")

    @classmethod
    def from_spec(cls, kind: str, rest: str, env: Mapping[str, str] | None = None) -> OpenAIClient:
        """The client a ``CADRE_MODEL`` value (already split at the first ``:``) names."""
        import os

        env = os.environ if env is None else env
        options: dict[str, Any] = {
            "timeout": float(env.get("CADRE_MODEL_TIMEOUT") or 60),
            "max_retries": int(env.get("CADRE_MODEL_MAX_RETRIES") or 3),
        }
        if kind == "azure-openai":
            return cls.azure(
                rest,
                endpoint=env.get("AZURE_OPENAI_ENDPOINT", ""),
                api_key=env.get("AZURE_OPENAI_API_KEY") or None,
                api_version=env.get("AZURE_OPENAI_API_VERSION") or DEFAULT_AZURE_API_VERSION,
                **options,
            )
        if kind == "openai-compatible":
            model, sep, base_url = rest.partition("@")
            if not sep or not model or not base_url:
                raise ConfigurationError(
                    f"CADRE_MODEL=openai-compatible:{rest}: use openai-compatible:<model>@<url>"
                )
            local_key = env.get("CADRE_MODEL_API_KEY") or "not-needed"
            client = cls.openai(model, api_key=local_key, base_url=base_url, **options)
            client._label = f"openai-compatible:{model}"
            return client
        key = env.get("OPENAI_API_KEY")
        if not key:
            raise ConfigurationError(f"CADRE_MODEL=openai:{rest} needs OPENAI_API_KEY")
        return cls.openai(rest, api_key=key, base_url=env.get("OPENAI_BASE_URL") or None, **options)

    async def create(
        self,
        messages: list[LLMMessage],
        tools: list[ToolSpec] | None = None,
        output_schema: type[BaseModel] | None = None,
    ) -> ModelResult:
        """One chat completion; SDK errors after its retries become `ModelError`."""
        request: dict[str, Any] = {"model": self.model, "messages": [_wire(m) for m in messages]}
        if tools:
            request["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in tools
            ]
        if output_schema is not None:
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": output_schema.__name__,
                    "schema": output_schema.model_json_schema(),
                },
            }
        try:
            response = await self._client.chat.completions.create(**request)
        except openai.RateLimitError as exc:
            raise ModelThrottled(
                f"{self._label}: {type(exc).__name__}: {exc}",
                retry_after=retry_after(exc.response.headers),
            ) from exc
        except openai.APIError as exc:
            raise ModelError(f"{self._label}: {type(exc).__name__}: {exc}") from exc
        if not response.choices:
            raise ModelError(f"{self._label}: the response has no choices")
        choice = response.choices[0]
        calls = tuple(
            ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments or "{}")
            for c in choice.message.tool_calls or ()
        )
        usage = response.usage
        return ModelResult(
            content=choice.message.content or "",
            tool_calls=calls,
            usage=Usage(
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
            ),
            finish_reason=_FINISH.get(choice.finish_reason or "", "unknown"),
            model=response.model or self.model,
        )

    async def close(self) -> None:
        """Close the SDK's HTTP client."""
        await self._client.close()


def _common(options: dict[str, Any]) -> dict[str, Any]:
    allowed = ("api_key", "base_url", "timeout", "max_retries", "http_client")
    unknown = set(options) - set(allowed)
    if unknown:
        raise TypeError(f"unknown OpenAI client options: {sorted(unknown)}")
    # Our own HTTP client (or the caller's) carries the hook below: the SDK has no option to
    # retry 5xx but not 429, and its `x-should-retry` response header is how to say so.
    http_client = options.get("http_client") or openai.DefaultAsyncHttpxClient()
    hooks = http_client.event_hooks
    if _leave_throttles_to_the_limiter not in hooks["response"]:
        hooks["response"].append(_leave_throttles_to_the_limiter)
        http_client.event_hooks = hooks
    return {**options, "http_client": http_client}


async def _leave_throttles_to_the_limiter(response: Any) -> None:
    """Inside a `LimitedModel` call a 429 goes back to the limiter at once (the SDK obeys
    ``x-should-retry``): it pauses the whole deployment and retries the call itself."""
    if response.status_code == 429 and limiter_handles_throttling():
        response.headers["x-should-retry"] = "false"


def _wire(message: LLMMessage) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    wire: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name and message.role == "user":
        wire["name"] = message.name
    if message.tool_calls:
        wire["content"] = message.content or None
        wire["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    return wire
