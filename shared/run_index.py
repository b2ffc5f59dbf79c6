"""The run index: one row per run in the app's Table Storage, so runs are listed newest first, filtered and paged by
the storage service instead of by reading the task hub.

The orchestration stays the source of truth: a run's row is written when it starts and again whenever its status
changes (each write idempotent, and a row never goes back to an older state), and a rebuild writes every row again
from the task hub, as of each instance's last update (so a write the orchestration made since is kept). Rows are
keyed by the time the run was requested, newest first: PartitionKey is the day counted back from the year 9999,
RowKey the millisecond counted back the same way, then the run id.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from shared.paging import DEFAULT_PAGE_SIZE, TablePosition, query_page
from shared.runs import iso, parse_iso

_LAST_DAY = date(9999, 12, 31)
_LAST_MILLISECOND = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


@dataclass(frozen=True)
class RunFilter:
    """What a listing keeps: each given condition must hold (Table Storage evaluates them, before paging)."""

    job_id: str | None = None
    resource: str | None = None
    status: str | None = None
    requested_from: datetime | None = None  # inclusive
    requested_to: datetime | None = None  # exclusive
    parent_run: str = ""  # the shards of this batch set; "" for runs a user started (never shards)


@dataclass(frozen=True)
class RunPage:
    runs: list[dict[str, Any]]
    continuation_token: str | None


def keys_of(run_id: str, requested_at: str) -> tuple[str, str]:
    """The row's keys: newest first in Table Storage's order (PartitionKey, then RowKey, ascending)."""
    moment = parse_iso(requested_at).astimezone(UTC)
    return _partition_of(moment), f"{_row_prefix_of(moment)}|{run_id}"


def _partition_of(moment: datetime) -> str:
    return f"{(_LAST_DAY - moment.date()).days:07d}"


def _row_prefix_of(moment: datetime) -> str:
    return f"{_LAST_MILLISECOND - int(moment.timestamp() * 1000):015d}"


class RunIndex:
    def __init__(self, service: TableServiceClient, table_name: str) -> None:
        self.table: TableClient = service.get_table_client(table_name)
        self._table_ready = False

    def _ready(self) -> TableClient:
        if not self._table_ready:
            with contextlib.suppress(ResourceExistsError):
                self.table.create_table()
            self._table_ready = True
        return self.table

    def add(self, view: dict[str, Any]) -> None:
        """A run that just started; a row the orchestration already wrote is newer and stays."""
        with contextlib.suppress(ResourceExistsError):
            self._ready().create_entity(_entity(view, indexed_at=""))

    def record(self, view: dict[str, Any], at: datetime) -> None:
        """The run as of `at` (the orchestration's clock): written unless the row already holds a later state."""
        table = self._ready()
        entity = _entity(view, indexed_at=iso(at))
        for _ in range(3):  # another write in between only ever makes this one older
            try:
                stored = table.get_entity(entity["PartitionKey"], entity["RowKey"], select=["IndexedAt"])
            except ResourceNotFoundError:
                try:
                    table.create_entity(entity)
                    return
                except ResourceExistsError:
                    continue
            if _indexed_at(stored) > at:
                return
            try:
                table.update_entity(
                    entity,
                    mode=UpdateMode.REPLACE,
                    etag=stored.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
                return
            except (ResourceModifiedError, ResourceNotFoundError):
                continue

    def page(self, where: RunFilter, *, top: int = DEFAULT_PAGE_SIZE, after: TablePosition | None = None) -> RunPage:
        """One page of matching runs, newest first, from `after` on (the start when None)."""
        clauses, parameters = ["ParentRun eq @ParentRun"], {"ParentRun": where.parent_run}
        for column, value in (("JobId", where.job_id), ("Resource", where.resource), ("Status", where.status)):
            if value:
                clauses.append(f"{column} eq @{column}")
                parameters[column] = value
        if where.requested_to is not None:  # newest first: the end of the range is where the keys start
            last = where.requested_to - timedelta(milliseconds=1)
            clauses.append("PartitionKey ge @toDay and RowKey ge @toRow")
            parameters |= {"toDay": _partition_of(last), "toRow": _row_prefix_of(last)}
        if where.requested_from is not None:
            clauses.append("PartitionKey le @fromDay and RowKey lt @fromRow")
            parameters |= {"fromDay": _partition_of(where.requested_from)}
            parameters["fromRow"] = f"{_row_prefix_of(where.requested_from)}|~"  # '~' sorts after any run id
        page = query_page(self._ready(), " and ".join(clauses), parameters, top=top, after=after, select=["View"])
        return RunPage([json.loads(e["View"]) for e in page.entities], page.continuation_token)


def _indexed_at(stored: dict[str, Any]) -> datetime:
    """When the row's state was written (as a time: the text drops the fraction of a whole second); the earliest
    time for a row written at the run's start."""
    stamp = str(stored.get("IndexedAt") or "")
    return parse_iso(stamp) if stamp else datetime.min.replace(tzinfo=UTC)


def _entity(view: dict[str, Any], *, indexed_at: str) -> dict[str, Any]:
    partition, row = keys_of(view["id"], view["requestedAt"])
    stored = {k: v for k, v in view.items() if k not in ("statusUrl", "cancelUrl", "cancelRequested")}
    return {
        "PartitionKey": partition,
        "RowKey": row,
        "RunId": view["id"],
        "JobId": view.get("jobId") or "",
        "Resource": view.get("resource") or "",
        "Status": view.get("status") or "",
        "ParentRun": view.get("parentRun") or "",
        "RequestedAt": view["requestedAt"],
        "IndexedAt": indexed_at,
        "View": json.dumps(stored),
    }
