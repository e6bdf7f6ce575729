"""Selector: a model reads the conversation and picks who speaks next.

    cadre run --team selector "Plan a weekend in Porto"

A planner, a local guide and a writer; the team's model (the selector) chooses each next
speaker from the conversation, never the one who just spoke. It stops when the writer says
TERMINATE, or after 10 messages. On the offline model the pick moves on as the conversation
grows; with a real model it follows the roles' descriptions below.
"""

from cadre.teams import Assistant, MaxMessages, SelectorTeam, TextMention

planner = Assistant(
    "planner",
    agent_type="selector.planner",
    description="breaks the request into steps and keeps track of what is missing",
    system_message="You are a planner. Break the request into steps; say what is still missing.",
)
local_guide = Assistant(
    "local_guide",
    agent_type="selector.local_guide",
    description="knows the place: neighbourhoods, food, transport, opening hours",
    system_message="You are a local guide. Add concrete places, food and transport tips.",
)
writer = Assistant(
    "writer",
    agent_type="selector.writer",
    description="writes the final answer once the plan and the tips are in",
    system_message="You are a writer. Write the final plan from the conversation; when it is "
    "complete, end with TERMINATE.",
)

team = SelectorTeam(
    "selector",
    [planner, local_guide, writer],
    termination=TextMention(text="TERMINATE", sources=["writer"]) | MaxMessages(max_messages=10),
    description="a model picks the next speaker: planner, local guide, writer",
).register()
