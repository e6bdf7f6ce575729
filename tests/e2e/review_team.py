"""A test app module: a team with a user proxy, for the API tests and the browser test.

    cadre serve --app agents,tests.e2e.review_team

A drafter (offline model) writes, then the human reviews; the task completes when the
human says APPROVE (or after 10 messages).
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
review.register()
