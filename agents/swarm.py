"""Swarm: the speaker keeps the turn until it hands it off, here once to you.

    cadre run --team swarm "I need a refund for my flight"

A travel desk hands refunds to the refunds agent; the refunds agent hands off to you (a
user proxy) for the booking reference, and when you have answered the turn comes back to
it: it calls `refund_flight` and ends with TERMINATE. Hand-offs are tools named
``transfer_to_<name>`` that the team's model calls (the offline model makes each hand-off
it is offered once, in order).
"""

from cadre.teams import Assistant, MaxMessages, SwarmTeam, TextMention, UserProxy


def refund_flight(booking_reference: str) -> str:
    """Refund the flight with this booking reference."""
    return f"refund of booking {booking_reference!r} issued: 3-5 working days"


desk = Assistant(
    "travel_desk",
    agent_type="swarm.travel_desk",
    system_message="You are a travel desk agent. Hand refunds to refunds; answer the rest.",
    handoffs=["refunds"],
)
refunds = Assistant(
    "refunds",
    agent_type="swarm.refunds",
    system_message="You are a refunds agent. Ask the customer for the booking reference "
    "(hand off to customer), then call refund_flight; when it is done, say TERMINATE.",
    tools=[refund_flight],
    handoffs=["customer"],
    reflect_on_tool_use=True,
)
customer = UserProxy(
    "customer", agent_type="swarm.customer", prompt="Your booking reference (e.g. LX4T2Q):"
)

team = SwarmTeam(
    "swarm",
    [desk, refunds, customer],
    termination=TextMention(text="TERMINATE", sources=["refunds"]) | MaxMessages(max_messages=16),
    description="hand-offs: travel desk -> refunds -> you -> refunds",
).register()
