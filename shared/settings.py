"""The app's settings: one typed object, read once from app settings (environment variables) when first needed.

Every name here is an app setting that `local.settings.sample.json` lists and the Bicep templates set.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

DEFAULT_API_VERSION = "2024-10-21"
API_VERSION = re.compile(r"^(v1|\d{4}-\d{2}-\d{2}(-preview)?)$")
DEFAULT_ARM_ENDPOINT = "https://management.azure.com"
DEFAULT_SYNC_SCHEDULE = "0 */30 * * * *"
STORAGE_CONNECTION = "AzureWebJobsStorage"
# Every app setting this module reads (the Functions host's own, such as AzureWebJobsStorage, come on top).
SETTING_NAMES = (
    "AZURE_OPENAI_RESOURCES",
    "ARM_ENDPOINT",
    "CATALOG_TABLE",
    "KEY_VAULT_URL",
    "KEY_VAULT_VERIFY_CHALLENGE_RESOURCE",
    "DEPLOYMENT_SYNC_SCHEDULE",
    "STAGING_CONTAINER",
    "INPUT_BLOB_ENDPOINTS",
    "PRICES",
    STORAGE_CONNECTION,
)
DEFAULT_STAGING_CONTAINER = "aoaibatch-staging"
# Checked with `fullmatch` (`$` alone also matches before a final newline), as every name pattern is.
RESOURCE_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-]{0,62}[a-zA-Z0-9]$")


class SettingsError(ValueError):
    """An app setting is missing or malformed; the message names the setting, never its secret value."""


@dataclass(frozen=True)
class OpenAIResource:
    """One Azure OpenAI resource (a Cognitive Services account) whose deployments become jobs."""

    name: str
    endpoint: str
    subscription_id: str
    resource_group: str
    tenant_id: str = ""
    api_version: str = DEFAULT_API_VERSION
    api_key_secret: str = ""  # only when the resource is reached with a key: the Key Vault secret holding it
    # Enqueued-token quota of its batch deployments, by deployment name (Azure does not publish it through ARM):
    # shards are cut and placed to fit. Unknown deployments have no known limit.
    token_limits: tuple[tuple[str, int], ...] = ()
    data_zone: str = ""  # the data zone of its region ("US", "EU"): DataZoneBatch shards stay within it
    # Whether Azure may read a run's input from a user's blob and write its results to a folder (v1 only; the
    # resource's system-assigned identity needs Storage Blob Data Contributor on that storage).
    batch_blob_storage: bool = False

    def token_limit(self, deployment: str) -> int | None:
        return dict(self.token_limits).get(deployment)

    @property
    def arm_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.CognitiveServices/accounts/{self.name}"
        )

    @property
    def portal_url(self) -> str:
        """The account's overview in the Azure portal (Azure OpenAI has no per-batch deep link)."""
        tenant = f"@{self.tenant_id}" if self.tenant_id else ""
        return f"https://portal.azure.com/#{tenant}/resource{self.arm_id}/overview"


@dataclass(frozen=True)
class StorageSettings:
    """The storage account of the Functions host (AzureWebJobsStorage), which also holds the job catalogue.

    Either a connection string (Azurite locally: `UseDevelopmentStorage=true`) or an identity-based connection
    (`AzureWebJobsStorage__tableServiceUri` or `__accountName`, with `__clientId` for a user-assigned identity).
    """

    connection_string: str | None
    table_service_uri: str | None
    client_id: str | None
    blob_service_uri: str | None = None


@dataclass(frozen=True)
class Settings:
    resources: tuple[OpenAIResource, ...]
    arm_endpoint: str
    storage: StorageSettings
    catalog_table: str
    key_vault_url: str | None
    key_vault_verify_challenge_resource: bool
    sync_schedule: str
    staging_container: str = DEFAULT_STAGING_CONTAINER
    input_blob_endpoints: tuple[str, ...] = ()  # blob endpoints besides Azure Storage's the app may read inputs from
    prices: Prices | None = None

    def resource(self, name: str) -> OpenAIResource | None:
        return next((r for r in self.resources if r.name == name), None)

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> Settings:
        return cls(
            resources=_resources(env.get("AZURE_OPENAI_RESOURCES", "")),
            arm_endpoint=env.get("ARM_ENDPOINT", DEFAULT_ARM_ENDPOINT).rstrip("/") or DEFAULT_ARM_ENDPOINT,
            storage=_storage(env),
            catalog_table=env.get("CATALOG_TABLE", "jobs") or "jobs",
            key_vault_url=(env.get("KEY_VAULT_URL") or "").rstrip("/") or None,
            key_vault_verify_challenge_resource=_flag(env, "KEY_VAULT_VERIFY_CHALLENGE_RESOURCE", default=True),
            sync_schedule=env.get("DEPLOYMENT_SYNC_SCHEDULE", DEFAULT_SYNC_SCHEDULE) or DEFAULT_SYNC_SCHEDULE,
            staging_container=_container(env.get("STAGING_CONTAINER") or DEFAULT_STAGING_CONTAINER),
            input_blob_endpoints=tuple(
                e.strip().rstrip("/") for e in (env.get("INPUT_BLOB_ENDPOINTS") or "").split(",") if e.strip()
            ),
            prices=_prices(env.get("PRICES") or ""),
        )


@cache
def get_settings() -> Settings:
    """The settings of this process, read from the environment on first use."""
    return Settings.from_environment(os.environ)


def _resources(raw: str) -> tuple[OpenAIResource, ...]:
    if not raw.strip():
        return ()
    try:
        entries = json.loads(raw)
    except ValueError as exc:
        raise SettingsError("AZURE_OPENAI_RESOURCES must be a JSON array of resources") from exc
    if not isinstance(entries, list):
        raise SettingsError("AZURE_OPENAI_RESOURCES must be a JSON array of resources")
    resources = []
    for index, entry in enumerate(entries):
        where = f"AZURE_OPENAI_RESOURCES[{index}]"
        if not isinstance(entry, dict):
            raise SettingsError(f"{where} must be an object")
        missing = [key for key in ("name", "endpoint", "subscriptionId", "resourceGroup") if not entry.get(key)]
        if missing:
            raise SettingsError(f"{where} is missing {', '.join(missing)}")
        if not RESOURCE_NAME.fullmatch(str(entry["name"])):
            raise SettingsError(f"{where}.name is not a valid Azure OpenAI resource name")
        api_version = _api_version(entry.get("apiVersion"), where)
        resources.append(
            OpenAIResource(
                name=str(entry["name"]),
                endpoint=str(entry["endpoint"]).rstrip("/"),
                subscription_id=str(entry["subscriptionId"]),
                resource_group=str(entry["resourceGroup"]),
                tenant_id=str(entry.get("tenantId", "")),
                api_version=api_version,
                api_key_secret=str(entry.get("apiKeySecret") or ""),
                token_limits=_token_limits(entry.get("tokenLimits"), where),
                data_zone=str(entry.get("dataZone") or "").upper(),
                batch_blob_storage=_batch_blob_storage(entry.get("batchBlobStorage"), api_version, where),
            )
        )
    names = [r.name for r in resources]
    if len(set(names)) != len(names):
        raise SettingsError("AZURE_OPENAI_RESOURCES names a resource twice")
    return tuple(resources)


def _api_version(value: Any, where: str) -> str:
    """`v1` (the v1 API) or a dated api-version such as `2024-10-21`; the default when absent."""
    if value is None or value == "":
        return DEFAULT_API_VERSION
    if not isinstance(value, str) or not API_VERSION.fullmatch(value):
        raise SettingsError(f"{where}.apiVersion must be 'v1' or a dated api-version such as '{DEFAULT_API_VERSION}'")
    return value


def _batch_blob_storage(value: Any, api_version: str, where: str) -> bool:
    """`batchBlobStorage`: true only on the v1 API, the only one on which Azure takes `input_blob`/`output_folder`."""
    if value is None or value is False:
        return False
    if value is not True:
        raise SettingsError(f"{where}.batchBlobStorage must be true or false")
    if api_version != "v1":
        raise SettingsError(
            f'{where}.batchBlobStorage needs "apiVersion": "v1": Azure OpenAI takes batches with blob storage input '
            "and output on the v1 API only"
        )
    return True


def _storage(env: Mapping[str, str]) -> StorageSettings:
    prefix = STORAGE_CONNECTION
    table_uri = env.get(f"{prefix}__tableServiceUri")
    blob_uri = env.get(f"{prefix}__blobServiceUri")
    account = env.get(f"{prefix}__accountName")
    if not table_uri and account:
        table_uri = f"https://{account}.table.core.windows.net"
    if not blob_uri and account:
        blob_uri = f"https://{account}.blob.core.windows.net"
    return StorageSettings(
        connection_string=env.get(prefix) or None,
        table_service_uri=table_uri or None,
        client_id=env.get(f"{prefix}__clientId") or None,
        blob_service_uri=blob_uri or None,
    )


CONTAINER_NAME = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


def _container(name: str) -> str:
    if not CONTAINER_NAME.fullmatch(name):
        raise SettingsError("STAGING_CONTAINER must be a blob container name (3-63 lowercase letters, digits, '-')")
    return name


@dataclass(frozen=True)
class ModelPrice:
    """A model's standard (not batch) price, per million tokens, and the share a batch takes off it."""

    input: float
    cached_input: float
    output: float
    batch_discount: float


@dataclass(frozen=True)
class Prices:
    """The price table (PRICES): per model, what a million tokens cost, in one currency, and the batch discount
    (Azure's Global Batch is billed at half the Global Standard price: a discount of 0.5). `batch_discount` is the
    table's, for the models that do not give their own."""

    currency: str
    batch_discount: float
    models: dict[str, ModelPrice]

    def of(self, model: str, version: str = "") -> ModelPrice | None:
        """The price of `model` at `version` (a "name@version" entry), else of the model whatever its version."""
        return self.models.get(f"{model}@{version}") or self.models.get(model)


CURRENCY_CODE = re.compile(r"[A-Z]{3}")  # ISO 4217, such as USD or EUR


def _prices(raw: str) -> Prices | None:
    if not raw.strip():
        return None
    problem = (
        'PRICES must be JSON: {"currency": "USD" (ISO 4217), "batchDiscount": 0.5, "models": {"gpt-4o": {"input": '
        '2.5, "cachedInput": 1.25, "output": 10.0}}} (per million tokens; a batchDiscount from 0 to below 1, which a '
        "model may give to override the table's)"
    )
    try:
        data = json.loads(raw)
        currency, discount, models = data["currency"], float(data.get("batchDiscount", 0)), data["models"]
        is_code = isinstance(currency, str) and CURRENCY_CODE.fullmatch(currency) is not None
        if not is_code or not isinstance(models, dict):
            raise SettingsError(problem)
        prices = {
            str(name): ModelPrice(
                float(p["input"]),
                float(p.get("cachedInput", p["input"])),
                float(p["output"]),
                float(p.get("batchDiscount", discount)),
            )
            for name, p in models.items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SettingsError(problem) from exc
    if any(min(p.input, p.cached_input, p.output) < 0 for p in prices.values()):
        raise SettingsError(problem)
    if not all(0 <= d < 1 for d in (discount, *(p.batch_discount for p in prices.values()))):
        raise SettingsError(problem)
    return Prices(currency, discount, prices)


def _flag(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    value = env.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"true", "1", "yes"}:
        return True
    if value.lower() in {"false", "0", "no"}:
        return False
    raise SettingsError(f"{name} must be true or false")


def _token_limits(value: object, where: str) -> tuple[tuple[str, int], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v > 0 for k, v in value.items()
    ):
        raise SettingsError(f"{where}.tokenLimits must map deployment names to positive whole numbers of tokens")
    return tuple(sorted(value.items()))
