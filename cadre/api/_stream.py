"""A task's transcript as server-sent events, until the task ends.

    event: message   id: <n>   data: <MessageView JSON>     one per transcript entry
    event: status              data: {"status", "speaker", "prompt", "turn", "tokens"}
                               when any changes (a new prompt always has a new turn)
    event: end                 data: {"status", "result", "stop_reason"}   then the stream closes
    : keep-alive                                            a comment every `heartbeat` seconds

The stream polls the store (a point read of the task's manager), so it works in any host
and across processes. A client that reconnects with ``Last-Event-ID: n`` (EventSource
does so by itself) gets the messages after the n-th.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

from ..errors import CadreError
from ..teams.manager import FINISHED
from ..teams.messages import ChatMessage
from ._models import MessageView
from ._service import Service

log = logging.getLogger("cadre.api")


PAGE = 200
"""Transcript entries read from the log at a time."""


def message_view(index: int, message: ChatMessage) -> MessageView:
    """A transcript entry as the API shows it."""
    return MessageView(
        index=index,
        source=message.source,
        content=message.content,
        kind=message.kind,
        tokens=message.usage.total_tokens,
        usage=message.usage,
        tool_name=message.tool_name,
        is_error=message.is_error,
        handoff=message.handoff,
        at=message.at,
        via=message.via,
    )


def _event(name: str, data: str, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {data}\n\n"


async def events(
    service: Service,
    task_id: str,
    after: int,
    *,
    poll: float,
    heartbeat: float,
    max_seconds: float | None = None,
) -> AsyncIterator[str]:
    """The event stream of one task (see the module docstring).

    With `max_seconds`, a stream of a task still going closes after that long, without an
    `end` event; EventSource reconnects with ``Last-Event-ID`` and misses nothing. Hosts
    that buffer responses or cap their duration (Azure Functions) turn this into long
    polling.
    """
    yield "retry: 2000\n\n"
    started = time.monotonic()
    sent, shown, quiet_since = after, None, started
    while max_seconds is None or time.monotonic() - started < max_seconds:
        try:
            st = await service.state(task_id)
        except CadreError as exc:  # a store hiccup: say so, keep the stream, try again
            log.warning("stream of task %s: reading the store failed: %s", task_id, exc)
            yield ": store unavailable, retrying\n\n"
            await asyncio.sleep(max(poll, 1.0))
            continue
        # One chunk per read: fewer writes, and a client that hangs up mid-way costs one.
        # The state is read first: the log holds at least its `messages` entries.
        batch = []
        while sent < st.messages:
            try:
                page = await service.messages(task_id, sent, min(st.messages - sent, PAGE))
            except CadreError as exc:
                log.warning("stream of task %s: reading the log failed: %s", task_id, exc)
                break
            if not page:
                break
            batch += [
                _event("message", message_view(index, message).model_dump_json(), index + 1)
                for index, message in enumerate(page, start=sent)
            ]
            sent += len(page)
        now = (st.status, st.speaker, st.prompt, st.turn, st.usage.total_tokens)
        if now != shown:
            shown = now
            status = {
                "status": st.status,
                "speaker": st.speaker,
                "prompt": st.prompt,
                "turn": st.turn,
                "tokens": st.usage.total_tokens,
            }
            batch.append(_event("status", json.dumps(status)))
        if st.status in FINISHED:
            end = {"status": st.status, "result": st.result, "stop_reason": st.stop_reason}
            batch.append(_event("end", json.dumps(end)))
        if batch:
            yield "".join(batch)
            quiet_since = time.monotonic()
        if st.status in FINISHED:
            return
        if time.monotonic() - quiet_since >= heartbeat:
            yield ": keep-alive\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(poll)
