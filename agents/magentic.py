"""Magentic-One: an orchestrator plans, tracks progress, re-plans when stuck, and answers.

    cadre run --team magentic "Compare two ways to get from Lisbon to Porto"

The orchestrator writes a task ledger (facts and a plan), then before every turn a progress
ledger (done? looping? progressing? who next, with what instruction); once it judges the
request done it writes the final answer, which is the task's result. The offline model
judges it done after six of its own texts.
"""

from cadre.teams import Assistant, MagenticOneTeam


def travel_time(origin: str, destination: str) -> str:
    """Door-to-door travel time by train and by car (a stand-in for a real lookup)."""
    return f"{origin} to {destination}: train 2 h 50 min, car 3 h 10 min"


researcher = Assistant(
    "researcher",
    agent_type="magentic.researcher",
    description="looks facts up with the travel_time tool",
    system_message="You are a researcher. Look facts up with your tools and report them.",
    tools=[travel_time],
    reflect_on_tool_use=True,
)
analyst = Assistant(
    "analyst",
    agent_type="magentic.analyst",
    description="weighs the options and recommends one",
    system_message="You are an analyst. Weigh the options found so far and recommend one.",
)

team = MagenticOneTeam(
    "magentic",
    [researcher, analyst],
    max_turns=12,
    description="an orchestrator plans and directs a researcher and an analyst",
).register()
