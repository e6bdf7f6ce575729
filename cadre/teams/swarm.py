"""Swarm: the speaker keeps the turn until it hands off (a ``transfer_to_<name>`` tool).

    alice = Assistant("alice", handoffs=["bob", "user"], ...)
    team = SwarmTeam("desk", [alice, bob, UserProxy("user")],
                     termination=Handoff(target="user") | MaxMessages(max_messages=20))

The first participant speaks first. A hand-off to a participant makes it the speaker; a
hand-off to someone outside the team changes nothing (a `Handoff` condition can stop on it);
after a user proxy answers, the participant that handed off to it speaks again.
"""

from __future__ import annotations

from ..context import Context
from .manager import Selection, Team, TeamState
from .messages import TurnResult
from .participants import UserProxy


class SwarmTeam(Team):
    """The current speaker speaks until it hands off."""

    pattern_name = "swarm"

    async def select(self, state: TeamState, ctx: Context) -> Selection | None:
        """The participant the last hand-off named (the first participant at the start)."""
        current = state.pattern.get("current")
        if current:
            return Selection(current, selected_by="swarm hand-off")
        return Selection(next(iter(self.participants)), selected_by="swarm first participant")

    def after_turn(self, state: TeamState, speaker: str, result: TurnResult) -> None:
        """Follow a hand-off to a participant; after a human answers, back to who asked."""
        if result.handoff in self.participants:
            state.pattern["current"] = result.handoff
            state.pattern["handed_off_by"] = speaker
        elif isinstance(self.participants.get(speaker), UserProxy):
            state.pattern["current"] = state.pattern.get("handed_off_by") or next(
                iter(self.participants)
            )
