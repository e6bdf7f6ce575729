"""What the Azure infrastructure (infra/) needs to know about the app: its agent types and
the Service Bus subscription each one gets.

    cadre infra agent-types                         # print the JSON
    cadre infra agent-types --write infra/agent-types.json
    cadre infra agent-types --check infra/agent-types.json   # exit 1 when it is stale

`infra/main.bicep` loads ``infra/agent-types.json`` and creates one session-enabled
subscription per entry, filtered on `AGENT_TYPE_PROPERTY`. Subscription names come from
`subscription_name`, the same rule the Functions triggers use, so the two cannot disagree.
The built-in inbox (``cadre.inbox``) is an agent type of every app and is always listed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ConfigurationError
from .inbox import INBOX_TYPE
from .registry import Registry
from .transports.servicebus import AGENT_TYPE_PROPERTY, subscription_name


def agent_types(registry: Registry) -> list[str]:
    """Every agent type a deployment must receive messages for, sorted: the registered
    ones and the built-in inbox."""
    return sorted(set(registry.types) | {INBOX_TYPE})


def agent_types_document(registry: Registry) -> dict[str, Any]:
    """The JSON `infra/main.bicep` loads: the filter property and, per agent type, its
    subscription. `ConfigurationError` when two types would share a subscription
    (Service Bus entity names are case-insensitive)."""
    rows = [{"agentType": t, "subscription": subscription_name(t)} for t in agent_types(registry)]
    owners: dict[str, str] = {}
    for row in rows:
        key = row["subscription"].lower()
        if key in owners:
            raise ConfigurationError(
                f"agent types {owners[key]!r} and {row['agentType']!r} map to the same Service "
                f"Bus subscription {row['subscription']!r}; rename one of them"
            )
        owners[key] = row["agentType"]
    return {"filterProperty": AGENT_TYPE_PROPERTY, "agentTypes": rows}


def render(document: dict[str, Any]) -> str:
    """The document as committed: indented JSON with a final newline."""
    return json.dumps(document, indent=2) + "\n"


def check_file(document: dict[str, Any], path: Path) -> str | None:
    """None when `path` holds exactly `document`, else what is wrong with it."""
    if not path.exists():
        return f"{path} does not exist: run `cadre infra agent-types --write {path}`"
    try:
        committed = json.loads(path.read_text())
    except ValueError as exc:
        return f"{path} is not JSON ({exc}): run `cadre infra agent-types --write {path}`"
    if committed != document:
        return (
            f"{path} is stale: the registry has {[r['agentType'] for r in document['agentTypes']]}"
            f"; run `cadre infra agent-types --write {path}`"
        )
    return None
