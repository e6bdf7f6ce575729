"""Agents: a class with a typed state model and handlers routed by their message annotation.

    class Counter(Agent, type="counter"):
        class State(BaseModel):
            total: int = 0

        @handler
        async def add(self, msg: Add, ctx: Context) -> None:
            self.state.total += msg.amount

Routing picks the handler whose annotated type is the most specific base of the message's
class (so a handler for a base class receives its subclasses, and a subclass handler wins);
``msg: A | B`` registers one handler for both. A class with ``type=`` joins the default
registry; without it the class is a base for other agents.
"""

from __future__ import annotations

import builtins
import inspect
import types
import typing
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Union

from pydantic import BaseModel

from .errors import ContractError, NoHandler
from .messages import Message

if TYPE_CHECKING:
    from .context import Context
    from .ids import AgentId

HandlerFn = Callable[[Any, Any, "Context"], Awaitable[Any]]

_HANDLER_MARK = "__cadre_handler__"


def handler(fn: HandlerFn) -> HandlerFn:
    """Mark an ``async def name(self, msg: SomeMessage, ctx: Context)`` method as a handler."""
    if not inspect.iscoroutinefunction(fn):
        raise ContractError(f"handler {fn.__qualname__} must be declared with 'async def'")
    setattr(fn, _HANDLER_MARK, True)
    return fn


class EmptyState(BaseModel):
    """The state of an agent that keeps none."""


def _message_types(fn: HandlerFn, owner: type) -> tuple[type[Message], ...]:
    params = list(inspect.signature(fn).parameters)
    if len(params) != 3:
        raise ContractError(
            f"handler {owner.__qualname__}.{fn.__name__} must take (self, msg, ctx)"
        )
    try:
        hints = typing.get_type_hints(fn)
    except NameError as exc:
        raise ContractError(
            f"cannot resolve the annotations of {owner.__qualname__}.{fn.__name__}: {exc}; "
            "declare message classes at module level"
        ) from exc
    annotation = hints.get(params[1])
    if annotation is None:
        raise ContractError(
            f"handler {owner.__qualname__}.{fn.__name__}: annotate the message parameter "
            f"{params[1]!r} with its Message class"
        )
    origin = typing.get_origin(annotation)
    members = typing.get_args(annotation) if origin in (Union, types.UnionType) else (annotation,)
    for member in members:
        if not (isinstance(member, type) and issubclass(member, Message)):
            raise ContractError(
                f"handler {owner.__qualname__}.{fn.__name__}: {member!r} is not a Message class"
            )
    return members


class Agent:
    """Base of every agent. One instance handles one message, then is discarded.

    `state` is an instance of the class's `State` model, loaded before the handler runs
    and saved after it returns. Handlers never await other agents: they call `ctx.send`,
    `ctx.publish`, `ctx.reply` and `ctx.schedule`, which collect outgoing messages that are
    published only once the new state is stored.
    """

    State: ClassVar[type[BaseModel]] = EmptyState
    agent_type: ClassVar[str] = ""
    subscribe_to: ClassVar[tuple[str, ...]] = ()
    _handlers: ClassVar[dict[type[Message], HandlerFn]] = {}
    _routes: ClassVar[dict[type, HandlerFn | None]] = {}

    def __init_subclass__(
        cls,
        *,
        type: str | None = None,
        subscribe: Iterable[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        table: dict[builtins.type[Message], HandlerFn] = {}
        for klass in reversed(cls.__mro__):
            own: dict[builtins.type[Message], str] = {}
            for attr, fn in vars(klass).items():
                if not getattr(fn, _HANDLER_MARK, False):
                    continue
                for msg_type in _message_types(fn, klass):
                    if msg_type in own:
                        raise ContractError(
                            f"{klass.__qualname__} has two handlers for {msg_type.__qualname__}: "
                            f"{own[msg_type]} and {attr}"
                        )
                    own[msg_type] = attr
                    table[msg_type] = fn
        cls._handlers = table
        cls._routes = {}
        cls.subscribe_to = tuple(subscribe) or cls.subscribe_to
        if type is not None:
            cls.agent_type = type
            from .registry import default_registry

            default_registry.register(cls)

    def __init__(self, agent_id: AgentId, state: BaseModel) -> None:
        self.id = agent_id
        self.state: Any = state

    @classmethod
    def handler_for(cls, msg_type: type, agent_type: str | None = None) -> HandlerFn:
        """The handler for a message class (most specific base wins); `NoHandler` if none.

        `agent_type` names the registered type in the error (a class can serve several).
        """
        try:
            fn = cls._routes[msg_type]
        except KeyError:
            fn = next((cls._handlers[k] for k in msg_type.__mro__ if k in cls._handlers), None)
            cls._routes[msg_type] = fn
        if fn is None:
            handled = ", ".join(sorted(k.message_name or k.__qualname__ for k in cls._handlers))
            name = agent_type or cls.agent_type or cls.__qualname__
            raise NoHandler(
                f"agent type {name!r} has no handler for "
                f"{getattr(msg_type, 'message_name', '') or msg_type.__qualname__!r} "
                f"(it handles: {handled or 'nothing'})"
            )
        return fn

    @classmethod
    def handled_messages(cls) -> list[type[Message]]:
        """The message classes this agent type declares handlers for."""
        return list(cls._handlers)

    async def dispatch(self, msg: Message, ctx: Context) -> None:
        """Run the handler for `msg`; a returned message is sent as the reply."""
        fn = self.handler_for(type(msg))
        result = await fn(self, msg, ctx)
        if result is not None:
            if not isinstance(result, Message):
                raise TypeError(
                    f"handler {fn.__qualname__} returned {type(result).__name__}; return a "
                    "Message (sent as the reply) or None"
                )
            ctx.reply(result)
