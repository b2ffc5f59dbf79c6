"""The jobs HTTP API and the timer sync, called as the Functions worker calls them (built func.HttpRequest)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
import pytest

from shared.arm import ArmDeployment
from shared.jobs import Job, classify
from tests.conftest import RunningEmulator
from tests.functions import call_http, functions_by_name, json_of, trigger_binding

pytestmark = pytest.mark.usefixtures("app_settings")
PROBLEM = "application/problem+json"


def import_now(**params: str) -> func.HttpResponse:
    return call_http("import_jobs", "POST", "jobs/import", params=params)


def get_job(external_id: str, **params: str) -> func.HttpResponse:
    return call_http("get_job", "GET", f"jobs/{external_id}", route_params={"externalId": external_id}, params=params)


def patch_job(external_id: str, body: Any = None, raw_body: bytes | None = None) -> func.HttpResponse:
    return call_http(
        "set_job_attributes",
        "PATCH",
        f"jobs/{external_id}",
        body=body,
        raw_body=raw_body,
        route_params={"externalId": external_id},
    )


def assert_problem(response: func.HttpResponse, status: int, *fields: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_body()
    assert response.mimetype == PROBLEM
    body: dict[str, Any] = json_of(response)
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status
    assert [error["field"] for error in body.get("errors", [])] == list(fields)
    return body


def test_routes_are_function_level_except_health() -> None:
    for name in ("import_jobs", "list_jobs", "get_job", "set_job_attributes"):
        assert str(trigger_binding(name)["authLevel"].value) == "function", name
    assert trigger_binding("import_jobs")["route"] == "jobs/import"
    assert trigger_binding("get_job")["route"] == "jobs/{externalId}"


def test_import_returns_counts() -> None:
    response = import_now()

    assert response.status_code == 200
    body = json_of(response)
    assert {k: body[k] for k in ("added", "updated", "retired", "skipped")} == {
        "added": 10,
        "updated": 0,
        "retired": 0,
        "skipped": 1,
    }
    assert body["resources"][0]["resource"] == "aoai-devstack-eastus"


def test_import_of_unconfigured_resource_is_404_naming_it() -> None:
    body = assert_problem(import_now(resource="nope"), 404, "resource")
    assert "nope" in body["detail"]


def test_arm_failure_is_502_with_upstream_status_and_code(emulator: RunningEmulator) -> None:
    emulator.add_fault(service="arm", route="deployments.list", status=403)

    body = assert_problem(import_now(), 502)

    assert body["upstreamStatus"] == 403
    assert body["upstreamCode"]
    assert "Traceback" not in json.dumps(body)


def test_arm_throttling_beyond_retries_is_502_with_429(emulator: RunningEmulator) -> None:
    emulator.add_fault(service="arm", route="deployments.list", status=429, retryAfter=0)

    body = assert_problem(import_now(), 502)

    assert body["upstreamStatus"] == 429


def test_list_filters_by_resource_type_and_status() -> None:
    import_now()

    everything = json_of(call_http("list_jobs", "GET", "jobs"))
    runnable_batches = json_of(call_http("list_jobs", "GET", "jobs", params={"type": "batch", "status": "active"}))
    other_resource = json_of(call_http("list_jobs", "GET", "jobs", params={"resource": "aoai-devstack-swedencentral"}))

    assert everything["count"] == 11
    assert sorted(j["externalId"] for j in runnable_batches["value"]) == [
        "gpt-4o-batch::batch",
        "gpt-4o-mini-dz-batch::batch",
    ]
    assert other_resource == {"value": [], "count": 0}


# Paging the job list ------------------------------------------------------------------------------------------------

EASTUS, SWEDEN = "aoai-devstack-eastus", "aoai-devstack-swedencentral"


def seed_catalogue() -> list[Job]:
    """1,100 jobs in two resources, written through the catalogue as an import writes them: 300 and 250
    deployments, every other one GlobalBatch (its batch job active, its chat job not runnable), the rest
    GlobalStandard (the other way round)."""
    from shared import services

    catalog = services.catalog()
    seeded = []
    for resource, deployments in ((EASTUS, 300), (SWEDEN, 250)):
        sku = ("GlobalBatch", "GlobalStandard")
        listed = [
            ArmDeployment(
                f"bulk-{i:04d}", "OpenAI", "gpt-4o", "1", sku[i % 2], 1, {"chatCompletion": "true"}, "Succeeded"
            )
            for i in range(deployments)
        ]
        imported = [job for deployment in listed for job in classify(deployment)]
        with catalog.importing(resource, datetime.now(UTC)) as partition:
            partition.add(imported)
            partition.complete()
        seeded += [Job(resource, job) for job in imported]
    assert len(seeded) == 1100
    return seeded


def list_page(**params: str) -> dict[str, Any]:
    response = call_http("list_jobs", "GET", "jobs", params=params)
    assert response.status_code == 200, response.get_body()
    page: dict[str, Any] = json_of(response)
    assert page["count"] == len(page["value"])
    return page


def every_page(**params: str) -> list[dict[str, Any]]:
    """The first page and every page its nextLinks lead to, each link followed as it is."""
    pages = [list_page(**params)]
    while "nextLink" in pages[-1]:
        link = urlsplit(pages[-1]["nextLink"])
        assert (link.scheme, link.netloc, link.path) == ("http", "localhost:7071", "/api/jobs")  # absolute
        pages.append(list_page(**dict(parse_qsl(link.query))))
        assert len(pages) <= 100, "nextLink never ends"
    return pages


def keys(jobs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(job["resource"], job["externalId"]) for job in jobs]


def test_paging_yields_every_job_exactly_once_by_resource_then_id() -> None:
    seeded = seed_catalogue()

    pages = every_page(top="250")

    assert [len(page["value"]) for page in pages] == [250, 250, 250, 250, 100]
    listed = keys([job for page in pages for job in page["value"]])
    assert listed == sorted((job.resource, job.external_id) for job in seeded)


def test_a_page_holds_100_jobs_unless_top_says_otherwise_and_its_link_keeps_the_query() -> None:
    seed_catalogue()

    first = list_page(resource=EASTUS, code="the-function-key")

    assert len(first["value"]) == 100
    query = dict(parse_qsl(urlsplit(first["nextLink"]).query))
    assert set(query) == {"resource", "continuationToken"}  # never the function key
    assert query["resource"] == EASTUS
    second = list_page(**query)
    assert keys(second["value"])[0] > keys(first["value"])[-1]
    assert len(list_page(top="1000")["value"]) == 1000
    assert len(list_page(top="1")["value"]) == 1


@pytest.mark.parametrize(
    ("params", "count"),
    [
        ({"type": "batch", "status": "active", "top": "70"}, 150 + 125),
        ({"resource": SWEDEN, "type": "chat_completion", "top": "100"}, 250),
        ({"resource": EASTUS, "status": "not_runnable", "top": "33"}, 300),
        ({"status": "retired", "top": "5"}, 0),
    ],
)
def test_filters_are_applied_across_pages(params: dict[str, str], count: int) -> None:
    seeded = seed_catalogue()
    top = int(params["top"])

    pages = every_page(**params)

    listed = keys([job for page in pages for job in page["value"]])
    expected = [
        (job.resource, job.external_id)
        for job in seeded
        if params.get("resource", job.resource) == job.resource
        and params.get("type", job.job_type) == job.job_type
        and params.get("status", job.status) == job.status
    ]
    assert len(expected) == count
    assert listed == sorted(expected)
    assert all(len(page["value"]) == top for page in pages[:-1])
    assert len(pages) == max(1, -(-count // top))


def token(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "continuation",
    [
        "not a token!",
        base64.urlsafe_b64encode(b"not json").decode(),
        token(["aoai-devstack-eastus", "gpt-4o"]),
        token({"PartitionKey": 7, "RowKey": "gpt-4o"}),
        token({"PartitionKey": "aoai-devstack-eastus"}),
        token({"PartitionKey": "aoai-devstack-eastus", "RowKey": "gpt-4o", "top": 5}),
    ],
)
def test_malformed_continuation_token_is_400_naming_it(continuation: str) -> None:
    body = assert_problem(
        call_http("list_jobs", "GET", "jobs", params={"continuationToken": continuation}), 400, "continuationToken"
    )
    assert body["code"] == "validation-failed"


@pytest.mark.parametrize("top", ["0", "1001", "-1", "ten", "1.5", "", "+5", "²"])
def test_top_out_of_range_is_400_naming_it(top: str) -> None:
    assert_problem(call_http("list_jobs", "GET", "jobs", params={"top": top}), 400, "top")


def test_list_with_unknown_filter_values_is_400_naming_them() -> None:
    assert_problem(
        call_http("list_jobs", "GET", "jobs", params={"type": "fax", "status": "sleepy"}), 400, "type", "status"
    )


def test_get_job_returns_the_job_resource() -> None:
    import_now()

    response = get_job("gpt-4o-batch::batch")

    assert response.status_code == 200
    job = json_of(response)
    assert job["externalId"] == "gpt-4o-batch::batch"
    assert job["jobType"] == "batch"
    assert job["jobTypeName"] == "Azure OpenAI Batch Job"
    assert job["deployment"] == "gpt-4o-batch"
    assert job["model"] == {"format": "OpenAI", "name": "gpt-4o", "version": "2024-08-06"}
    assert (job["sku"], job["batchCapable"], job["status"]) == ("GlobalBatch", True, "active")
    assert job["attributes"] == {
        "inputFileId": None,
        "inputFileSecret": None,
        "endpoint": "/chat/completions",
        "completionWindow": "24h",
        "systemPrompt": None,
        "maxTokens": None,
        "temperature": None,
        "pool": None,
        "maxRequestRetries": 2,
    }


def test_unknown_job_is_404_naming_the_id() -> None:
    import_now()

    body = assert_problem(get_job("gpt-9"), 404)

    assert "gpt-9" in body["detail"]


def test_malformed_job_id_is_400_before_any_lookup(emulator: RunningEmulator) -> None:
    assert_problem(get_job("../../secrets"), 400, "externalId")
    assert_problem(patch_job("gpt-4o::evil", {"attributes": {}}), 400, "externalId")


def test_patch_sets_attributes_and_they_read_back() -> None:
    import_now()

    response = patch_job("gpt-4o-batch::batch", {"attributes": {"inputFileId": "file-0123abcd"}})

    assert response.status_code == 200
    assert json_of(response)["attributes"]["inputFileId"] == "file-0123abcd"
    assert json_of(get_job("gpt-4o-batch::batch"))["attributes"]["inputFileId"] == "file-0123abcd"


def test_patch_chat_attributes() -> None:
    import_now()

    response = patch_job(
        "gpt-4o", {"attributes": {"systemPrompt": "Answer in French.", "maxTokens": 200, "temperature": 0.2}}
    )

    assert json_of(response)["attributes"] == {
        "systemPrompt": "Answer in French.",
        "maxTokens": 200,
        "temperature": 0.2,
    }


@pytest.mark.parametrize(
    ("external_id", "body", "fields"),
    [
        ("gpt-4o-batch::batch", {"attributes": {"endpoint": "/embeddings"}}, ["attributes.endpoint"]),
        ("gpt-4o-batch::batch", {"attributes": {"completionWindow": "1h"}}, ["attributes.completionWindow"]),
        ("gpt-4o-batch::batch", {"attributes": {"inputFileId": "not-a-file"}}, ["attributes.inputFileId"]),
        ("gpt-4o-batch::batch", {"attributes": {"temperature": 5}}, ["attributes.temperature"]),
        ("gpt-4o", {"attributes": {"maxTokens": "lots"}}, ["attributes.maxTokens"]),
        ("gpt-4o", {"attributes": []}, ["attributes"]),
        ("gpt-4o", {"attrs": {}}, ["attrs"]),
        ("gpt-4o", {}, ["attributes"]),
        ("text-embedding-3-small", {"attributes": {"maxTokens": 5}}, ["attributes.maxTokens"]),
    ],
)
def test_bad_patch_is_400_naming_the_field_and_changes_nothing(
    external_id: str, body: dict[str, Any], fields: list[str]
) -> None:
    import_now()
    before = json_of(get_job(external_id))

    assert_problem(patch_job(external_id, body), 400, *fields)
    assert json_of(get_job(external_id)) == before


def test_patch_with_malformed_json_is_400() -> None:
    import_now()
    assert_problem(patch_job("gpt-4o", raw_body=b"{not json"), 400, "body")
    assert_problem(patch_job("gpt-4o", raw_body=b"[1, 2]"), 400, "body")


def test_patch_of_unknown_job_is_404() -> None:
    import_now()
    assert_problem(patch_job("gpt-9", {"attributes": {}}), 404)


def test_import_while_another_runs_is_409() -> None:
    from shared import services

    services.catalog().acquire_import_lease("aoai-devstack-eastus", datetime.now(UTC))

    body = assert_problem(import_now(), 409)

    assert body["code"] == "import-in-progress"


def test_misconfigured_resources_setting_is_a_500_without_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import services

    monkeypatch.setenv("AZURE_OPENAI_RESOURCES", "{not json")
    services.reset()

    body = assert_problem(import_now(), 500)

    assert "AZURE_OPENAI_RESOURCES" in body["detail"]
    assert "{not json" not in body["detail"]


# The timer ------------------------------------------------------------------------------------------------------


def timer(past_due: bool = False) -> func.TimerRequest:
    from azure.functions.timer import TimerRequest

    return TimerRequest(past_due=past_due)


def test_timer_is_bound_to_the_schedule_setting() -> None:
    binding = trigger_binding("sync_deployments")

    assert binding["type"] == "timerTrigger"
    assert binding["schedule"] == "%DEPLOYMENT_SYNC_SCHEDULE%"
    assert binding["useMonitor"] is True
    assert binding["runOnStartup"] is False


def test_timer_sync_imports_and_keeps_attributes(emulator: RunningEmulator) -> None:
    sync = functions_by_name()["sync_deployments"].get_user_function()
    import_now()
    patch_job("gpt-4o", {"attributes": {"maxTokens": 32}})
    emulator.delete_deployment("aoai-devstack-eastus", "gpt-4o")

    sync(timer(past_due=True))

    job = json_of(get_job("gpt-4o"))
    assert job["status"] == "retired"
    assert job["attributes"]["maxTokens"] == 32


def test_timer_sync_failure_is_recorded_as_a_failed_execution(emulator: RunningEmulator) -> None:
    sync = functions_by_name()["sync_deployments"].get_user_function()
    emulator.add_fault(service="arm", route="deployments.list", status=401)

    with pytest.raises(RuntimeError, match="aoai-devstack-eastus"):
        sync(timer())


def test_timer_sync_skips_while_an_import_runs() -> None:
    from shared import services

    sync = functions_by_name()["sync_deployments"].get_user_function()
    services.catalog().acquire_import_lease("aoai-devstack-eastus", datetime.now(UTC))

    sync(timer())

    assert services.catalog().list_jobs() == []


def test_malformed_resource_query_is_400_naming_it() -> None:
    import_now()
    assert_problem(get_job("gpt-4o", resource="a/b"), 400, "resource")


@pytest.mark.parametrize(
    ("response", "field"),
    [
        (lambda: get_job("gpt-4o\n"), "externalId"),
        (lambda: get_job("gpt-4o\n::batch"), "externalId"),
        (lambda: patch_job("gpt-4o\n", {"attributes": {}}), "externalId"),
        (lambda: get_job("gpt-4o", resource="aoai-devstack-eastus\n"), "resource"),
        (lambda: call_http("list_jobs", "GET", "jobs", params={"resource": "aoai-devstack-eastus\n"}), "resource"),
        (
            lambda: patch_job("gpt-4o-batch::batch", {"attributes": {"inputFileSecret": "s\n"}}),
            "attributes.inputFileSecret",
        ),
        (
            lambda: patch_job("gpt-4o-batch::batch", {"attributes": {"inputFileId": "file-a\n"}}),
            "attributes.inputFileId",
        ),
        (lambda: patch_job("gpt-4o-batch::batch", {"attributes": {"pool": ["aoai-west\n"]}}), "attributes.pool"),
    ],
    ids=["job", "batch-job", "patched-job", "resource", "listed-resource", "secret", "file", "pool"],
)
def test_a_name_with_a_trailing_newline_is_400_naming_it(response: Callable[[], func.HttpResponse], field: str) -> None:
    # A pattern's `$` also matches before a final newline: a name must match whole, or no lookup sees it.
    import_now()

    assert_problem(response(), 400, field)


def test_the_catalogues_times_are_whole_seconds_so_they_compare_as_text() -> None:
    import_now()
    patch_job("gpt-4o", {"attributes": {"maxTokens": 5}})

    job = json_of(get_job("gpt-4o"))

    for stamp in (job["importedAt"], job["updatedAt"]):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp), stamp
