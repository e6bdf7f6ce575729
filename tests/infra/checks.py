"""The checks a Bicep compiler, a linter and a reviewer would make on infra/, as functions
that return what is wrong (an empty list: nothing). The tests run them on infra/ and on
deliberately broken copies of it, so each check is shown to catch what it claims to."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.functions_host.worker_env import PYTHON_VERSION

from .bicep import (
    INFRA,
    ROOT,
    BicepFile,
    literal_keys,
    load_infra,
    output_references,
    parameters_file,
    references,
    structure,
    syntax_errors,
)

# Settings the code reads that must NOT be app settings in Azure, and why. Everything else
# the code reads must be one (test_app_settings_cover_every_setting_the_code_reads).
NOT_IN_AZURE = {
    "OTEL_SERVICE_NAME": "optional; under Functions the service name is the app's",
    "OTEL_RESOURCE_ATTRIBUTES": "optional resource attributes",
    "OTEL_SDK_DISABLED": "optional: turns telemetry off",
    "OTEL_TRACES_EXPORTER": "Azure exports to Application Insights instead",
    "OTEL_METRICS_EXPORTER": "Azure exports to Application Insights instead",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "Azure exports to Application Insights instead",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "Azure exports to Application Insights instead",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "Azure exports to Application Insights instead",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "Azure exports to Application Insights instead",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "Azure exports to Application Insights instead",
    "CADRE_OTEL_EXIT_TIMEOUT": "optional: the flush at exit (default 2 s)",
    "CADRE_TRACE_FAST_SPANS": "optional: on by default; false uses the SDK's general path",
    "WEBSITE_SITE_NAME": "set by the platform (the function app's name)",
    "CADRE_STATE": "the local runtime's SQLite file",
    "CADRE_CONCURRENCY": "the local runtime's step concurrency",
    "CADRE_RABBITMQ_URL": "the workers host (RabbitMQ)",
    "CADRE_POSTGRES_URL": "the workers host (PostgreSQL)",
    "CADRE_POSTGRES_DSN": "the workers host (PostgreSQL)",
    "CADRE_POSTGRES_PREFIX": "the workers host (PostgreSQL)",
    "CADRE_QUEUE_NAME": "the workers host (RabbitMQ)",
    "CADRE_PARTITIONS": "the workers host (RabbitMQ)",
    "CADRE_WORKER_INDEX": "the workers host",
    "CADRE_WORKER_COUNT": "the workers host",
    "CADRE_HEALTH_FILE": "the workers host",
    "CADRE_LOCAL_DELIVERY": "the workers host",
    "CADRE_RELAY_AFTER_SECONDS": "the workers host",
    "CADRE_STEP_BATCH": "the workers host",
    "CADRE_DELIVERY_LIMIT": "the workers host (quorum queues)",
    "CADRE_HEALTH_PORT": "the workers host (probe endpoint)",
    "CosmosDB__accountEndpoint": "an alias of CADRE_COSMOS_ENDPOINT, which is set",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "Azure exports to Application Insights instead",
    "OPENAI_BASE_URL": "openai.com / compatible endpoints, not Azure OpenAI",
    # secrets: in Azure the identity replaces every one of them
    "CADRE_COSMOS_KEY": "a key; the identity has a Cosmos DB data role",
    "ServiceBusConnection": "a connection string; the identity has Service Bus roles",
    "AzureWebJobsStorage": "a connection string; the identity has Storage roles",
    "OPENAI_API_KEY": "a key, for openai.com only",
    "AZURE_OPENAI_API_KEY": "a key; the identity has Cognitive Services OpenAI User",
    "CADRE_MODEL_API_KEY": "a key, for OpenAI-compatible servers only",
    "CADRE_API_KEY": "`cadre serve`'s key; the Functions HTTP trigger uses function keys",
}
SECRETS = {
    "CADRE_COSMOS_KEY",
    "ServiceBusConnection",
    "AzureWebJobsStorage",
    "OPENAI_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "CADRE_MODEL_API_KEY",
    "CADRE_API_KEY",
}

_ENV_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_ENV_OBJECTS = {"env", "environ", "os.environ", "environment"}


def code_files(root: Path = ROOT) -> list[Path]:
    """The Python that runs in the Function App: cadre/, the app's packages and the entry."""
    files = sorted((root / "cadre").rglob("*.py"))
    for package in ("agents", "messages"):
        files += sorted((root / package).rglob("*.py"))
    files += [p for p in (root / "function_app.py",) if p.exists()]
    return [p for p in files if "__pycache__" not in p.parts]


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _str(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def env_reads(source: str) -> set[str]:
    """Environment variable names a module reads: ``env.get("X")``, ``env["X"]``,
    ``os.environ.get("X")``, ``os.getenv("X")``, ``"X" in env`` and helpers called as
    ``f(env, "X", ...)``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        name: str | None = None
        if isinstance(node, ast.Call):
            func = _dotted(node.func)
            is_get = func.endswith(".get") and func[: -len(".get")] in _ENV_OBJECTS
            if (is_get or func in {"os.getenv", "getenv"}) and node.args:
                name = _str(node.args[0])
            elif (
                len(node.args) >= 2
                and _dotted(node.args[0]) in _ENV_OBJECTS
                and _str(node.args[1]) is not None
            ):
                name = _str(node.args[1])
        elif isinstance(node, ast.Subscript) and _dotted(node.value) in _ENV_OBJECTS:
            name = _str(node.slice)
        elif (
            isinstance(node, ast.Compare)
            and len(node.ops) == 1
            and isinstance(node.ops[0], ast.In)
            and _dotted(node.comparators[0]) in _ENV_OBJECTS
        ):
            name = _str(node.left)
        if name and _ENV_NAME.match(name):
            found.add(name)
    return found


_SETTING_LITERAL = re.compile(
    r"^(?:(?:CADRE|AZURE|OPENAI|OTEL|APPLICATIONINSIGHTS)_[A-Z0-9_]+"
    r"|[A-Za-z][A-Za-z0-9]*__[A-Za-z][A-Za-z0-9_]*)$"
)


def setting_literals(source: str) -> set[str]:
    """String literals shaped like a setting name (``CADRE_...``, ``AZURE_...``,
    ``Connection__property``): catches reads through helpers such as ``_flag("CADRE_X")``."""
    return {
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and _SETTING_LITERAL.match(node.value)
    }


def settings_table(root: Path = ROOT) -> set[str]:
    """The first column of the one settings table (cadre/settings.py's docstring)."""
    doc = ast.get_docstring(ast.parse((root / "cadre" / "settings.py").read_text())) or ""
    names = set()
    for line in doc.splitlines():
        cell = line.split("|")[1].strip() if line.startswith("|") else ""
        if _ENV_NAME.match(cell) and cell != cell.lower():
            names.add(cell)
    return names


def settings_read_by_code(root: Path = ROOT) -> set[str]:
    """Every environment variable the deployed code reads: the settings table, the
    environment reads and the setting-shaped literals of the code."""
    names = settings_table(root)
    for path in code_files(root):
        source = path.read_text()
        names |= env_reads(source) | setting_literals(source)
    return names


def app_settings(infra: Path = INFRA) -> dict[str, Any]:
    """The Function App's app settings: main.bicep's ``appSettings``, after checking that
    it is what the function app module applies."""
    main = BicepFile.load(infra / "main.bicep")
    value: dict[str, Any] = main.variables["appSettings"]["value"]
    return {k.strip("'"): v for k, v in value.items()}


def check_property_names(infra: Path = INFRA) -> list[str]:
    """Every property of every resource exists in Azure's model of its type."""
    from .arm_schema import schema_problems
    from .bicep import body

    problems = []
    for name, bicep in load_infra(infra).items():
        names = set(references(bicep.text))
        for symbol, decl in bicep.resources.items():
            if decl.get("existing") is not True:
                where = f"{name}:{symbol}"
                problems += schema_problems(decl["type"], body(decl), where, names)
    return problems


def check_syntax(infra: Path = INFRA) -> list[str]:
    """Both parsers accept every file."""
    problems = []
    for path in sorted(infra.rglob("*.bicep")):
        text = path.read_text()
        problems += [f"{path.name}:{e}" for e in syntax_errors(text)]
        try:
            structure(text)
        except Exception as exc:  # pycep raises lark's errors
            problems.append(f"{path.name}: pycep: {type(exc).__name__}: {str(exc)[:200]}")
    return problems


def check_modules(infra: Path = INFRA) -> list[str]:
    """Module paths exist; every param passed is declared; every required param is
    passed; every ``module.outputs.x`` referenced is an output of that module."""
    problems = []
    for name, bicep in load_infra(infra).items():
        refs = output_references(bicep.text)
        for symbol, decl in bicep.modules.items():
            if decl["type"] != "local":
                problems.append(f"{name}: module {symbol} is not a local file ({decl['type']})")
                continue
            target = bicep.module_file(symbol)
            if not target.exists():
                problems.append(f"{name}: module {symbol} points at missing {target}")
                continue
            module = BicepFile.load(target)
            config = decl["config"].get("config", decl["config"])
            passed = literal_keys(config.get("params", {}))
            declared = set(module.parameters)
            required = {p for p, d in module.parameters.items() if d.get("default") is None}
            for extra in sorted(passed - declared):
                problems.append(f"{name}: module {symbol} passes undeclared param {extra!r}")
            for missing in sorted(required - passed):
                problems.append(f"{name}: module {symbol} lacks required param {missing!r}")
            for used_symbol, output in sorted(refs):
                if used_symbol == symbol and output not in module.outputs:
                    problems.append(f"{name}: {symbol}.outputs.{output} is not an output")
        for used_symbol, output in sorted(refs):
            if used_symbol not in bicep.modules:
                problems.append(f"{name}: {used_symbol}.outputs.{output}: no such module")
    return problems


def check_usage(infra: Path = INFRA) -> list[str]:
    """Every parameter and variable is used; main.parameters.json names only parameters
    main.bicep declares, and every required one."""
    problems = []
    for name, bicep in load_infra(infra).items():
        refs = references(bicep.text)
        for kind, declared in (("param", bicep.parameters), ("var", bicep.variables)):
            problems += [f"{name}: {kind} {p} is never used" for p in declared if not refs[p]]
    main = BicepFile.load(infra / "main.bicep")
    given = parameters_file(infra)
    problems += [
        f"main.parameters.json: {p} is not a param" for p in given if p not in main.parameters
    ]
    problems += [
        f"main.parameters.json lacks required param {p}"
        for p, d in main.parameters.items()
        if d.get("default") is None and p not in given
    ]
    return problems


def _bool(body: dict[str, Any], *path: str) -> Any:
    value: Any = body
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def check_security(infra: Path = INFRA) -> list[str]:
    """Local (key) auth off everywhere, HTTPS/TLS 1.2, FTP off, identity everywhere."""
    problems = []
    files = load_infra(infra)
    expectations = [
        ("Microsoft.ServiceBus/namespaces", ("properties", "disableLocalAuth"), True),
        ("Microsoft.ServiceBus/namespaces", ("properties", "minimumTlsVersion"), "1.2"),
        ("Microsoft.DocumentDB/databaseAccounts", ("properties", "disableLocalAuth"), True),
        ("Microsoft.DocumentDB/databaseAccounts", ("properties", "minimalTlsVersion"), "Tls12"),
        ("Microsoft.Insights/components", ("properties", "DisableLocalAuth"), True),
        ("Microsoft.CognitiveServices/accounts", ("properties", "disableLocalAuth"), True),
        ("Microsoft.Storage/storageAccounts", ("properties", "allowSharedKeyAccess"), False),
        ("Microsoft.Storage/storageAccounts", ("properties", "allowBlobPublicAccess"), False),
        ("Microsoft.Storage/storageAccounts", ("properties", "minimumTlsVersion"), "TLS1_2"),
        ("Microsoft.Web/sites", ("properties", "httpsOnly"), True),
        ("Microsoft.Web/sites", ("properties", "siteConfig", "minTlsVersion"), "1.2"),
        ("Microsoft.Web/sites", ("properties", "siteConfig", "ftpsState"), "Disabled"),
        ("Microsoft.Web/sites", ("identity", "type"), "UserAssigned"),
    ]
    for resource_type, path, expected in expectations:
        bodies = [
            (name, symbol, b)
            for name, f in files.items()
            for symbol, b in f.resources_of_type(resource_type).items()
            if f.resources[symbol].get("existing") is not True
        ]
        if not bodies:
            problems.append(f"no {resource_type} is declared")
        for name, symbol, b in bodies:
            actual = _bool(b, *path)
            if actual != expected:
                problems.append(
                    f"{name}: {symbol} ({resource_type}) {'.'.join(path)} is {actual!r}, "
                    f"expected {expected!r}"
                )
    policies = {
        _bool(b, "name"): _bool(b, "properties", "allow")
        for f in files.values()
        for b in f.resources_of_type(
            "Microsoft.Web/sites/basicPublishingCredentialsPolicies"
        ).values()
    }
    if policies != {"ftp": False, "scm": False}:
        problems.append(f"basic-auth publishing must be off for ftp and scm: {policies}")
    return problems


_SECRET_PATTERNS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"AccountKey=",
        r"SharedAccessKey=",
        r"SharedAccessSignature",
        r"listKeys\(",
        r"listConnectionStrings\(",
        r"\.primaryKey\b",
        r"primaryMasterKey",
        r"InstrumentationKey=[0-9a-f]",
        r"password\s*[:=]",
    )
]
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")


def _looks_like_a_key(line: str) -> bool:
    """A base64 run of 40+ characters mixing digits and both cases (keys are 44-88)."""
    return any(
        re.search(r"\d", run) and re.search(r"[a-z]", run) and re.search(r"[A-Z]", run)
        for run in _BASE64_RUN.findall(line)
    )


def check_secrets(infra: Path = INFRA, root: Path = ROOT) -> list[str]:
    """No secret-looking literal or key-fetching function in the templates, the
    parameters, azure.yaml or the generated agent types."""
    problems = []
    paths = [
        *sorted(infra.rglob("*.bicep")),
        infra / "main.parameters.json",
        infra / "agent-types.json",
    ]
    paths += [p for p in (root / "azure.yaml",) if p.exists()]
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.lstrip().startswith("//") or line.lstrip().startswith("#"):
                continue
            if any(p.search(line) for p in _SECRET_PATTERNS) or _looks_like_a_key(line):
                problems.append(f"{path.name}:{number}: looks like a secret: {line.strip()}")
    settings = app_settings(infra)
    for name in sorted(SECRETS & set(settings)):
        problems.append(f"app setting {name} is a key or connection string")
    return problems


def check_app_settings(infra: Path = INFRA, root: Path = ROOT) -> list[str]:
    """Every setting the code reads in Azure is an app setting; identity-based connections
    are complete; the function app module applies exactly `appSettings`."""
    problems = []
    settings = app_settings(infra)
    needed = settings_read_by_code(root) - set(NOT_IN_AZURE)
    for name in sorted(needed - set(settings)):
        problems.append(
            f"the code reads {name} but the Function App has no such app setting: add it to "
            "appSettings in infra/main.bicep (or to NOT_IN_AZURE in tests/infra/checks.py, "
            "with the reason)"
        )
    from cadre.hosts.functions_index import CONNECTION  # the triggers' connection name

    if f"{CONNECTION}__fullyQualifiedNamespace" not in settings:
        problems.append(f"{CONNECTION}__fullyQualifiedNamespace must name the namespace")
    for connection in ("AzureWebJobsStorage", CONNECTION):
        if settings.get(f"{connection}__credential") != "managedidentity":
            problems.append(f"{connection}__credential must be managedidentity")
        if f"{connection}__clientId" not in settings:
            problems.append(f"{connection}__clientId must name the user-assigned identity")
    if "AZURE_CLIENT_ID" not in settings:
        problems.append("AZURE_CLIENT_ID must name the identity (DefaultAzureCredential)")
    auth = settings.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "")
    if "Authorization=AAD" not in str(auth):
        problems.append("APPLICATIONINSIGHTS_AUTHENTICATION_STRING must use Entra ID (AAD)")
    for flex_forbidden in ("FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION"):
        if flex_forbidden in settings:
            problems.append(f"{flex_forbidden} is not allowed on Flex Consumption")
    problems += _literal_defaults_agree(settings)
    main = BicepFile.load(infra / "main.bicep")
    from cadre.models.openai import DEFAULT_AZURE_API_VERSION

    if main.parameters["openAiApiVersion"]["default"] != DEFAULT_AZURE_API_VERSION:
        problems.append(f"openAiApiVersion must default to {DEFAULT_AZURE_API_VERSION}")
    params = main.modules["functionApp"]["config"]["params"]
    if params.get("appSettings") != "appSettings":
        problems.append("the functionApp module must be given appSettings")
    app = BicepFile.load(infra / "modules" / "functionapp.bicep")
    config = app.resources_of_type("Microsoft.Web/sites/config")
    applied = [b for b in config.values() if b.get("name") == "appsettings"]
    if [b.get("properties") for b in applied] != ["appSettings"]:
        problems.append("functionapp.bicep must apply its appSettings param as the app settings")
    return problems


def _literal_defaults_agree(settings: dict[str, Any]) -> list[str]:
    """A CADRE_* app setting given as a literal holds the code's default: reading it gives
    the same Settings as reading nothing."""
    from cadre.errors import ConfigurationError
    from cadre.settings import Settings

    problems = []
    for name, value in sorted(settings.items()):
        if not name.startswith("CADRE_") or not isinstance(value, str) or "${" in value:
            continue
        try:
            same = Settings.from_env({name: value}) == Settings.from_env({})
        except ConfigurationError as exc:
            problems.append(f"app setting {name}={value!r} is invalid: {exc}")
            continue
        if not same:
            problems.append(f"app setting {name}={value!r} differs from the code's default")
    return problems


def check_flex_consumption(infra: Path = INFRA) -> list[str]:
    """An FC1 plan; Python; the package deployed from blob with the identity."""
    problems = []
    app = BicepFile.load(infra / "modules" / "functionapp.bicep")
    plans = list(app.resources_of_type("Microsoft.Web/serverfarms").values())
    if [p.get("sku") for p in plans] != [{"tier": "FlexConsumption", "name": "FC1"}]:
        problems.append(f"the plan must be Flex Consumption FC1: {[p.get('sku') for p in plans]}")
    (site,) = app.resources_of_type("Microsoft.Web/sites").values()
    config = _bool(site, "properties", "functionAppConfig") or {}
    if _bool(config, "runtime", "name") != "python":
        problems.append("functionAppConfig.runtime.name must be python")
    # The Python the real-worker suite runs (tests/support/functions_host/worker_env.py).
    for name, bicep in (
        ("functionapp.bicep", app),
        ("main.bicep", BicepFile.load(infra / "main.bicep")),
    ):
        version = bicep.parameters["pythonVersion"]["default"]
        if version != PYTHON_VERSION:
            problems.append(f"{name}: the Python version must be {PYTHON_VERSION}, not {version}")
    if _bool(config, "deployment", "storage", "type") != "blobContainer":
        problems.append("the package must deploy from a blob container")
    if _bool(config, "deployment", "storage", "authentication", "type") != "UserAssignedIdentity":
        problems.append("deployment storage must be reached with the user-assigned identity")
    if set(_bool(config, "scaleAndConcurrency") or {}) != {
        "instanceMemoryMB",
        "maximumInstanceCount",
    }:
        problems.append("scaleAndConcurrency must set instanceMemoryMB and maximumInstanceCount")
    return problems


def check_azure_yaml(root: Path = ROOT) -> list[str]:
    """azure.yaml deploys this folder as a Python function app and provisions infra/main."""
    problems = []
    doc = yaml.safe_load((root / "azure.yaml").read_text())
    infra = doc.get("infra", {})
    if infra.get("provider", "bicep") != "bicep":
        problems.append("infra.provider must be bicep")
    module = root / infra.get("path", "infra") / f"{infra.get('module', 'main')}.bicep"
    if not module.exists():
        problems.append(f"azure.yaml infra points at missing {module}")
    services = doc.get("services", {})
    if set(services) != {"api"}:
        problems.append(f"azure.yaml must have exactly the service 'api': {sorted(services)}")
    api = services.get("api", {})
    if (api.get("language"), api.get("host")) != ("python", "function"):
        problems.append(f"service api must be language python, host function: {api}")
    project = (root / api.get("project", "")).resolve()
    for needed in ("function_app.py", "host.json", "requirements.txt"):
        if not (project / needed).exists():
            problems.append(f"azure.yaml project {project} has no {needed}")
    problems += _check_funcignore(project)
    tags = _bool(
        next(
            iter(
                BicepFile.load(root / "infra/modules/functionapp.bicep")
                .resources_of_type("Microsoft.Web/sites")
                .values()
            )
        ),
        "tags",
    )
    if "'azd-service-name'" not in json.dumps(tags):
        problems.append("the function app must carry the azd-service-name tag")
    return problems


def _accessor(value: Any) -> tuple[str, str] | None:
    """``a.b`` in pycep's form, as ("a", "b")."""
    operator = value.get("operator", {}) if isinstance(value, dict) else {}
    if operator.get("type") != "property_accessor":
        return None
    operands = operator["operands"]
    return (str(operands["operand_1"]), str(operands["operand_2"]))


def _function(value: Any) -> tuple[str, dict[str, Any]] | None:
    function = value.get("function") if isinstance(value, dict) else None
    return (function["type"], function["parameters"]) if function else None


def _integer(value: Any) -> Any:
    """An integer literal in pycep's form (``-1`` is a "minus" operator)."""
    operator = value.get("operator", {}) if isinstance(value, dict) else {}
    if operator.get("type") == "minus":
        return -int(operator["operands"]["integer_value"])
    return value


def generated_agent_types(infra: Path = INFRA) -> dict[str, Any]:
    """infra/agent-types.json, as main.bicep loads it."""
    data: dict[str, Any] = json.loads((infra / "agent-types.json").read_text())
    return data


def check_service_bus(infra: Path = INFRA) -> list[str]:
    """The topic deduplicates; main.bicep feeds agent-types.json to the Service Bus module;
    the module makes one session-enabled, dead-lettering subscription per entry, filtered
    on the entry's agent type; Service Bus gives up only after Cadre does."""
    from cadre.settings import Settings

    problems = []
    main = BicepFile.load(infra / "main.bicep")
    loaded = _function(main.variables.get("generated", {}).get("value"))
    if loaded != (
        "load_json_content",
        {"file_path": "agent-types.json", "json_path": None, "encoding": None},
    ):
        problems.append(f"main.bicep must load agent-types.json into `generated`: {loaded}")
    chosen = json.dumps(main.variables.get("subscribedAgentTypes", {}).get("value"))
    if '"generated", "operand_2": "agentTypes"' not in chosen:
        problems.append("subscribedAgentTypes must default to generated.agentTypes")
    params = main.modules["serviceBus"]["config"]["params"]
    if params.get("agentTypes") != "subscribedAgentTypes":
        problems.append("the serviceBus module must get agentTypes: subscribedAgentTypes")
    if _accessor(params.get("filterProperty")) != ("generated", "filterProperty"):
        problems.append("the serviceBus module must get filterProperty: generated.filterProperty")
    defaults = Settings()
    if main.parameters["topicName"]["default"] != defaults.servicebus_topic:
        problems.append("topicName's default must be Settings().servicebus_topic")
    if main.parameters["maxAttempts"]["default"] != defaults.max_attempts:
        problems.append("maxAttempts' default must be Settings().max_attempts")
    if not main.parameters["serviceBusMaxDeliveryCount"]["default"] > defaults.max_attempts:
        problems.append("serviceBusMaxDeliveryCount must default above CADRE_MAX_ATTEMPTS")

    bus = BicepFile.load(infra / "modules" / "servicebus.bicep")
    namespace = bus.resources_of_type("Microsoft.ServiceBus/namespaces")
    if [b.get("sku", {}).get("name") for b in namespace.values()] != ["sku"] or bus.parameters[
        "sku"
    ]["default"] != "Standard":
        problems.append("the namespace sku must be the sku param, Standard by default")
    topics = list(bus.resources_of_type("Microsoft.ServiceBus/namespaces/topics").values())
    if [_bool(t, "properties", "requiresDuplicateDetection") for t in topics] != [True]:
        problems.append("the topic must have duplicate detection on")
    if not bus.parameters["maxDeliveryCount"]["default"] > defaults.max_attempts:
        problems.append("the module's maxDeliveryCount must default above CADRE_MAX_ATTEMPTS")
    subscriptions = bus.resources_of_type("Microsoft.ServiceBus/namespaces/topics/subscriptions")
    if len(subscriptions) != 1:
        return [*problems, f"expected one subscriptions loop, found {sorted(subscriptions)}"]
    ((symbol, sub),) = subscriptions.items()
    loop = bus.resources[symbol]["config"].get("loop_type", {}).get("detail", {})
    if loop.get("array_name") != "agentTypes":
        problems.append(f"subscriptions must loop over agentTypes: {loop}")
    if _accessor(sub.get("name")) != (loop.get("item_name"), "subscription"):
        problems.append("each subscription must be named by its entry's subscription")
    for flag in (
        "requiresSession",
        "deadLetteringOnMessageExpiration",
        "deadLetteringOnFilterEvaluationExceptions",
    ):
        if _bool(sub, "properties", flag) is not True:
            problems.append(f"subscriptions must set {flag}: true")
    if _bool(sub, "properties", "maxDeliveryCount") != "maxDeliveryCount":
        problems.append("subscriptions must set maxDeliveryCount from its param")
    rules = bus.resources_of_type("Microsoft.ServiceBus/namespaces/topics/subscriptions/rules")
    ((rule_symbol, rule),) = rules.items() if len(rules) == 1 else ((None, {}),)
    rule_loop = (
        bus.resources.get(rule_symbol, {}).get("config", {}).get("loop_type", {}).get("detail", {})
    )
    item = rule_loop.get("item_name")
    if rule_loop.get("array_name") != "agentTypes" or rule.get("name") != "$Default":
        problems.append("one '$Default' rule per agentTypes entry must replace the catch-all")
    if _bool(rule, "properties", "filterType") != "CorrelationFilter":
        problems.append("the rule must be a correlation filter")
    filters = _bool(rule, "properties", "correlationFilter", "properties") or {}
    if {k: _accessor(v) for k, v in filters.items()} != {
        "'${filterProperty}'": (item, "agentType")
    }:
        problems.append(f"the filter must match filterProperty to the entry's agentType: {filters}")
    return problems


_APP_AGENT_TYPES = """
import json
from cadre import infra
from cadre.apps import load_app
from cadre.hosts.functions_index import registered_functions
from cadre.registry import default_registry
from cadre.settings import Settings

modules = Settings.from_env({}).app_modules
load_app(modules)
triggers = [[f.agent_type, f.subscription] for f in registered_functions(modules)]
print(json.dumps({"document": infra.agent_types_document(default_registry), "triggers": triggers}))
"""


def app_agent_types(root: Path = ROOT) -> dict[str, Any]:
    """What `cadre infra agent-types` prints for the app and which subscriptions its
    Functions triggers use, from a fresh interpreter (the test process's registry also
    holds the agent types other tests declare)."""
    done = subprocess.run(
        [sys.executable, "-c", _APP_AGENT_TYPES],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def check_agent_types(infra: Path = INFRA) -> list[str]:
    """agent-types.json is what `cadre infra agent-types` prints for the app, and the
    Functions app's triggers listen on exactly those subscriptions."""
    from cadre import infra as cadre_infra
    from cadre.transports.servicebus import AGENT_TYPE_PROPERTY, subscription_name

    problems = []
    app = app_agent_types()
    stale = cadre_infra.check_file(app["document"], infra / "agent-types.json")
    if stale:
        problems.append(stale)
    generated = generated_agent_types(infra)
    if generated.get("filterProperty") != AGENT_TYPE_PROPERTY:
        problems.append(f"filterProperty must be {AGENT_TYPE_PROPERTY!r}")
    rows = generated.get("agentTypes", [])
    for row in rows:
        if row.get("subscription") != subscription_name(row.get("agentType", "")):
            problems.append(f"{row}: the subscription must be subscription_name(agentType)")
    triggers = {(t, s) for t, s in app["triggers"]}
    deployed = {(r.get("agentType"), r.get("subscription")) for r in rows}
    for agent_type, subscription in sorted(triggers - deployed):
        problems.append(
            f"the trigger of {agent_type} listens on {subscription}, which infra/ lacks"
        )
    return problems


def _store_container_layout(root: Path = ROOT) -> tuple[str | None, int | None]:
    """The partition key path and defaultTtl cadre/stores/cosmos.py creates its container
    with (read from its source)."""
    path, ttl = None, None
    for node in ast.walk(ast.parse((root / "cadre" / "stores" / "cosmos.py").read_text())):
        if isinstance(node, ast.Call) and _dotted(node.func).endswith("PartitionKey") and node.args:
            path = _str(node.args[0])
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "default_ttl":
                    value = keyword.value
                    if isinstance(value, ast.UnaryOp) and isinstance(value.operand, ast.Constant):
                        ttl = -int(value.operand.value)
                    elif isinstance(value, ast.Constant):
                        ttl = int(value.value)
    return path, ttl


def check_cosmos(infra: Path = INFRA, root: Path = ROOT) -> list[str]:
    """Serverless NoSQL by default; the database, container, partition key and TTL the
    store expects; names as the settings' defaults."""
    from cadre.settings import Settings

    problems = []
    cosmos = BicepFile.load(infra / "modules" / "cosmos.bicep")
    if cosmos.parameters["capacityMode"]["default"] != "Serverless":
        problems.append("Cosmos DB must be serverless by default")
    (account,) = cosmos.resources_of_type("Microsoft.DocumentDB/databaseAccounts").values()
    if account.get("kind") != "GlobalDocumentDB":
        problems.append("the account must be NoSQL (kind GlobalDocumentDB)")
    if "EnableServerless" not in json.dumps(_bool(account, "properties", "capabilities")):
        problems.append("the account must enable serverless when capacityMode is Serverless")
    (container,) = cosmos.resources_of_type(
        "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers"
    ).values()
    resource = _bool(container, "properties", "resource") or {}
    store_path, store_ttl = _store_container_layout(root)
    if _bool(resource, "partitionKey", "paths") != [store_path]:
        problems.append(f"the partition key must be {store_path!r} as the store's")
    if _integer(resource.get("defaultTtl")) != store_ttl:
        problems.append(
            f"defaultTtl must be {store_ttl} as the store's (TTL on, no default expiry)"
        )
    main = BicepFile.load(infra / "main.bicep")
    defaults = Settings()
    for var, expected in (
        ("cosmosDatabaseName", defaults.cosmos_database),
        ("cosmosContainerName", defaults.cosmos_container),
    ):
        if main.variables[var]["value"] != expected:
            problems.append(f"{var} must be {expected!r} (the setting's default)")
    return problems


# Azure built-in role ids (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles).
ROLES = {
    "serviceBusDataSender": "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39",
    "serviceBusDataReceiver": "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0",
    "storageBlobDataOwner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "storageQueueDataContributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "storageTableDataContributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "monitoringMetricsPublisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "cosmosDataContributor": "00000000-0000-0000-0000-000000000002",
}
OPENAI_USER_ROLE = "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"


def check_roles(infra: Path = INFRA) -> list[str]:
    """The identity gets exactly the data-plane roles it needs, on the right resources."""
    problems = []
    rbac = BicepFile.load(infra / "modules" / "rbac.bicep")
    role_vars = {k: v["value"] for k, v in rbac.variables.items() if isinstance(v["value"], str)}
    for name, guid in ROLES.items():
        if role_vars.get(name) != guid:
            problems.append(f"rbac.bicep: {name} must be {guid}, is {role_vars.get(name)}")
    lists = {k: v["value"] for k, v in rbac.variables.items() if isinstance(v["value"], list)}
    if sorted(lists.get("serviceBusRoles", [])) != sorted(
        ["serviceBusDataSender", "serviceBusDataReceiver"]
    ):
        problems.append("the identity needs Service Bus Data Sender and Receiver")
    if sorted(lists.get("storageRoles", [])) != sorted(
        ["storageBlobDataOwner", "storageQueueDataContributor", "storageTableDataContributor"]
    ):
        problems.append("the identity needs the Storage blob owner, queue and table roles")
    assignments = rbac.resources_of_type("Microsoft.Authorization/roleAssignments")
    app_scopes = {}
    for symbol, assignment in assignments.items():
        props = assignment.get("properties", {})
        principal = props.get("principalId")
        if principal not in {"appPrincipalId", "userPrincipalId"}:
            problems.append(f"{symbol}: principalId must be appPrincipalId or userPrincipalId")
        if principal == "appPrincipalId":
            if props.get("principalType") != "ServicePrincipal":
                problems.append(f"{symbol}: principalType must be ServicePrincipal")
            app_scopes[symbol] = assignment.get("scope")
    expected_scopes = {
        "appServiceBus": "serviceBus",
        "appStorage": "storage",
        "appMetrics": "applicationInsights",
    }
    if app_scopes != expected_scopes:
        problems.append(f"app role assignments must be {expected_scopes}, are {app_scopes}")
    cosmos = rbac.resources_of_type("Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments")
    app_cosmos = [
        c for c in cosmos.values() if _bool(c, "properties", "principalId") == "appPrincipalId"
    ]
    if [_bool(c, "properties", "roleDefinitionId") for c in app_cosmos] != [
        "${cosmos.id}/sqlRoleDefinitions/${cosmosDataContributor}"
    ]:
        problems.append(
            "the identity needs the Cosmos DB Built-in Data Contributor sqlRoleAssignment"
        )
    openai = BicepFile.load(infra / "modules" / "openai.bicep")
    if openai.variables.get("openAiUserRole", {}).get("value") != OPENAI_USER_ROLE:
        problems.append(f"openai.bicep: Cognitive Services OpenAI User must be {OPENAI_USER_ROLE}")
    main = BicepFile.load(infra / "main.bicep")
    if _accessor(main.modules["rbac"]["config"]["params"].get("appPrincipalId")) is None:
        problems.append("main.bicep must grant the roles to identity.outputs.principalId")
    return problems


def check_workbook(infra: Path = INFRA) -> list[str]:
    """The observability workbook (infra/workbook.json) is deployed, on App Insights."""
    problems = []
    monitoring = BicepFile.load(infra / "modules" / "monitoring.bicep")
    books = list(monitoring.resources_of_type("Microsoft.Insights/workbooks").values())
    if len(books) != 1:
        return [f"expected one workbook, found {len(books)}"]
    (book,) = books
    loaded = _function(_bool(book, "properties", "serializedData"))
    if loaded is None or loaded[0] != "load_text_content":
        return ["the workbook's serializedData must be loadTextContent(...) of the JSON file"]
    target = (monitoring.path.parent / loaded[1]["file_path"]).resolve()
    if target != (infra / "workbook.json").resolve():
        problems.append(f"the workbook must load infra/workbook.json, not {target}")
    elif json.loads(target.read_text()).get("version") != "Notebook/1.0":
        problems.append("infra/workbook.json is not a workbook (version Notebook/1.0)")
    if _accessor(_bool(book, "properties", "sourceId")) != ("applicationInsights", "id"):
        problems.append("the workbook's sourceId must be the Application Insights component")
    if book.get("kind") != "shared" or _bool(book, "properties", "category") != "workbook":
        problems.append("the workbook must be a shared workbook")
    return problems


REQUIRED_OUTPUTS = {
    "AZURE_LOCATION",
    "AZURE_TENANT_ID",
    "AZURE_RESOURCE_GROUP",
    "SERVICE_API_NAME",
    "SERVICE_API_URI",
    "AZURE_FUNCTION_APP_NAME",
    "SERVICEBUS_NAMESPACE",
    "CADRE_COSMOS_ENDPOINT",
    "AZURE_APPLICATIONINSIGHTS_CONNECTION_STRING",
    "AZURE_WORKBOOK_ID",
}


def check_outputs(infra: Path = INFRA) -> list[str]:
    """main.bicep outputs what azd and the docs use; names are UPPER_SNAKE."""
    main = BicepFile.load(infra / "main.bicep")
    problems = [
        f"main.bicep lacks output {o}" for o in sorted(REQUIRED_OUTPUTS - set(main.outputs))
    ]
    problems += [f"output {o} is not UPPER_SNAKE" for o in main.outputs if o != o.upper()]
    if main.parsed.get("globals", {}).get("scope", {}).get("value") != "subscription":
        problems.append("main.bicep must deploy at subscription scope (it creates the group)")
    return problems


PACKAGE_NEEDS = (
    "function_app.py",
    "host.json",
    "requirements.txt",
    "cadre-functions.json",
    "cadre",
    "agents",
    "messages",
)
PACKAGE_EXCLUDES = ("node_modules", "tests", "bench", ".git", "infra", "local.settings.json")


def _check_funcignore(project: Path) -> list[str]:
    """The deployed package leaves out the tests, the npm packages and the templates, and
    keeps everything the app runs."""
    import fnmatch

    path = project / ".funcignore"
    if not path.exists():
        return [f"{project} has no .funcignore: node_modules/ and tests/ would be deployed"]
    patterns = [
        line.strip().rstrip("/")
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(name: str) -> bool:
        return any(fnmatch.fnmatch(name, p) for p in patterns)

    problems = [
        f".funcignore excludes {n}, which the app needs" for n in PACKAGE_NEEDS if ignored(n)
    ]
    problems += [f".funcignore must exclude {n}" for n in PACKAGE_EXCLUDES if not ignored(n)]
    return problems
