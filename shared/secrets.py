"""Key Vault secrets, read at run time with the app's identity. Values never leave the calling activity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import (
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from shared.jobs import SECRET_NAME


class SecretUnavailable(Exception):
    """The secret cannot be read; the message names the secret, never its value."""

    def __init__(self, name: str, reason: str, *, transient: bool = False) -> None:
        super().__init__(f"Key Vault secret {name!r} {reason}")  # repr: a name's control characters stay visible
        self.name = name
        self.transient = transient  # the vault was unreachable or busy: trying again later may succeed


@dataclass(frozen=True)
class SecretRef:
    """Which secret, and which version of it, a run uses (the value itself is never stored)."""

    name: str
    version: str


class SecretReader:
    def __init__(self, vault_url: str, credential: Any, *, verify_challenge_resource: bool = True) -> None:
        from azure.keyvault.secrets import SecretClient

        self.client = SecretClient(vault_url, credential, verify_challenge_resource=verify_challenge_resource)

    def latest(self, name: str) -> SecretRef:
        """The current version of the secret (checks it exists and is readable)."""
        secret = self._get(name, None)
        return SecretRef(name, str(secret.properties.version))

    def value(self, ref: SecretRef) -> str:
        return str(self._get(ref.name, ref.version).value)

    def _get(self, name: str, version: str | None) -> Any:
        if not SECRET_NAME.fullmatch(name):
            raise SecretUnavailable(name, "is not a valid secret name")
        try:
            return self.client.get_secret(name, version)
        except ResourceNotFoundError as exc:
            raise SecretUnavailable(
                name, "was not found in the vault" if version is None else f"has no version {version}"
            ) from exc
        except HttpResponseError as exc:
            reason = (
                f"could not be read (HTTP {exc.status_code})"
                if exc.status_code
                else ("could not be read: no access token for the vault")
            )
            busy = exc.status_code is not None and (exc.status_code == 429 or exc.status_code >= 500)
            raise SecretUnavailable(name, reason, transient=busy) from exc
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise SecretUnavailable(name, "could not be read: the vault did not answer", transient=True) from exc
