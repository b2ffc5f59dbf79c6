"""Process-wide clients, built once from the settings and reused across invocations (connections stay warm)."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from shared.arm import ArmClient
from shared.azure_openai import AzureOpenAIClient
from shared.catalog import Catalog
from shared.secrets import SecretReader
from shared.settings import SettingsError, get_settings
from shared.submit_ledger import SubmitLedger

if TYPE_CHECKING:
    from shared.inputs import InputRecords
    from shared.run_index import RunIndex
    from shared.staging import Staging


@cache
def credential() -> Any:
    """DefaultAzureCredential: the Function App's managed identity in Azure (AZURE_CLIENT_ID selects a
    user-assigned one), the identity emulator locally, a developer's az login otherwise."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


@cache
def arm_client() -> ArmClient:
    return ArmClient(get_settings().arm_endpoint, credential())


@cache
def catalog() -> Catalog:
    return Catalog.from_settings(get_settings())


@cache
def submit_ledger() -> SubmitLedger:
    from shared.catalog import table_service

    settings = get_settings()
    return SubmitLedger(table_service(settings), f"{settings.catalog_table}submits")


@cache
def run_index() -> RunIndex:
    from shared.catalog import table_service
    from shared.run_index import RunIndex

    settings = get_settings()
    return RunIndex(table_service(settings), f"{settings.catalog_table}runs")


@cache
def staging() -> Staging:
    from shared.staging import Staging, blob_service

    settings = get_settings()
    return Staging(blob_service(settings), settings.staging_container)


@cache
def input_records() -> InputRecords:
    from shared.catalog import table_service
    from shared.inputs import InputRecords

    settings = get_settings()
    return InputRecords(table_service(settings), f"{settings.catalog_table}inputs")


@cache
def secret_reader() -> SecretReader:
    settings = get_settings()
    if not settings.key_vault_url:
        raise SettingsError("KEY_VAULT_URL is not set, but a job reads its input file id from Key Vault")
    return SecretReader(
        settings.key_vault_url, credential(), verify_challenge_resource=settings.key_vault_verify_challenge_resource
    )


_openai_clients: dict[str, tuple[AzureOpenAIClient, float]] = {}
API_KEY_REFRESH_SECONDS = 300.0  # a key read from Key Vault is read again this often, so a rotated key takes over


def openai_client(resource_name: str) -> AzureOpenAIClient:
    """The data-plane client of a configured resource: Entra token by default, an API key only when the resource
    names a Key Vault secret holding one (re-read every few minutes)."""
    import time

    cached = _openai_clients.get(resource_name)
    if cached is not None and (cached[0].api_key is None or time.monotonic() - cached[1] < API_KEY_REFRESH_SECONDS):
        return cached[0]
    resource = get_settings().resource(resource_name)
    if resource is None:
        raise SettingsError(f"resource '{resource_name}' is not in AZURE_OPENAI_RESOURCES")
    if resource.api_key_secret:
        reader = secret_reader()
        key = reader.value(reader.latest(resource.api_key_secret))
        client = AzureOpenAIClient(resource.endpoint, resource.api_version, api_key=key)
    else:
        client = AzureOpenAIClient(resource.endpoint, resource.api_version, credential=credential())
    _openai_clients[resource_name] = (client, time.monotonic())
    return client


def reset() -> None:
    """Forgets every client and the settings (tests change app settings between cases)."""
    cached_clients = (credential, arm_client, catalog, submit_ledger, run_index, staging, input_records, secret_reader)
    for cached in (*cached_clients, get_settings):
        cached.cache_clear()
    _openai_clients.clear()
