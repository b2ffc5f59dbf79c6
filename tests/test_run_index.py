"""The run index on Azurite, and `GET /api/runs` over it: newest first, filtered by the server, paged, complete."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from shared import services
from shared.run_index import RunFilter, RunIndex, keys_of
from shared.runs import iso
from tests.functions import call_http, json_of
from tests.test_jobs_api import assert_problem
from tests.test_openapi import reply_validator

pytestmark = pytest.mark.usefixtures("app_settings")

START = datetime(2026, 11, 1, tzinfo=UTC)
JOBS = ("gpt-4o-batch::batch", "gpt-4o-mini-batch::batch", "gpt-4o")
STATUSES = ("Starting", "Running", "Success", "Failed", "Cancelled")
RUNS = 1_200
SET_ID = f"gpt-4o-batch::batch::{'f' * 32}"  # a batch set whose shards are among the runs
LIST_REPLY = reply_validator("/runs", "get")


def view(number: int, *, status: str | None = None, job: str | None = None) -> dict[str, Any]:
    """A run resource as the app writes it (batch or chat), requested `number` times 25 minutes after START."""
    job_id = job or JOBS[number % len(JOBS)]
    kind = "batch" if job_id.endswith("::batch") else "chat"
    shard = job is None and number % 30 == 3  # one run in 30 is a shard of SET_ID (its job: gpt-4o-batch::batch)
    return {
        "id": f"{SET_ID}::s{number}" if shard else f"{job_id.removesuffix('::batch')}::{kind}::{number:032x}",
        "runId": None,
        "jobId": job_id,
        "jobType": "batch" if kind == "batch" else "chat_completion",
        "resource": "aoai-devstack-eastus" if number % 7 else "aoai-devstack-swedencentral",
        "status": status or STATUSES[number % len(STATUSES)],
        "requestedAt": iso(START + timedelta(minutes=25 * number, microseconds=number)),
    } | ({"parentRun": SET_ID} if shard else {})


@pytest.fixture(scope="module")
def many_runs(azurite: Any) -> tuple[str, list[dict[str, Any]]]:
    """1,200 runs over about three weeks, written once for the module's tests (in a table of their own)."""
    from azure.data.tables import TableServiceClient

    catalog = f"jobs{random.randrange(16**8):08x}"  # the app's run index is the table <CATALOG_TABLE>runs
    index = RunIndex(TableServiceClient.from_connection_string(azurite.connection_string), f"{catalog}runs")
    views = [view(n) for n in range(RUNS)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(index.add, views))
    return catalog, views


def listed(params: dict[str, str]) -> tuple[list[dict[str, Any]], int]:
    """Every run the API lists for `params`, following nextLink; and how many pages it took."""
    runs: list[dict[str, Any]] = []
    pages = 0
    query = dict(params)
    while True:
        response = call_http("list_runs", "GET", "runs", params=query)
        assert response.status_code == 200, response.get_body()
        page = json_of(response)
        assert [e.message for e in LIST_REPLY.iter_errors(page)] == []
        pages += 1
        assert page["count"] == len(page["value"])
        runs += page["value"]
        if "nextLink" not in page:
            return runs, pages
        query = dict(parse_qsl(urlsplit(page["nextLink"]).query))


@pytest.fixture
def index_table(
    app_settings: dict[str, str], many_runs: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> list[dict[str, Any]]:
    """The app's settings, pointed at the module's run index."""
    catalog, views = many_runs
    monkeypatch.setenv("CATALOG_TABLE", catalog)
    services.reset()
    return views


def ids(runs: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in runs]


def newest_first(views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(views, key=lambda v: v["requestedAt"], reverse=True)


def test_every_run_is_listed_once_newest_first_over_pages(index_table: list[dict[str, Any]]) -> None:
    runs, pages = listed({"top": "100"})

    assert ids(runs) == ids(newest_first([v for v in index_table if "parentRun" not in v]))  # shards aside
    assert pages >= RUNS // 100
    assert all(r["statusUrl"].endswith(f"/runs/{r['id']}") for r in runs)


@pytest.mark.parametrize(
    "params",
    [
        {"jobId": "gpt-4o-batch::batch", "status": "Running"},
        {"status": "Failed"},
        {"jobId": "gpt-4o"},
        {"resource": "aoai-devstack-swedencentral", "status": "Success"},
        {"requestedFrom": "2026-11-05T00:00:00Z", "requestedTo": "2026-11-06T12:00:00Z"},
        {"jobId": "gpt-4o-mini-batch::batch", "requestedFrom": "2026-11-01T10:00:00+02:00"},
        {"parentRun": SET_ID},
        {"parentRun": SET_ID, "status": "Failed"},
    ],
)
def test_filters_are_applied_by_the_server_before_paging(
    index_table: list[dict[str, Any]], params: dict[str, str]
) -> None:
    def keeps(v: dict[str, Any]) -> bool:
        moment = datetime.fromisoformat(v["requestedAt"].replace("Z", "+00:00"))
        start = params.get("requestedFrom")
        end = params.get("requestedTo")
        return (
            v["jobId"] == params.get("jobId", v["jobId"])
            and v["status"] == params.get("status", v["status"])
            and v["resource"] == params.get("resource", v["resource"])
            and (start is None or moment >= datetime.fromisoformat(start.replace("Z", "+00:00")))
            and (end is None or moment < datetime.fromisoformat(end.replace("Z", "+00:00")))
            and v.get("parentRun", "") == params.get("parentRun", "")
        )

    runs, _ = listed(params | {"top": "37"})

    expected = newest_first([v for v in index_table if keeps(v)])
    assert expected  # the case means something
    assert ids(runs) == ids(expected)


def test_the_time_range_is_inclusive_at_its_start_and_exclusive_at_its_end(index_table: list[dict[str, Any]]) -> None:
    exact = index_table[100]["requestedAt"]  # to the microsecond: the index keeps milliseconds, the filter knows it

    at_start, _ = listed({"requestedFrom": exact, "requestedTo": index_table[101]["requestedAt"]})
    at_end, _ = listed({"requestedFrom": index_table[99]["requestedAt"], "requestedTo": exact})

    assert ids(at_start) == [index_table[100]["id"]]
    assert ids(at_end) == [index_table[99]["id"]]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "Sleeping"}, "status"),
        ({"top": "0"}, "top"),
        ({"top": "1001"}, "top"),
        ({"top": "ten"}, "top"),
        ({"continuationToken": "not-a-token"}, "continuationToken"),
        ({"jobId": "../x"}, "jobId"),
        ({"resource": "-bad-"}, "resource"),
        ({"requestedFrom": "yesterday"}, "requestedFrom"),
        ({"requestedTo": "2026-11-05T00:00:00"}, "requestedTo"),
        ({"parentRun": "not-a-run"}, "parentRun"),
    ],
)
def test_bad_list_parameters_are_400_naming_the_parameter(params: dict[str, str], field: str) -> None:
    assert_problem(call_http("list_runs", "GET", "runs", params=params), 400, field)


def test_a_row_never_goes_back_to_an_older_state(azurite: Any) -> None:
    from azure.data.tables import TableServiceClient

    service = TableServiceClient.from_connection_string(azurite.connection_string)
    index = RunIndex(service, f"r{random.randrange(16**8):08x}")
    run = view(1, status="Starting")
    at = START + timedelta(hours=1)

    index.add(run)
    index.record(run | {"status": "Running"}, at)
    index.record(run | {"status": "Success"}, at + timedelta(minutes=5))
    index.record(run | {"status": "Running"}, at)  # a late, older write
    index.add(run)  # and the start's own, late

    page = index.page(RunFilter())
    assert [(r["id"], r["status"]) for r in page.runs] == [(run["id"], "Success")]
    index.record(run | {"status": "Cancelled"}, at + timedelta(minutes=6))  # a rebuild, as of the hub's last update
    assert index.page(RunFilter()).runs[0]["status"] == "Cancelled"


def test_times_are_compared_as_times_not_as_text(azurite: Any) -> None:
    """ISO text drops a whole second's fraction: "…:17Z" sorts after "…:17.5Z" though it is earlier."""
    from azure.data.tables import TableServiceClient

    service = TableServiceClient.from_connection_string(azurite.connection_string)
    index = RunIndex(service, f"r{random.randrange(16**8):08x}")
    run = view(1, status="Starting")
    whole_second = START.replace(microsecond=0) + timedelta(hours=1)

    index.record(run | {"status": "Success"}, whole_second + timedelta(milliseconds=500))
    index.record(run | {"status": "Running"}, whole_second)

    assert index.page(RunFilter()).runs[0]["status"] == "Success"


def test_keys_sort_newest_first_across_days_and_milliseconds() -> None:
    stamps = ["2026-11-01T23:59:59.999Z", "2026-11-02T00:00:00Z", "2026-11-02T00:00:00.001Z", "2027-01-01T00:00:00Z"]

    keys = [keys_of("r", stamp) for stamp in stamps]

    assert keys == sorted(keys, reverse=True)
