"""Emulator configuration: resources, keys, deployments, quotas, speeds, faults.

The JSON file uses Azure's camelCase names. Anything left out takes the defaults below, so a test config can name
only what it cares about. Keys that are not given are generated at start, as Azure does when a resource is created.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.emulator.faults import FaultRule, FaultRuleError
from devstack.emulator.vault import SECRET_NAME

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

    def update(self, data: Any) -> None:
        """Applies every setting of `data`, or none of them (ConfigError naming the first bad one)."""
        if not isinstance(data, dict):
            raise ConfigError("speeds must be a JSON object of speed settings")
        names = sorted(_camel(name) for name in vars(self))
        unknown = set(data) - set(names)
        if unknown:
            raise ConfigError(f"unknown speed settings: {sorted(unknown)} (known: {', '.join(names)})")
        for key, value in data.items():
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"speed {key} must be a non-negative number, not {value!r}")
            if key == "requestsPerSecond" and value <= 0:
                raise ConfigError("speed requestsPerSecond must be positive")
        for key, value in data.items():
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
    def from_json(cls, data: Any) -> Deployment:
        if not isinstance(data, dict):
            raise ConfigError("a deployment must be a JSON object")
        name = data.get("name", "?")
        model, sku, capabilities = data.get("model"), data.get("sku"), data.get("capabilities")
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            raise ConfigError(f'deployment {name!r} needs model.name (an object like {{"name": "gpt-4o"}})')
        if not isinstance(sku, dict) or not isinstance(sku.get("name"), str):
            raise ConfigError(f'deployment {name!r} needs sku.name (an object like {{"name": "GlobalBatch"}})')
        if capabilities is not None and not (
            isinstance(capabilities, dict) and all(isinstance(v, str) for v in capabilities.values())
        ):
            raise ConfigError(f"deployment {name!r}: capabilities must be an object of strings")
        limit = data.get("enqueuedTokenLimit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ConfigError(f"deployment {name!r}: enqueuedTokenLimit must be a non-negative integer")
        capacity = sku.get("capacity", 1)
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ConfigError(f"deployment {name!r}: sku.capacity must be a non-negative integer")
        try:
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
            raise ConfigError(f"deployment {name!r} is missing or has a bad field: {exc}") from exc
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
    def from_json(cls, data: Any) -> LineFailure:
        try:
            failure = cls(str(data["marker"]), int(data["statusCode"]), str(data["code"]), str(data["message"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"a line failure needs marker, statusCode, code and message: {data!r}") from exc
        if not failure.marker or not 400 <= failure.status_code <= 599:
            raise ConfigError(f"a line failure needs a non-empty marker and an error statusCode: {data!r}")
        return failure


@dataclass
class Resource:
    name: str
    api_key: str
    subscription_id: str
    resource_group: str
    location: str
    deployments: dict[str, Deployment]
    speeds: Speeds
    # Where the enqueued-token quota is enforced: "create" (fail fast: POST /batches answers 400, as in most
    # regions) or "validation" (the batch is created, then fails validation with token_limit_exceeded).
    quota_check: str = "create"
    # Whether the resource can take batch input from, and write results to, a user's blob storage (`input_blob`,
    # `output_folder`): in Azure that needs its system-assigned managed identity with access to that storage.
    blob_storage: bool = False

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
        """Reads a config file; top-level entries it leaves out come from the default config. Anything unusable is
        a ConfigError that names the entry."""
        defaults = json.loads(DEFAULT_CONFIG_PATH.read_text())
        if path is None:
            return cls.from_json(defaults)
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config {path} must hold a JSON object, not {type(data).__name__}")
        return cls.from_json({**defaults, **data})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EmulatorConfig:
        unknown = set(data) - CONFIG_KEYS
        if unknown:
            raise ConfigError(f"unknown config entries {sorted(unknown)} (known: {', '.join(sorted(CONFIG_KEYS))})")
        try:
            return cls._from_json(data)
        except ConfigError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # A wrong type somewhere the checks below do not name: still a config problem, never a traceback.
            raise ConfigError(f"malformed config ({type(exc).__name__}: {exc})") from exc

    @classmethod
    def _from_json(cls, data: dict[str, Any]) -> EmulatorConfig:
        speeds = Speeds.from_json(_object(data, "speeds"))
        subscription_id = _text(data, "subscriptionId")
        resource_group = _text(data, "resourceGroup")
        resources: dict[str, Resource] = {}
        for entry in _list(data, "resources"):
            if not isinstance(entry, dict):
                raise ConfigError(f"each resource must be a JSON object, not {entry!r}")
            name = entry.get("name")
            if not isinstance(name, str) or not RESOURCE_NAME.fullmatch(name) or name.lower() in RESERVED_NAMES:
                raise ConfigError(
                    f"resource name {name!r} is not a valid Azure OpenAI custom subdomain here "
                    "(2-64 letters, digits and hyphens, not 'subscriptions' or 'msi')"
                )
            if any(name.lower() == other.lower() for other in resources):
                raise ConfigError(f"resource {name!r} is configured twice")
            deployments: dict[str, Deployment] = {}
            for deployment_data in _list(entry, "deployments"):
                deployment = Deployment.from_json(deployment_data)
                if deployment.name in deployments:
                    raise ConfigError(f"deployment {deployment.name!r} of resource {name!r} is configured twice")
                deployments[deployment.name] = deployment
            try:
                resource_speeds = Speeds.from_json(_object(entry, "speeds"), base=speeds)
            except ConfigError as exc:
                raise ConfigError(f"resource {name!r}: {exc}") from exc
            resources[name] = Resource(
                name=name,
                api_key=str(entry.get("apiKey") or secrets.token_hex(16)),
                subscription_id=str(entry.get("subscriptionId", subscription_id)),
                resource_group=str(entry.get("resourceGroup", resource_group)),
                location=str(entry.get("location", "eastus")),
                deployments=deployments,
                speeds=resource_speeds,
                quota_check=parse_quota_check(entry.get("quotaCheck", "create"), name),
                blob_storage=parse_blob_storage(entry.get("blobStorage", False), name),
            )
        if not resources:
            raise ConfigError("at least one Azure OpenAI resource must be configured")
        vault = _object(data, "keyVault")
        vault_secrets = _object(vault, "secrets")
        for secret_name, value in vault_secrets.items():
            if not SECRET_NAME.fullmatch(secret_name) or not isinstance(value, str):
                raise ConfigError(
                    f"Key Vault secret {secret_name!r} needs a name of letters, digits and hyphens and a string value"
                )
        faults = _list(data, "faults")
        for index, rule in enumerate(faults, start=1):
            try:
                FaultRule.from_json(f"fault-{index}", rule)
            except FaultRuleError as exc:
                raise ConfigError(f"fault rule #{index}: {exc}") from exc
        return cls(
            tenant_id=_text(data, "tenantId"),
            subscription_id=subscription_id,
            resource_group=resource_group,
            resources=resources,
            key_vault=KeyVaultConfig(name=str(vault.get("name", "kv-aoai-devstack")), secrets=dict(vault_secrets)),
            identity_header=str(data.get("identityHeader") or secrets.token_hex(16)),
            arm_page_size=_count(data, "armPageSize", 3),
            max_requests_per_file=_count(data, "maxRequestsPerFile", 100_000),
            max_file_bytes=_count(data, "maxFileBytes", 200 * 1024 * 1024),
            empty_file_ids=_flag(data, "emptyFileIds", True),
            line_failures=[LineFailure.from_json(f) for f in _list(data, "lineFailures")],
            faults=list(faults),
        )


# Every top-level entry a config file may have (a misspelt one is refused rather than silently ignored).
CONFIG_KEYS = frozenset(
    {
        "$schema",
        "tenantId",
        "subscriptionId",
        "resourceGroup",
        "identityHeader",
        "armPageSize",
        "maxRequestsPerFile",
        "maxFileBytes",
        "emptyFileIds",
        "speeds",
        "lineFailures",
        "resources",
        "keyVault",
        "faults",
    }
)


def _object(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a JSON object, not {value!r}")
    return value


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{key} must be a JSON list, not {value!r}")
    return value


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty string, not {value!r}")
    return value


def _flag(data: dict[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, not {value!r}")
    return value


def _count(data: dict[str, Any], key: str, default: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a positive integer, not {value!r}")
    return value


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


QUOTA_CHECKS = ("create", "validation")


def parse_quota_check(value: Any, resource: str) -> str:
    if value not in QUOTA_CHECKS:
        raise ConfigError(f"resource {resource!r}: quotaCheck must be one of {', '.join(QUOTA_CHECKS)}")
    return str(value)


def parse_blob_storage(value: Any, resource: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"resource {resource!r}: blobStorage must be true or false, not {value!r}")
    return value
