"""The HTTP API of Cadre: one ASGI app (FastAPI) for every host.

    from cadre.api import create_app
    app = create_app(runtime, api_key=None, max_task_chars=20_000)

`runtime` is anything with ``async send(to, message, *, task_id=None)`` and ``.store`` (a
`StateStore`) — what `cadre.teams.Tasks` needs — plus, optionally:

- ``async redrive(letter_id)``: mounts ``POST /api/dead-letters/{id}/redrive``;
- ``async health() -> dict[str, dict]``: the checks ``GET /api/health`` reports, each
  ``{"ok": bool, "detail": str}`` (or a bare bool); without it, the API reads the store
  and names the transport;
- ``.registry``: where the teams are registered (default: `cadre.default_registry`).

Routes are under ``/api`` (the Functions route prefix); the live page is at ``/``.
See docs/api.md. Importing this package imports FastAPI; ``import cadre`` does not.
"""

from __future__ import annotations

from ._app import check_api_key, create_app
from ._problems import Problem, ProblemError

__all__ = ["Problem", "ProblemError", "check_api_key", "create_app"]
