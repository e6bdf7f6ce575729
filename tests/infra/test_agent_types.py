"""`cadre infra agent-types` and the one subscription naming rule it shares with the
Functions triggers (`cadre.transports.servicebus.subscription_name`)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cadre import infra
from cadre.cli import main
from cadre.errors import ConfigurationError
from cadre.registry import AgentType, Registry, default_registry
from cadre.transports.servicebus import AGENT_TYPE_PROPERTY, subscription_name

from .bicep import INFRA, ROOT

# Service Bus subscription names: 1-50 letters, digits, '.', '-', '_', starting and ending
# with a letter or digit.
VALID_SUBSCRIPTION = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,48}[A-Za-z0-9])?$")
AGENT_TYPES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,80}", fullmatch=True)


def registry_of(*names: str) -> Registry:
    registry = Registry()
    for name in names:
        registry.types[name] = AgentType(name, object, object)  # type: ignore[arg-type]
    return registry


@pytest.mark.parametrize("agent_type", ["planner", "cadre.team", "cadre.inbox", "a-b_c.d"])
def test_a_valid_agent_type_is_its_own_subscription(agent_type: str) -> None:
    assert subscription_name(agent_type) == agent_type


@pytest.mark.parametrize("agent_type", ["_private", "x-", "_", "a" * 51, "team.", "-" * 60])
def test_an_agent_type_service_bus_would_reject_gets_a_valid_hashed_name(agent_type: str) -> None:
    name = subscription_name(agent_type)
    assert VALID_SUBSCRIPTION.match(name), name
    assert name == subscription_name(agent_type)  # stable across processes


@given(AGENT_TYPES)
def test_every_agent_type_maps_to_a_name_service_bus_accepts(agent_type: str) -> None:
    assert VALID_SUBSCRIPTION.match(subscription_name(agent_type))


def test_long_types_that_share_a_prefix_get_different_subscriptions() -> None:
    assert subscription_name("a" * 60 + "x") != subscription_name("a" * 60 + "y")


def test_the_document_lists_every_type_and_the_inbox_sorted() -> None:
    document = infra.agent_types_document(registry_of("writer", "planner"))
    assert document == {
        "filterProperty": AGENT_TYPE_PROPERTY,
        "agentTypes": [
            {"agentType": "cadre.inbox", "subscription": "cadre.inbox"},
            {"agentType": "planner", "subscription": "planner"},
            {"agentType": "writer", "subscription": "writer"},
        ],
    }


def test_two_types_that_would_share_a_subscription_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="same Service Bus subscription"):
        infra.agent_types_document(registry_of("Planner", "planner"))


def test_the_command_prints_the_document_of_the_registry(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["infra", "agent-types"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == infra.agent_types_document(default_registry)
    assert {"planner", "writer", "critic", "cadre.team", "cadre.inbox"} <= {
        row["agentType"] for row in printed["agentTypes"]
    }


def test_the_committed_file_is_what_the_command_prints_for_the_app() -> None:
    # a fresh interpreter: this process's registry also holds other tests' agent types
    done = subprocess.run(
        [sys.executable, "-m", "cadre.cli", "infra", "agent-types"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout == (INFRA / "agent-types.json").read_text()


def test_write_then_check_round_trips_and_check_catches_a_stale_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    target = tmp_path / "agent-types.json"
    assert main(["infra", "agent-types", "--check", str(target)]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["infra", "agent-types", "--write", str(target)]) == 0
    assert json.loads(target.read_text()) == infra.agent_types_document(default_registry)
    assert main(["infra", "agent-types", "--check", str(target)]) == 0
    data = json.loads(target.read_text())
    data["agentTypes"] = data["agentTypes"][1:]
    target.write_text(json.dumps(data))
    assert main(["infra", "agent-types", "--check", str(target)]) == 1
    assert "stale" in capsys.readouterr().err
    target.write_text("{not json")
    assert main(["infra", "agent-types", "--check", str(target)]) == 1
    assert "not JSON" in capsys.readouterr().err
