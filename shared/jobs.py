"""Job types, external ids, classification of deployments, and job attributes.

A chat-capable deployment `d` yields a Chat Completion Job `d` and an Azure OpenAI Batch Job `d::batch`; the
`::batch` suffix only distinguishes the two in the catalogue and is stripped before any call to Azure.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from shared.problems import FieldError, Problem, validation_problem
from shared.settings import RESOURCE_NAME

if TYPE_CHECKING:  # the orchestrators import this module: keep requests and azure.core out of their episodes
    from shared.arm import ArmDeployment

BATCH_SUFFIX = "::batch"
BATCH_SKUS = frozenset({"GlobalBatch", "DataZoneBatch"})
# Azure OpenAI deployment names: 2-64 letters, digits, '.', '_' and '-', starting with a letter or digit.
# Every pattern of a name is checked with `fullmatch`: `$` alone also matches before a final newline.
DEPLOYMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$")
FILE_ID = re.compile(r"^file-[A-Za-z0-9_-]{1,128}$")
SECRET_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
BATCH_ENDPOINTS = ("/chat/completions",)
COMPLETION_WINDOWS = ("24h",)


class JobType(StrEnum):
    CHAT_COMPLETION = "chat_completion"
    BATCH = "batch"
    EMBEDDING = "embedding"
    UNSUPPORTED = "unsupported"

    @property
    def display_name(self) -> str:
        return {
            JobType.CHAT_COMPLETION: "Azure OpenAI Chat Completion Job",
            JobType.BATCH: "Azure OpenAI Batch Job",
            JobType.EMBEDDING: "Azure OpenAI Embedding Job",
            JobType.UNSUPPORTED: "Unsupported deployment",
        }[self]


class JobStatus(StrEnum):
    ACTIVE = "active"  # runnable
    NOT_RUNNABLE = "not_runnable"  # imported, but Azure would refuse a run (see reason)
    SKIPPED = "skipped"  # recorded, but this app does not run its kind of job
    RETIRED = "retired"  # its deployment is gone; kept, revived if it returns


@dataclass(frozen=True)
class ImportedJob:
    """What one import derives from a deployment; user-set attributes are not part of it."""

    external_id: str
    job_type: JobType
    deployment: str
    model_format: str
    model_name: str
    model_version: str
    sku: str
    batch_capable: bool
    status: JobStatus
    reason: str

    def fingerprint(self) -> str:
        """Changes exactly when something the import writes changes.

        The same digest of the same JSON as ever, so rows already stored keep matching after an upgrade (a new
        format would rewrite, and report as updated, every job on the next import); built from the fields directly
        because asdict()'s deep copy cost more than all the rest, and an import computes one per job.
        """
        imported = {name: getattr(self, name) for name in _IMPORTED_FIELDS}
        return hashlib.sha256(_FINGERPRINT_JSON.encode(imported).encode()).hexdigest()[:16]


_IMPORTED_FIELDS = tuple(f.name for f in fields(ImportedJob))
_FINGERPRINT_JSON = json.JSONEncoder(sort_keys=True)


@dataclass(frozen=True)
class Job:
    """A job in the catalogue: what import found, plus attributes users set, plus bookkeeping."""

    resource: str
    imported: ImportedJob
    attributes: dict[str, Any] = field(default_factory=dict)
    imported_at: str = ""
    updated_at: str = ""
    retired_at: str = ""
    etag: str | None = None

    @property
    def external_id(self) -> str:
        return self.imported.external_id

    @property
    def job_type(self) -> JobType:
        return self.imported.job_type

    @property
    def status(self) -> JobStatus:
        return self.imported.status

    def effective_attributes(self) -> dict[str, Any]:
        """Every attribute of this job type, with defaults where none is set."""
        specs = ATTRIBUTES.get(self.job_type, {})
        return {name: self.attributes.get(name, spec.default) for name, spec in specs.items()}

    def to_resource(self) -> dict[str, Any]:
        job = self.imported
        return {
            "externalId": job.external_id,
            "resource": self.resource,
            "jobType": job.job_type.value,
            "jobTypeName": job.job_type.display_name,
            "deployment": job.deployment,
            "model": {"format": job.model_format, "name": job.model_name, "version": job.model_version},
            "sku": job.sku,
            "batchCapable": job.batch_capable,
            "status": job.status.value,
            "reason": job.reason or None,
            "attributes": self.effective_attributes(),
            "importedAt": self.imported_at or None,
            "updatedAt": self.updated_at or None,
            "retiredAt": self.retired_at or None,
        }


def deployment_of(external_id: str) -> str:
    """The deployment name a job's external id refers to: `::batch` stripped."""
    return external_id.removesuffix(BATCH_SUFFIX)


def check_external_id(external_id: str) -> str:
    """The external id, if it is a deployment name (optionally with `::batch`) Azure would accept; else 400."""
    if not DEPLOYMENT_NAME.fullmatch(deployment_of(external_id)):
        raise Problem(
            400,
            "invalid-external-id",
            "Invalid job id",
            "A job id is an Azure OpenAI deployment name (2-64 letters, digits, '.', '_' or '-'), "
            f"optionally followed by '{BATCH_SUFFIX}'.",
            [FieldError("externalId", "not a deployment name")],
        )
    return external_id


def check_resource_name(name: str | None) -> str | None:
    """`name` if it is an Azure OpenAI resource name (or None); else 400 naming `resource`."""
    if name is not None and not RESOURCE_NAME.fullmatch(name):
        raise validation_problem(
            [FieldError("resource", "is not a valid resource name (2-64 letters, digits and '-')")],
            "resource is not an Azure OpenAI resource name.",
        )
    return name


def classify(deployment: ArmDeployment) -> list[ImportedJob]:
    """The jobs a deployment yields: chat-capable → Chat Completion Job and Batch Job; others are recorded."""
    batch_capable = deployment.sku_name in BATCH_SKUS

    def job(external_id: str, job_type: JobType, status: JobStatus, reason: str = "") -> ImportedJob:
        return ImportedJob(
            external_id,
            job_type,
            deployment.name,
            deployment.model_format,
            deployment.model_name,
            deployment.model_version,
            deployment.sku_name,
            batch_capable,
            status,
            reason,
        )

    if _is_embedding(deployment) and not _is_chat(deployment):
        return [job(deployment.name, JobType.EMBEDDING, JobStatus.SKIPPED, "Embedding jobs are not runnable yet.")]
    if not _is_chat(deployment):
        return [
            job(
                deployment.name,
                JobType.UNSUPPORTED,
                JobStatus.SKIPPED,
                f"The model {deployment.model_name} is not chat-capable.",
            )
        ]
    if deployment.provisioning_state != "Succeeded":
        reason = (
            f"The deployment's provisioning state is {deployment.provisioning_state or 'unknown'}; only "
            "Succeeded deployments can run."
        )
        return [
            job(deployment.name, JobType.CHAT_COMPLETION, JobStatus.NOT_RUNNABLE, reason),
            job(deployment.name + BATCH_SUFFIX, JobType.BATCH, JobStatus.NOT_RUNNABLE, reason),
        ]
    if batch_capable:
        chat = job(
            deployment.name,
            JobType.CHAT_COMPLETION,
            JobStatus.NOT_RUNNABLE,
            f"{deployment.sku_name} deployments serve batch jobs only; run {deployment.name}{BATCH_SUFFIX}.",
        )
        batch = job(deployment.name + BATCH_SUFFIX, JobType.BATCH, JobStatus.ACTIVE)
    else:
        chat = job(deployment.name, JobType.CHAT_COMPLETION, JobStatus.ACTIVE)
        batch = job(
            deployment.name + BATCH_SUFFIX,
            JobType.BATCH,
            JobStatus.NOT_RUNNABLE,
            f"SKU {deployment.sku_name or 'unknown'} cannot run batch jobs; only "
            f"{' and '.join(sorted(BATCH_SKUS))} deployments can.",
        )
    return [chat, batch]


def _is_chat(deployment: ArmDeployment) -> bool:
    if deployment.capabilities:
        return deployment.capabilities.get("chatCompletion") == "true"
    return "embedding" not in deployment.model_name.lower()


def _is_embedding(deployment: ArmDeployment) -> bool:
    if deployment.capabilities:
        return deployment.capabilities.get("embeddings") == "true"
    return "embedding" in deployment.model_name.lower()


# Attributes --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttributeSpec:
    """A job attribute: its API name, the scheduler's display name, its default and its check."""

    name: str
    display_name: str
    default: Any
    check: Callable[[Any], str | None]


def _file_id(value: Any) -> str | None:
    if not isinstance(value, str) or not FILE_ID.fullmatch(value):
        return "must be an Azure OpenAI file id such as 'file-abc123'"
    return None


def _secret_name(value: Any) -> str | None:
    if not isinstance(value, str) or not SECRET_NAME.fullmatch(value):
        return "must be a Key Vault secret name (1-127 letters, digits and '-')"
    return None


def _one_of(allowed: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value not in allowed:
            return f"must be {' or '.join(repr(a) for a in allowed)}; Azure OpenAI accepts no other value"
        return None

    return check


def _text(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > 100_000:
        return "must be a string of at most 100,000 characters"
    return None


def _pool(value: Any) -> str | None:
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= 20
        or not all(isinstance(v, str) and RESOURCE_NAME.fullmatch(v) for v in value)
    ):
        return "must be a list of 1 to 20 configured Azure OpenAI resource names"
    return None


def _retries(value: Any) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 5:
        return "must be a whole number from 0 to 5"
    return None


def _max_tokens(value: Any) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1_000_000:
        return "must be a whole number from 1 to 1,000,000"
    return None


def _temperature(value: Any) -> str | None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 2:
        return "must be a number from 0 to 2"
    return None


ATTRIBUTES: dict[JobType, dict[str, AttributeSpec]] = {
    JobType.BATCH: {
        spec.name: spec
        for spec in (
            AttributeSpec("inputFileId", "OpenAI Input File ID", None, _file_id),
            AttributeSpec("inputFileSecret", "OpenAI Input File ID (Key Vault secret name)", None, _secret_name),
            AttributeSpec("endpoint", "OpenAI Batch Endpoint", "/chat/completions", _one_of(BATCH_ENDPOINTS)),
            AttributeSpec("completionWindow", "OpenAI Completion Window", "24h", _one_of(COMPLETION_WINDOWS)),
            # For inputs built from prompts (POST /api/jobs/{id}/inputs): the lines' system prompt and settings.
            AttributeSpec("systemPrompt", "OpenAI System Prompt", None, _text),
            AttributeSpec("maxTokens", "OpenAI Max Tokens", None, _max_tokens),
            AttributeSpec("temperature", "OpenAI Temperature", None, _temperature),
            # Runs of inputs the app built: other resources whose deployment of the same model may run shards, and
            # how often a request that failed for a transient reason is tried again.
            AttributeSpec("pool", "Resources of the pool", None, _pool),
            AttributeSpec("maxRequestRetries", "Request retries", 2, _retries),
        )
    },
    JobType.CHAT_COMPLETION: {
        spec.name: spec
        for spec in (
            AttributeSpec("systemPrompt", "OpenAI System Prompt", None, _text),
            AttributeSpec("maxTokens", "OpenAI Max Tokens", None, _max_tokens),
            AttributeSpec("temperature", "OpenAI Temperature", None, _temperature),
        )
    },
}


def merge_attributes(job_type: JobType, current: Mapping[str, Any], changes: Any) -> dict[str, Any]:
    """The attributes after applying `changes` (null removes one), or a 400 naming every bad field."""
    if not isinstance(changes, dict):
        raise validation_problem([FieldError("attributes", "must be an object")], "attributes must be a JSON object.")
    specs = ATTRIBUTES.get(job_type, {})
    errors: list[FieldError] = []
    merged = dict(current)
    for name, value in changes.items():
        spec = specs.get(name)
        if spec is None:
            known = ", ".join(specs) or "none"
            errors.append(
                FieldError(f"attributes.{name}", f"is not an attribute of a {job_type.display_name} (known: {known})")
            )
        elif value is None:
            merged.pop(name, None)
        elif (message := spec.check(value)) is not None:
            errors.append(FieldError(f"attributes.{name}", message))
        else:
            merged[name] = value
    if not errors and merged.get("inputFileId") and merged.get("inputFileSecret"):
        errors.append(FieldError("attributes.inputFileSecret", "set either inputFileId or inputFileSecret, not both"))
    if errors:
        raise validation_problem(errors, f"Invalid job attributes: {', '.join(e.field for e in errors)}.")
    return merged
