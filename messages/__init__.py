"""This app's message contracts: pydantic models with a stable name and a version.

Agents in `agents/` exchange only these. The name is what travels on the wire, so a class
can move or be renamed without breaking messages already in flight.
"""

from messages.notes import AddNote, NoteAdded, Remind

__all__ = ["AddNote", "NoteAdded", "Remind"]
