"""Starting runs: every refusal happens before any orchestration starts (the durable client is never called)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import azure.functions as func
import pytest

from shared.problems import Problem
from tests.conftest import RunningEmulator
from tests.functions import call_http, json_of, trigger_binding
from tests.test_jobs_api import assert_problem, import_now, patch_job

pytestmark = pytest.mark.usefixtures("app_settings")


def start(external_id: str, body: Any = None, raw_body: bytes | None = None) -> func.HttpResponse:
    # The client binding points at a port nobody listens on: a refusal that reached the client would show as 500.
    return call_http(
        "start_run",
        "POST",
        f"jobs/{external_id}/runs",
        body=body,
        raw_body=raw_body,
        route_params={"externalId": external_id},
    )


def test_run_routes_are_function_level_with_a_durable_client() -> None:
    for name, route in (
        ("start_run", "jobs/{externalId}/runs"),
        ("get_run", "runs/{runId}"),
        ("list_runs", "runs"),
        ("cancel_run", "runs/{runId}/cancel"),
    ):
        binding = trigger_binding(name)
        assert (binding["route"], str(binding["authLevel"].value)) == (route, "function")


def test_unknown_job_is_404() -> None:
    import_now()
    body = assert_problem(start("gpt-9::batch", {"inputFileId": "file-abc"}), 404)
    assert "gpt-9::batch" in body["detail"]


def test_malformed_job_id_is_400() -> None:
    assert_problem(start("../x", {}), 400, "externalId")


def test_retired_job_is_410(emulator: RunningEmulator) -> None:
    import_now()
    emulator.delete_deployment("aoai-devstack-eastus", "gpt-4o-batch")
    import_now()

    body = assert_problem(start("gpt-4o-batch::batch", {"inputFileId": "file-abc"}), 410)
    assert body["code"] == "job-retired"


def test_batch_job_on_a_sku_that_cannot_batch_is_409_naming_the_skus() -> None:
    import_now()

    body = assert_problem(start("gpt-4o::batch", {"inputFileId": "file-abc"}), 409)

    assert "GlobalStandard" in body["detail"]
    assert "GlobalBatch" in body["detail"]
    assert "DataZoneBatch" in body["detail"]


def test_batch_job_of_a_failed_deployment_is_409_with_the_reason(emulator: RunningEmulator) -> None:
    emulator.put_deployment(
        "aoai-devstack-eastus",
        "broken-batch",
        provisioningState="Failed",
        model={"format": "OpenAI", "name": "gpt-4o", "version": "2024-08-06"},
        sku={"name": "GlobalBatch", "capacity": 1},
        capabilities={"chatCompletion": "true"},
    )
    import_now()

    body = assert_problem(start("broken-batch::batch", {"inputFileId": "file-abc"}), 409)

    assert "provisioning state is Failed" in body["detail"]


def test_batch_job_without_an_input_file_is_400() -> None:
    import_now()
    body = assert_problem(start("gpt-4o-batch::batch"), 400, "inputFileId")
    assert body["code"] == "no-input-file"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"inputFileId": "abc"}, ["inputFileId"]),
        ({"inputFileSecret": "not a name!"}, ["inputFileSecret"]),
        ({"inputFileId": "file-abc", "endpoint": "/embeddings"}, ["endpoint"]),
        ({"inputFileId": "file-abc", "completionWindow": "1h"}, ["completionWindow"]),
        ({"inputFileId": "file-abc", "metadata": {f"k{i}": "v" for i in range(15)}}, ["metadata"]),
        ({"inputFileId": "file-abc", "metadata": {"k": 1}}, ["metadata"]),
        ({"inputFileId": "file-abc", "metadata": {"runId": "mine"}}, ["metadata.runId"]),
        ({"inputFileId": "file-abc", "priority": "high"}, ["priority"]),
    ],
)
def test_bad_batch_run_bodies_are_400_naming_the_field(body: dict[str, Any], fields: list[str]) -> None:
    import_now()
    problem = assert_problem(start("gpt-4o-batch::batch", body), 400, *fields)
    assert "attributes." not in json.dumps(problem)  # the body's names, not the stored attributes'


def test_malformed_json_body_is_400() -> None:
    import_now()
    assert_problem(start("gpt-4o-batch::batch", raw_body=b"{nope"), 400, "body")


def test_attribute_from_the_job_is_validated_against_the_body_override() -> None:
    import_now()
    patch_job("gpt-4o-batch::batch", {"attributes": {"inputFileId": "file-stored"}})

    # the body may switch to a secret: the stored file id no longer counts, so both are not "set at once"
    response = start("gpt-4o-batch::batch", {"inputFileSecret": "batch-input", "inputFileId": "bad"})
    assert_problem(response, 400, "inputFileId")


def test_chat_run_without_user_prompt_is_400() -> None:
    import_now()
    assert_problem(start("gpt-4o", {}), 400, "user_prompt")
    assert_problem(start("gpt-4o", {"user_prompt": "  ", "system_prompt": 3}), 400, "user_prompt", "system_prompt")
    assert_problem(start("gpt-4o", {"user_prompt": "hi", "temperature": 1}), 400, "temperature")


@pytest.mark.parametrize(
    ("fault", "body", "status", "code"),
    [
        (
            {"service": "keyvault", "route": "secrets.get*", "status": 403},
            {"inputFileSecret": "batch-input"},
            502,
            "input-secret-unreadable",
        ),
        (
            {"service": "keyvault", "route": "secrets.get*", "status": 503},
            {"inputFileSecret": "batch-input"},
            503,
            "upstream-failed",
        ),
        (
            {"service": "openai", "route": "files.get", "status": 403},
            {"inputFileId": "file-abc"},
            502,
            "upstream-failed",
        ),
    ],
    ids=["vault-refuses", "vault-unavailable", "openai-refuses"],
)
def test_a_failure_of_azure_while_the_input_is_checked_is_a_documented_502_or_503(
    emulator: RunningEmulator, fault: dict[str, Any], body: dict[str, Any], status: int, code: str
) -> None:
    from tests.test_openapi import problem_validator

    import_now()
    emulator.add_fault(**fault)

    response = start("gpt-4o-batch::batch", body)  # a start that got past the check would be a 500 (see `start`)

    problem = assert_problem(response, status, *(["inputFileSecret"] if code.startswith("input-secret") else []))
    assert problem["code"] == code
    assert list(problem_validator("/jobs/{externalId}/runs", "post", str(status)).iter_errors(problem)) == []


def test_chat_job_on_a_batch_only_deployment_is_409() -> None:
    import_now()
    body = assert_problem(start("gpt-4o-batch", {"user_prompt": "hi"}), 409)
    assert "batch jobs only" in body["detail"]


def test_embedding_job_is_409_not_runnable() -> None:
    import_now()
    assert_problem(start("text-embedding-3-small", {"user_prompt": "hi"}), 409)


def test_list_runs_with_unknown_status_is_400() -> None:
    response = call_http("list_runs", "GET", "runs", params={"status": "Sleeping"})
    assert_problem(response, 400, "status")
    assert json_of(response)["status"] == 400


def test_chat_start_for_a_resource_no_longer_configured_is_409(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import services

    import_now()
    monkeypatch.setenv("AZURE_OPENAI_RESOURCES", "[]")
    services.reset()

    body = assert_problem(start("gpt-4o", {"user_prompt": "hi"}), 409)
    assert body["code"] == "resource-not-configured"


# Client input never gives a 500 (found by fuzzing openapi.yaml) ------------------------------------------------------


@pytest.mark.parametrize("depth", [33, 100_000], ids=["past-the-limit", "past-the-recursion-limit"])
def test_deeply_nested_bodies_are_400_on_every_json_route(depth: int) -> None:
    import_now()
    nested = b"[" * depth + b"]" * depth
    body = b'{"inputFileId": "file-abc", "metadata": ' + nested + b"}"
    patch = call_http(
        "set_job_attributes",
        "PATCH",
        "jobs/gpt-4o",
        raw_body=b'{"attributes": ' + nested + b"}",
        route_params={"externalId": "gpt-4o"},
    )

    problem = assert_problem(start("gpt-4o-batch::batch", raw_body=body), 400, "body")
    assert "nested" in problem["detail"]
    assert_problem(patch, 400, "body")


def test_nesting_up_to_the_limit_is_parsed_and_judged_on_its_fields() -> None:
    import_now()
    nested = {"a": 1}
    for _ in range(30):
        nested = {"a": nested}

    assert_problem(start("gpt-4o-batch::batch", {"inputFileId": "file-abc", "metadata": nested}), 400, "metadata")


def test_a_body_over_a_mebibyte_is_413() -> None:
    import_now()
    body = json.dumps({"user_prompt": "x" * (1024 * 1024)}).encode()

    response = start("gpt-4o", raw_body=body)

    problem = assert_problem(response, 413, "body")
    assert problem["code"] == "body-too-large"


@pytest.mark.parametrize("field", ["user_prompt", "system_prompt"])
def test_prompts_over_100_000_characters_are_400_naming_the_field(field: str) -> None:
    from shared.run_requests import MAX_PROMPT_CHARACTERS

    import_now()
    body = {"user_prompt": "hi", field: "x" * (MAX_PROMPT_CHARACTERS + 1)}

    problem = assert_problem(start("gpt-4o", body), 400, field)
    assert "100,000" in json.dumps(problem)


@pytest.mark.parametrize(
    "run_id",
    [
        "x/../../instances?showInput=true",
        "gpt-4o::batch::abc",
        f"gpt-4o::batch::{'0' * 32}/cancel",
        "..",
        "%2F",
        f"gpt-4o::batch::{'0' * 32}\n",  # a pattern's `$` matches before a final newline
        f"gpt-4o\n::batch::{'0' * 32}",
        f"gpt-4o-batch::batch::{'0' * 32}::s1\n",
    ],
)
@pytest.mark.parametrize(
    ("name", "method", "suffix"),
    [("get_run", "GET", ""), ("cancel_run", "POST", "/cancel"), ("get_results", "GET", "/results")],
)
def test_a_run_id_outside_the_grammar_is_400_before_the_task_hub_is_asked(
    run_id: str, name: str, method: str, suffix: str
) -> None:
    # The client binding points at a port nobody listens on: a call that reached it would show as 500.
    response = call_http(name, method, f"runs/{run_id}{suffix}", route_params={"runId": run_id})

    assert_problem(response, 400, "runId")


NEWLINE_ID = f"gpt-4o-batch::batch::{'0' * 32}\n"


@pytest.mark.parametrize(
    ("response", "field"),
    [
        (lambda: start("gpt-4o\n", {"user_prompt": "hi"}), "externalId"),
        (lambda: start("gpt-4o-batch\n::batch", {"inputFileId": "file-abc"}), "externalId"),
        (lambda: start("gpt-4o-batch::batch", {"inputFileSecret": "batch-input\n"}), "inputFileSecret"),
        (lambda: start("gpt-4o-batch::batch", {"inputFileId": "file-abc\n"}), "inputFileId"),
        (lambda: start("gpt-4o-batch::batch", {"inputId": "0" * 32 + "\n"}), "inputId"),
        (
            lambda: call_http(
                "start_run",
                "POST",
                "jobs/gpt-4o/runs",
                body={"user_prompt": "hi"},
                params={"resource": "aoai-devstack-eastus\n"},
                route_params={"externalId": "gpt-4o"},
            ),
            "resource",
        ),
        (lambda: call_http("list_runs", "GET", "runs", params={"jobId": "gpt-4o\n"}), "jobId"),
        (lambda: call_http("list_runs", "GET", "runs", params={"resource": "aoai-devstack-eastus\n"}), "resource"),
        (lambda: call_http("list_runs", "GET", "runs", params={"parentRun": NEWLINE_ID}), "parentRun"),
    ],
    ids=["job", "batch-job", "secret", "file", "input", "resource", "listed-job", "listed-resource", "parent-run"],
)
def test_a_name_with_a_trailing_newline_is_400_before_anything_is_looked_up(
    response: Callable[[], func.HttpResponse], field: str
) -> None:
    # A pattern's `$` also matches before a final newline: a name must match whole. The durable client binding
    # points at a port nobody listens on, so a start that got past the checks would show as 500.
    import_now()

    assert_problem(response(), 400, field)


def test_metadata_takes_fourteen_pairs_and_refuses_fifteen() -> None:
    from shared.run_requests import MAX_USER_METADATA, check_metadata

    fourteen = {f"k{i}": "v" for i in range(14)}

    assert MAX_USER_METADATA == 14
    assert check_metadata(fourteen) == fourteen
    with pytest.raises(Problem):
        check_metadata(fourteen | {"k14": "v"})
    assert check_metadata({"k" * 64: "v" * 512}) == {"k" * 64: "v" * 512}
    with pytest.raises(Problem):
        check_metadata({"k" * 65: "v"})
    with pytest.raises(Problem):
        check_metadata({"k": "v" * 513})


# Runs of a user's blob, read and written by Azure itself (inputBlob and outputFolder) --------------------------------

LOCAL_BLOBS = (
    "https://127.0.0.1:10003/devstoreaccount1"  # a local emulator's endpoint, as INPUT_BLOB_ENDPOINTS names it
)
INPUT_BLOB = "https://staoai.blob.core.windows.net/batch-input/run-1/requests.jsonl"
OUTPUT_FOLDER = "https://staoai.blob.core.windows.net/batch-output"


@pytest.fixture
def blob_storage(app_settings: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The job's resource on the v1 API with batchBlobStorage, and a local blob endpoint allowed."""
    from shared import services

    [resource] = json.loads(app_settings["AZURE_OPENAI_RESOURCES"])
    resource |= {"apiVersion": "v1", "batchBlobStorage": True}
    monkeypatch.setenv("AZURE_OPENAI_RESOURCES", json.dumps([resource]))
    monkeypatch.setenv("INPUT_BLOB_ENDPOINTS", LOCAL_BLOBS)
    services.reset()


def new_blob_run(body: dict[str, Any]) -> Any:
    """The run a start request's body becomes (past every check a start makes before the orchestration starts)."""
    from datetime import UTC, datetime

    from shared import services
    from shared.run_requests import new_run
    from shared.settings import get_settings

    job = services.catalog().find_job("gpt-4o-batch::batch", None)
    settings = get_settings()
    resource = settings.resource(job.resource)
    return new_run(job, body, resource, None, datetime.now(UTC), blob_endpoints=settings.input_blob_endpoints)


@pytest.mark.usefixtures("blob_storage")
@pytest.mark.parametrize(
    ("input_blob", "output_folder", "folder"),
    [
        (INPUT_BLOB, OUTPUT_FOLDER, OUTPUT_FOLDER),
        (INPUT_BLOB, f"{OUTPUT_FOLDER}/runs/2026/", f"{OUTPUT_FOLDER}/runs/2026"),
        (f"{LOCAL_BLOBS}/batch-input/test.jsonl", f"{LOCAL_BLOBS}/batch-output", f"{LOCAL_BLOBS}/batch-output"),
    ],
    ids=["azure", "a-folder-in-a-container", "a-local-endpoint-the-settings-allow"],
)
def test_a_blob_run_takes_its_input_blob_and_output_folder_instead_of_a_file(
    input_blob: str, output_folder: str, folder: str
) -> None:
    import_now()
    patch_job("gpt-4o-batch::batch", {"attributes": {"inputFileId": "file-stored"}})  # set aside for this run

    run = new_blob_run({"inputBlob": input_blob, "outputFolder": output_folder, "metadata": {}})

    assert (run.input_blob, run.output_folder) == (input_blob, folder)
    assert (run.input_file_id, run.input_file_secret, run.metadata) == (None, None, {})
    view = run.resource_view()
    assert (view["inputBlob"], view["outputFolder"]) == (input_blob, folder)
    assert (view["outputs"]["output_blob"], view["outputs"]["error_blob"]) == (None, None)


BOTH = {"inputBlob": INPUT_BLOB, "outputFolder": OUTPUT_FOLDER}


@pytest.mark.usefixtures("blob_storage")
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"inputBlob": INPUT_BLOB}, "outputFolder"),
        ({"outputFolder": OUTPUT_FOLDER}, "inputBlob"),
        (BOTH | {"inputFileId": "file-abc"}, "inputBlob"),
        (BOTH | {"inputFileSecret": "s"}, "inputBlob"),
        (BOTH | {"inputId": "0" * 32}, "inputBlob"),
        (BOTH | {"metadata": {"team": "search"}}, "metadata"),
        (BOTH | {"inputBlob": "http://staoai.blob.core.windows.net/batch-input/x.jsonl"}, "inputBlob"),
        (BOTH | {"inputBlob": f"{INPUT_BLOB}?sv=2025-01-05&sig=abc"}, "inputBlob"),
        (BOTH | {"inputBlob": "https://staoai.blob.core.windows.net/batch-input"}, "inputBlob"),
        (BOTH | {"inputBlob": "https://staoai.blob.core.windows.net/batch-input/"}, "inputBlob"),
        (BOTH | {"inputBlob": "https://evil.example.com/batch-input/x.jsonl"}, "inputBlob"),
        (BOTH | {"inputBlob": f"{LOCAL_BLOBS}/batch-input"}, "inputBlob"),
        (BOTH | {"inputBlob": "https://staoai.blob.core.windows.net/batch-input/my file.jsonl"}, "inputBlob"),
        (BOTH | {"inputBlob": 'https://staoai.blob.core.windows.net/batch-input/my"file".jsonl'}, "inputBlob"),
        (BOTH | {"outputFolder": "https://staoai.blob.core.windows.net/batch-output/a\\b"}, "outputFolder"),
        (BOTH | {"inputBlob": "https://staoai.blob.core.windows.net/batch-input/" + "x" * 500}, "inputBlob"),
        (BOTH | {"inputBlob": 42}, "inputBlob"),
        (BOTH | {"outputFolder": "https://staoai.blob.core.windows.net"}, "outputFolder"),
        (BOTH | {"outputFolder": "https://staoai.blob.core.windows.net/"}, "outputFolder"),
        (BOTH | {"outputFolder": "https://127.0.0.1:10004/devstoreaccount1/batch-output"}, "outputFolder"),
        (BOTH | {"outputFolder": f"{OUTPUT_FOLDER}#x"}, "outputFolder"),
        (BOTH | {"outputFolder": {"url": OUTPUT_FOLDER}}, "outputFolder"),
    ],
)
def test_bad_blob_run_bodies_are_400_naming_the_field(body: dict[str, Any], field: str) -> None:
    import_now()

    problem = assert_problem(start("gpt-4o-batch::batch", body), 400, field)

    assert problem["code"] == "validation-failed"


def test_a_resource_without_batch_blob_storage_refuses_a_blob_run_naming_input_blob() -> None:
    import_now()

    problem = assert_problem(
        start("gpt-4o-batch::batch", {"inputBlob": INPUT_BLOB, "outputFolder": OUTPUT_FOLDER}), 400, "inputBlob"
    )

    assert '"batchBlobStorage": true' in problem["errors"][0]["message"]


@pytest.mark.parametrize(
    ("status", "phase"),
    [("Running", "polling"), ("Starting", "quota"), ("Running", "collecting"), ("Success", "collecting")],
)
def test_results_are_not_ready_until_the_run_ended_and_they_were_read(status: str, phase: str) -> None:
    from shared.run_requests import results_query
    from shared.runs import RunId

    run_id = RunId.parse(f"gpt-4o-batch::batch::{'0' * 32}")
    view = {"status": status, "phase": phase, "runId": "batch_1"}

    with pytest.raises(Problem) as refused:
        results_query(run_id, view, {})

    assert (refused.value.status, refused.value.code) == (409, "results-not-ready")
    assert results_query(run_id, view | {"status": "Success", "phase": "done"}, {}).kind == "all"
