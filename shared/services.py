"""Process-wide clients, built once from the settings and reused across invocations (connections stay warm)."""

from __future__ import annotations

from functools import cache
from typing import Any

from shared.arm import ArmClient
from shared.catalog import Catalog
from shared.settings import get_settings


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


def reset() -> None:
    """Forgets every client and the settings (tests change app settings between cases)."""
    for cached in (credential, arm_client, catalog, get_settings):
        cached.cache_clear()
