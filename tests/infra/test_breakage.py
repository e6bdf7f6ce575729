"""Each check of tests/infra/checks.py fails on a copy of infra/ broken the way it claims to
catch: a check that passes everything would pass these too, and these would fail."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import checks
from .bicep import INFRA, ROOT


@dataclass(frozen=True)
class Breakage:
    """Replace `old` by `new` in `file` (relative to infra/); `check` must then report a
    problem containing `expect`."""

    id: str
    file: str
    old: str
    new: str
    check: Callable[[Path], list[str]]
    expect: str


BREAKAGES = [
    Breakage(
        "unclosed-brace",
        "main.bicep",
        "  location: location\n  tags: tags\n}\n\nmodule identity",
        "  location: location\n  tags: tags\n\nmodule identity",
        checks.check_syntax,
        "main.bicep",
    ),
    Breakage(
        "unterminated-string",
        "modules/servicebus.bicep",
        "name: '$Default'",
        "name: '$Default",
        checks.check_syntax,
        "servicebus.bicep",
    ),
    Breakage(
        "missing-colon",
        "modules/cosmos.bicep",
        "kind: 'GlobalDocumentDB'",
        "kind 'GlobalDocumentDB'",
        checks.check_syntax,
        "cosmos.bicep",
    ),
    Breakage(
        "misspelt-topic-property",
        "modules/servicebus.bicep",
        "supportOrdering: true",
        "supportsOrdering: true",
        checks.check_property_names,
        "topic.properties.supportsOrdering is not a property",
    ),
    Breakage(
        "misspelt-flex-runtime-property",
        "modules/functionapp.bicep",
        "userAssignedIdentityResourceId: identityId",
        "userAssignedIdentityId: identityId",
        checks.check_property_names,
        "authentication.userAssignedIdentityId is not a property",
    ),
    Breakage(
        "misspelt-property-in-a-list",
        "modules/cosmos.bicep",
        "failoverPriority: 0",
        "failOverPriority: 0",
        checks.check_property_names,
        "locations[0].failOverPriority is not a property",
    ),
    Breakage(
        "misspelt-property-in-one-branch-of-a-condition",
        "modules/cosmos.bicep",
        "maxThroughput: autoscaleMaxThroughput",
        "maximumThroughput: autoscaleMaxThroughput",
        checks.check_property_names,
        "autoscaleSettings.maximumThroughput is not a property",
    ),
    Breakage(
        "misspelt-flattened-property",
        "modules/monitoring.bicep",
        "WorkspaceResourceId: logAnalytics.id",
        "WorkspaceId: logAnalytics.id",
        checks.check_property_names,
        "applicationInsights.properties.WorkspaceId is not a property",
    ),
    Breakage(
        "tls-value-of-another-service",
        "modules/cosmos.bicep",
        "minimalTlsVersion: 'Tls12'",
        "minimalTlsVersion: 'TLS1_2'",
        checks.check_property_names,
        "minimalTlsVersion is 'TLS1_2', not one of",
    ),
    Breakage(
        "misspelt-enum-value",
        "modules/servicebus.bicep",
        "filterType: 'CorrelationFilter'",
        "filterType: 'CorrelationFiltr'",
        checks.check_property_names,
        "filterType is 'CorrelationFiltr'",
    ),
    Breakage(
        "wrong-deployment-authentication-type",
        "modules/functionapp.bicep",
        "type: 'UserAssignedIdentity'",
        "type: 'UserAssigned'",
        checks.check_property_names,
        "authentication.type is 'UserAssigned'",
    ),
    Breakage(
        "service-bus-keys-on",
        "modules/servicebus.bicep",
        "disableLocalAuth: true",
        "disableLocalAuth: false",
        checks.check_security,
        "disableLocalAuth",
    ),
    Breakage(
        "cosmos-keys-on",
        "modules/cosmos.bicep",
        "disableLocalAuth: true",
        "disableLocalAuth: false",
        checks.check_security,
        "Microsoft.DocumentDB/databaseAccounts) properties.disableLocalAuth",
    ),
    Breakage(
        "app-insights-keys-on",
        "modules/monitoring.bicep",
        "DisableLocalAuth: true",
        "DisableLocalAuth: false",
        checks.check_security,
        "DisableLocalAuth",
    ),
    Breakage(
        "storage-shared-keys-on",
        "modules/storage.bicep",
        "allowSharedKeyAccess: false",
        "allowSharedKeyAccess: true",
        checks.check_security,
        "allowSharedKeyAccess",
    ),
    Breakage(
        "http-allowed",
        "modules/functionapp.bicep",
        "httpsOnly: true",
        "httpsOnly: false",
        checks.check_security,
        "httpsOnly",
    ),
    Breakage(
        "ftp-on",
        "modules/functionapp.bicep",
        "ftpsState: 'Disabled'",
        "ftpsState: 'FtpsOnly'",
        checks.check_security,
        "ftpsState",
    ),
    Breakage(
        "no-sessions",
        "modules/servicebus.bicep",
        "requiresSession: true",
        "requiresSession: false",
        checks.check_service_bus,
        "requiresSession",
    ),
    Breakage(
        "no-duplicate-detection",
        "modules/servicebus.bicep",
        "requiresDuplicateDetection: true",
        "requiresDuplicateDetection: false",
        checks.check_service_bus,
        "duplicate detection",
    ),
    Breakage(
        "filter-on-the-wrong-value",
        "modules/servicebus.bicep",
        "'${filterProperty}': agent.agentType",
        "'${filterProperty}': agent.subscription",
        checks.check_service_bus,
        "filter must match",
    ),
    Breakage(
        "service-bus-gives-up-before-cadre",
        "main.bicep",
        "param serviceBusMaxDeliveryCount int = 10",
        "param serviceBusMaxDeliveryCount int = 5",
        checks.check_service_bus,
        "above CADRE_MAX_ATTEMPTS",
    ),
    Breakage(
        "missing-app-setting",
        "main.bicep",
        "  CADRE_COSMOS_ENDPOINT: cosmos.outputs.endpoint\n",
        "",
        checks.check_app_settings,
        "CADRE_COSMOS_ENDPOINT",
    ),
    Breakage(
        "a-literal-that-is-not-the-code-default",
        "main.bicep",
        "  CADRE_SEEN_LIMIT: '64'\n",
        "  CADRE_SEEN_LIMIT: '46'\n",
        checks.check_app_settings,
        "CADRE_SEEN_LIMIT='46' differs",
    ),
    Breakage(
        "key-based-service-bus-trigger",
        "main.bicep",
        "  ServiceBusConnection__credential: 'managedidentity'\n",
        "",
        checks.check_app_settings,
        "ServiceBusConnection__credential",
    ),
    Breakage(
        "cosmos-key-in-app-settings",
        "main.bicep",
        "  CADRE_APP: 'agents'\n",
        "  CADRE_APP: 'agents'\n  CADRE_COSMOS_KEY: cosmosKey\n",
        checks.check_secrets,
        "CADRE_COSMOS_KEY is a key",
    ),
    Breakage(
        "literal-storage-key",
        "modules/storage.bicep",
        "accessTier: 'Hot'",
        "accessTier: 'Hot'\n    note: 'AccountName=x;AccountKey="
        "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0Zm9vYmFyMTI='",
        checks.check_secrets,
        "looks like a secret",
    ),
    Breakage(
        "base64-key-literal",
        "main.bicep",
        "param principalId string = ''",
        "param principalId string = 'Zm9vYmFyMTIzNDU2Nzg5MEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFla'",
        checks.check_secrets,
        "looks like a secret",
    ),
    Breakage(
        "listkeys",
        "main.bicep",
        "  CADRE_APP: 'agents'\n",
        "  CADRE_APP: 'agents'\n  X: listKeys(cosmos.outputs.id, '2024-05-15').primaryMasterKey\n",
        checks.check_secrets,
        "looks like a secret",
    ),
    Breakage(
        "unused-param",
        "modules/servicebus.bicep",
        "param topicName string\n",
        "param topicName string\n\nparam forgotten string = 'x'\n",
        checks.check_usage,
        "param forgotten is never used",
    ),
    Breakage(
        "parameters-file-names-unknown-param",
        "main.parameters.json",
        '"principalId": {',
        '"principalld": {',
        checks.check_usage,
        "principalld is not a param",
    ),
    Breakage(
        "missing-module-file",
        "main.bicep",
        "module cosmos 'modules/cosmos.bicep'",
        "module cosmos 'modules/cosmosdb.bicep'",
        checks.check_modules,
        "missing",
    ),
    Breakage(
        "undeclared-module-param",
        "main.bicep",
        "    topicName: topicName\n",
        "    topicName: topicName\n    topic: topicName\n",
        checks.check_modules,
        "undeclared param 'topic'",
    ),
    Breakage(
        "required-module-param-missing",
        "main.bicep",
        "    databaseName: cosmosDatabaseName\n",
        "",
        checks.check_modules,
        "lacks required param 'databaseName'",
    ),
    Breakage(
        "unknown-module-output",
        "main.bicep",
        "cosmos.outputs.endpoint",
        "cosmos.outputs.documentEndpoint",
        checks.check_modules,
        "cosmos.outputs.documentEndpoint is not an output",
    ),
    Breakage(
        "wrong-partition-key",
        "modules/cosmos.bicep",
        "'/pk'",
        "'/id'",
        checks.check_cosmos,
        "partition key",
    ),
    Breakage(
        "ttl-off",
        "modules/cosmos.bicep",
        "defaultTtl: -1",
        "defaultTtl: 3600",
        checks.check_cosmos,
        "defaultTtl",
    ),
    Breakage(
        "mistyped-role-guid",
        "modules/rbac.bicep",
        "var serviceBusDataReceiver = '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'",
        "var serviceBusDataReceiver = '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e1'",
        checks.check_roles,
        "serviceBusDataReceiver",
    ),
    Breakage(
        "no-sender-role",
        "modules/rbac.bicep",
        "var serviceBusRoles = [\n  serviceBusDataSender\n",
        "var serviceBusRoles = [\n",
        checks.check_roles,
        "Sender and Receiver",
    ),
    Breakage(
        "workbook-not-loaded",
        "modules/monitoring.bicep",
        "serializedData: loadTextContent('../workbook.json')",
        "serializedData: '{}'",
        checks.check_workbook,
        "loadTextContent",
    ),
    Breakage(
        "consumption-plan",
        "modules/functionapp.bicep",
        "name: 'FC1'",
        "name: 'Y1'",
        checks.check_flex_consumption,
        "Flex Consumption FC1",
    ),
    Breakage(
        "missing-azd-output",
        "main.bicep",
        "output SERVICE_API_URI string = functionApp.outputs.uri\n",
        "",
        checks.check_outputs,
        "SERVICE_API_URI",
    ),
]


def broken_copy(tmp_path: Path, breakage: Breakage) -> Path:
    """A copy of infra/ with one breakage applied."""
    infra = tmp_path / "infra"
    shutil.copytree(INFRA, infra)
    target = infra / breakage.file
    text = target.read_text()
    assert breakage.old in text, f"the breakage no longer applies to {breakage.file}"
    target.write_text(text.replace(breakage.old, breakage.new))
    return infra


@pytest.mark.parametrize("breakage", BREAKAGES, ids=lambda b: b.id)
def test_a_broken_template_fails_its_check(tmp_path: Path, breakage: Breakage) -> None:
    # the real templates pass every check (test_templates.py); the broken copy fails this one
    problems = breakage.check(broken_copy(tmp_path, breakage))
    assert any(breakage.expect in p for p in problems), problems


def test_a_package_that_would_ship_node_modules_or_drop_the_app_fails(tmp_path: Path) -> None:
    ignore = (ROOT / ".funcignore").read_text()
    assert checks._check_funcignore(ROOT) == []
    (tmp_path / ".funcignore").write_text(ignore.replace("node_modules\n", "") + "cadre*\n")
    problems = checks._check_funcignore(tmp_path)
    assert ".funcignore must exclude node_modules" in problems
    assert ".funcignore excludes cadre, which the app needs" in problems


def test_a_stale_agent_types_file_fails(tmp_path: Path) -> None:
    infra = tmp_path / "infra"
    shutil.copytree(INFRA, infra)
    data = json.loads((infra / "agent-types.json").read_text())
    dropped = data["agentTypes"].pop()
    (infra / "agent-types.json").write_text(json.dumps(data))
    problems = checks.check_agent_types(infra)
    assert any("stale" in p for p in problems), problems
    assert any(dropped["subscription"] in p and "lacks" in p for p in problems), problems


def test_a_setting_the_code_starts_reading_fails_until_it_is_deployed(tmp_path: Path) -> None:
    root = tmp_path / "app"
    shutil.copytree(ROOT / "cadre", root / "cadre", ignore=shutil.ignore_patterns("__pycache__"))
    for package in ("agents", "messages"):
        (root / package).mkdir()
    (root / "cadre" / "new_feature.py").write_text(
        "import os\nLIMIT = int(os.environ.get('CADRE_NEW_LIMIT', '3'))\n"
    )
    problems = checks.check_app_settings(INFRA, root)
    assert any("CADRE_NEW_LIMIT" in p for p in problems), problems
