"""Listings a page at a time over Table Storage: one query page per API page, with an opaque continuation token.

Every list of the API pages the same way: a client asks for `top` items from a position, and the reply carries a
token for the next position while more may follow. The token wraps Table Storage's own continuation, so the next
page starts exactly where the service stopped, and no filter is ever applied after the page was cut.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from azure.data.tables import TableClient

DEFAULT_PAGE_SIZE = 100  # items per page when the client does not say
MAX_PAGE_SIZE = 1000  # Table Storage returns at most 1,000 entities per query page

# A position in a table, as Table Storage's continuation headers give it: NextPartitionKey, NextRowKey.
TablePosition = dict[str, str | None]


@dataclass(frozen=True)
class Page:
    """One query page: its entities, and the token of the next page (None on the last page)."""

    entities: list[Any]
    continuation_token: str | None


def query_page(
    table: TableClient,
    query_filter: str,
    parameters: dict[str, Any],
    *,
    top: int = DEFAULT_PAGE_SIZE,
    after: TablePosition | None = None,
    select: list[str] | None = None,
) -> Page:
    """One Table Storage query page of at most `top` matching entities from `after` on (the start when None).

    The service may send fewer, even none, with a continuation (at partition boundaries, or when a query runs 5
    seconds), so only a page without a continuation token is the last.
    """
    if not 1 <= top <= MAX_PAGE_SIZE:
        raise ValueError(f"top must be from 1 to {MAX_PAGE_SIZE}, not {top}")
    entities: Iterable[Any] = (
        table.query_entities(query_filter, parameters=parameters, results_per_page=top, select=select)
        if query_filter
        else table.list_entities(results_per_page=top, select=select)
    )
    # typed as taking and having a str, the tables SDK's token is a dict of the two continuation headers
    pages: Any = cast(Any, entities).by_page(continuation_token=cast(Any, after))
    found = list(next(pages, ()))
    position: TablePosition | None = pages.continuation_token or None
    return Page(found, encode_continuation_token(position) if position else None)


def encode_continuation_token(position: TablePosition) -> str:
    """The position as a token the client passes back as it is: base64url of JSON, so that what is inside (Table
    Storage's keys, possibly with any character) never needs escaping and the client has nothing to interpret."""
    data = {"PartitionKey": position.get("PartitionKey"), "RowKey": position.get("RowKey")}
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_continuation_token(token: str) -> TablePosition:
    """The position a token from encode_continuation_token names; ValueError for anything else."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, UnicodeDecodeError) as exc:  # binascii.Error and JSONDecodeError are ValueErrors
        raise ValueError("not base64url-encoded JSON") from exc
    if (
        not isinstance(data, dict)
        or set(data) != {"PartitionKey", "RowKey"}
        or not isinstance(data["PartitionKey"], str)
        or not isinstance(data["RowKey"], str | None)
    ):
        raise ValueError("not a position in a listing")
    return {"PartitionKey": data["PartitionKey"], "RowKey": data["RowKey"]}
