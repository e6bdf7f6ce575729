"""The default team: a planner, a writer and a critic, taking turns until the critic approves.

    cadre run "Plan a three-day trip to Lisbon"

Copy this file to make your own team: pick participants, a pattern and when to stop.
The model is the one CADRE_MODEL names (offline when unset; see docs/teams.md).
"""

from cadre.teams import Assistant, MaxMessages, RoundRobinTeam, TextMention


def budget(costs_eur: list[float]) -> str:
    """Add up a list of costs in euros (for budgets and itineraries)."""
    return f"total: {sum(costs_eur):.2f} EUR"


planner = Assistant(
    "planner",
    system_message="You are a planner. Break the task into concrete steps, with a budget; "
    "use the budget tool to add up costs.",
    tools=[budget],
    reflect_on_tool_use=True,
)
writer = Assistant(
    "writer",
    system_message="You are a writer. Turn the plan and the critic's notes into the final "
    "answer, clear and complete.",
)
critic = Assistant(
    "critic",
    system_message="You are a critic. Point out what is missing or wrong in the writer's "
    "answer; when it is good, reply APPROVE.",
)

team = RoundRobinTeam(
    "default",
    [planner, writer, critic],
    termination=TextMention(text="APPROVE", sources=["critic"]) | MaxMessages(max_messages=16),
    description="round-robin: a planner, a writer and a critic, until the critic approves",
).register()
