"""Message contracts and agents used across the test suites (registered once, by name)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from cadre import Agent, AgentId, Context, Message, Registry, TopicId, handler


class Add(Message, name="test.Add"):
    amount: int


class Added(Message, name="test.Added"):
    total: int


class Note(Message, name="test.Note"):
    text: str


class Fail(Message, name="test.Fail"):
    times: int


class Remind(Message, name="test.Remind"):
    text: str
    seconds: float


class Broadcast(Message, name="test.Broadcast"):
    text: str


class Counter(Agent):
    """Adds amounts, replies with the running total, fails on demand."""

    class State(BaseModel):
        total: int = 0
        failures: int = 0

    @handler
    async def add(self, msg: Add, ctx: Context) -> Added:
        self.state.total += msg.amount
        return Added(total=self.state.total)

    @handler
    async def fail(self, msg: Fail, ctx: Context) -> None:
        # The count of failures is lost with the failed step (state is not saved), so the
        # attempt number decides: fail while attempt <= times.
        if ctx.envelope.attempt <= msg.times:
            raise RuntimeError(f"failing on purpose (attempt {ctx.envelope.attempt})")
        self.state.total += 1000

    @handler
    async def remind(self, msg: Remind, ctx: Context) -> None:
        ctx.schedule(
            Note(text=msg.text),
            to=AgentId("recorder", ctx.agent_id.key),
            after=timedelta(seconds=msg.seconds),
        )


class Recorder(Agent):
    """Records every total and note it receives, in order."""

    class State(BaseModel):
        totals: list[int] = []
        notes: list[str] = []

    @handler
    async def on_added(self, msg: Added, ctx: Context) -> None:
        self.state.totals.append(msg.total)

    @handler
    async def on_note(self, msg: Note | Broadcast, ctx: Context) -> None:
        self.state.notes.append(msg.text)


class Announcer(Agent):
    """Publishes a broadcast to the 'news' topic for its key."""

    @handler
    async def on_note(self, msg: Note, ctx: Context) -> None:
        ctx.publish(TopicId("news", ctx.agent_id.key), Broadcast(text=msg.text))


def make_registry() -> Registry:
    """A registry with the test agents: counter, recorder, announcer; two news subscribers."""
    from cadre import TypeSubscription

    registry = Registry()
    registry.register(Counter, type="counter")
    registry.register(Recorder, type="recorder")
    registry.register(Announcer, type="announcer")
    registry.register(Recorder, type="listener")
    registry.add_subscription(TypeSubscription("news", "recorder"))
    registry.add_subscription(TypeSubscription("news", "listener"))
    registry.add_subscription(TypeSubscription("news", "announcer"))
    return registry
