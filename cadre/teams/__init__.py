"""Teams: group chats run by durable manager agents, their participants, termination
conditions and the task lifecycle API. See docs/teams.md."""

from __future__ import annotations

from ..models.context import HeadAndTail, LastK, TokenLimited, Unbounded
from .magentic import MagenticOneTeam
from .manager import MANAGER_TYPE, Selection, Team, TeamManager, TeamState
from .messages import ChatMessage, HumanInput, RequestTurn, StartTask, TurnResult
from .participants import Assistant, AssistantAgent, Participant, Transfer, UserProxy
from .round_robin import RoundRobinTeam
from .selector import SelectorTeam
from .swarm import SwarmTeam
from .tasks import TaskInfo, Tasks
from .termination import (
    AllOf,
    AnyOf,
    Condition,
    External,
    FunctionalTermination,
    FunctionCall,
    Handoff,
    MaxMessages,
    RunView,
    SourceMatch,
    StopMessage,
    TerminationCondition,
    TextMention,
    TextMessage,
    Timeout,
    TokenUsage,
    termination_function,
)

__all__ = [
    "MANAGER_TYPE",
    "AllOf",
    "AnyOf",
    "Assistant",
    "AssistantAgent",
    "ChatMessage",
    "Condition",
    "External",
    "FunctionCall",
    "FunctionalTermination",
    "Handoff",
    "HeadAndTail",
    "HumanInput",
    "LastK",
    "MagenticOneTeam",
    "MaxMessages",
    "Participant",
    "RequestTurn",
    "RoundRobinTeam",
    "RunView",
    "Selection",
    "SelectorTeam",
    "SourceMatch",
    "StartTask",
    "StopMessage",
    "SwarmTeam",
    "TaskInfo",
    "Tasks",
    "Team",
    "TeamManager",
    "TeamState",
    "TerminationCondition",
    "TextMention",
    "TextMessage",
    "Timeout",
    "TokenLimited",
    "TokenUsage",
    "Transfer",
    "TurnResult",
    "Unbounded",
    "UserProxy",
    "termination_function",
]
