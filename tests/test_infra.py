"""infra/ deploys what the code needs and nothing more, checked offline: no Azure, no Bicep compiler.

Every .bicep file parses (tree-sitter-bicep), checkov passes with each skip justified where it is made, and the
contracts hold: the app settings Bicep sets are exactly the ones the code and the Functions host read, each role
GUID is the role its comment names, no key is read or emitted, main.parameters.json agrees with main.bicep, and
azure.yaml deploys the app as the `api` function service that Bicep tags.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import tree_sitter_bicep
import yaml
from tree_sitter import Language, Node, Parser

from shared.settings import SETTING_NAMES, STORAGE_CONNECTION

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
CHECKOV = Path(os.environ.get("CHECKOV", ROOT / ".venv" / "checkov" / "bin" / "checkov"))

# Azure built-in roles by id, as Microsoft Learn's built-in roles reference names them (the Azure Verified Modules'
# builtInRoleNames tables agree). Every role infra/ grants is here, and every role here is granted.
ROLES = {
    "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd": "Cognitive Services OpenAI User",
    "acdd72a7-3385-48ef-bd42-f606fba81ae7": "Reader",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "0ad04412-c4d5-4796-b79c-f76d14c8d402": "Durable Task Data Contributor",
}

# App settings read by the Functions host or the platform rather than by our code, and why.
HOST_SETTINGS = {
    f"{STORAGE_CONNECTION}__credential": "identity-based AzureWebJobsStorage: use a managed identity",
    f"{STORAGE_CONNECTION}__clientId": "identity-based AzureWebJobsStorage: which one (the catalogue reads it too)",
    f"{STORAGE_CONNECTION}__blobServiceUri": "the host's blob leases and timers",
    f"{STORAGE_CONNECTION}__queueServiceUri": "Durable Functions' queues (Azure Storage backend)",
    f"{STORAGE_CONNECTION}__tableServiceUri": "Durable Functions' tables (the catalogue reads it too)",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "where the host sends telemetry",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "send telemetry with an Entra token",
    "AzureFunctionsJobHost__extensions__durableTask__storageProvider__type": "host.json override: the backend",
    "AzureFunctionsJobHost__extensions__durableTask__storageProvider__connectionStringName": "host.json override",
    "DURABLE_TASK_SCHEDULER_CONNECTION_STRING": "the setting the connectionStringName override names",
}

# In local.settings.sample.json but deliberately not app settings in Azure, and why.
LOCAL_ONLY = {
    "FUNCTIONS_WORKER_RUNTIME": "Flex Consumption takes the runtime from functionAppConfig.runtime, not a setting",
    "AzureWebJobsFeatureFlags": "EnableWorkerIndexing is the default for the Python v2 model on Functions 4.x",
    STORAGE_CONNECTION: "a connection string; Azure uses the identity-based AzureWebJobsStorage__* settings instead",
}

GUID = re.compile(r"'([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})'")
AZD_VALUE = re.compile(r"^\$\{(?P<name>[A-Z][A-Z0-9_]*)(?:=(?P<default>[^}]*))?\}$")
AVM_REFERENCE = re.compile(r"^br/public:avm/(res|ptn|utl)/[a-z0-9-]+/[a-z0-9-]+:\d+\.\d+\.\d+$")
KEY_MATERIAL = re.compile(
    r"list(Keys|AccountSas|ServiceSas|ConnectionStrings|Credentials|Secrets)\s*\(|AccountKey=|SharedAccessKey"
    r"|primaryKey|secondaryKey|InstrumentationKey=|@secure\(\)",
    re.IGNORECASE,
)


# Reading Bicep with tree-sitter ----------------------------------------------------------------------------------


@cache
def parser() -> Parser:
    return Parser(Language(tree_sitter_bicep.language()))


@cache
def tree(path: Path) -> Node:
    return parser().parse(path.read_bytes()).root_node


def text(node: Node) -> str:
    return (node.text or b"").decode()


def literal(node: Node) -> str:
    """The value of a plain string literal ('abc'), or the expression's source text."""
    if node.type == "string" and all(child.type == "string_content" for child in node.named_children):
        return "".join(text(child) for child in node.named_children)
    return text(node)


def descendants(node: Node) -> Iterator[Node]:
    for child in node.named_children:
        yield child
        yield from descendants(child)


def errors(node: Node) -> list[str]:
    """Where the parser had to recover: ERROR nodes and tokens it assumed missing (which are not named nodes)."""
    found = [f"line {node.start_point[0] + 1}: {text(node)[:60]!r}"] if node.is_error or node.is_missing else []
    for child in node.children:
        found += errors(child)
    return found


def properties(obj: Node) -> dict[str, Node]:
    """An object literal's properties by key."""
    assert obj.type == "object", f"expected an object, got {obj.type}: {text(obj)[:80]}"
    found = {}
    for prop in obj.named_children:
        if prop.type == "object_property":
            key, value = prop.named_children[0], prop.named_children[-1]
            found[literal(key)] = value
    return found


def body(declaration: Node) -> Node:
    """The object of a resource or module declaration, through `if (...)` and `[for ...]`."""
    for node in descendants(declaration):
        if node.type == "object":
            return node
    raise AssertionError(f"no body in {text(declaration)[:80]}")


def declarations(path: Path, kind: str) -> dict[str, Node]:
    return {literal(d.named_children[0]): d for d in tree(path).named_children if d.type == kind}


def variable(path: Path, name: str) -> Node:
    return declarations(path, "variable_declaration")[name].named_children[-1]


def module_params(path: Path, symbol: str) -> dict[str, Node]:
    return properties(properties(body(declarations(path, "module_declaration")[symbol]))["params"])


def parameters(path: Path) -> dict[str, dict[str, Any]]:
    """Each `param`: whether it has a default, that default's text, and its decorators' arguments."""
    found: dict[str, dict[str, Any]] = {}
    pending: dict[str, Node] = {}
    for node in tree(path).named_children:
        if node.type == "decorators":
            for call in (d.named_children[0] for d in node.named_children):
                pending[literal(call.named_children[0])] = call.named_children[-1]
        elif node.type == "parameter_declaration":
            name, _type, *rest = node.named_children
            allowed = pending.get("allowed")
            found[literal(name)] = {
                "type": text(_type),
                "default": literal(rest[0]) if rest else None,
                "allowed": [literal(v) for v in allowed.named_children[0].named_children] if allowed else None,
            }
            pending = {}
        elif node.type != "comment":
            pending = {}
    return found


def setting_values(name: str) -> dict[str, Node]:
    return properties(variable(INFRA / "app" / "api.bicep", name))


# Parsing and checkov -----------------------------------------------------------------------------------------------


def test_there_is_infra_to_check() -> None:
    assert {p.relative_to(INFRA).as_posix() for p in BICEP_FILES} >= {
        "main.bicep",
        "app/api.bicep",
        "app/rbac.bicep",
        "app/openai-rbac.bicep",
        "app/durable-task-scheduler.bicep",
    }


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_bicep_file_parses_without_errors(path: Path) -> None:
    root = tree(path)

    assert errors(root) == []
    assert not root.has_error


@pytest.fixture(scope="module")
def checkov_report() -> dict[str, Any]:
    if not CHECKOV.exists():
        message = f"checkov is not installed at {CHECKOV}: `make infra-check` installs it into .venv/checkov"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [str(CHECKOV), "--directory", str(INFRA), "--framework", "bicep", "--skip-download", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.stdout.strip(), result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert isinstance(report, dict), "one framework, one report"
    return report


def test_checkov_finds_no_failure_and_parses_every_file(checkov_report: dict[str, Any]) -> None:
    summary = checkov_report["summary"]
    failed = [
        f"{c['check_id']} {c['check_name']} ({c['resource']} in {c['file_path']})"
        for c in checkov_report["results"].get("failed_checks", [])
    ]

    assert failed == []
    assert summary["parsing_errors"] == 0, "checkov skips a file it cannot parse: keep to syntax pycep reads"
    assert summary["resource_count"] > 0
    assert summary["passed"] > 0


def test_every_checkov_skip_names_the_check_and_says_why(checkov_report: dict[str, Any]) -> None:
    skips = [
        (path.relative_to(INFRA).as_posix(), line)
        for path in BICEP_FILES
        for line in path.read_text().splitlines()
        if "checkov:skip" in line
    ]
    for where, line in skips:
        assert re.search(r"//\s*checkov:skip=CKV2?_[A-Z]+_\d+: \S.{20,}", line), f"{where}: {line.strip()}"
    applied = checkov_report["results"].get("skipped_checks", [])
    assert len(applied) == len(skips), "a skip comment outside a resource body is silently ignored by checkov"
    assert all(len(c["check_result"].get("suppress_comment", "")) > 20 for c in applied)


# App settings: Bicep sets what the code and the host read, nothing else --------------------------------------------


def code_reads() -> set[str]:
    """Every app setting the deployed code reads: shared/settings.py, %NAME% bindings, the credential."""
    sources = [*sorted((ROOT / "shared").glob("*.py")), *sorted((ROOT / "blueprints").glob("*.py"))]
    sources += [ROOT / "function_app.py", ROOT / "host.json"]
    names = set(SETTING_NAMES)
    for source in sources:
        code = source.read_text()
        names |= set(re.findall(r"%([A-Za-z_][A-Za-z0-9_]*)%", code))
        names |= set(re.findall(r"(?:environ\.get|getenv|environ\[)\(?\s*[\"']([A-Za-z_][A-Za-z0-9_]*)[\"']", code))
    # DefaultAzureCredential reads AZURE_CLIENT_ID to pick the user-assigned managed identity.
    assert any("DefaultAzureCredential(" in p.read_text() for p in (ROOT / "shared").glob("*.py"))
    names.add("AZURE_CLIENT_ID")
    # The catalogue reads the storage connection identity-based: the table endpoint and the identity's client id.
    names.discard(STORAGE_CONNECTION)
    names |= {f"{STORAGE_CONNECTION}__tableServiceUri", f"{STORAGE_CONNECTION}__clientId"}
    return names


def test_bicep_sets_every_setting_the_code_reads_with_either_backend() -> None:
    missing = code_reads() - set(setting_values("appSettings"))

    assert missing == set()


def test_every_setting_bicep_sets_is_read_by_the_code_or_the_host() -> None:
    set_by_bicep = set(setting_values("appSettings")) | set(setting_values("durableTaskSchedulerSettings"))

    assert set_by_bicep - code_reads() - set(HOST_SETTINGS) == set()
    assert set(HOST_SETTINGS) <= set_by_bicep, "HOST_SETTINGS lists a setting Bicep no longer sets"


def test_the_site_gets_the_common_settings_plus_the_scheduler_ones_only_with_that_backend() -> None:
    api = INFRA / "app" / "api.bicep"
    combined = variable(api, "allAppSettings")
    site_settings = properties(body(declarations(api, "resource_declaration")["siteAppSettings"]))

    assert text(site_settings["properties"]) == "allAppSettings"
    assert literal(site_settings["name"]) == "appsettings"
    assert re.fullmatch(
        r"union\(appSettings, durableBackend == 'DurableTaskScheduler' \? durableTaskSchedulerSettings : \{\}\)",
        text(combined),
    )


def test_the_local_sample_uses_the_same_names_as_azure() -> None:
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]

    assert set(sample) - set(setting_values("appSettings")) == set(LOCAL_ONLY)
    assert not set(LOCAL_ONLY) & set(setting_values("appSettings"))


def test_azure_keeps_key_vault_challenge_verification_on() -> None:
    assert literal(setting_values("appSettings")["KEY_VAULT_VERIFY_CHALLENGE_RESOURCE"]) == "true"


def test_openai_resources_setting_is_the_json_array_settings_parses() -> None:
    main = INFRA / "main.bicep"
    built = variable(main, "openAiResources")
    entry = properties(built.named_children[-1].named_children[0].named_children[0])

    assert text(built).startswith("string([")
    assert set(entry) == {
        "name",
        "endpoint",
        "subscriptionId",
        "resourceGroup",
        "tenantId",
        "apiVersion",
        "batchBlobStorage",
    }
    assert text(entry["endpoint"]) == "openAiAccount.properties.endpoint"
    assert text(module_params(main, "api")["openAiResources"]) == "openAiResources"
    assert text(setting_values("appSettings")["AZURE_OPENAI_RESOURCES"]) == "openAiResources"


def test_the_durable_task_scheduler_is_selected_by_app_settings_over_host_json() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    scheduler = setting_values("durableTaskSchedulerSettings")
    prefix = "AzureFunctionsJobHost__"

    overrides = [n.removeprefix(prefix).split("__") for n in scheduler if n.startswith(prefix)]
    assert overrides
    assert all(path[:3] == ["extensions", "durableTask", "storageProvider"] for path in overrides)
    assert "storageProvider" not in host["extensions"]["durableTask"], "host.json would fight the override"
    assert host["extensions"]["durableTask"]["hubName"] == "%DURABLE_TASK_HUB%"
    assert literal(scheduler[f"{prefix}extensions__durableTask__storageProvider__type"]) == "azureManaged"
    named = literal(scheduler[f"{prefix}extensions__durableTask__storageProvider__connectionStringName"])
    assert named in scheduler
    assert "Authentication=ManagedIdentity;ClientID=${identityClientId}" in text(scheduler[named])


# No keys ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_no_key_is_listed_stored_or_passed(path: Path) -> None:
    source = path.read_bytes()
    for comment in sorted((n for n in descendants(tree(path)) if n.type == "comment"), key=lambda n: -n.start_byte):
        source = source[: comment.start_byte] + source[comment.end_byte :]

    assert KEY_MATERIAL.findall(source.decode()) == []


def test_outputs_are_names_and_urls_only() -> None:
    for path in BICEP_FILES:
        for name, output in declarations(path, "output_declaration").items():
            value = text(output.named_children[-1])
            assert not re.search(r"KEY|SECRET|PASSWORD|CONNECTION_?STRING", name.upper().replace("KEY_VAULT", "")), name
            assert not re.search(r"ConnectionString|\bkeys?\b|secret|list\w*\(", value, re.IGNORECASE), name


def test_app_settings_hold_no_key_and_telemetry_uses_entra() -> None:
    settings = setting_values("appSettings") | setting_values("durableTaskSchedulerSettings")

    assert STORAGE_CONNECTION not in settings, "a connection string would carry the account key"
    assert literal(settings[f"{STORAGE_CONNECTION}__credential"]) == "managedidentity"
    assert text(settings["APPLICATIONINSIGHTS_CONNECTION_STRING"]) == "applicationInsights.properties.ConnectionString"
    assert (
        text(settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"])
        == "'ClientId=${identityClientId};Authorization=AAD'"
    )
    for name, value in settings.items():
        if "ConnectionString" in text(value) or "CONNECTION_STRING" in name:
            assert name in {"APPLICATIONINSIGHTS_CONNECTION_STRING", "DURABLE_TASK_SCHEDULER_CONNECTION_STRING"}


def test_storage_vault_and_telemetry_accept_only_entra() -> None:
    main = INFRA / "main.bicep"
    storage = module_params(main, "storage")
    vault = module_params(main, "keyVault")
    insights = module_params(main, "applicationInsights")

    assert text(storage["allowSharedKeyAccess"]) == "false"
    assert text(storage["allowBlobPublicAccess"]) == "false"
    assert literal(storage["minimumTlsVersion"]) == "TLS1_2"
    assert text(vault["enableRbacAuthorization"]) == "true"
    assert text(insights["disableLocalAuth"]) == "true"


# Roles -----------------------------------------------------------------------------------------------------------


def role_guids() -> list[tuple[str, str, str]]:
    """(file, GUID, the comment on its line) for every GUID literal in infra/."""
    found = []
    for path in BICEP_FILES:
        for line in path.read_text().splitlines():
            for guid in GUID.findall(line):
                comment = line.split("//", 1)[1].strip() if "//" in line else ""
                found.append((path.relative_to(INFRA).as_posix(), guid, comment))
    return found


def test_each_role_guid_is_the_built_in_role_its_comment_names() -> None:
    for where, guid, comment in role_guids():
        assert guid in ROLES, f"{where}: {guid} is not a role this project grants"
        assert comment == ROLES[guid], f"{where}: {guid} is {ROLES[guid]!r}, the comment says {comment!r}"


def test_every_role_in_the_table_is_granted() -> None:
    assert {guid for _, guid, _ in role_guids()} == set(ROLES)


def test_role_assignment_names_are_stable_per_scope_principal_and_role() -> None:
    for path in BICEP_FILES:
        for symbol, resource in declarations(path, "resource_declaration").items():
            if "Microsoft.Authorization/roleAssignments@" in text(resource.named_children[1]):
                assignment = properties(body(resource))
                scope = text(assignment["scope"])
                assert re.fullmatch(rf"guid\({scope}\.id, \w+, [\w.]+\)", text(assignment["name"])), symbol


def test_azure_openai_roles_are_assigned_in_the_accounts_resource_group() -> None:
    main = INFRA / "main.bicep"
    module = declarations(main, "module_declaration")["openAiRbac"]
    openai_rbac = INFRA / "app" / "openai-rbac.bicep"
    assignments = [properties(body(r)) for r in declarations(openai_rbac, "resource_declaration").values()]

    assert literal(module.named_children[1]) == "app/openai-rbac.bicep"
    assert text(properties(body(module))["scope"]) == "resourceGroup(openAiSubscription, openAiResourceGroupName)"
    assert {guid for where, guid, _ in role_guids() if where == "app/openai-rbac.bicep"} == {
        "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd",
        "acdd72a7-3385-48ef-bd42-f606fba81ae7",
    }
    assert [text(a["scope"]) for a in assignments if "scope" in a] == ["account", "account"]


# Modules, parameters, azd ------------------------------------------------------------------------------------------


def test_registry_modules_are_azure_verified_modules_pinned_by_version() -> None:
    sources = [
        literal(module.named_children[1])
        for path in BICEP_FILES
        for module in declarations(path, "module_declaration").values()
    ]
    registry = [s for s in sources if not s.endswith(".bicep")]

    assert registry
    assert [s for s in registry if not AVM_REFERENCE.match(s)] == []
    assert all((INFRA / s).exists() for s in sources if s.endswith(".bicep") and s.startswith("app/"))


def test_function_app_is_flex_consumption_python_3_11_tagged_for_azd() -> None:
    main, api = INFRA / "main.bicep", INFRA / "app" / "api.bicep"
    site = module_params(api, "functionApp")
    config = properties(site["functionAppConfig"])
    storage = properties(properties(config["deployment"])["storage"])

    assert literal(module_params(main, "appServicePlan")["skuName"]) == "FC1"
    assert text(properties(config["runtime"])["name"]) == "'python'"
    assert literal(variable(api, "pythonVersion")) == "3.11"
    assert literal(properties(storage["authentication"])["type"]) == "UserAssignedIdentity"
    assert text(properties(config["scaleAndConcurrency"])["instanceMemoryMB"]) == "instanceMemoryMB"
    assert text(properties(config["scaleAndConcurrency"])["maximumInstanceCount"]) == "maximumInstanceCount"
    assert "'azd-service-name': 'api'" in text(site["tags"])


def test_parameter_file_and_main_bicep_agree() -> None:
    declared = parameters(INFRA / "main.bicep")
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]

    assert set(given) <= set(declared), "main.parameters.json sets a parameter main.bicep does not declare"
    assert {n for n, p in declared.items() if p["default"] is None} <= set(given), "a required parameter is unset"
    for name, entry in given.items():
        value = AZD_VALUE.match(entry["value"])
        assert value, f"{name}: {entry['value']!r} is not an azd ${{VARIABLE}} reference"
        default, declaration = value["default"], declared[name]
        if default is not None:
            if declaration["allowed"] is not None:
                assert default in declaration["allowed"], name
            if declaration["type"] == "int":
                assert default.isdigit(), name
            if declaration["type"] == "bool":
                assert default in {"true", "false"}, name
    assert given["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert given["location"]["value"] == "${AZURE_LOCATION}"
    assert given["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"


def test_azure_yaml_deploys_the_project_as_the_api_function_service() -> None:
    azure = yaml.safe_load((ROOT / "azure.yaml").read_text())
    api = azure["services"]["api"]

    assert list(azure["services"]) == ["api"]
    assert (api["language"], api["host"]) == ("python", "function")
    assert (ROOT / api["project"] / "function_app.py").exists()
    assert (ROOT / azure.get("infra", {}).get("path", "infra") / "main.bicep").exists()


def test_workflows_test_build_the_bicep_and_deploy_with_federated_credentials() -> None:
    workflows = ROOT / ".github" / "workflows"
    ci, infra, deploy = ((workflows / f"{n}.yml").read_text() for n in ("ci", "infra", "deploy"))
    deploy_jobs = yaml.safe_load(deploy)["jobs"]

    assert "make test" in ci
    assert "az bicep build" in infra
    assert "az bicep lint" in infra
    assert all(job["permissions"]["id-token"] == "write" for job in deploy_jobs.values())
    assert "azd provision" in deploy
    assert "azd deploy" in deploy
    assert not re.search(r"client-secret|CLIENT_SECRET|password", deploy, re.IGNORECASE)


def test_readme_tells_how_to_deploy_and_infra_readme_the_rest() -> None:
    readme = (ROOT / "README.md").read_text()
    deploy = readme[readme.index("\n## Deploy") :]
    deploy = deploy[: deploy.find("\n## ", 1)] if "\n## " in deploy[1:] else deploy
    manual = (ROOT / "infra" / "README.md").read_text()

    assert "azd up" in deploy
    assert "(infra/README.md)" in deploy
    for topic in ("azd up", "azd down", "DURABLE_BACKEND", "Reader", "Cognitive Services OpenAI User", "idle"):
        assert topic in manual, topic
