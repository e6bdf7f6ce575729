"""A team is a manager agent: its state (participants' turns, usage, termination) lives in
the store, keyed by the task id; its transcript is the manager's append-only log.

    team = RoundRobinTeam("review", [writer, critic], termination=TextMention(text="APPROVE"))
    team.register(registry)                       # manager + participant agent types
    task_id = await Tasks(runtime).submit(team, "Write a haiku")

Every step of the manager handles one message: a task to start, a participant's turn
result, human input, a cancel, a timer. It never awaits a participant: it sends
`RequestTurn` and returns; the answer is another message, maybe days later. Patterns
differ only in how they pick the next speaker (`Team.select`).

Nothing in the manager's record grows with the conversation: each message is appended to
the log (``ctx.append_log``, numbered from 0), and the state keeps counters, the
termination conditions' own state and a bounded window of the newest messages (`recent`),
enough to tell each participant what it missed since its last turn and to show selectors
the latest conversation. A step's cost does not depend on how long the task has run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, PrivateAttr

from .. import telemetry
from ..agent import Agent, handler
from ..context import Context
from ..errors import ConfigurationError
from ..ids import AgentId
from ..messages import DeliveryFailed
from ..migrations import state_migration
from ..models.base import Usage
from ..registry import Registry, default_registry
from .messages import (
    CancelTask,
    ChatMessage,
    ContinueTask,
    HumanInput,
    RequestTurn,
    StartTask,
    StopTask,
    TimeoutFired,
    TurnProgress,
    TurnResult,
)
from .participants import Participant
from .termination import Condition, RunView, timeouts

MANAGER_TYPE = "cadre.team"
"""The agent type of every team manager; a task's root manager is keyed by the task id."""

RECENT_MESSAGES = 20
"""How many of the newest messages the manager keeps in its state at least (selectors and
the orchestrator see them); more while a participant has not yet been told them."""

RECENT_MAX_MESSAGES = 200
RECENT_MAX_BYTES = 256 * 1024
"""The most the window of recent messages holds (the newest message is always kept): a
participant that has not spoken for longer is told only the newest of what it missed."""

TaskStatus = Literal["queued", "running", "awaiting_input", "completed", "failed", "cancelled"]
FINISHED = ("completed", "failed", "cancelled")


class TeamState(BaseModel):
    """A team run, as stored: status, counters, the newest messages, usage, whose turn it
    is, and why it ended. The transcript itself is the manager's log (`Tasks.messages`)."""

    state_version: ClassVar[int] = 2

    team: str = ""
    status: TaskStatus = "queued"
    task: str = ""
    messages: int = 0
    recent: list[ChatMessage] = []
    run: int = 0
    run_start: int = 0
    usage: Usage = Usage()
    run_usage: Usage = Usage()
    run_extra_usage: Usage = Usage()
    usage_by_agent: dict[str, Usage] = {}
    turn: int = 0
    run_turns: int = 0
    speaker: str | None = None
    cursors: dict[str, int] = {}
    prompt: str | None = None
    termination: Condition | None = None
    termination_memo: dict[str, str] = {}
    timed_out: bool = False
    stop_requested: bool = False
    stop_reason: str | None = None
    stop_due: str | None = None
    """Why the run stops once the current (nested team's) turn ends: a condition fired on
    messages the nested team relayed before its turn ended."""
    result: str | None = None
    last_text: str | None = None
    parent: str | None = None
    parent_turn: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    pattern: dict[str, Any] = {}
    carried: list[ChatMessage] = []
    """A transcript stored by state version 1, until the next step moves it to the log."""

    _new: list[ChatMessage] = PrivateAttr(default=[])
    _unchecked: list[ChatMessage] = PrivateAttr(default=[])
    _relay: list[ChatMessage] = PrivateAttr(default=[])

    def record(self, message: ChatMessage, *, relay: bool = True) -> None:
        """Append `message` to the transcript (logged with this step) and add its tokens to
        the task's, the run's and its source's. A nested team relays it to its parent
        (`relay=False`: the parent's own messages, which it has)."""
        self.recent.append(message)
        self.messages += 1
        self._new.append(message)
        self._unchecked.append(message)
        if relay and self.parent:
            self._relay.append(message)
        if message.kind == "text":
            self.last_text = message.content
        self._count(message.source, message.usage)

    def add_usage(self, source: str, usage: Usage) -> None:
        """Count tokens spent by `source` that no message carries (a selector's or the
        orchestrator's model calls, a nested team's)."""
        if usage.total_tokens:
            self._count(source, usage)
            self.run_extra_usage = self.run_extra_usage + usage

    def _count(self, source: str, usage: Usage) -> None:
        if usage.total_tokens:
            self.usage = self.usage + usage
            self.run_usage = self.run_usage + usage
            self.usage_by_agent[source] = self.usage_by_agent.get(source, Usage()) + usage

    def take_relay(self) -> list[ChatMessage]:
        """The messages a nested team has not yet relayed to its parent."""
        relay, self._relay = self._relay, []
        return relay

    @property
    def recent_start(self) -> int:
        """The number of the oldest message the window holds (it ends at the newest)."""
        return self.messages - len(self.recent)

    def since(self, seq: int) -> list[ChatMessage]:
        """The messages from number `seq` on that the window still holds."""
        return self.recent[max(seq - self.recent_start, 0) :]

    def take_new(self) -> list[ChatMessage]:
        """The messages recorded since the last call (to append to the log)."""
        new, self._new = self._new, []
        return new

    def take_unchecked(self) -> list[ChatMessage]:
        """The messages termination has not looked at yet."""
        new, self._unchecked = self._unchecked, []
        return new

    def trim(self) -> None:
        """Drop from the window what every participant has been told, keeping at least
        the newest `RECENT_MESSAGES`, and at most `RECENT_MAX_MESSAGES`/`_BYTES`."""
        floor = min(self.cursors.values(), default=self.messages)
        keep_from = min(floor, self.messages - RECENT_MESSAGES)
        drop = max(keep_from - self.recent_start, 0)
        drop = max(drop, len(self.recent) - RECENT_MAX_MESSAGES)
        if drop > 0:
            del self.recent[:drop]
        size = sum(len(m.content) for m in self.recent)
        if size > RECENT_MAX_BYTES // 4:  # characters: check the bytes only when it may matter
            sizes = [len(m.content.encode()) for m in self.recent]
            total, drop = sum(sizes), 0
            while total > RECENT_MAX_BYTES and drop < len(self.recent) - 1:
                total -= sizes[drop]
                drop += 1
            del self.recent[:drop]


@state_migration(TeamState, from_version=1)
def _transcript_to_log(state: dict[str, Any]) -> dict[str, Any]:
    """Version 1 kept the whole transcript in the state: it moves to the log at the next
    step (`carried`), and the state keeps counters and the newest messages."""
    transcript = state.pop("transcript", [])
    run_start = state.get("run_start", 0)
    texts = [m for m in transcript[run_start:] if m.get("kind", "text") == "text"]
    return {
        **state,
        "messages": len(transcript),
        "recent": transcript[-RECENT_MESSAGES:],
        "last_text": texts[-1]["content"] if texts else None,
        "carried": transcript,
    }


class _ConditionFailed(Exception):
    """A termination condition raised: the task fails with the reason."""


@dataclass(frozen=True)
class Selection:
    """The next speaker, an instruction for it (the orchestrator's), and what chose it
    (recorded on the manager's span: ``round robin``, ``selector model``, ...)."""

    speaker: str
    instruction: str | None = None
    selected_by: str = "team"


class Team(Participant):
    """A group chat pattern: participants, a termination condition, and `select`.

    A team is also a participant: put it in another team's list to nest it.
    """

    pattern_name: ClassVar[str] = "team"

    def __init__(
        self,
        name: str,
        participants: list[Participant],
        *,
        termination: Condition | None = None,
        max_turns: int | None = None,
        description: str = "",
        termination_condition: Condition | None = None,
    ) -> None:
        """`termination_condition` is accepted as AutoGen's name for `termination`."""
        super().__init__(name, MANAGER_TYPE, description or f"the {name} team")
        if termination is not None and termination_condition is not None:
            raise ConfigurationError(
                f"team {name!r}: give termination= or termination_condition=, not both"
            )
        termination = termination or termination_condition
        if not participants:
            raise ConfigurationError(f"team {name!r} needs at least one participant")
        names = [p.name for p in participants]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"team {name!r}: participant names repeat: {names}")
        self.participants = {p.name: p for p in participants}
        self.termination = termination
        self.max_turns = max_turns

    def agent_id(self, key: str) -> AgentId:
        """A nested team's manager is keyed ``<parent key>/<team name>``."""
        return AgentId(MANAGER_TYPE, f"{key}/{self.name}")

    def register(self, registry: Registry | None = None) -> Team:
        """Register the manager type, this team and (recursively) its participants."""
        registry = registry if registry is not None else default_registry
        entry = registry.types.get(MANAGER_TYPE)
        if entry is None or not isinstance(entry.factory, TeamCatalog):
            entry = registry.register(TeamManager, type=MANAGER_TYPE, factory=TeamCatalog())
        entry.factory.teams[self.name] = self  # type: ignore[attr-defined]
        for participant in self.participants.values():
            participant.register(registry)
        return self

    async def start(self, state: TeamState, ctx: Context) -> None:
        """Called once when a run begins (the orchestrator plans here)."""

    async def select(self, state: TeamState, ctx: Context) -> Selection | None:
        """The next speaker, or None to end the run (`state.stop_reason` says why)."""
        raise NotImplementedError

    def after_turn(self, state: TeamState, speaker: str, result: TurnResult) -> None:
        """Called with each turn result before termination is checked (swarm: hand-offs)."""


class TeamCatalog:
    """The manager type's factory: builds a `TeamManager` bound to the team's spec."""

    def __init__(self) -> None:
        self.teams: dict[str, Team] = {}

    def __call__(self, agent_id: AgentId, state: BaseModel) -> TeamManager:
        return TeamManager(agent_id, state, self)

    def get(self, name: str) -> Team:
        """The team registered as `name` in this process."""
        try:
            return self.teams[name]
        except KeyError:
            raise ConfigurationError(
                f"team {name!r} is not registered in this process (known: "
                f"{', '.join(sorted(self.teams)) or 'none'}); import the module that defines it"
            ) from None


class TeamManager(Agent):
    """Runs one team for one task (or one nested turn); see the module docstring."""

    State = TeamState

    def __init__(self, agent_id: AgentId, state: BaseModel, catalog: TeamCatalog) -> None:
        super().__init__(agent_id, state)
        self.catalog = catalog

    @property
    def team(self) -> Team:
        """The spec of the team this manager runs."""
        return self.catalog.get(self.state.team)

    async def dispatch(self, msg: Any, ctx: Context) -> None:
        """Handle `msg`, then append what it recorded to the log and trim the window."""
        st: TeamState = self.state
        if st.carried:  # a transcript of state version 1: into the log first
            for seq, message in enumerate(st.carried):
                ctx.append_log(seq, message.model_dump_json(exclude_defaults=True))
            st.carried = []
        try:
            await super().dispatch(msg, ctx)
        except _ConditionFailed as exc:  # the task fails with why, as AutoGen's run() raises
            self._finish(ctx, "failed", str(exc))
        if st.parent and st._relay and st.status not in FINISHED:
            progress = TurnProgress(turn=st.parent_turn, messages=st.take_relay())
            ctx.send(AgentId.parse(st.parent), progress)
        new = st.take_new()
        seq = st.messages - len(new)
        for message in new:
            ctx.append_log(seq, message.model_dump_json(exclude_defaults=True))
            seq += 1
        st.trim()

    @handler
    async def on_start(self, msg: StartTask, ctx: Context) -> None:
        """Begin the task: record it as the first message and ask the first speaker."""
        if self.state.status != "queued":
            return
        self.state.team = msg.team
        self.state.task = msg.task
        await self._begin(ctx, [ChatMessage(source="user", content=msg.task, at=ctx.now)])

    @handler
    async def on_request(self, msg: RequestTurn, ctx: Context) -> None:
        """A nested run: the parent team's messages are this team's task."""
        st = self.state
        st.team = msg.participant
        st.parent, st.parent_turn = ctx.envelope.sender, msg.turn
        if not st.task:
            st.task = "\n".join(m.content for m in msg.messages)
        # The parent counted these messages' tokens already, and has them.
        messages = [m.model_copy(update={"usage": Usage()}) for m in msg.messages]
        if msg.instruction:
            messages.append(ChatMessage(source="user", content=msg.instruction, at=ctx.now))
        await self._begin(ctx, messages, relay=False)

    @handler
    async def on_continue(self, msg: ContinueTask, ctx: Context) -> None:
        """Run a finished task again, with its whole history (`ContinueTask`)."""
        st = self.state
        if st.status not in FINISHED:
            ctx.logger.warning(
                "continue for task %s arrived while %s: it goes on as it is", ctx.task_id, st.status
            )
            return
        text = [ChatMessage(source="user", content=msg.text, at=ctx.now)] if msg.text else []
        await self._begin(ctx, text)

    async def _begin(
        self, ctx: Context, messages: list[ChatMessage], *, relay: bool = True
    ) -> None:
        st, team = self.state, self.team
        st.status, st.run, st.run_turns = "running", st.run + 1, 0
        st.run_start, st.run_usage, st.run_extra_usage = st.messages, Usage(), Usage()
        st.timed_out = st.stop_requested = False
        st.stop_reason = st.stop_due = st.result = st.last_text = st.finished_at = None
        st.started_at = st.started_at or ctx.now
        st.termination, st.termination_memo = team.termination, {}
        for name in team.participants:
            st.cursors.setdefault(name, 0)
        st.take_unchecked()
        for message in messages:
            if self._too_large(ctx, message):
                return
            st.record(message, relay=relay)
        for seconds in timeouts(st.termination):
            ctx.schedule(TimeoutFired(run=st.run), after=timedelta(seconds=seconds))
        await team.start(st, ctx)
        await self._advance(ctx)

    @handler
    async def on_result(self, msg: TurnResult, ctx: Context) -> None:
        """A participant answered: record, check termination, pick the next speaker."""
        st = self.state
        if st.status not in ("running", "awaiting_input") or msg.turn != st.turn:
            ctx.logger.info("ignoring a stale turn result %s (turn %s)", msg.turn, st.turn)
            return
        if msg.awaiting_input:
            st.status, st.prompt = "awaiting_input", msg.prompt
            tel = telemetry.current()
            tel.event(
                telemetry.AWAITING_INPUT,
                {
                    telemetry.TEAM: st.team,
                    "cadre.team.speaker": st.speaker,
                    "cadre.team.turn": st.turn,
                    "cadre.team.prompt": msg.prompt if tel.capture_content else None,
                },
            )
            if st.parent:
                ctx.send(AgentId.parse(st.parent), msg.model_copy(update={"turn": st.parent_turn}))
            return
        speaker = st.speaker or ""
        if not self._record_from(ctx, speaker, msg.messages):
            return
        st.add_usage(speaker, msg.usage)
        if msg.error:
            self._finish(ctx, "failed", msg.error)
            return
        self.team.after_turn(st, speaker, msg)
        st.speaker = None
        await self._advance(ctx)

    @handler
    async def on_progress(self, msg: TurnProgress, ctx: Context) -> None:
        """A nested team's members spoke: their messages join this transcript as they come.
        Termination looks at them now (each message is checked once) and stops the run when
        the nested team's turn ends."""
        st = self.state
        current = st.status in ("running", "awaiting_input") and msg.turn == st.turn
        if current and st.speaker and self._record_from(ctx, st.speaker, msg.messages):
            st.stop_due = st.stop_due or self._termination_reason()

    def _record_from(self, ctx: Context, speaker: str, messages: list[ChatMessage]) -> bool:
        """Record a participant's messages (a nested team's: marked as relayed by it);
        False when one was too large and the task failed."""
        st = self.state
        nested = isinstance(self.team.participants.get(speaker), Team)
        for message in messages:
            if self._too_large(ctx, message):
                return False
            update: dict[str, Any] = {"at": message.at if nested else ctx.now}
            if nested:
                update["via"] = speaker
            st.record(message.model_copy(update=update))
        return True

    @handler
    async def on_input(self, msg: HumanInput, ctx: Context) -> None:
        """The human answered: it is the user proxy's message (or a nested team's input)."""
        st = self.state
        if st.status != "awaiting_input" or st.speaker is None:
            ctx.logger.warning(
                "input for task %s arrived while %s; dropped", ctx.task_id, st.status
            )
            return
        st.status, st.prompt = "running", None
        participant = self.team.participants[st.speaker]
        if isinstance(participant, Team):
            ctx.send(participant.agent_id(self.id.key), msg)
            return
        await self.on_result(
            TurnResult(turn=st.turn, messages=[ChatMessage(source=st.speaker, content=msg.text)]),
            ctx,
        )

    @handler
    async def on_cancel(self, msg: CancelTask, ctx: Context) -> None:
        """Cancel now: later turn results are ignored; a nested team is cancelled too."""
        st = self.state
        if st.status in FINISHED:
            return
        telemetry.current().event(
            telemetry.CANCELLED, {telemetry.TEAM: st.team, "cadre.team.reason": msg.reason}
        )
        if st.speaker and isinstance(self.team.participants.get(st.speaker), Team):
            ctx.send(self.team.participants[st.speaker].agent_id(self.id.key), msg)
        self._finish(ctx, "cancelled", msg.reason, notify_parent=False)

    @handler
    async def on_delivery_failed(self, msg: DeliveryFailed, ctx: Context) -> None:
        """A message this manager sent was dead-lettered (a participant type that is not
        registered, a handler out of attempts, ...): the task fails with the reason rather
        than waiting forever for a turn that cannot come."""
        if self.state.status in FINISHED:
            return
        target = msg.recipient or "its recipient"
        reason = f"{msg.message} to {target} failed ({msg.reason}): {msg.detail}"
        self._finish(ctx, "failed", reason)

    @handler
    async def on_stop(self, msg: StopTask, ctx: Context) -> None:
        """Note a graceful stop request; an `External` condition fires on the next check."""
        self.state.stop_requested = True

    @handler
    async def on_timeout(self, msg: TimeoutFired, ctx: Context) -> None:
        """A `Timeout` condition's timer: stop the run it belongs to, if still going."""
        st = self.state
        if msg.run != st.run or st.status not in ("running", "awaiting_input"):
            return
        st.timed_out = True
        reason = self._termination_reason()
        if reason:
            self._finish(ctx, "completed", reason)

    def _too_large(self, ctx: Context, message: ChatMessage) -> bool:
        """Fail the task when one message is over what this store can keep in an entry (a
        quarter of an item: the window, the log entry and the next turn each hold it)."""
        if ctx.max_item_bytes is None:
            return False
        limit = ctx.max_item_bytes // 4
        size = len(message.model_dump_json().encode())
        if size <= limit:
            return False
        self._finish(
            ctx,
            "failed",
            f"a message from {message.source} is {size:,} bytes, over the {limit:,} bytes a "
            f"transcript entry may have on this store (items of at most "
            f"{ctx.max_item_bytes:,} bytes); ask for shorter answers or use another store",
        )
        return True

    def _termination_reason(self) -> str | None:
        """The conditions see only the messages recorded since they last looked."""
        st = self.state
        new = st.take_unchecked()
        if st.termination is None:
            return None
        view = RunView(
            new,
            st.messages - st.run_start,
            st.run_usage,
            st.timed_out,
            st.stop_requested,
            st.termination_memo,
        )
        try:
            reason: str | None = st.termination.check(view)
        except Exception as exc:  # a condition of the user's that raises
            raise _ConditionFailed(
                f"{st.team}: the termination condition failed: {type(exc).__name__}: {exc}"
            ) from exc
        return reason

    async def _advance(self, ctx: Context) -> None:
        st, team = self.state, self.team
        reason = self._termination_reason()
        reason = st.stop_due or reason
        if reason:
            self._finish(ctx, "completed", reason)
            return
        if team.max_turns is not None and st.run_turns >= team.max_turns:
            turns = "turn" if team.max_turns == 1 else "turns"
            self._finish(ctx, "completed", f"maximum of {team.max_turns} {turns} reached")
            return
        try:
            selection = await team.select(st, ctx)
        except Exception as exc:  # a selector's model failed after its retries, or its function
            self._finish(
                ctx,
                "failed",
                f"{team.name}: selecting the next speaker failed: {type(exc).__name__}: {exc}",
            )
            return
        if selection is None:
            self._finish(ctx, "completed", st.stop_reason or "the team has finished")
            return
        self._request(ctx, selection)

    def _request(self, ctx: Context, selection: Selection) -> None:
        st = self.state
        name = selection.speaker
        participant = self.team.participants[name]
        delta = [
            m
            for m in st.since(st.cursors.get(name, 0))
            if m.source != name and m.via != name and m.kind in ("text", "handoff")
        ]
        st.cursors[name] = st.messages
        st.turn += 1
        st.run_turns += 1
        st.speaker = name
        telemetry.current().event(
            telemetry.SPEAKER_SELECTED,
            {
                telemetry.TEAM: st.team,
                "cadre.team.speaker": name,
                "cadre.team.selected_by": selection.selected_by,
                "cadre.team.turn": st.turn,
            },
        )
        request = RequestTurn(
            turn=st.turn, participant=name, messages=delta, instruction=selection.instruction
        )
        ctx.send(participant.agent_id(self.id.key), request, reply_to=self.id)

    def _finish(
        self, ctx: Context, status: TaskStatus, reason: str, *, notify_parent: bool = True
    ) -> None:
        st = self.state
        st.status, st.stop_reason, st.speaker, st.prompt = status, reason, None, None
        st.finished_at = ctx.now
        self._report(status, reason)
        if st.result is None:
            st.result = st.last_text or ""
        if st.parent and notify_parent:  # what is not relayed yet, then the turn's end
            error = reason if status == "failed" else None
            ctx.send(
                AgentId.parse(st.parent),
                TurnResult(
                    turn=st.parent_turn,
                    messages=st.take_relay(),
                    error=error,
                    usage=st.run_extra_usage,
                ),
            )

    def _report(self, status: TaskStatus, reason: str) -> None:
        """The end of a run on the manager's span; a root task's status and duration in
        the task metrics (at least once: a step redone after a crash reports again)."""
        st = self.state
        tel = telemetry.current()
        tel.event(
            telemetry.TERMINATED,
            {
                telemetry.TEAM: st.team,
                telemetry.TASK_STATUS: status,
                "cadre.team.reason": reason,
                "cadre.team.turns": st.run_turns,
            },
        )
        if st.parent is None and st.started_at and st.finished_at:
            seconds = (st.finished_at - st.started_at).total_seconds()
            tel.record_task(status, seconds, team=st.team)
