"""This app's agents. Importing this package registers every agent type in it.

`cadre` commands, the Functions app and the workers import it (setting CADRE_APP names
other modules). Add an agent by adding a module here and importing it below.
"""

from agents.notebook import Notebook
from agents.team import team

__all__ = ["Notebook", "team"]
