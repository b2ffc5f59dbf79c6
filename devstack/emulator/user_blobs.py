"""A user's blob storage as an Azure OpenAI resource's system-assigned managed identity reaches it: batch input read
from `input_blob`, results written under `output_folder` (Learn, "Configuring Azure Blob Storage for Azure OpenAI").

The emulator signs a token for `https://storage.azure.com` as the resource's own identity (an `oid` of its own, from
the same issuer as the identity emulator's tokens) and sends it as `Authorization: Bearer`, as Azure Storage's OAuth
expects; no account key is used. Locally that storage is the user-storage Azurite (HTTPS with the emulators' CA,
`--oauth basic`), which checks the token's issuer, audience and lifetime but no role assignment: a resource whose
identity lacks *Storage Blob Data Contributor* still reads and writes here.
"""

from __future__ import annotations

import email.utils
import ipaddress
import ssl
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from devstack.emulator.tokens import TokenIssuer

STORAGE_AUDIENCE = "https://storage.azure.com"
STORAGE_API_VERSION = "2023-11-03"
TIMEOUT_SECONDS = 30


class BlobUrlError(ValueError):
    """A URL that cannot name a blob (or a container) of a storage account; the message says why."""


@dataclass(frozen=True)
class BlobUrl:
    """A blob or folder URL split as Azure Storage reads it: `https://<account>.blob.core.windows.net/<container>/…`,
    or path-style `https://<ip or localhost>:<port>/<account>/<container>/…` (Azurite, and Azure Storage by IP)."""

    url: str  # as given, without a trailing slash
    container_url: str
    path: str  # the blob name, or the folder prefix, inside the container ("" for the container itself)

    @classmethod
    def parse(cls, url: Any, *, blob: bool) -> BlobUrl:
        if not isinstance(url, str) or not url:
            raise BlobUrlError("must be a URL string")
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise BlobUrlError("must be an https:// URL of a blob storage account")
        if parts.query or parts.fragment:
            raise BlobUrlError("must not carry a query or fragment (the resource's managed identity needs no SAS)")
        segments = [s for s in parts.path.split("/") if s]
        head = 2 if _path_style(parts.hostname) else 1  # account and container, or the container alone
        if len(segments) < head:
            raise BlobUrlError("must name a container")
        if blob and len(segments) == head:
            raise BlobUrlError("must name a blob inside a container")
        origin = f"https://{parts.netloc}"
        container_url = f"{origin}/{'/'.join(segments[:head])}"
        path = "/".join(segments[head:])
        return cls(url.rstrip("/"), container_url, path)


def _path_style(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class BlobReply:
    status: int  # 0 when the storage account could not be reached at all
    body: bytes = b""
    error_code: str = ""  # x-ms-error-code, or the connection error

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class UserBlobs:
    """Blob requests made with an Azure OpenAI resource's system-assigned managed identity."""

    def __init__(self, issuer: TokenIssuer) -> None:
        self.issuer = issuer
        # What verifies the storage account's certificate: the emulators' local CA once `serve` has made it.
        self.ssl: ssl.SSLContext | None = None

    def identity(self, resource: str) -> str:
        """The principal id of the resource's system-assigned identity (stable for a resource name and tenant)."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"devstack-aoai-identity/{self.issuer.tenant_id}/{resource}"))

    async def read(self, resource: str, url: str) -> BlobReply:
        return await self._send(resource, "GET", url)

    async def container(self, resource: str, container_url: str) -> BlobReply:
        """Get Container Properties: 200 when the container exists and the identity may see it."""
        return await self._send(resource, "GET", f"{container_url}?restype=container")

    async def write(self, resource: str, url: str, content: bytes) -> BlobReply:
        headers = {"x-ms-blob-type": "BlockBlob", "Content-Type": "application/octet-stream"}
        return await self._send(resource, "PUT", url, content, headers)

    async def _send(
        self, resource: str, method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> BlobReply:
        principal = self.identity(resource)
        token = self.issuer.issue(STORAGE_AUDIENCE, client_id=principal, principal_id=principal).access_token
        sent = {
            "Authorization": f"Bearer {token}",
            "x-ms-version": STORAGE_API_VERSION,
            "x-ms-date": email.utils.formatdate(usegmt=True),
            **(headers or {}),
        }
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.request(method, url, data=body, headers=sent, ssl=self.ssl or True) as response,
            ):
                content = await response.read()
                return BlobReply(response.status, content, response.headers.get("x-ms-error-code", ""))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return BlobReply(0, error_code=type(exc).__name__)
