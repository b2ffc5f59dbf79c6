"""Import at scale: 5,000 deployments over 50 ARM pages into the job catalogue, the old import path against today's.

Starts Azurite (in memory) and the Azure emulators (a generated config: one resource with the deployments, ARM page
size deployments/pages), then, for each path in turn and for a fresh catalogue table each round: a first import into
the empty table, and a re-import with nothing changed. Both paths talk to the same processes over real HTTP; the
ARM client, the classification and the lease are the same, so the table compares only how the catalogue is brought
in line. Each round also checks that both paths report the same counts and leave the same jobs behind.

    .venv/bin/python bench/import.py [--deployments 5000] [--pages 50] [--rounds 3]

"before" is a frozen copy (below) of the import as it was at commit 688d40d: the whole listing first, the whole
partition read, a SHA-256 of asdict() → JSON per job, and 100-row transactions one after another. "after" is
`shared.importing.import_deployments` as it is now.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.data.tables import TableServiceClient, UpdateMode
from azure.identity import ManagedIdentityCredential

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import start_azurite, start_emulators, stop
from shared.arm import ArmClient
from shared.catalog import TRANSACTION_LIMIT, Catalog, ImportCounts
from shared.importing import import_deployments
from shared.jobs import ImportedJob, JobStatus, classify
from shared.settings import OpenAIResource

ROOT = Path(__file__).resolve().parent.parent
RESOURCE = "aoai-bench-eastus"
ImportPath = Callable[[OpenAIResource, ArmClient, Catalog, datetime], ImportCounts]


# The deployments: a deterministic mix of batch, standard, capability-less, failed and embedding deployments ---------


def deployment(index: int) -> dict[str, Any]:
    name = f"bench-{index:05d}"
    if index % 25 == 0:  # recorded as skipped: one job
        return {
            "name": name,
            "model": {"name": "text-embedding-3-large", "version": "1"},
            "sku": {"name": "Standard", "capacity": 10},
            "capabilities": {"embeddings": "true"},
        }
    kind = index % 3
    entry: dict[str, Any] = {
        "name": name,
        "model": {"name": ("gpt-4o", "gpt-4o-mini", "gpt-35-turbo")[kind], "version": "2024-08-06"},
        "sku": {"name": ("GlobalBatch", "GlobalStandard", "Standard")[kind], "capacity": 1 + index % 100},
    }
    if kind != 2:  # capability-less deployments are classified by model name
        entry["capabilities"] = {"chatCompletion": "true"}
    if index % 97 == 0:
        entry["provisioningState"] = "Failed"
    return entry


def write_config(path: Path, deployments: int, pages: int) -> None:
    config = {
        "armPageSize": -(-deployments // pages),
        "resources": [{"name": RESOURCE, "deployments": [deployment(i) for i in range(deployments)]}],
    }
    path.write_text(json.dumps(config))


# The local stack ----------------------------------------------------------------------------------------------------


# "before": the import as of commit 688d40d, frozen ------------------------------------------------------------------


def _fingerprint_before(job: ImportedJob) -> str:
    return hashlib.sha256(json.dumps(asdict(job), sort_keys=True).encode()).hexdigest()[:16]


def _columns_before(resource: str, job: ImportedJob) -> dict[str, Any]:
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
        "Fingerprint": _fingerprint_before(job),
    }


def _apply_import_before(catalog: Catalog, resource: str, imported: list[ImportedJob], now: datetime) -> ImportCounts:
    catalog.ensure_tables()
    stamp = now.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    partition = catalog.jobs.query_entities("PartitionKey eq @pk", parameters={"pk": resource})
    existing = {entity["RowKey"]: entity for entity in partition}
    counts = ImportCounts()
    operations: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    merge = {"mode": UpdateMode.MERGE}
    for job in imported:
        if job.status is JobStatus.SKIPPED:
            counts.skipped += 1
        current = existing.get(job.external_id)
        columns = _columns_before(resource, job) | {"UpdatedAt": stamp}
        if current is None:
            operations.append(("upsert", columns | {"Attributes": "{}", "ImportedAt": stamp, "RetiredAt": ""}, merge))
            counts.added += job.status is not JobStatus.SKIPPED
        elif current.get("Status") == JobStatus.RETIRED:
            operations.append(("upsert", columns | {"RetiredAt": ""}, merge))
            counts.revived += job.status is not JobStatus.SKIPPED
        elif current.get("Fingerprint") != _fingerprint_before(job):
            operations.append(("upsert", columns, merge))
            counts.updated += job.status is not JobStatus.SKIPPED
        else:
            counts.unchanged += job.status is not JobStatus.SKIPPED
    current_ids = {job.external_id for job in imported}
    for external_id, entity in existing.items():
        if external_id not in current_ids and entity.get("Status") != JobStatus.RETIRED:
            retire = {
                "PartitionKey": resource,
                "RowKey": external_id,
                "Status": JobStatus.RETIRED.value,
                "Reason": "The deployment no longer exists in the resource.",
                "RetiredAt": stamp,
                "UpdatedAt": stamp,
                "Fingerprint": "",
            }
            operations.append(("upsert", retire, merge))
            counts.retired += 1
    for start in range(0, len(operations), TRANSACTION_LIMIT):
        catalog.jobs.submit_transaction(operations[start : start + TRANSACTION_LIMIT])
    return counts


def import_before(resource: OpenAIResource, arm: ArmClient, catalog: Catalog, now: datetime) -> ImportCounts:
    owner = catalog.acquire_import_lease(resource.name, now)
    try:
        deployments = list(arm.list_deployments(resource))
        jobs = [job for d in deployments for job in classify(d)]
        return _apply_import_before(catalog, resource.name, jobs, now)
    finally:
        catalog.release_import_lease(resource.name, owner, {"bench": True})


# "after": the import as it is now -----------------------------------------------------------------------------------


def import_after(resource: OpenAIResource, arm: ArmClient, catalog: Catalog, now: datetime) -> ImportCounts:
    outcome = import_deployments((resource,), arm, catalog, now).resources[0]
    if outcome.error is not None or outcome.counts is None:
        raise RuntimeError(f"import failed: {outcome.to_dict()}")
    return outcome.counts


PATHS: dict[str, ImportPath] = {"before (688d40d)": import_before, "after": import_after}


# The benchmark ------------------------------------------------------------------------------------------------------


@dataclass
class Measurement:
    first: float  # seconds: first import into an empty catalogue
    again: float  # seconds: re-import with nothing changed
    added: ImportCounts
    unchanged: ImportCounts
    contents: list[dict[str, Any]]


def catalogue_contents(catalog: Catalog) -> list[dict[str, Any]]:
    """The jobs as the API shows them, without the stamps that differ from run to run."""
    stamps = ("importedAt", "updatedAt", "retiredAt")
    return [{k: v for k, v in job.to_resource().items() if k not in stamps} for job in catalog.list_jobs(RESOURCE)]


def measure(path: ImportPath, resource: OpenAIResource, arm: ArmClient, state_dir: Path) -> Measurement:
    """Both imports on a fresh Azurite: its in-memory store slows down as it ages, which would favour whichever
    path ran first."""
    storage, connection = start_azurite(state_dir)
    try:
        catalog = Catalog(TableServiceClient.from_connection_string(connection), "jobs")
        catalog.ensure_tables()
        now = datetime.now(UTC)
        started = time.perf_counter()
        added = path(resource, arm, catalog, now)
        first = time.perf_counter() - started
        started = time.perf_counter()
        unchanged = path(resource, arm, catalog, now + timedelta(minutes=30))
        again = time.perf_counter() - started
        return Measurement(first, again, added, unchanged, catalogue_contents(catalog))
    finally:
        stop(storage)


def check(results: dict[str, Measurement]) -> None:
    """Both paths must have done the same: the benchmark compares speed only."""
    reference = next(iter(results.values()))
    for name, result in results.items():
        same = (result.added, result.unchanged, result.contents) == (
            reference.added,
            reference.unchanged,
            reference.contents,
        )
        if not same:
            raise RuntimeError(f"{name} disagrees: {result.added} {result.unchanged} vs {reference.added}")
    if reference.unchanged.unchanged != reference.added.added or reference.unchanged.updated:
        raise RuntimeError(f"a re-import with nothing changed changed something: {reference.unchanged}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deployments", type=int, default=5000)
    parser.add_argument("--pages", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    timings: dict[str, list[Measurement]] = {name: [] for name in PATHS}
    with tempfile.TemporaryDirectory(prefix="bench-import-") as scratch:
        state_dir = Path(scratch)
        config = state_dir / "config.json"
        write_config(config, args.deployments, args.pages)
        emulators, endpoints = start_emulators(state_dir, config)
        try:
            os.environ["IDENTITY_ENDPOINT"] = endpoints["identity"]["endpoint"]
            os.environ["IDENTITY_HEADER"] = endpoints["identity"]["header"]
            resource = OpenAIResource(
                name=RESOURCE,
                endpoint=endpoints["openai"][RESOURCE]["endpoint"],
                subscription_id=endpoints["arm"]["subscriptionId"],
                resource_group=endpoints["arm"]["resourceGroup"],
            )
            arm = ArmClient(endpoints["arm"]["endpoint"], ManagedIdentityCredential())
            for round_number in range(args.rounds):
                order = list(PATHS) if round_number % 2 == 0 else list(reversed(PATHS))  # no path always goes first
                results = {name: measure(PATHS[name], resource, arm, state_dir) for name in order}
                check(results)
                for name, result in results.items():
                    timings[name].append(result)
                report = ", ".join(f"{name} {r.first:.2f} s / {r.again:.2f} s" for name, r in results.items())
                print(f"round {round_number + 1}: {report}", flush=True)
        finally:
            stop(emulators)

    jobs = len(timings["after"][0].contents)
    print(
        f"\n{args.deployments:,} deployments ({jobs:,} jobs) over {args.pages} ARM pages; "
        f"median of {args.rounds} rounds (fastest in brackets), seconds\n"
    )
    print(f"| {'':18} | {'first import':>16} | {'re-import, nothing changed':>26} |")
    print(f"|{'-' * 20}|{'-' * 18}|{'-' * 28}|")
    for name, results in timings.items():
        cells = [
            f"{statistics.median(t):.2f} ({min(t):.2f})"
            for t in ([r.first for r in results], [r.again for r in results])
        ]
        print(f"| {name:18} | {cells[0]:>16} | {cells[1]:>26} |")


if __name__ == "__main__":
    main()
