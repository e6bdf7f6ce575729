"""A nested team: a whole team takes one turn in another.

    cadre run --team nested "Write a product blurb for a travel mug"

The outer round-robin has two participants: `drafts` (itself a team, a drafter and a
reviewer going round until the reviewer says APPROVE) and an editor. When the inner team
has the turn it runs to its own end, its members' messages shown under their names, and
its result goes on in the outer conversation; then the editor finishes (two turns).
"""

from cadre.teams import Assistant, MaxMessages, RoundRobinTeam, TextMention

drafter = Assistant(
    "drafter",
    agent_type="nested.drafter",
    system_message="You are a drafter. Write or revise the draft from the reviewer's notes.",
)
reviewer = Assistant(
    "reviewer",
    agent_type="nested.reviewer",
    system_message="You are a reviewer. Note what to fix in the draft; when it is good, "
    "reply APPROVE.",
)
drafting = RoundRobinTeam(
    "drafts",
    [drafter, reviewer],
    termination=TextMention(text="APPROVE", sources=["reviewer"]) | MaxMessages(max_messages=8),
    description="a drafter and a reviewer, until the reviewer approves",
)
editor = Assistant(
    "editor",
    agent_type="nested.editor",
    system_message="You are an editor. Give the approved draft its final form.",
)

team = RoundRobinTeam(
    "nested",
    [drafting, editor],
    termination=MaxMessages(max_messages=12),
    max_turns=2,
    description="a drafting team (drafter + reviewer) inside a team with an editor",
).register()
