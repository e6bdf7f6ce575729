"""Round-robin: participants speak in the order given, until a termination condition fires."""

from __future__ import annotations

from ..context import Context
from .manager import Selection, Team, TeamState


class RoundRobinTeam(Team):
    """Each participant in turn, in list order, round and round."""

    pattern_name = "round_robin"

    async def select(self, state: TeamState, ctx: Context) -> Selection | None:
        """The participant after the one that spoke last."""
        names = list(self.participants)
        index = state.pattern.get("next", 0) % len(names)
        state.pattern["next"] = index + 1
        return Selection(names[index], selected_by="round robin")
