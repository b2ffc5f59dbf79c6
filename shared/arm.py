"""Azure Resource Manager client: the deployments of an Azure OpenAI account (api-version 2023-05-01)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from azure.core.exceptions import ClientAuthenticationError

from shared.http import DEFAULT_TIMEOUT_SECONDS, AzureError, azure_session
from shared.settings import OpenAIResource

ARM_SCOPE = "https://management.azure.com/.default"
DEPLOYMENTS_API_VERSION = "2023-05-01"
ARM = "ARM"  # the service name in errors


class TokenCredential(Protocol):
    def get_token(self, *scopes: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class ArmDeployment:
    """A model deployment as ARM describes it."""

    name: str
    model_format: str
    model_name: str
    model_version: str
    sku_name: str
    sku_capacity: int | None
    capabilities: dict[str, str] | None
    provisioning_state: str

    @classmethod
    def from_arm(cls, item: dict[str, Any]) -> ArmDeployment:
        properties = item.get("properties") or {}
        model = properties.get("model") or {}
        sku = item.get("sku") or {}
        capabilities = properties.get("capabilities")
        return cls(
            name=str(item["name"]),
            model_format=str(model.get("format", "")),
            model_name=str(model.get("name", "")),
            model_version=str(model.get("version", "")),
            sku_name=str(sku.get("name", "")),
            sku_capacity=sku.get("capacity"),
            capabilities={str(k): str(v) for k, v in capabilities.items()} if isinstance(capabilities, dict) else None,
            provisioning_state=str(properties.get("provisioningState", "")),
        )


class ArmClient:
    """Lists deployments with `nextLink` paging; transient failures are retried by the shared retry policy."""

    def __init__(
        self,
        endpoint: str,
        credential: TokenCredential,
        session: requests.Session | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.credential = credential
        self.session = session or azure_session()
        self.timeout = timeout

    def list_deployments(self, resource: OpenAIResource) -> Iterator[ArmDeployment]:
        """Every deployment of the account, following `nextLink` until ARM gives none."""
        for page in self.list_deployment_pages(resource):
            yield from page

    def list_deployment_pages(self, resource: OpenAIResource) -> Iterator[list[ArmDeployment]]:
        """The deployments page by page as ARM sends them: a caller can work on one page before asking for the next
        (a page is fetched only when the iterator is advanced)."""
        url: str | None = f"{self.endpoint}{resource.arm_id}/deployments"
        params: dict[str, str] | None = {"api-version": DEPLOYMENTS_API_VERSION}
        while url:
            page = self._get(url, params)
            yield [ArmDeployment.from_arm(item) for item in page.get("value") or []]
            url, params = page.get("nextLink"), None
            if url:
                self._check_same_origin(url)

    def _get(self, url: str, params: dict[str, str] | None) -> dict[str, Any]:
        try:
            token = self.credential.get_token(ARM_SCOPE).token
        except ClientAuthenticationError as exc:
            raise AzureError(
                ARM, None, "CredentialUnavailable", "could not get a token for ARM from the identity"
            ) from exc
        try:
            response = self.session.get(
                url, params=params, timeout=self.timeout, headers={"Authorization": f"Bearer {token}"}
            )
        except requests.RequestException as exc:
            raise AzureError(ARM, None, "ConnectionFailed", f"no reply from ARM ({type(exc).__name__})") from exc
        if response.status_code != 200:
            raise AzureError.from_response(ARM, response)
        body: dict[str, Any] = response.json()
        return body

    def _check_same_origin(self, url: str) -> None:
        # The bearer token goes wherever nextLink points: only ever to the ARM endpoint we were configured with
        # (host names compare without case, and an explicit default port is the same origin).
        if _origin(url) != _origin(self.endpoint):
            raise AzureError(ARM, None, "UnexpectedNextLink", "ARM returned a nextLink to another host")


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or default
