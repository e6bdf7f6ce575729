"""The function index: one session-enabled Service Bus trigger per registered agent type,
with stable names, as the Functions host reads them (``app.get_functions()``), and a cold
start that imports neither the app nor pydantic."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from cadre.errors import ConfigurationError
from cadre.hosts.functions_index import (
    CONNECTION,
    INDEX_FILE,
    AgentFunction,
    _check_unique_function_names,
    function_name,
)
from cadre.transports.servicebus import subscription_name
from tests.functions.conftest import ROOT, load_function_app

pytestmark = pytest.mark.timeout(60)

COMMITTED_INDEX = (ROOT / INDEX_FILE).read_text()
"""As checked out, read at collection: importing a stale ``function_app`` rewrites it."""
APP_TYPES = [
    "cadre.inbox",
    "cadre.team",
    "critic",
    "magentic.analyst",
    "magentic.researcher",
    "nested.drafter",
    "nested.editor",
    "nested.reviewer",
    "notebook",
    "planner",
    "review.reviewer",
    "review.writer",
    "selector.local_guide",
    "selector.planner",
    "selector.writer",
    "swarm.customer",
    "swarm.refunds",
    "swarm.travel_desk",
    "writer",
]
"""Every agent type of the app in agents/ (one Service Bus trigger each), sorted."""
TEST_TYPES = ["fntest.breaker", "fntest.flaky"]


def bindings(fn: Any) -> list[dict[str, Any]]:
    return list(json.loads(fn.get_function_json())["bindings"])


def run_python(code: str, cwd: Path = ROOT, **env: str) -> str:
    import os

    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_agent_type_has_a_session_enabled_topic_trigger(
    app_module: ModuleType, indexed: dict[str, Any]
) -> None:
    agent_functions = {name: fn for name, fn in indexed.items() if name != "http_api"}
    expected = sorted(APP_TYPES + TEST_TYPES)
    assert sorted(agent_functions) == sorted(function_name(t) for t in expected)
    for agent_type in expected:
        fn = agent_functions[function_name(agent_type)]
        [trigger] = bindings(fn)
        assert trigger == {
            "direction": "IN",
            "type": "serviceBusTrigger",
            "name": "msg",
            "connection": CONNECTION,
            "topicName": "cadre",
            "subscriptionName": subscription_name(agent_type),
            "isSessionsEnabled": True,
        }
        assert json.loads(fn.get_function_json())["scriptFile"] == "function_app.py"


def test_function_names_are_stable_and_readable() -> None:
    assert [function_name(t) for t in ["cadre.inbox", "critic", "selector.local_guide"]] == [
        "agent_cadre_inbox",
        "agent_critic",
        "agent_selector_local_guide",
    ]
    assert function_name("a-b.c_d") == "agent_a_b_c_d"
    long = function_name("x" * 300)
    assert len(long) == 128 and long == function_name("x" * 300) != function_name("x" * 301)


def test_agent_types_that_would_share_a_function_name_are_refused() -> None:
    functions = [
        AgentFunction(t, function_name(t), subscription_name(t)) for t in ("chat.bot", "chat-bot")
    ]
    with pytest.raises(ConfigurationError, match=r"'chat.bot' and 'chat-bot'.*rename one"):
        _check_unique_function_names(functions)


def test_the_http_api_is_one_catch_all_function_key_route(indexed: dict[str, Any]) -> None:
    trigger, output = bindings(indexed["http_api"])
    assert trigger["type"] == "httpTrigger" and trigger["route"] == "{*path}"
    assert trigger["authLevel"] == "FUNCTION"
    assert set(trigger["methods"]) >= {"GET", "POST", "DELETE"}
    assert output == {"direction": "OUT", "type": "http", "name": "$return"}


def test_the_repo_function_app_lists_the_app_agents(tmp_path: Path) -> None:
    out = run_python(
        """
        import json, function_app
        print(json.dumps(sorted(f.get_function_name() for f in function_app.app.get_functions())))
        """
    )
    assert json.loads(out) == sorted(["http_api", *(function_name(t) for t in APP_TYPES)])


def test_committed_index_is_current_and_agrees_with_infra() -> None:
    committed = json.loads(COMMITTED_INDEX)
    fresh = json.loads(
        run_python(
            """
            import json
            from pathlib import Path
            from cadre.hosts.functions_index import build_index
            print(json.dumps(build_index(Path.cwd(), ["agents"])))
            """
        )
    )
    assert committed == fresh, "run: python -m cadre.hosts.functions_index"
    infra = json.loads((ROOT / "infra" / "agent-types.json").read_text())
    assert {(r["agentType"], r["subscription"]) for r in infra["agentTypes"]} == {
        (f["agent_type"], f["subscription"]) for f in committed["functions"]
    }
    assert committed["filter_property"] == infra["filterProperty"]


def test_adding_an_agent_adds_its_function_with_no_other_edit(tmp_path: Path) -> None:
    app = tmp_path / "myagents"
    app.mkdir()
    (app / "__init__.py").write_text("from myagents.one import One\n")
    (app / "one.py").write_text(
        "from cadre import Agent\n\n\nclass One(Agent, type='one'):\n    pass\n"
    )
    load = """
        import json, sys
        from pathlib import Path
        from cadre.hosts.functions_index import load_index
        index = load_index(Path.cwd(), ["myagents"])
        print(json.dumps([index.from_file, [f.function_name for f in index.functions],
                          sorted(sys.modules.keys() & {"pydantic", "myagents"})]))
        """
    cold, names, imported = json.loads(run_python(load, cwd=tmp_path))
    assert (cold, names, imported) == (
        False,
        ["agent_cadre_inbox", "agent_one"],
        ["myagents", "pydantic"],
    )
    assert (tmp_path / INDEX_FILE).exists()  # written for the next cold start
    assert json.loads(run_python(load, cwd=tmp_path)) == [True, names, []]

    (app / "two.py").write_text(
        "from cadre import Agent\n\n\nclass Two(Agent, type='two.b'):\n    pass\n"
    )
    (app / "__init__.py").write_text("from myagents.one import One\nfrom myagents.two import Two\n")
    stale, names, _ = json.loads(run_python(load, cwd=tmp_path))
    assert (stale, names) == (False, ["agent_cadre_inbox", "agent_one", "agent_two_b"])


def test_a_read_only_folder_still_gets_every_function(tmp_path: Path) -> None:
    (tmp_path / "solo.py").write_text(
        "from cadre import Agent\n\n\nclass Solo(Agent, type='solo'):\n    pass\n"
    )
    (tmp_path / INDEX_FILE).mkdir()  # can be neither read nor written (a read-only package)
    out = run_python(
        """
        import json
        from pathlib import Path
        from cadre.hosts.functions_index import load_index
        index = load_index(Path.cwd(), ["solo"])
        print(json.dumps([index.from_file, [f.agent_type for f in index.functions]]))
        """,
        cwd=tmp_path,
    )
    assert json.loads(out) == [False, ["cadre.inbox", "solo"]]


def test_cold_start_imports_no_app_no_pydantic_and_no_model_or_web_sdk() -> None:
    out = run_python(
        """
        import json, sys
        import function_app
        heavy = {"pydantic", "openai", "fastapi", "starlette", "agents", "messages",
                 "azure.servicebus", "azure.cosmos", "azure.identity", "aiohttp"}
        print(json.dumps([function_app.index.from_file, sorted(heavy & sys.modules.keys())]))
        """
    )
    assert json.loads(out) == [True, []]


def test_a_copy_of_the_app_indexes_its_own_agents_from_its_own_folder(
    tmp_path: Path,
) -> None:
    first = load_function_app(tmp_path, {"CADRE_APP": "agents"}, "fn_app_copy_1")
    assert not first.index.from_file and (tmp_path / INDEX_FILE).exists()
    second = load_function_app(tmp_path, {"CADRE_APP": "agents"}, "fn_app_copy_2")
    assert second.index.from_file and second.index.functions == first.index.functions
