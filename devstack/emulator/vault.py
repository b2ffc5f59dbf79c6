"""Key Vault secrets held by the emulator: every set makes a new version; the newest one is current (if it is
disabled, getting the secret without a version is refused, as in Key Vault)."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

# `\Z`, not `$`: a name must not end with a newline.
SECRET_NAME = re.compile(r"\A[0-9a-zA-Z-]{1,127}\Z")


@dataclass
class SecretVersion:
    name: str
    version: str
    value: str
    created: int
    updated: int
    enabled: bool = True
    content_type: str | None = None
    tags: dict[str, str] | None = None
    not_before: int | None = None
    expires: int | None = None

    def attributes(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {"enabled": self.enabled}
        if self.not_before is not None:
            attributes["nbf"] = self.not_before
        if self.expires is not None:
            attributes["exp"] = self.expires
        attributes.update(
            created=self.created, updated=self.updated, recoveryLevel="Recoverable+Purgeable", recoverableDays=90
        )
        return attributes

    def bundle(self, vault_url: str) -> dict[str, Any]:
        """The SecretBundle a get or set returns, value included."""
        data: dict[str, Any] = {
            "value": self.value,
            "id": f"{vault_url}/secrets/{self.name}/{self.version}",
            "attributes": self.attributes(),
        }
        return self._optional(data)

    def item(self, vault_url: str, *, with_version: bool) -> dict[str, Any]:
        """The SecretItem a list returns: no value."""
        suffix = f"/{self.version}" if with_version else ""
        data: dict[str, Any] = {"id": f"{vault_url}/secrets/{self.name}{suffix}", "attributes": self.attributes()}
        return self._optional(data)

    def _optional(self, data: dict[str, Any]) -> dict[str, Any]:
        if self.content_type is not None:
            data["contentType"] = self.content_type
        if self.tags is not None:
            data["tags"] = self.tags
        return data


@dataclass
class SecretStore:
    secrets: dict[str, list[SecretVersion]] = field(default_factory=dict)

    def set(
        self,
        name: str,
        value: str,
        *,
        content_type: str | None = None,
        tags: dict[str, str] | None = None,
        enabled: bool = True,
        not_before: int | None = None,
        expires: int | None = None,
    ) -> SecretVersion:
        now = int(time.time())
        version = SecretVersion(
            name, uuid.uuid4().hex, value, now, now, enabled, content_type, tags, not_before, expires
        )
        self.secrets.setdefault(name.lower(), []).append(version)  # names are case-insensitive
        return version

    def latest(self, name: str) -> SecretVersion | None:
        versions = self.secrets.get(name.lower())
        return versions[-1] if versions else None

    def version(self, name: str, version: str) -> SecretVersion | None:
        return next((v for v in self.secrets.get(name.lower(), []) if v.version == version.lower()), None)

    def versions(self, name: str) -> list[SecretVersion]:
        return list(self.secrets.get(name.lower(), []))

    def names(self) -> list[SecretVersion]:
        return [versions[-1] for _, versions in sorted(self.secrets.items())]
