"""Import ("job discovery"): list each resource's deployments on ARM and bring the catalogue in line."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.arm import ArmClient
from shared.catalog import Catalog, ImportCounts, ImportInProgress
from shared.http import AzureError
from shared.jobs import classify
from shared.settings import OpenAIResource


@dataclass
class ResourceImport:
    """How importing one resource went: counts, or the ARM error, or busy (another import held the lease)."""

    resource: str
    counts: ImportCounts | None = None
    error: AzureError | None = None
    busy: bool = False

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"resource": self.resource}
        if self.counts is not None:
            data["counts"] = self.counts.to_dict()
        if self.error is not None:
            data["error"] = {
                "upstreamStatus": self.error.status,
                "code": self.error.code,
                "message": self.error.message,
            }
        if self.busy:
            data["busy"] = True
        return data


@dataclass
class ImportReport:
    resources: list[ResourceImport] = field(default_factory=list)

    @property
    def totals(self) -> ImportCounts:
        total = ImportCounts()
        for item in self.resources:
            if item.counts is not None:
                total += item.counts
        return total

    @property
    def failures(self) -> list[ResourceImport]:
        return [item for item in self.resources if item.error is not None]

    @property
    def busy(self) -> list[ResourceImport]:
        return [item for item in self.resources if item.busy]

    def to_dict(self) -> dict[str, Any]:
        return {**self.totals.to_dict(), "resources": [item.to_dict() for item in self.resources]}


def import_deployments(
    resources: tuple[OpenAIResource, ...], arm: ArmClient, catalog: Catalog, now: datetime
) -> ImportReport:
    """Imports every resource in turn; one resource's failure does not stop the others or touch its jobs."""
    report = ImportReport()
    for resource in resources:
        report.resources.append(_import_resource(resource, arm, catalog, now))
    return report


def _import_resource(resource: OpenAIResource, arm: ArmClient, catalog: Catalog, now: datetime) -> ResourceImport:
    try:  # each resource's lease starts when its own import does, not when the whole run began
        owner = catalog.acquire_import_lease(resource.name, max(now, datetime.now(UTC)))
    except ImportInProgress:
        return ResourceImport(resource.name, busy=True)
    outcome = ResourceImport(resource.name)
    try:
        with catalog.importing(resource.name, now) as partition:
            # Each page is written while ARM sends the next; retiring waits for the whole listing, so a failure
            # half-way cannot retire the deployments on later pages.
            for page in arm.list_deployment_pages(resource):
                partition.add(job for deployment in page for job in classify(deployment))
            outcome.counts = partition.complete()
    except AzureError as error:
        outcome.error = error
    finally:
        catalog.release_import_lease(resource.name, owner, {**outcome.to_dict(), "at": now.isoformat()})
    return outcome
