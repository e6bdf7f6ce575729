"""Property names checked against Azure's own resource models.

The Azure management SDKs (``azure-mgmt-*``, generated from the same REST API specs as the
Bicep types) describe every resource body: which keys exist at every level and what they
hold. A misspelt property (``supportsOrdering``) is silently ignored or rejected by Azure;
here it is a test failure. Literal strings of enum-typed properties must be one of the enum's
values. Values that are Bicep expressions are not checked, only literals, objects and lists;
both branches of a ``cond ? a : b`` are.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import re
import sys
import typing
from functools import cache
from types import ModuleType
from typing import Any

# resource type -> (models module, model class); the API versions the SDKs carry may be newer
# than the templates' (property names are stable across versions; removals would show here).
RESOURCE_MODELS = {
    "Microsoft.ServiceBus/namespaces": ("azure.mgmt.servicebus.models", "SBNamespace"),
    "Microsoft.ServiceBus/namespaces/topics": ("azure.mgmt.servicebus.models", "SBTopic"),
    "Microsoft.ServiceBus/namespaces/topics/subscriptions": (
        "azure.mgmt.servicebus.models",
        "SBSubscription",
    ),
    "Microsoft.ServiceBus/namespaces/topics/subscriptions/rules": (
        "azure.mgmt.servicebus.models",
        "Rule",
    ),
    "Microsoft.DocumentDB/databaseAccounts": (
        "azure.mgmt.cosmosdb.models",
        "DatabaseAccountCreateUpdateParameters",
    ),
    "Microsoft.DocumentDB/databaseAccounts/sqlDatabases": (
        "azure.mgmt.cosmosdb.models",
        "SqlDatabaseCreateUpdateParameters",
    ),
    "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers": (
        "azure.mgmt.cosmosdb.models",
        "SqlContainerCreateUpdateParameters",
    ),
    "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments": (
        "azure.mgmt.cosmosdb.models",
        "SqlRoleAssignmentCreateUpdateParameters",
    ),
    "Microsoft.Web/serverfarms": ("azure.mgmt.web.models", "AppServicePlan"),
    "Microsoft.Web/sites": ("azure.mgmt.web.models", "Site"),
    "Microsoft.Web/sites/config": ("azure.mgmt.web.models", "StringDictionary"),
    "Microsoft.Web/sites/basicPublishingCredentialsPolicies": (
        "azure.mgmt.web.models",
        "CsmPublishingCredentialsPoliciesEntity",
    ),
    "Microsoft.Storage/storageAccounts": (
        "azure.mgmt.storage.models",
        "StorageAccountCreateParameters",
    ),
    "Microsoft.Storage/storageAccounts/blobServices": (
        "azure.mgmt.storage.models",
        "BlobServiceProperties",
    ),
    "Microsoft.Storage/storageAccounts/blobServices/containers": (
        "azure.mgmt.storage.models",
        "BlobContainer",
    ),
    "Microsoft.Insights/components": (
        "azure.mgmt.applicationinsights.v2020_02_02.models",
        "ApplicationInsightsComponent",
    ),
    "Microsoft.Insights/workbooks": (
        "azure.mgmt.applicationinsights.v2022_04_01.models",
        "Workbook",
    ),
    "Microsoft.OperationalInsights/workspaces": ("azure.mgmt.loganalytics.models", "Workspace"),
    "Microsoft.CognitiveServices/accounts": ("azure.mgmt.cognitiveservices.models", "Account"),
    "Microsoft.CognitiveServices/accounts/deployments": (
        "azure.mgmt.cognitiveservices.models",
        "Deployment",
    ),
    "Microsoft.ManagedIdentity/userAssignedIdentities": ("azure.mgmt.msi.models", "Identity"),
    "Microsoft.Authorization/roleAssignments": (
        "azure.mgmt.authorization.v2022_04_01.models",
        "RoleAssignmentCreateParameters",
    ),
}
NOT_MODELLED = {"Microsoft.Resources/resourceGroups"}  # name, location, tags only
ENVELOPE = {
    "name",
    "parent",
    "scope",
    "dependsOn",
    "depends_on",
}  # Bicep's, not the resource body's

# A schema: ("model", class, models module) | ("tree", {key: schema}) | ("list", schema)
# | ("dict", schema) | None (a primitive or an enum: the value is not checked)
Schema = tuple[Any, ...] | None

_MSREST_PRIMITIVES = {
    "str",
    "bool",
    "int",
    "long",
    "float",
    "object",
    "iso-8601",
    "rfc-1123",
    "unix-time",
    "duration",
    "date",
    "time",
    "bytearray",
    "base64",
    "Decimal",
}


def _msrest_type(spec: str, models: ModuleType) -> Schema:
    if spec.startswith("[") and spec.endswith("]"):
        return ("list", _msrest_type(spec[1:-1], models))
    if spec.startswith("{") and spec.endswith("}"):
        return ("dict", _msrest_type(spec[1:-1], models))
    if spec in _MSREST_PRIMITIVES:
        return None
    cls = getattr(models, spec, None)
    return ("model", cls, models) if isinstance(cls, type) else None


def _hint_type(hint: Any, models: ModuleType) -> Schema:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums:
            return ("enum", enums[0])
        for arg in args:
            schema = _hint_type(arg, models)
            if schema is not None:
                return schema
        return None
    if origin is list and args:
        return ("list", _hint_type(args[0], models))
    if origin is dict and len(args) == 2:
        return ("dict", _hint_type(args[1], models))
    if (
        isinstance(hint, type)
        and hint.__module__.startswith("azure.mgmt.")
        and not issubclass(hint, (str, enum.Enum))
    ):
        return ("model", hint, models)
    return None


def _hints(cls: type, models: ModuleType) -> dict[str, Any]:
    namespace = dict(vars(sys.modules[cls.__module__]))
    namespace["_models"] = models
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        for name, annotation in inspect.get_annotations(klass).items():
            ref = typing.ForwardRef(annotation) if isinstance(annotation, str) else annotation
            try:
                hints[name] = typing._eval_type(ref, namespace, None)  # type: ignore[attr-defined]
            except Exception:
                hints[name] = None
    return hints


@cache
def _fields(cls: type, models: ModuleType) -> dict[str, Schema]:
    """Wire name -> schema of one model class (msrest or TypeSpec-generated)."""
    attribute_map = getattr(cls, "_attribute_map", None)
    if attribute_map is not None:  # msrest: flattened keys such as "properties.endpoint"
        tree: dict[str, Any] = {}
        for spec in attribute_map.values():
            parts = [p.replace("\\.", ".") for p in re.split(r"(?<!\\)\.", spec["key"])]
            node = tree
            for part in parts[:-1]:
                child = node.get(part)
                if not (isinstance(child, tuple) and child[0] == "tree"):
                    child = ("tree", {})
                    node[part] = child
                node = child[1]
            node[parts[-1]] = _msrest_type(spec["type"], models)
        return tree
    instance = cls()
    hints = _hints(cls, models)
    return {
        field._rest_name: _hint_type(hints.get(attr), models)
        for attr, field in instance._attr_to_rest_field.items()
    }


def _is_expression(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and len(value) == 1
        and next(iter(value))
        in {
            "operator",
            "function",
        }
    )


def _check(value: Any, schema: Schema, path: str, problems: list[str], names: set[str]) -> None:
    if schema is None:
        return
    if schema[0] == "enum":
        # a literal string must be one of the enum's values; a name is a Bicep expression
        if isinstance(value, str) and value not in names and "${" not in value:
            allowed = {str(member.value) for member in schema[1]}
            if value.lower() not in {a.lower() for a in allowed}:
                problems.append(f"{path} is {value!r}, not one of {sorted(allowed)}")
        return
    if _is_expression(value):
        operator = value.get("operator", {})
        if operator.get("type") == "conditional":
            operands = operator["operands"]
            _check(operands["true_value"], schema, path, problems, names)
            _check(operands["false_value"], schema, path, problems, names)
        return
    kind = schema[0]
    if kind == "list":
        if isinstance(value, list):
            for i, item in enumerate(value):
                _check(item, schema[1], f"{path}[{i}]", problems, names)
        return
    if kind == "dict":
        if isinstance(value, dict):
            for key, item in value.items():
                _check(item, schema[1], f"{path}.{key}", problems, names)
        return
    if not isinstance(value, dict):
        return
    fields = schema[1] if kind == "tree" else _fields(schema[1], schema[2])
    label = "" if kind == "tree" else f" ({schema[1].__name__})"
    for key, item in value.items():
        name = key.strip("'")
        if "${" in name:
            continue
        if name not in fields:
            problems.append(f"{path}.{name} is not a property{label}")
            continue
        _check(item, fields[name], f"{path}.{name}", problems, names)


def schema_problems(
    resource_type: str, body: dict[str, Any], where: str, names: set[str]
) -> list[str]:
    """What in a resource body is not in the Azure model of its type: unknown property
    names, and literal strings outside an enum's values. `names`: the identifiers of the
    file (pycep writes ``sku: sku`` and ``sku: 'sku'`` alike)."""
    if resource_type in NOT_MODELLED:
        return []
    if resource_type not in RESOURCE_MODELS:
        return [f"{where}: no model known for {resource_type} (add it to RESOURCE_MODELS)"]
    module_name, class_name = RESOURCE_MODELS[resource_type]
    models = importlib.import_module(module_name)
    problems: list[str] = []
    top = {k: v for k, v in body.items() if k not in ENVELOPE}
    _check(top, ("model", getattr(models, class_name), models), where, problems, names)
    return problems
