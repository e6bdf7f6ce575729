"""A team with a user proxy for the API tests (`tests/api/conftest.py` registers it in the
tests' own registry, where it stands in for the app's `review` team).

A drafter (offline model) writes, then the human reviews; the task completes when the
human says APPROVE (or after 10 messages). It is not registered in the default registry:
there it would replace the app's own `review` team (agents/review.py) for every later test.
"""

from cadre.teams import Assistant, MaxMessages, RoundRobinTeam, TextMention, UserProxy

drafter = Assistant(
    "drafter", system_message="You are a drafter. Write a short draft for the task."
)
human = UserProxy("human", prompt="Approve the draft? Reply APPROVE, or say what to change.")

review = RoundRobinTeam(
    "review",
    [drafter, human],
    termination=TextMention(text="APPROVE", sources=["human"]) | MaxMessages(max_messages=10),
    description="a drafter writes, a human approves",
)
