"""The HTTP API of Cadre: one ASGI app (FastAPI) for every host.

    from cadre.api import create_app
    app = create_app(runtime, api_key=None, max_task_chars=20_000)

`runtime` is any host's runtime (`cadre.runtime.Runtime`: `LocalRuntime`,
`WorkersRuntime`, `FunctionsRuntime`): the API sends with ``send``, reads ``store``, finds
the teams in ``registry`` (unless `create_app` is given another), redrives dead letters
with ``redrive`` and reports ``health()`` at ``GET /api/health``.

Routes are under ``/api`` (the Functions route prefix); the live page is at ``/``.
See docs/api.md. Importing this package imports FastAPI; ``import cadre`` does not.
"""

from __future__ import annotations

from ._app import check_api_key, create_app
from ._problems import Problem, ProblemError

__all__ = ["Problem", "ProblemError", "check_api_key", "create_app"]
