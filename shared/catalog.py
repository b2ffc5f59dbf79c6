"""The job catalogue on Azure Table Storage: one partition per Azure OpenAI resource, one row per job.

Imports write only the columns they own, in concurrent entity-group transactions, so attributes users set survive
re-import; a per-resource lease in a second table keeps two imports of one resource from overlapping.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableErrorCode, TableServiceClient, TableTransactionError, UpdateMode

from shared.jobs import ImportedJob, Job, JobStatus, JobType, check_resource_name
from shared.paging import DEFAULT_PAGE_SIZE, TablePosition, query_page
from shared.problems import Problem
from shared.runs import iso
from shared.settings import Settings

TRANSACTION_LIMIT = 100  # Table Storage accepts at most 100 operations per entity-group transaction
# Transactions in flight at once during an import: enough to keep the storage service busy while this process builds
# the next request (building and parsing them costs about as much CPU here as Table Storage spends on them).
WRITE_CONCURRENCY = 4
IMPORT_LEASE = timedelta(minutes=15)  # longer than host.json's functionTimeout: an import cannot outlive it
_MERGE = {"mode": UpdateMode.MERGE}  # imports write only the columns they own; attributes stay as users set them
_SET_ON_CREATE = frozenset({"Attributes", "ImportedAt"})  # columns an import writes only into a row it creates
# One operation of an entity-group transaction: ("create", row) or ("upsert", row, {"mode": ...}).
Operation = tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], dict[str, Any]]


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


@dataclass(frozen=True)
class JobPage:
    """One page of a job listing: the jobs, and the token of the next page (None on the last page)."""

    jobs: list[Job]
    continuation_token: str | None


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
        """Every matching job at once, by resource then external id (for callers that need them all)."""
        self.ensure_tables()
        query_filter, parameters = _job_filter(resource, job_type, status)
        entities: Iterable[Any] = (
            self.jobs.query_entities(query_filter, parameters=parameters) if query_filter else self.jobs.list_entities()
        )
        return sorted((_job(e) for e in entities), key=lambda j: (j.resource, j.external_id))

    def list_jobs_page(
        self,
        resource: str | None = None,
        job_type: str | None = None,
        status: str | None = None,
        *,
        top: int = DEFAULT_PAGE_SIZE,
        after: TablePosition | None = None,
    ) -> JobPage:
        """One page of matching jobs from `after` on (the start when None), in Table Storage's order: by resource
        (PartitionKey), then external id (RowKey). The filters are Table Storage query filters.

        The page is one Table Storage query page of at most `top` entities. The service may send fewer, even none,
        with a continuation (at partition boundaries, or when a query runs 5 seconds), so only a page without a
        continuation token is the last; the token is the service's own, so the next page starts exactly there.
        """
        self.ensure_tables()
        query_filter, parameters = _job_filter(resource, job_type, status)
        page = query_page(self.jobs, query_filter, parameters, top=top, after=after)
        return JobPage([_job(entity) for entity in page.entities], page.continuation_token)

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
            "UpdatedAt": iso(now, timespec="seconds"),
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

    @contextlib.contextmanager
    def importing(self, resource: str, now: datetime) -> Iterator[PartitionImport]:
        """An import into `resource`'s partition (see PartitionImport). Leaving the block waits for every write in
        flight, so none outlives the caller's import lease; if the block failed, writes not yet started are dropped."""
        self.ensure_tables()
        executor = ThreadPoolExecutor(max_workers=WRITE_CONCURRENCY, thread_name_prefix=f"import-{resource}")
        failed = True
        try:
            yield PartitionImport(self.jobs, resource, now, executor)
            failed = False
        finally:
            executor.shutdown(wait=True, cancel_futures=failed)

    # The import lease ----------------------------------------------------------------------------------------
    def acquire_import_lease(self, resource: str, now: datetime) -> str:
        """A lease on importing `resource`, or ImportInProgress while another import holds one."""
        self.ensure_tables()
        owner = uuid.uuid4().hex
        lease = {
            "PartitionKey": "import",
            "RowKey": resource,
            "Owner": owner,
            "LeasedUntil": iso(now + IMPORT_LEASE, timespec="seconds"),
        }
        try:
            self.imports.create_entity(lease)
            return owner
        except ResourceExistsError:
            pass
        current = self.imports.get_entity("import", resource)
        if current.get("LeasedUntil") and current["LeasedUntil"] > iso(now, timespec="seconds"):
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
            self.cancels.create_entity(
                {"PartitionKey": "cancel", "RowKey": run_id, "RequestedAt": iso(now, timespec="seconds")}
            )
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


class PartitionImport:
    """One import of a resource's deployments into its partition, fed page by page while ARM lists the next page.

    Additions, updates and revivals are sent as soon as they fill a 100-row entity-group transaction, and several
    transactions run at once: an import writes each row at most once, so no two transactions touch the same row
    and their order cannot matter. Retiring needs the complete listing, so only `complete()` retires (and sends
    the rest): an import that stops half-way (ARM failed on a later page) retires nothing, though whole
    transactions of the pages before the failure may already be written. The diff needs only each row's status
    and fingerprint, read without the other columns while ARM sends the first page.
    """

    def __init__(self, jobs: TableClient, resource: str, now: datetime, executor: ThreadPoolExecutor) -> None:
        self.counts = ImportCounts()
        self._jobs = jobs
        self._resource = resource
        self._at = iso(now, timespec="seconds")
        self._executor = executor
        self._stored: Future[dict[str, StoredImport]] = executor.submit(_stored_imports, jobs, resource)
        self._listed: set[str] = set()
        self._unsent: list[Operation] = []
        self._writes: list[Future[Any]] = []

    def add(self, imported: Iterable[ImportedJob]) -> None:
        """Brings the rows of these jobs in line; the writes are sent before this returns, not awaited."""
        stored = self._stored.result()
        counts, stamp = self.counts, self._at
        for job in imported:
            if job.external_id in self._listed:
                continue  # listed twice (the list changed between ARM pages): one write per row and import
            self._listed.add(job.external_id)
            if job.status is JobStatus.SKIPPED:
                counts.skipped += 1
            counted = job.status is not JobStatus.SKIPPED  # skipped jobs are written, but counted only as skipped
            current = stored.get(job.external_id)
            fingerprint = job.fingerprint()
            if current is None:
                # a create, not an upsert: the row is new (and Azurite looks an upserted row up twice)
                row = _imported_columns(self._resource, job, fingerprint, stamp)
                self._unsent.append(("create", row | {"Attributes": "{}", "ImportedAt": stamp, "RetiredAt": ""}))
                counts.added += counted
            elif current.status == JobStatus.RETIRED:
                row = _imported_columns(self._resource, job, fingerprint, stamp)
                self._unsent.append(("upsert", row | {"RetiredAt": ""}, _MERGE))
                counts.revived += counted
            elif current.fingerprint != fingerprint:
                self._unsent.append(("upsert", _imported_columns(self._resource, job, fingerprint, stamp), _MERGE))
                counts.updated += counted
            else:
                counts.unchanged += counted
        self._send(whole_transactions_only=True)

    def complete(self) -> ImportCounts:
        """Retires the rows the listing lacked and waits for every write; call it only after the whole listing."""
        for external_id, current in self._stored.result().items():
            if external_id not in self._listed and current.status != JobStatus.RETIRED:
                retired = {
                    "PartitionKey": self._resource,
                    "RowKey": external_id,
                    "Status": JobStatus.RETIRED.value,
                    "Reason": "The deployment no longer exists in the resource.",
                    "RetiredAt": self._at,
                    "UpdatedAt": self._at,
                    "Fingerprint": "",
                }
                self._unsent.append(("upsert", retired, _MERGE))
                self.counts.retired += 1
        self._send(whole_transactions_only=False)
        for write in self._writes:
            write.result()
        return self.counts

    def _send(self, whole_transactions_only: bool) -> None:
        for write in self._writes:
            if write.done():
                write.result()  # a failed transaction ends the import now rather than after the whole listing
        while len(self._unsent) >= TRANSACTION_LIMIT or (self._unsent and not whole_transactions_only):
            chunk, self._unsent = self._unsent[:TRANSACTION_LIMIT], self._unsent[TRANSACTION_LIMIT:]
            self._writes.append(self._executor.submit(_write, self._jobs, chunk))


@dataclass(frozen=True)
class StoredImport:
    """What an import compares a stored row with."""

    status: str
    fingerprint: str


def _write(jobs: TableClient, operations: list[Operation]) -> None:
    """One entity-group transaction. A row to create that exists after all (only an import whose lease ran out could
    have written it since the partition was read) fails the whole transaction: it is sent again with such rows
    merged instead, without the columns that would overwrite what the row already holds."""
    try:
        jobs.submit_transaction(operations)
    except TableTransactionError as error:
        if getattr(error, "error_code", None) != TableErrorCode.ENTITY_ALREADY_EXISTS:  # set by the SDK, untyped
            raise
        jobs.submit_transaction([_merged_instead(operation) for operation in operations])


def _merged_instead(operation: Operation) -> Operation:
    if operation[0] != "create":
        return operation
    row = {name: value for name, value in operation[1].items() if name not in _SET_ON_CREATE}
    return ("upsert", row, _MERGE)


def _stored_imports(jobs: TableClient, resource: str) -> dict[str, StoredImport]:
    rows = jobs.query_entities(
        "PartitionKey eq @pk", parameters={"pk": resource}, select=["RowKey", "Status", "Fingerprint"]
    )
    return {row["RowKey"]: StoredImport(row.get("Status") or "", row.get("Fingerprint") or "") for row in rows}


def _imported_columns(resource: str, job: ImportedJob, fingerprint: str, stamp: str) -> dict[str, Any]:
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
        "Fingerprint": fingerprint,
        "UpdatedAt": stamp,
    }


def _job_filter(resource: str | None, job_type: str | None, status: str | None) -> tuple[str, dict[str, str]]:
    """A Table Storage filter (with parameters, never values spliced in) for the given criteria; "" for none."""
    clauses, parameters = [], {}
    for column, value in (("PartitionKey", resource), ("JobType", job_type), ("Status", status)):
        if value:
            clauses.append(f"{column} eq @{column}")
            parameters[column] = value
    return " and ".join(clauses), parameters


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
