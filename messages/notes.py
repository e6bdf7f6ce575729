"""Contracts of the notebook example."""

from cadre import Message


class AddNote(Message, name="app.AddNote", version=1):
    """Add a note to a notebook; `remind_in_seconds` schedules a durable reminder."""

    text: str
    remind_in_seconds: float | None = None


class NoteAdded(Message, name="app.NoteAdded", version=1):
    """The reply: how many notes the notebook holds now."""

    count: int


class Remind(Message, name="app.Remind", version=1):
    """A reminder of one note, delivered by a durable timer."""

    text: str
