"""A team app for the cross-process tracing test: `cadre worker` imports it (CADRE_APP).

A round-robin team on the offline model: the writer calls a tool, then both speak until
the critic says APPROVE (its second answer), so every kind of span appears.
"""

from __future__ import annotations

from cadre.teams import Assistant, MaxMessages, RoundRobinTeam, TextMention


def budget(costs_eur: list[float]) -> str:
    """Adds up costs in euros."""
    return f"total: {sum(costs_eur):.2f} EUR"


writer = Assistant(
    "tt_writer", system_message="You are a travel writer.", tools=[budget], reflect_on_tool_use=True
)
critic = Assistant("tt_critic", system_message="You are a critic. Say APPROVE when it is good.")
team = RoundRobinTeam(
    "traced",
    [writer, critic],
    termination=TextMention(text="APPROVE") | MaxMessages(max_messages=9),
).register()
