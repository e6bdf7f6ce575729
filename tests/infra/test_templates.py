"""infra/ is right by construction: no Bicep compiler or Azure can run here, so these tests
do what the compiler, a linter and a reviewer would (tests/infra/checks.py), on the real
templates. tests/infra/test_breakage.py shows that each check fails on a broken copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import checks
from .bicep import INFRA, bicep_files, structure, syntax_errors


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: p.relative_to(INFRA).as_posix())
def test_every_bicep_file_parses_without_syntax_errors(path: Path) -> None:
    text = path.read_text()
    assert syntax_errors(text) == []
    parsed = structure(text)  # the second, independent parser
    assert parsed.get("resources") or parsed.get("modules")


def test_the_templates_are_the_main_file_and_its_modules() -> None:
    names = {p.relative_to(INFRA).as_posix() for p in bicep_files()}
    assert {
        "main.bicep",
        "modules/functionapp.bicep",
        "modules/servicebus.bicep",
        "modules/cosmos.bicep",
        "modules/monitoring.bicep",
        "modules/rbac.bicep",
        "modules/identity.bicep",
        "modules/storage.bicep",
        "modules/openai.bicep",
    } == names


def test_every_property_is_one_azure_defines_for_its_resource_type() -> None:
    assert checks.check_property_names() == []


def test_every_module_exists_and_gets_exactly_its_declared_params_and_outputs() -> None:
    assert checks.check_modules() == []


def test_every_parameter_and_variable_is_used_and_the_parameters_file_matches() -> None:
    assert checks.check_usage() == []


def test_local_auth_is_off_and_the_app_is_https_only_with_tls_12_and_no_ftp() -> None:
    assert checks.check_security() == []


def test_no_secret_looking_literal_and_no_key_in_app_settings() -> None:
    assert checks.check_secrets() == []


def test_app_settings_cover_every_setting_the_code_reads_in_azure() -> None:
    assert checks.check_app_settings() == []


def test_the_settings_scan_finds_what_the_code_reads() -> None:
    # the scan is the test's foundation: it must see every way settings are read
    source = (
        "import os\n"
        "def f(env):\n"
        "    env.get('A_ONE'); env['A_TWO']; os.environ.get('A_THREE'); os.getenv('A_FOUR')\n"
        "    _int(env, 'A_FIVE', 1); 'A_SIX' in os.environ\n"
    )
    assert checks.env_reads(source) == {"A_ONE", "A_TWO", "A_THREE", "A_FOUR", "A_FIVE", "A_SIX"}
    helper = "def f():\n    return _flag('CADRE_X_ON', True), 'CADRE lower', 'Conn__fqdn'\n"
    assert checks.setting_literals(helper) == {"CADRE_X_ON", "Conn__fqdn"}
    read = checks.settings_read_by_code()
    assert {"CADRE_COSMOS_ENDPOINT", "CADRE_TRACE_CONTENT", "AZURE_OPENAI_ENDPOINT"} <= read
    assert "ServiceBusConnection__fullyQualifiedNamespace" in read


def test_every_setting_kept_out_of_azure_is_still_read_by_the_code() -> None:
    # an entry the code no longer reads is a stale exception: remove it
    assert set(checks.NOT_IN_AZURE) - {"AzureWebJobsStorage"} <= checks.settings_read_by_code()


def test_the_function_app_is_python_on_flex_consumption_deployed_with_its_identity() -> None:
    assert checks.check_flex_consumption() == []


def test_every_agent_type_has_a_session_enabled_subscription_filtered_on_its_type() -> None:
    assert checks.check_service_bus() == []


def test_the_agent_types_file_matches_the_registry_and_the_function_triggers() -> None:
    assert checks.check_agent_types() == []


def test_cosmos_is_serverless_with_the_partition_key_and_ttl_the_store_expects() -> None:
    assert checks.check_cosmos() == []


def test_the_identity_has_the_data_roles_it_needs() -> None:
    assert checks.check_roles() == []


def test_the_observability_workbook_is_deployed_on_application_insights() -> None:
    assert checks.check_workbook() == []


def test_main_outputs_what_azd_needs() -> None:
    assert checks.check_outputs() == []


def test_azure_yaml_deploys_this_folder_as_a_python_function_app() -> None:
    assert checks.check_azure_yaml() == []
