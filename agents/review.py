"""Human in the loop: a writer drafts, you review, the writer revises, you review again.

    cadre run --team review "Write a two-line welcome for new hires"

A round-robin of a writer and you (a user proxy, asked on the terminal or on the page).
Reply APPROVE to accept a draft; anything else is a note the writer revises from. It stops
at your APPROVE, or after your second answer (5 messages: the task, draft, your notes,
revision, your verdict), so you are asked at most twice.
"""

from cadre.teams import Assistant, MaxMessages, RoundRobinTeam, TextMention, UserProxy

writer = Assistant(
    "writer",
    agent_type="review.writer",
    system_message="You are a writer. Write the text asked for; revise it from the "
    "reviewer's notes.",
)
reviewer = UserProxy(
    "reviewer",
    agent_type="review.reviewer",
    prompt="Reply APPROVE to accept the draft, or say what to change:",
)

team = RoundRobinTeam(
    "review",
    [writer, reviewer],
    termination=TextMention(text="APPROVE", sources=["reviewer"]) | MaxMessages(max_messages=5),
    description="a writer drafts, you review (asked up to twice)",
).register()
