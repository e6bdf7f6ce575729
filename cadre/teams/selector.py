"""Selector: a model reads the conversation and picks the next speaker.

    team = SelectorTeam("trip", [planner, local_guide, writer], model=client,
                        termination=TextMention(text="TERMINATE"))

`selector_func` (a function of the stored state) may name the next speaker itself, or
return None to ask the model; `candidates` narrows who the model may pick;
`allow_repeated_speaker` lets the last speaker go again. The model answers in a JSON
schema whose only field is an enum of the candidates; an answer that names no candidate
(or several) is retried with a correction, up to `max_selector_attempts` calls in all
(3, as AutoGen); then, as AutoGen does, the previous speaker speaks again (the first
candidate at the start), so a confused model cannot stall the team. AutoGen's names
`model_client` and `candidate_func` are accepted too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, create_model

from ..context import Context
from ..errors import ConfigurationError
from ..models import traced
from ..models.base import LLMMessage, ModelClient
from .manager import MANAGER_TYPE, Selection, Team, TeamState
from .participants import Participant

DEFAULT_SELECTOR_PROMPT = """You are in a role play game. The following roles are available:
{roles}.
Read the following conversation. Then select the next role from {participants} to play. \
Only return the role.

{history}

Read the above conversation. Then select the next role from {participants} to play. \
Only return the role."""

Candidates = Callable[[TeamState], list[str]]
SelectorFunc = Callable[[TeamState], str | None]


class SelectorTeam(Team):
    """A group chat whose next speaker a model selects (see the module docstring)."""

    pattern_name = "selector"

    def __init__(
        self,
        name: str,
        participants: list[Participant],
        *,
        model: ModelClient | None = None,
        selector_prompt: str = DEFAULT_SELECTOR_PROMPT,
        allow_repeated_speaker: bool = False,
        candidates: Candidates | None = None,
        selector_func: SelectorFunc | None = None,
        max_selector_attempts: int = 3,
        model_client: ModelClient | None = None,
        candidate_func: Candidates | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, participants, **kwargs)
        self._model = model or model_client
        candidates = candidates or candidate_func
        self.selector_func = selector_func
        self.selector_prompt = selector_prompt
        self.allow_repeated_speaker = allow_repeated_speaker
        self.candidates = candidates
        self.max_selector_attempts = max_selector_attempts

    @property
    def model(self) -> ModelClient:
        """The selecting model (default: the one CADRE_MODEL names)."""
        if self._model is None:
            from ..models import client_from_spec
            from ..settings import Settings

            self._model = client_from_spec(Settings.from_env().model)
        return self._model

    async def select(self, state: TeamState, ctx: Context) -> Selection | None:
        """`selector_func`'s pick, else the model's; AutoGen's fallback on nonsense."""
        if self.selector_func is not None:
            picked = self.selector_func(state)
            if picked is not None:
                if picked not in self.participants:
                    raise ConfigurationError(
                        f"selector_func of team {self.name!r} named {picked!r}, which is not "
                        f"one of {list(self.participants)}"
                    )
                return self._picked(state, picked, "selector_func")
        names = self._eligible(state)
        if len(names) == 1:
            return self._picked(state, names[0], "only candidate")
        prompt = self.selector_prompt.format(
            roles="\n".join(f"{n}: {self.participants[n].description}" for n in names),
            participants=str(names),
            history="\n".join(f"{m.source}: {m.content}" for m in state.recent if m.kind == "text"),
        )
        schema = _choice_schema(names)
        messages = [LLMMessage(role="user", content=prompt)]
        for _ in range(self.max_selector_attempts):
            result = await traced.create(
                self.model,
                messages,
                output_schema=schema,
                agent_type=MANAGER_TYPE,
                agent_name=f"{self.name}.selector",
            )
            state.add_usage(f"{self.name}.selector", result.usage)
            name = _parse(result.content, names)
            if name is not None:
                return self._picked(state, name, "model")
            messages += [
                LLMMessage(role="assistant", content=result.content),
                LLMMessage(
                    role="user",
                    content=f"That is not one of {names}. Answer with exactly one of them.",
                ),
            ]
        return self._picked(state, self._fallback(state, names), "fallback")

    def _eligible(self, state: TeamState) -> list[str]:
        names = self.candidates(state) if self.candidates else list(self.participants)
        names = [n for n in names if n in self.participants] or list(self.participants)
        last = state.pattern.get("last")
        if not self.allow_repeated_speaker and last in names and len(names) > 1:
            names.remove(last)
        return names

    def _fallback(self, state: TeamState, names: list[str]) -> str:
        """AutoGen's: the previous speaker again, or the first candidate at the start."""
        last = state.pattern.get("last")
        return str(last) if last in self.participants else names[0]

    @staticmethod
    def _picked(state: TeamState, name: str, how: str) -> Selection:
        state.pattern["last"] = name
        counts = state.pattern.setdefault("selected_by", {})
        counts[how] = counts.get(how, 0) + 1
        return Selection(name, selected_by=f"selector {how}")


def one_of(names: list[str]) -> Any:
    """``Literal[*names]`` built at run time (typed ``Any``: a run-time type form)."""
    return Literal[tuple(names)]


def _choice_schema(names: list[str]) -> type[BaseModel]:
    return create_model("NextSpeaker", speaker=(one_of(names), ...))


def _parse(content: str, names: list[str]) -> str | None:
    try:
        value = json.loads(content)
        if isinstance(value, dict) and value.get("speaker") in names:
            return str(value["speaker"])
    except ValueError:
        pass
    text = content.strip().strip("\"'`.")
    if text in names:
        return text
    mentioned = [n for n in names if re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", content)]
    return mentioned[0] if len(mentioned) == 1 else None
