"""This app's agents and teams. Importing this package registers every one of them.

`cadre` commands, the Functions app and the workers import it (setting CADRE_APP names
other modules). Add an agent or a team by adding a module here and importing it below.

| team (`cadre run --team NAME`) | module | what it shows |
| --- | --- | --- |
| `default` | team.py | round-robin: planner, writer, critic until the critic approves |
| `selector` | selector.py | a model picks each next speaker |
| `swarm` | swarm.py | hand-offs, one of them to you |
| `magentic` | magentic.py | Magentic-One: an orchestrator's ledgers, plan and answer |
| `nested` | nested.py | a team as a participant of another team |
| `review` | review.py | human in the loop: you review a draft, up to twice |
"""

from agents.magentic import team as magentic_team
from agents.nested import team as nested_team
from agents.notebook import Notebook
from agents.review import team as review_team
from agents.selector import team as selector_team
from agents.swarm import team as swarm_team
from agents.team import team

__all__ = [
    "Notebook",
    "magentic_team",
    "nested_team",
    "review_team",
    "selector_team",
    "swarm_team",
    "team",
]
