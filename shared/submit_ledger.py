"""The submit ledger: which copy of a run's submit may create its batch, and which batch it created.

Before creating a batch, a submit records its intent (run id and attempt) with a conditional write; after, the
outcome (the batch id). Durable Functions delivers activities at least once, and two copies of the same submit can
run at once: the conditional write decides which copy creates. A later submit of the run reads the outcome instead
of scanning the resource's batches; it searches Azure's batch list only when an intent has no recorded outcome (its
copy crashed, or lost the create's reply), and then only back to the intent (with clock skew allowed).

A batch with blob storage carries no metadata, so the search cannot ask Azure which run a batch belongs to: the
ledger keeps that itself, one owner row per such batch (the batch id as partition, the resource as row), written
with a conditional insert by the run that created or found it. A run never attaches to a batch another run owns.

Times here are the orchestration's (the submit step says when it was decided), so a takeover's waiting time is
measured on the run's own clock, the one Azure's `created_at` is compared with.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from shared.runs import iso, parse_iso


class SubmitClaimed(Exception):
    """Another copy of this submit holds the intent: it decides, this one must not create."""


@dataclass(frozen=True)
class Intent:
    """A submit's intent to create the batch of (run id, attempt), and what came of it."""

    run_id: str
    attempt: int
    claimed_at: datetime  # when the claiming submit was decided, on the orchestration's clock
    batch_id: str | None  # the outcome: the batch it created (or found)
    ended_unknown: bool  # its copy ended without knowing whether Azure created the batch
    etag: str


class SubmitLedger:
    def __init__(self, service: TableServiceClient, table_name: str) -> None:
        self.table: TableClient = service.get_table_client(table_name)
        self._table_ready = False

    def _ready(self) -> TableClient:
        if not self._table_ready:
            with contextlib.suppress(ResourceExistsError):
                self.table.create_table()
            self._table_ready = True
        return self.table

    def intent(self, run_id: str, attempt: int) -> Intent | None:
        try:
            entity = self._ready().get_entity(run_id, _row(attempt))
        except ResourceNotFoundError:
            return None
        return Intent(
            run_id=run_id,
            attempt=attempt,
            claimed_at=parse_iso(entity["ClaimedAt"]),
            batch_id=entity.get("BatchId") or None,
            ended_unknown=bool(entity.get("EndedUnknown")),
            etag=str(entity.metadata["etag"]),
        )

    def claim(self, run_id: str, attempt: int, at: datetime, over: Intent | None = None) -> Intent:
        """Records this submit's intent, the first for the attempt or taking over `over`; SubmitClaimed when
        another copy wrote first (the write is conditional: at most one copy wins)."""
        entity: dict[str, Any] = {
            "PartitionKey": run_id,
            "RowKey": _row(attempt),
            "ClaimedAt": iso(at),
            "BatchId": "",
            "EndedUnknown": False,
        }
        table = self._ready()
        try:
            if over is None:
                written = table.create_entity(entity)
            else:
                written = table.update_entity(
                    entity, mode=UpdateMode.REPLACE, etag=over.etag, match_condition=MatchConditions.IfNotModified
                )
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as exc:
            raise SubmitClaimed(f"another submit of run {run_id} attempt {attempt} claimed it first") from exc
        return Intent(run_id, attempt, at, None, False, written["etag"])

    def record(self, intent: Intent, batch_id: str) -> None:
        """The outcome: the batch this attempt created or found (true whoever writes it, so unconditional)."""
        self._ready().upsert_entity(
            {"PartitionKey": intent.run_id, "RowKey": _row(intent.attempt), "BatchId": batch_id},
            mode=UpdateMode.MERGE,
        )

    def ended_unknown(self, intent: Intent) -> None:
        """The claiming copy ends without knowing whether Azure created the batch: a later submit need not wait for
        it, and looks in Azure's list before it creates."""
        with contextlib.suppress(ResourceModifiedError, ResourceNotFoundError):
            self._ready().update_entity(
                {"PartitionKey": intent.run_id, "RowKey": _row(intent.attempt), "EndedUnknown": True},
                mode=UpdateMode.MERGE,
                etag=intent.etag,
                match_condition=MatchConditions.IfNotModified,
            )

    def own(self, resource: str, batch_id: str, run_id: str, attempt: int) -> bool:
        """Makes (run id, attempt) the owner of a blob batch, unless another run (or attempt) owns it already: True
        when this one owns it now (also when it did before), False when another does. The insert is conditional, so
        two runs never both own a batch."""
        entity = {"PartitionKey": batch_id, "RowKey": resource, "RunId": run_id, "Attempt": attempt}
        table = self._ready()
        try:
            table.create_entity(entity)
        except ResourceExistsError:
            owner = table.get_entity(batch_id, resource)
            return (owner.get("RunId"), owner.get("Attempt")) == (run_id, attempt)
        return True

    def release(self, intent: Intent) -> None:
        """Azure refused the create for good (quota, a bad request): no batch exists, so a later try may claim."""
        with contextlib.suppress(ResourceModifiedError, ResourceNotFoundError):
            self._ready().delete_entity(
                intent.run_id, _row(intent.attempt), etag=intent.etag, match_condition=MatchConditions.IfNotModified
            )


def _row(attempt: int) -> str:
    return f"{attempt:06d}"
