"""A long transcript through the API: read by page from the manager's log, every entry
once and in order, live streams resumed anywhere."""

from __future__ import annotations

from cadre.teams import Assistant, MaxMessages, RoundRobinTeam

from .conftest import Api
from .test_stream import SSE, parse

LENGTH = 1_201


async def long_task(api: Api) -> str:
    RoundRobinTeam(
        "chatty",
        [Assistant("a", system_message="You are a."), Assistant("b", system_message="You are b.")],
        termination=MaxMessages(max_messages=LENGTH),
    ).register(api.registry)
    task_id = await api.submit("Talk at length", team="chatty")
    await api.idle()
    return task_id


async def test_pages_of_a_long_transcript_cover_it_once_in_order(api: Api) -> None:
    task_id = await long_task(api)
    assert (await api.task(task_id))["messages"] == LENGTH
    indexes, after, pages = [], 0, 0
    while True:
        page = await api.client.get(f"/api/tasks/{task_id}/messages?after={after}&limit=500")
        body = page.json()
        indexes += [m["index"] for m in body["messages"]]
        after, pages = body["next_after"], pages + 1
        if not body["has_more"]:
            break
    assert pages == 3 and indexes == list(range(LENGTH))
    first = (await api.client.get(f"/api/tasks/{task_id}/messages?limit=2")).json()
    assert first["messages"][0]["content"] == "Talk at length"
    assert first["has_more"] is True and first["next_after"] == 2
    past = (await api.client.get(f"/api/tasks/{task_id}/messages?after={LENGTH + 5}")).json()
    assert past["messages"] == [] and past["has_more"] is False


async def test_a_stream_of_a_long_transcript_resumes_near_its_end(api: Api) -> None:
    task_id = await long_task(api)
    response = await api.client.get(
        f"/api/tasks/{task_id}/messages", headers={**SSE, "Last-Event-ID": str(LENGTH - 3)}
    )
    events = parse(response.text)
    assert [e["data"]["index"] for e in events if e.get("event") == "message"] == [
        LENGTH - 3,
        LENGTH - 2,
        LENGTH - 1,
    ]
    assert events[-1]["event"] == "end"
    whole = await api.client.get(f"/api/tasks/{task_id}/messages", headers=SSE)
    ids = [int(e["id"]) for e in parse(whole.text) if e.get("event") == "message"]
    assert ids == list(range(1, LENGTH + 1))  # read from the log in pages of the stream's size


async def test_a_nested_teams_messages_say_which_team_relayed_them(api: Api) -> None:
    from cadre.models import ReplayClient

    inner = RoundRobinTeam(
        "inner",
        [Assistant("drafter", model=ReplayClient(["a draft"]))],
        termination=MaxMessages(max_messages=3),
    )
    boss = Assistant("boss", model=ReplayClient(["go", "thanks"]))
    RoundRobinTeam("outer", [boss, inner], termination=MaxMessages(max_messages=4)).register(
        api.registry
    )
    task_id = await api.submit("Write", team="outer")
    await api.idle()
    page = (await api.client.get(f"/api/tasks/{task_id}/messages")).json()
    assert [(m["source"], m["via"]) for m in page["messages"]] == [
        ("user", None),
        ("boss", None),
        ("drafter", "inner"),
        ("boss", None),
    ]
