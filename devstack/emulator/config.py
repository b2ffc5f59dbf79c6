"""Emulator configuration: resources, keys, deployments, quotas, speeds, faults.

The JSON file uses Azure's camelCase names. Anything left out takes the defaults below, so a test config can name
only what it cares about. Keys that are not given are generated at start, as Azure does when a resource is created.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default-config.json")

# Azure OpenAI custom subdomain: 2-64 letters, digits and hyphens, starting and ending with a letter or digit.
RESOURCE_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-]{0,62}[a-zA-Z0-9]$")
# Path segments the emulator serves itself, so no resource may take them.
RESERVED_NAMES = {"subscriptions", "msi"}
BATCH_SKUS = {"GlobalBatch", "DataZoneBatch"}


class ConfigError(ValueError):
    """The emulator configuration is unusable; the message names the offending entry."""


@dataclass
class Speeds:
    """How fast emulated batches move, in emulated seconds (see --time-scale)."""

    validation_seconds: float = 30.0
    requests_per_second: float = 2.0
    finalizing_seconds: float = 20.0
    cancelling_seconds: float = 60.0
    file_processing_seconds: float = 2.0

    @classmethod
    def from_json(cls, data: dict[str, Any], base: Speeds | None = None) -> Speeds:
        speeds = Speeds(**vars(base)) if base else Speeds()
        speeds.update(data)
        return speeds

    def update(self, data: dict[str, Any]) -> None:
        names = {_camel(name) for name in vars(self)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"unknown speed settings: {sorted(unknown)}")
        for key, value in data.items():
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"speed {key} must be a non-negative number")
            if key == "requestsPerSecond" and value <= 0:
                raise ConfigError("speed requestsPerSecond must be positive")
            setattr(self, _snake(key), float(value))

    def to_json(self) -> dict[str, float]:
        return {_camel(k): v for k, v in vars(self).items()}


@dataclass
class Deployment:
    name: str
    model_name: str
    model_version: str
    sku_name: str
    model_format: str = "OpenAI"
    sku_capacity: int = 1
    capabilities: dict[str, str] | None = None
    provisioning_state: str = "Succeeded"
    enqueued_token_limit: int | None = None

    @property
    def is_batch(self) -> bool:
        return self.sku_name in BATCH_SKUS

    @property
    def is_chat(self) -> bool:
        if self.capabilities is not None:
            return self.capabilities.get("chatCompletion") == "true"
        return "embedding" not in self.model_name

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Deployment:
        try:
            model = data.get("model", {})
            sku = data.get("sku", {})
            deployment = cls(
                name=str(data["name"]),
                model_name=str(model["name"]),
                model_version=str(model.get("version", "1")),
                model_format=str(model.get("format", "OpenAI")),
                sku_name=str(sku["name"]),
                sku_capacity=int(sku.get("capacity", 1)),
                capabilities=data.get("capabilities"),
                provisioning_state=str(data.get("provisioningState", "Succeeded")),
                enqueued_token_limit=data.get("enqueuedTokenLimit"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"deployment {data.get('name', '?')!r} is missing or has a bad field: {exc}") from exc
        if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}", deployment.name):
            raise ConfigError(f"deployment name {deployment.name!r} is not a valid Azure deployment name")
        if deployment.enqueued_token_limit is None and deployment.is_batch:
            deployment.enqueued_token_limit = 5_000_000
        return deployment

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "model": {"format": self.model_format, "name": self.model_name, "version": self.model_version},
            "sku": {"name": self.sku_name, "capacity": self.sku_capacity},
            "provisioningState": self.provisioning_state,
        }
        if self.capabilities is not None:
            data["capabilities"] = dict(self.capabilities)
        if self.enqueued_token_limit is not None:
            data["enqueuedTokenLimit"] = self.enqueued_token_limit
        return data


@dataclass
class LineFailure:
    """A batch line whose prompt carries `marker` fails with this status and error instead of completing."""

    marker: str
    status_code: int
    code: str
    message: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LineFailure:
        return cls(str(data["marker"]), int(data["statusCode"]), str(data["code"]), str(data["message"]))


@dataclass
class Resource:
    name: str
    api_key: str
    subscription_id: str
    resource_group: str
    location: str
    deployments: dict[str, Deployment]
    speeds: Speeds

    def deployment(self, name: str) -> Deployment | None:
        return self.deployments.get(name)


@dataclass
class KeyVaultConfig:
    name: str = "kv-aoai-devstack"
    secrets: dict[str, str] = field(default_factory=dict)


@dataclass
class EmulatorConfig:
    tenant_id: str
    subscription_id: str
    resource_group: str
    resources: dict[str, Resource]
    key_vault: KeyVaultConfig
    identity_header: str
    arm_page_size: int = 3
    max_requests_per_file: int = 100_000
    max_file_bytes: int = 200 * 1024 * 1024
    empty_file_ids: bool = True
    line_failures: list[LineFailure] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path | None = None) -> EmulatorConfig:
        """Reads a config file; entries it leaves out come from the default config."""
        defaults = json.loads(DEFAULT_CONFIG_PATH.read_text())
        if path is None:
            return cls.from_json(defaults)
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        return cls.from_json({**defaults, **data})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EmulatorConfig:
        speeds = Speeds.from_json(data.get("speeds", {}))
        subscription_id = str(data["subscriptionId"])
        resource_group = str(data["resourceGroup"])
        resources: dict[str, Resource] = {}
        for entry in data.get("resources", []):
            name = str(entry.get("name", ""))
            if not RESOURCE_NAME.match(name) or name.lower() in RESERVED_NAMES:
                raise ConfigError(f"resource name {name!r} is not a valid Azure OpenAI custom subdomain here")
            if name in resources:
                raise ConfigError(f"resource {name!r} is configured twice")
            deployments = [Deployment.from_json(d) for d in entry.get("deployments", [])]
            resources[name] = Resource(
                name=name,
                api_key=str(entry.get("apiKey") or secrets.token_hex(16)),
                subscription_id=str(entry.get("subscriptionId", subscription_id)),
                resource_group=str(entry.get("resourceGroup", resource_group)),
                location=str(entry.get("location", "eastus")),
                deployments={d.name: d for d in deployments},
                speeds=Speeds.from_json(entry.get("speeds", {}), base=speeds),
            )
        if not resources:
            raise ConfigError("at least one Azure OpenAI resource must be configured")
        vault = data.get("keyVault", {})
        return cls(
            tenant_id=str(data["tenantId"]),
            subscription_id=subscription_id,
            resource_group=resource_group,
            resources=resources,
            key_vault=KeyVaultConfig(name=str(vault.get("name", "kv-aoai-devstack")), secrets=vault.get("secrets", {})),
            identity_header=str(data.get("identityHeader") or secrets.token_hex(16)),
            arm_page_size=int(data.get("armPageSize", 3)),
            max_requests_per_file=int(data.get("maxRequestsPerFile", 100_000)),
            max_file_bytes=int(data.get("maxFileBytes", 200 * 1024 * 1024)),
            empty_file_ids=bool(data.get("emptyFileIds", True)),
            line_failures=[LineFailure.from_json(f) for f in data.get("lineFailures", [])],
            faults=list(data.get("faults", [])),
        )


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
