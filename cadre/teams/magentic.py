"""A Magentic-One style orchestrator: plan, track progress, re-plan when stalled, answer.

    team = MagenticOneTeam("research", [researcher, coder, writer], model=client)

When the run starts, the orchestrator writes a task ledger (facts it knows and must find,
and a plan) into the transcript. Before every turn it asks its model for a progress ledger
(a JSON schema): is the request satisfied, are we looping, is progress being made, who
speaks next and with what instruction. No progress (or a loop) counts a stall; after
`max_stalls` it re-plans (new facts and plan); after `max_replans` re-plans it gives up.
Once satisfied it writes the final answer, which is the task's result. A progress ledger
that is not valid JSON counts a stall and the next participant in list order speaks.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError, create_model

from ..context import Context
from ..models import traced
from ..models.base import LLMMessage, ModelClient, Usage
from .manager import MANAGER_TYPE, Selection, Team, TeamState
from .messages import ChatMessage
from .participants import Participant
from .selector import one_of

ORCHESTRATOR = "orchestrator"

FACTS_PROMPT = """Below I will present you a request.
{task}
Before we begin addressing the request, list: 1. GIVEN OR VERIFIED FACTS, 2. FACTS TO LOOK \
UP, 3. FACTS TO DERIVE, 4. EDUCATED GUESSES."""

PLAN_PROMPT = """To address this request we have assembled the following team:
{team}
Based on the team composition, and known and unknown facts, please devise a short bullet-point \
plan for addressing the original request:
{task}"""

REPLAN_PROMPT = """We are stuck. The conversation so far:
{history}
Update the facts and write a new short bullet-point plan that avoids the previous mistakes, \
for this team:
{team}"""

PROGRESS_PROMPT = """Recall we are working on the following request:
{task}
And we have assembled the following team:
{team}
The conversation so far:
{history}
To make progress on the request, answer: is the request fully satisfied; are we in a loop; \
are we making forward progress; who should speak next (one of {names}); what instruction or \
question would you give them. Answer in the JSON schema given."""

FINAL_PROMPT = """We are working on the following task:
{task}
The conversation so far:
{history}
We have completed the task. Based on the conversation, write the final answer."""


class MagenticOneTeam(Team):
    """The orchestrator pattern (see the module docstring)."""

    pattern_name = "magentic_one"

    def __init__(
        self,
        name: str,
        participants: list[Participant],
        *,
        model: ModelClient | None = None,
        max_stalls: int = 3,
        max_replans: int = 2,
        max_turns: int | None = 20,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, participants, max_turns=max_turns, **kwargs)
        self._model = model
        self.max_stalls = max_stalls
        self.max_replans = max_replans

    @property
    def model(self) -> ModelClient:
        """The orchestrator's model (default: the one CADRE_MODEL names)."""
        if self._model is None:
            from ..models import client_from_spec
            from ..settings import Settings

            self._model = client_from_spec(Settings.from_env().model)
        return self._model

    def _team_text(self) -> str:
        return "\n".join(f"{p.name}: {p.description}" for p in self.participants.values())

    @staticmethod
    def _history(state: TeamState) -> str:
        return "\n".join(f"{m.source}: {m.content}" for m in state.recent if m.kind == "text")

    async def _ask(self, prompt: str, schema: type[BaseModel] | None = None) -> tuple[str, Usage]:
        result = await traced.create(
            self.model,
            [LLMMessage(role="user", content=prompt)],
            output_schema=schema,
            agent_type=MANAGER_TYPE,
            agent_name=ORCHESTRATOR,
        )
        return result.content, result.usage

    async def start(self, state: TeamState, ctx: Context) -> None:
        """Write the task ledger: facts, then a plan."""
        first = state.since(state.run_start)
        task = first[0].content if first and state.recent_start <= state.run_start else state.task
        facts, used_facts = await self._ask(FACTS_PROMPT.format(task=task))
        plan, used_plan = await self._ask(PLAN_PROMPT.format(team=self._team_text(), task=task))
        state.pattern.update({"task": task, "stalls": 0, "replans": 0})
        self._ledger(state, ctx, facts, plan, used_facts + used_plan)

    def _ledger(self, state: TeamState, ctx: Context, facts: str, plan: str, usage: Usage) -> None:
        text = f"Task ledger\n\nFacts:\n{facts}\n\nPlan:\n{plan}"
        state.record(ChatMessage(source=ORCHESTRATOR, content=text, usage=usage, at=ctx.now))

    async def select(self, state: TeamState, ctx: Context) -> Selection | None:
        """Ask for the progress ledger; answer, re-plan or pick the next speaker."""
        names = list(self.participants)
        ledger = await self._progress(state, names)
        if ledger is not None and ledger.is_request_satisfied:
            answer, used = await self._ask(
                FINAL_PROMPT.format(task=state.pattern["task"], history=self._history(state))
            )
            state.record(ChatMessage(source=ORCHESTRATOR, content=answer, usage=used, at=ctx.now))
            state.result, state.stop_reason = answer, "the orchestrator judged the request done"
            return None
        stalled = ledger is None or ledger.is_in_loop or not ledger.is_progress_being_made
        state.pattern["stalls"] = (
            state.pattern["stalls"] + 1 if stalled else max(0, state.pattern["stalls"] - 1)
        )
        if state.pattern["stalls"] >= self.max_stalls:
            if state.pattern["replans"] >= self.max_replans:
                state.stop_reason = f"stalled after {self.max_replans} re-plans"
                return None
            await self._replan(state, ctx)
        if ledger is None:
            last = state.pattern.get("last")
            speaker = names[(names.index(last) + 1) % len(names)] if last in names else names[0]
            instruction = "Please continue with the plan."
            selected_by = "orchestrator fallback (invalid progress ledger)"
        else:
            speaker, instruction = ledger.next_speaker, ledger.instruction_or_question
            selected_by = "orchestrator progress ledger"
        state.pattern["last"] = speaker
        state.record(
            ChatMessage(source=ORCHESTRATOR, content=f"{speaker}: {instruction}", at=ctx.now)
        )
        return Selection(speaker, selected_by=selected_by)

    async def _progress(self, state: TeamState, names: list[str]) -> Any:
        schema = create_model(
            "ProgressLedger",
            is_request_satisfied=(bool, ...),
            is_in_loop=(bool, ...),
            is_progress_being_made=(bool, ...),
            next_speaker=(one_of(names), ...),
            instruction_or_question=(str, ...),
        )
        prompt = PROGRESS_PROMPT.format(
            task=state.pattern["task"],
            team=self._team_text(),
            history=self._history(state),
            names=names,
        )
        content, used = await self._ask(prompt, schema)
        state.add_usage(ORCHESTRATOR, used)
        try:
            return schema.model_validate_json(content)
        except ValidationError:
            return None

    async def _replan(self, state: TeamState, ctx: Context) -> None:
        state.pattern["replans"] += 1
        state.pattern["stalls"] = 0
        text, used = await self._ask(
            REPLAN_PROMPT.format(history=self._history(state), team=self._team_text())
        )
        self._ledger(state, ctx, "(updated)", text, used)
