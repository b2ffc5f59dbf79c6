"""The job catalogue on Azure Table Storage: one partition per Azure OpenAI resource, one row per job.

Imports write only the columns they own, in entity-group transactions, so attributes users set survive
re-import; a per-resource lease in a second table keeps two imports of one resource from overlapping.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from shared.jobs import ImportedJob, Job, JobStatus, JobType, check_resource_name
from shared.problems import Problem
from shared.settings import Settings

TRANSACTION_LIMIT = 100  # Table Storage accepts at most 100 operations per entity-group transaction
IMPORT_LEASE = timedelta(minutes=15)  # longer than host.json's functionTimeout: an import cannot outlive it


@dataclass
class ImportCounts:
    added: int = 0
    updated: int = 0
    retired: int = 0
    revived: int = 0
    unchanged: int = 0
    skipped: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(vars(self))

    def __iadd__(self, other: ImportCounts) -> ImportCounts:
        for key, value in vars(other).items():
            setattr(self, key, getattr(self, key) + value)
        return self


class ImportInProgress(Exception):
    """Another import of this resource holds the lease."""


def table_service(settings: Settings) -> TableServiceClient:
    """The Table service of the host's storage account: a connection string, or identity-based in Azure."""
    storage = settings.storage
    if storage.connection_string:
        return TableServiceClient.from_connection_string(storage.connection_string)
    if storage.table_service_uri:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential(managed_identity_client_id=storage.client_id)
        return TableServiceClient(endpoint=storage.table_service_uri, credential=credential)
    raise Problem(
        500,
        "storage-not-configured",
        "Storage is not configured",
        "Set AzureWebJobsStorage, or AzureWebJobsStorage__tableServiceUri for an identity-based connection.",
    )


class Catalog:
    def __init__(self, service: TableServiceClient, table_name: str) -> None:
        self.jobs: TableClient = service.get_table_client(table_name)
        self.imports: TableClient = service.get_table_client(f"{table_name}imports")
        self.cancels: TableClient = service.get_table_client(f"{table_name}cancels")
        self._tables_ready = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Catalog:
        return cls(table_service(settings), settings.catalog_table)

    def ensure_tables(self) -> None:
        if self._tables_ready:
            return
        for table in (self.jobs, self.imports, self.cancels):
            with contextlib.suppress(ResourceExistsError):
                table.create_table()
        self._tables_ready = True

    # Reading -------------------------------------------------------------------------------------------------
    def list_jobs(
        self, resource: str | None = None, job_type: str | None = None, status: str | None = None
    ) -> list[Job]:
        self.ensure_tables()
        clauses, parameters = [], {}
        for column, value in (("PartitionKey", resource), ("JobType", job_type), ("Status", status)):
            if value:
                clauses.append(f"{column} eq @{column}")
                parameters[column] = value
        entities: Iterable[Any] = (
            self.jobs.query_entities(" and ".join(clauses), parameters=parameters)
            if clauses
            else self.jobs.list_entities()
        )
        return sorted((_job(e) for e in entities), key=lambda j: (j.resource, j.external_id))

    def get_job(self, resource: str, external_id: str) -> Job | None:
        self.ensure_tables()
        try:
            return _job(self.jobs.get_entity(resource, external_id))
        except ResourceNotFoundError:
            return None

    def find_job(self, external_id: str, resource: str | None = None) -> Job:
        """The job with this id (in `resource`, if given); 404 when none, 409 when several resources have it."""
        check_resource_name(resource)
        if resource:
            job = self.get_job(resource, external_id)
            matches = [job] if job else []
        else:
            self.ensure_tables()
            matches = [_job(e) for e in self.jobs.query_entities("RowKey eq @id", parameters={"id": external_id})]
        if not matches:
            where = f" in resource '{resource}'" if resource else ""
            raise Problem(
                404,
                "job-not-found",
                "Job not found",
                f"No job '{external_id}' exists{where}. Import the resource's deployments, or check the id.",
            )
        if len(matches) > 1:
            names = ", ".join(sorted(j.resource for j in matches))
            raise Problem(
                409,
                "job-ambiguous",
                "Job id is ambiguous",
                f"Job '{external_id}' exists in several resources ({names}); add ?resource= to choose one.",
            )
        return matches[0]

    # Writing -------------------------------------------------------------------------------------------------
    def set_attributes(self, job: Job, attributes: dict[str, Any], now: datetime) -> Job:
        """Stores a job's attributes if nobody changed the job since it was read (else 409: read and retry)."""
        entity = {
            "PartitionKey": job.resource,
            "RowKey": job.external_id,
            "Attributes": json.dumps(attributes),
            "UpdatedAt": _stamp(now),
        }
        try:
            self.jobs.update_entity(
                entity, mode=UpdateMode.MERGE, etag=job.etag, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise Problem(
                409,
                "job-changed",
                "Job changed meanwhile",
                f"Job '{job.external_id}' was changed by someone else while this request ran; read it again and retry.",
            ) from exc
        stored = self.get_job(job.resource, job.external_id)
        assert stored is not None
        return stored

    def apply_import(self, resource: str, imported: list[ImportedJob], now: datetime) -> ImportCounts:
        """Brings the resource's partition in line with a complete listing of its deployments."""
        self.ensure_tables()
        stamp = _stamp(now)
        partition = self.jobs.query_entities("PartitionKey eq @pk", parameters={"pk": resource})
        existing = {entity["RowKey"]: entity for entity in partition}
        counts = ImportCounts()
        operations: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        merge = {"mode": UpdateMode.MERGE}
        for job in imported:
            if job.status is JobStatus.SKIPPED:
                counts.skipped += 1
            current = existing.get(job.external_id)
            columns = _imported_columns(resource, job) | {"UpdatedAt": stamp}
            if current is None:
                operations.append(
                    ("upsert", columns | {"Attributes": "{}", "ImportedAt": stamp, "RetiredAt": ""}, merge)
                )
                counts.added += job.status is not JobStatus.SKIPPED
            elif current.get("Status") == JobStatus.RETIRED:
                operations.append(("upsert", columns | {"RetiredAt": ""}, merge))
                counts.revived += job.status is not JobStatus.SKIPPED
            elif current.get("Fingerprint") != job.fingerprint():
                operations.append(("upsert", columns, merge))
                counts.updated += job.status is not JobStatus.SKIPPED
            else:
                counts.unchanged += job.status is not JobStatus.SKIPPED
        current_ids = {job.external_id for job in imported}
        for external_id, entity in existing.items():
            if external_id not in current_ids and entity.get("Status") != JobStatus.RETIRED:
                operations.append(
                    (
                        "upsert",
                        {
                            "PartitionKey": resource,
                            "RowKey": external_id,
                            "Status": JobStatus.RETIRED.value,
                            "Reason": "The deployment no longer exists in the resource.",
                            "RetiredAt": stamp,
                            "UpdatedAt": stamp,
                            "Fingerprint": "",
                        },
                        merge,
                    )
                )
                counts.retired += 1
        for chunk in _chunks(operations, TRANSACTION_LIMIT):
            self.jobs.submit_transaction(chunk)
        return counts

    # The import lease ----------------------------------------------------------------------------------------
    def acquire_import_lease(self, resource: str, now: datetime) -> str:
        """A lease on importing `resource`, or ImportInProgress while another import holds one."""
        self.ensure_tables()
        owner = uuid.uuid4().hex
        lease = {
            "PartitionKey": "import",
            "RowKey": resource,
            "Owner": owner,
            "LeasedUntil": _stamp(now + IMPORT_LEASE),
        }
        try:
            self.imports.create_entity(lease)
            return owner
        except ResourceExistsError:
            pass
        current = self.imports.get_entity("import", resource)
        if current.get("LeasedUntil") and current["LeasedUntil"] > _stamp(now):
            raise ImportInProgress(resource)
        try:
            self.imports.update_entity(
                lease,
                mode=UpdateMode.MERGE,
                etag=current.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except ResourceModifiedError as exc:
            raise ImportInProgress(resource) from exc
        return owner

    def release_import_lease(self, resource: str, owner: str, outcome: dict[str, Any]) -> None:
        """Ends the lease and records how the import went (read by import_outcomes)."""
        current = self.imports.get_entity("import", resource)
        if current.get("Owner") != owner:
            return  # the lease expired and another import took it; leave its record alone
        record = {
            "PartitionKey": "import",
            "RowKey": resource,
            "Owner": "",
            "LeasedUntil": "",
            "LastOutcome": json.dumps(outcome),
        }
        with contextlib.suppress(ResourceModifiedError):
            self.imports.update_entity(
                record,
                mode=UpdateMode.MERGE,
                etag=current.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )

    # Cancel requests: durable, so a cancel survives even if its event is dropped (e.g. across continue-as-new)
    def request_cancel(self, run_id: str, now: datetime) -> bool:
        """Records that the run is to be cancelled; True when this is the first request to."""
        self.ensure_tables()
        try:
            self.cancels.create_entity({"PartitionKey": "cancel", "RowKey": run_id, "RequestedAt": _stamp(now)})
        except ResourceExistsError:
            return False
        return True

    def cancel_requested(self, run_id: str) -> bool:
        self.ensure_tables()
        try:
            self.cancels.get_entity("cancel", run_id)
        except ResourceNotFoundError:
            return False
        return True

    def import_outcomes(self) -> dict[str, Any]:
        self.ensure_tables()
        return {e["RowKey"]: json.loads(e.get("LastOutcome") or "null") for e in self.imports.list_entities()}


def _imported_columns(resource: str, job: ImportedJob) -> dict[str, Any]:
    return {
        "PartitionKey": resource,
        "RowKey": job.external_id,
        "JobType": job.job_type.value,
        "Deployment": job.deployment,
        "ModelFormat": job.model_format,
        "ModelName": job.model_name,
        "ModelVersion": job.model_version,
        "Sku": job.sku,
        "BatchCapable": job.batch_capable,
        "Status": job.status.value,
        "Reason": job.reason,
        "Fingerprint": job.fingerprint(),
    }


def _job(entity: Any) -> Job:
    imported = ImportedJob(
        external_id=entity["RowKey"],
        job_type=JobType(entity["JobType"]),
        deployment=entity["Deployment"],
        model_format=entity.get("ModelFormat", ""),
        model_name=entity.get("ModelName", ""),
        model_version=entity.get("ModelVersion", ""),
        sku=entity.get("Sku", ""),
        batch_capable=bool(entity.get("BatchCapable")),
        status=JobStatus(entity["Status"]),
        reason=entity.get("Reason", ""),
    )
    return Job(
        resource=entity["PartitionKey"],
        imported=imported,
        attributes=json.loads(entity.get("Attributes") or "{}"),
        imported_at=entity.get("ImportedAt", ""),
        updated_at=entity.get("UpdatedAt", ""),
        retired_at=entity.get("RetiredAt", ""),
        etag=entity.metadata.get("etag"),
    )


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
