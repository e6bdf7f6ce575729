"""Model context policies: which part of its conversation an assistant keeps and sends.

    Assistant("writer", model=client, model_context=LastK(k=20))

An assistant stores only the messages its policy keeps, and sends exactly those (after its
system message) to the model. So with a bounded policy neither the stored record nor the
cost of one model call grows with the length of the task.

| policy                          | keeps                                                       |
| ------------------------------- | ----------------------------------------------------------- |
| `Unbounded()`                   | everything: grows with the task                             |
| `LastK(k)`                      | the last `k` messages                                       |
| `TokenLimited(max_tokens=None)` | the newest messages that fit (default: the context window)  |
| `HeadAndTail(head, tail)`       | the first `head` and the last `tail`; says how many it skipped |

No policy separates tool results from the assistant message that called the tool (the
model API rejects results whose call it was not shown): a kept window never starts with
tool results, and a kept head ends after the results of its last call. Policies are frozen
pydantic models with a ``kind``, so `ModelContext` is plain, serialisable data.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from .base import LLMMessage, ToolSpec

DEFAULT_CONTEXT_WINDOW = 8_192
"""The context window, in tokens, assumed for a client that does not declare one."""

_BYTES_PER_TOKEN = 3  # OpenAI tokenizers average ~4 bytes a token on English, ~3 on code/JSON
_TOKENS_PER_MESSAGE = 4  # the role and the delimiters around each message


@runtime_checkable
class HasContextWindow(Protocol):
    """A model client that declares its context window (optional for a `ModelClient`)."""

    context_window: int
    """How many tokens the model reads and writes in one call."""


def context_window(client: object) -> int:
    """The context window of `client` in tokens: its ``context_window``, else 8,192."""
    if isinstance(client, HasContextWindow):
        window = client.context_window
        if isinstance(window, int) and not isinstance(window, bool) and window > 0:
            return window
    return DEFAULT_CONTEXT_WINDOW


def estimate_tokens(message: LLMMessage) -> int:
    """An estimate of the tokens `message` takes in a prompt, with no tokenizer.

    UTF-8 bytes of the text, name and tool calls divided by 3, rounded up, plus 4 for the
    message itself. It is meant to err high: English takes about 4 bytes a token, code and
    JSON about 3; the surplus leaves room for the answer.
    """
    size = len(message.content.encode()) + len((message.name or "").encode())
    size += len((message.tool_call_id or "").encode())
    for call in message.tool_calls:
        size += len(call.id.encode()) + len(call.name.encode()) + len(call.arguments.encode())
    return -(-size // _BYTES_PER_TOKEN) + _TOKENS_PER_MESSAGE


def history_budget(window: int, system: LLMMessage, tools: Sequence[ToolSpec] = ()) -> int:
    """The tokens a conversation may fill in a `window`: what the system message and the
    tool specs (estimated like `estimate_tokens`) leave of it, never below zero."""
    specs = json.dumps([t.model_dump() for t in tools]) if tools else ""
    overhead = estimate_tokens(system) + -(-len(specs.encode()) // _BYTES_PER_TOKEN)
    return max(window - overhead, 0)


def _window_from(history: Sequence[LLMMessage], start: int, floor: int = 0) -> list[LLMMessage]:
    """``history[start:]``, never starting with tool results cut off from their call.

    Leading tool results are dropped; when nothing else is left (the newest messages are a
    call's results), the window starts at the call instead, but never before `floor`.
    """
    begin = start
    while begin < len(history) and history[begin].role == "tool":
        begin += 1
    if begin == len(history) and start < len(history):
        begin = start
        while begin > floor and history[begin].role == "tool":
            begin -= 1
        if history[begin].role == "tool":  # results whose call is not in `history` at all
            return []
    return list(history[begin:])


class _Policy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def keep(self, history: Sequence[LLMMessage], *, context_window: int) -> list[LLMMessage]:
        """The messages of `history` to keep (in order), given the tokens the history may
        fill (`context_window`: the model's window less the system message and tools)."""
        raise NotImplementedError

    def prompt(self, kept: Sequence[LLMMessage], *, skipped: int) -> list[LLMMessage]:
        """What the model is sent of `kept`, after `skipped` messages were dropped in all."""
        return list(kept)


class Unbounded(_Policy):
    """Keep and send the whole conversation (AutoGen's default).

    The stored record and the cost of every model call grow with the task, and a long task
    eventually overflows the model's context window: for short tasks and for tests.
    """

    kind: Literal["unbounded"] = "unbounded"

    def keep(self, history: Sequence[LLMMessage], *, context_window: int) -> list[LLMMessage]:
        """Everything."""
        return list(history)


class LastK(_Policy):
    """Keep the last `k` messages (fewer when the window would start with tool results;
    a call and its results when those are all that is newest)."""

    kind: Literal["last_k"] = "last_k"
    k: int = Field(ge=1)

    def keep(self, history: Sequence[LLMMessage], *, context_window: int) -> list[LLMMessage]:
        """The last `k` messages."""
        return _window_from(history, max(len(history) - self.k, 0))


class TokenLimited(_Policy):
    """Keep the newest messages whose estimated tokens (`estimate_tokens`) fit in
    `max_tokens`; None: in the model's context window, less the system message and tools.

    The newest message is kept even when it alone exceeds the limit (with its tool call, if
    it is a tool result): the model then answers, or fails with its own error, rather than
    being sent no conversation at all.
    """

    kind: Literal["token_limited"] = "token_limited"
    max_tokens: int | None = Field(default=None, ge=1)

    def keep(self, history: Sequence[LLMMessage], *, context_window: int) -> list[LLMMessage]:
        """The newest messages that fit."""
        limit = self.max_tokens if self.max_tokens is not None else context_window
        start, used = len(history), 0
        while start > 0:
            used += estimate_tokens(history[start - 1])
            if used > limit:
                break
            start -= 1
        if history and start == len(history):
            start -= 1
        return _window_from(history, start)


class HeadAndTail(_Policy):
    """Keep the first `head` messages (the task, usually) and the last `tail`.

    The model is sent a note between the two, "Skipped N messages.", counting every message
    dropped so far. A head that ends with a tool call keeps that call's results too.
    """

    kind: Literal["head_and_tail"] = "head_and_tail"
    head: int = Field(ge=0)
    tail: int = Field(ge=1)

    def keep(self, history: Sequence[LLMMessage], *, context_window: int) -> list[LLMMessage]:
        """The head and the tail."""
        head_end = self._head_end(history)
        if len(history) <= head_end + self.tail:
            return list(history)
        tail = _window_from(history, len(history) - self.tail, floor=head_end)
        return [*history[:head_end], *tail]

    def prompt(self, kept: Sequence[LLMMessage], *, skipped: int) -> list[LLMMessage]:
        """The head, a note saying how many messages were skipped, then the tail."""
        if not skipped:
            return list(kept)
        head_end = self._head_end(kept)
        plural = "" if skipped == 1 else "s"
        note = LLMMessage(role="user", content=f"Skipped {skipped} message{plural}.")
        return [*kept[:head_end], note, *kept[head_end:]]

    def _head_end(self, history: Sequence[LLMMessage]) -> int:
        end = min(self.head, len(history))
        while 0 < end < len(history) and history[end].role == "tool":
            end += 1
        return end


ModelContext = Annotated[
    Unbounded | LastK | TokenLimited | HeadAndTail, Field(discriminator="kind")
]
"""Any model context policy (a discriminated union on ``kind``)."""
