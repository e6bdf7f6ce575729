"""The notebook: the smallest useful agent, and the example to copy.

Each notebook (one per key, e.g. ``notebook/alice``) keeps its notes in its state, answers
every note with the count, and reminds itself of a note later through a durable timer.
"""

from datetime import timedelta

from pydantic import BaseModel

from cadre import Agent, Context, handler
from messages import AddNote, NoteAdded, Remind


class Notebook(Agent, type="notebook"):
    """Keeps notes; replies with the count; schedules reminders."""

    class State(BaseModel):
        notes: list[str] = []
        reminders: list[str] = []

    @handler
    async def add(self, msg: AddNote, ctx: Context) -> NoteAdded:
        self.state.notes.append(msg.text)
        if msg.remind_in_seconds is not None:
            ctx.schedule(Remind(text=msg.text), after=timedelta(seconds=msg.remind_in_seconds))
        return NoteAdded(count=len(self.state.notes))

    @handler
    async def remind(self, msg: Remind, ctx: Context) -> None:
        self.state.reminders.append(msg.text)
        ctx.logger.info("reminder: %s", msg.text)
