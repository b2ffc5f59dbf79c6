"""Inputs, pre-flight, expiry and cost over real HTTP against the local host: every form `POST /jobs/{id}/inputs`
takes (JSONL as application/jsonl and application/x-ndjson, requests, prompts, a blob read with the app's identity),
an invalid input refused by line with nothing uploaded, runs refused before they start, an expired batch's partial
results, and a finished run's usage with cached tokens priced by the price table."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.storage.blob import BlobServiceClient

from tests.conftest import RunningAzurite, RunningEmulator, RunningUserStorage
from tests.devstack.conftest import DataPlane, batch_lines
from tests.e2e.conftest import RESOURCE, App, start_host
from tests.e2e.test_inputs_results import results
from tests.host.conftest import RunningHost
from tests.test_openapi import reply_validator, schema_validator

JOB = "gpt-4o-batch::batch"
# gpt-4o has a batch discount of its own (0.4), so a cost at the table's (0.5) shows up as wrong.
PRICES: dict[str, Any] = {
    "currency": "EUR",
    "batchDiscount": 0.5,
    "models": {"gpt-4o": {"input": 2.5, "cachedInput": 1.25, "output": 10.0, "batchDiscount": 0.4}},
}
INPUT_REPLY = reply_validator("/jobs/{externalId}/inputs", "post", "201")
INPUT_REFUSAL = schema_validator(
    "/paths/~1jobs~1{externalId}~1inputs/post/responses/400/content/application~1problem+json/schema"
)


@pytest.fixture(scope="module")
def inputs_host(
    tmp_path_factory: pytest.TempPathFactory,
    emulator_process: RunningEmulator,
    azurite: RunningAzurite,
    user_storage: RunningUserStorage,
) -> Iterator[RunningHost]:
    """A host that may read blobs from the user storage (its local endpoint allowed for blob URLs)."""
    host = start_host(
        tmp_path_factory.mktemp("inputs-host"),
        emulator_process,
        azurite,
        f"inputs{os.urandom(3).hex()}",
        more={"INPUT_BLOB_ENDPOINTS": user_storage.blob_endpoint},
    )
    yield host
    host.stop()


@pytest.fixture
def app(inputs_host: RunningHost, emulator: RunningEmulator) -> App:
    application = App(inputs_host, emulator)
    application.import_jobs()
    return application


@pytest.fixture
def eastus(emulator: RunningEmulator) -> DataPlane:
    resource = emulator.resource(RESOURCE)
    return DataPlane(resource["endpoint"], resource["apiKey"])


def post_input(
    app: App, body: Any = None, *, jsonl: str | None = None, content_type: str = "application/jsonl"
) -> requests.Response:
    path = f"jobs/{JOB}/inputs"
    if jsonl is None:
        return app.call("POST", path, json=body)
    return app.call("POST", path, data=jsonl.encode(), headers={"Content-Type": content_type})


def created(app: App, response: requests.Response) -> dict[str, Any]:
    """The input a 201 answered, checked against openapi.yaml and read back where `Location` points."""
    assert response.status_code == 201, response.text
    body = dict(response.json())
    assert [e.message for e in INPUT_REPLY.iter_errors(body)] == []
    assert response.headers["Location"].endswith(f"/api/inputs/{body['id']}")
    assert app.call("GET", f"inputs/{body['id']}").json() == body
    return body


def test_every_input_form_is_built_checked_and_uploaded(
    app: App, eastus: DataPlane, emulator: RunningEmulator, user_storage: RunningUserStorage
) -> None:
    messages = [{"role": "user", "content": "Hello"}]
    blobs = BlobServiceClient.from_connection_string(
        user_storage.connection_string, connection_verify=user_storage.ca_bundle
    ).create_container(f"inputs{uuid.uuid4().hex[:12]}")
    blobs.upload_blob("requests.jsonl", batch_lines(30, prompt="Blob item {i}").encode())

    jsonl = created(app, post_input(app, jsonl=batch_lines(3)))
    ndjson = created(
        app, post_input(app, jsonl=batch_lines(2, prompt="Other {i}"), content_type="application/x-ndjson")
    )
    asked = [{"body": {"messages": messages}}, {"custom_id": "mine", "body": {"messages": messages}}]
    requested = created(app, post_input(app, {"requests": asked}))
    prompts = [{"user": "Hi"}, {"id": "q2", "user": "Bye", "system": "Be terse."}]
    prompted = created(app, post_input(app, {"prompts": prompts, "maxTokens": 33, "temperature": 0.3}))
    blob = created(app, post_input(app, {"blobUrl": user_storage.blob_url(blobs.container_name, "requests.jsonl")}))

    every = (jsonl, ndjson, requested, prompted, blob)
    assert [(i["jobId"], i["resource"], i["requests"], i["status"]) for i in every] == [
        (JOB, RESOURCE, count, "processed") for count in (3, 2, 2, 2, 30)
    ]
    uploaded = [eastus.content_lines(i["fileId"]) for i in every]
    assert [i["bytes"] for i in every] == [eastus.request("GET", f"files/{i['fileId']}").json()["bytes"] for i in every]
    assert {(line["method"], line["url"], line["body"]["model"]) for lines in uploaded for line in lines} == {
        ("POST", "/chat/completions", "gpt-4o-batch")  # `model` filled in where the lines had none
    }
    assert [line["custom_id"] for line in uploaded[0]] == ["task-0", "task-1", "task-2"]
    assert [line["body"]["messages"][0]["content"] for line in uploaded[1]] == ["Other 0", "Other 1"]
    assert [(line["custom_id"], line["body"]["messages"]) for line in uploaded[2]] == [
        ("request-1", messages),  # an id generated where the request had none
        ("mine", messages),
    ]
    settings = {"max_tokens": 33, "temperature": 0.3, "model": "gpt-4o-batch"}
    terse = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Bye"}]
    assert [(line["custom_id"], line["body"]) for line in uploaded[3]] == [
        ("prompt-1", {"messages": [{"role": "user", "content": "Hi"}]} | settings),
        ("q2", {"messages": terse} | settings),
    ]
    assert [line["body"]["messages"][0]["content"] for line in uploaded[4]] == [f"Blob item {i}" for i in range(30)]
    storage_tokens = [e for e in emulator.requests_log(service="identity") if "storage" in json.dumps(e.get("query"))]
    assert storage_tokens  # the blob was read with the app's own identity (the account takes no anonymous reads)


def test_an_invalid_input_is_refused_by_line_and_nothing_is_uploaded(app: App, eastus: DataPlane) -> None:
    good = json.loads(batch_lines(1).splitlines()[0])
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps(good),  # the same custom_id again
        json.dumps(good | {"custom_id": "b", "method": "GET"}),
        json.dumps(good | {"custom_id": "c", "url": "/embeddings"}),
        json.dumps(good | {"custom_id": "d", "body": {"model": "gpt-4o", "messages": good["body"]["messages"]}}),
        json.dumps(good | {"custom_id": "e", "body": {"messages": []}}),
    ]

    response = post_input(app, jsonl="\n".join(lines), content_type="application/x-ndjson")

    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    problem = response.json()
    assert [e.message for e in INPUT_REFUSAL.iter_errors(problem)] == []
    assert (problem["code"], problem["problemCount"]) == ("invalid-input", 6)
    assert [(p["line"], p["field"]) for p in problem["problems"]] == [
        (2, "line"),
        (3, "custom_id"),
        (4, "method"),
        (5, "url"),
        (6, "body.model"),
        (7, "body.messages"),
    ]
    assert eastus.request("GET", "files").json()["data"] == []  # nothing reached the resource


def test_a_run_of_a_file_of_another_purpose_or_still_processing_is_refused_before_it_starts(
    app: App, eastus: DataPlane, emulator: RunningEmulator
) -> None:
    fine_tune = eastus.upload(batch_lines(2), purpose="fine-tune")["id"]
    emulator.set_speeds(RESOURCE, fileProcessingSeconds=30 * 24 * 3600)  # a month of emulated time: days of real
    pending = eastus.upload(batch_lines(2), wait=False)["id"]

    other_purpose = app.call("POST", f"jobs/{JOB}/runs", json={"inputFileId": fine_tune})
    processing = app.call("POST", f"jobs/{JOB}/runs", json={"inputFileId": pending})

    assert (other_purpose.status_code, other_purpose.json().get("code")) == (400, "not-a-batch-input")
    assert (processing.status_code, processing.json().get("code")) == (409, "input-file-not-ready")
    for refusal in (other_purpose, processing):
        assert refusal.headers["Content-Type"].startswith("application/problem+json")
        assert [e["field"] for e in refusal.json()["errors"]] == ["inputFileId"]
    assert eastus.request("GET", f"files/{pending}").json()["status"] == "pending"  # still, when it was refused
    assert emulator.batches(RESOURCE) == []  # no run reached Azure


# Runs to their end: on the fast emulator, where 24 emulated hours pass in under two real seconds ----------------


@pytest.fixture(scope="module")
def fast_host(
    tmp_path_factory: pytest.TempPathFactory, fast_emulator: RunningEmulator, azurite: RunningAzurite
) -> Iterator[RunningHost]:
    """A host with a price table, on the fast emulator's clock."""
    host = start_host(
        tmp_path_factory.mktemp("fast-host"),
        fast_emulator,
        azurite,
        f"fast{os.urandom(3).hex()}",
        more={"PRICES": json.dumps(PRICES)},
    )
    yield host
    host.stop()


@pytest.fixture
def fast_app(fast_host: RunningHost, fast_emulator: RunningEmulator) -> App:
    fast_emulator.reset()
    application = App(fast_host, fast_emulator)
    application.import_jobs()
    return application


def test_a_finished_runs_usage_has_the_cached_tokens_and_its_cost_the_models_discount(fast_app: App) -> None:
    app = fast_app
    # (On the fast emulator only to end sooner.) A system prompt of over 1,024 tokens that every request shares:
    # Azure serves it from the prompt cache once an earlier request of the batch has had it.
    system = "You are a careful assistant who answers in one short sentence. " * 80
    prompts = [{"id": f"p{n}", "user": f"Question {n}?", "system": system} for n in range(6)]
    built = created(app, post_input(app, {"prompts": prompts}))

    run = app.wait(app.start(JOB, {"inputId": built["id"]})["id"])

    assert run["status"] == "Success", run
    raw, _ = results(app, run["id"], format="raw")
    usage = [line["response"]["body"]["usage"] for line in raw]
    expected = {name: sum(u[name] for u in usage) for name in ("prompt_tokens", "completion_tokens", "total_tokens")}
    expected["cached_tokens"] = sum(u["prompt_tokens_details"]["cached_tokens"] for u in usage)
    outputs = run["outputs"]
    assert {name: outputs[name] for name in expected} == expected
    assert 0 < expected["cached_tokens"] < expected["prompt_tokens"]
    price = PRICES["models"]["gpt-4o"]
    standard = (
        (expected["prompt_tokens"] - expected["cached_tokens"]) * price["input"]
        + expected["cached_tokens"] * price["cachedInput"]
        + expected["completion_tokens"] * price["output"]
    ) / 1_000_000
    assert outputs["estimatedCost"] == {"amount": round(standard * (1 - price["batchDiscount"]), 6), "currency": "EUR"}


def test_an_expired_batch_fails_its_run_with_partial_results_unless_a_set_tries_them_again(
    fast_app: App, fast_emulator: RunningEmulator
) -> None:
    app = fast_app
    fast_emulator.set_speeds(RESOURCE, validationSeconds=10, requestsPerSecond=0.001)  # 100 requests need 28 h
    built = created(app, post_input(app, {"prompts": [{"id": f"q{n}", "user": f"Question {n}"} for n in range(100)]}))
    ids = sorted(f"q{n}" for n in range(100))

    retrying = app.start(JOB, {"inputId": built["id"]})  # a set: maxRequestRetries 2, the job's default
    patched = app.call("PATCH", f"jobs/{JOB}", json={"attributes": {"maxRequestRetries": 0}})
    assert patched.status_code == 200, patched.text
    once = app.start(JOB, {"inputId": built["id"]})  # a set that tries nothing again
    plain = app.start(JOB, {"inputFileId": built["fileId"]})  # one batch run of the same file
    runs = {
        name: app.wait(started["id"]) for name, started in (("retrying", retrying), ("once", once), ("plain", plain))
    }

    for name in ("once", "plain"):
        run = runs[name]
        every, _ = results(app, run["id"], top="1000")
        assert (run["status"], (run["failure"] or {}).get("code")) == ("Failed", "expired"), name
        assert sorted(r["custom_id"] for r in every) == ids, name
        done = [r for r in every if r["status"] == "succeeded"]
        assert len(done) == run["outputs"]["request_counts_completed"] == 86, name  # 0.001 a second for 24 h
        assert {r["error"]["code"] for r in every if r["status"] == "failed"} == {"batch_expired"}, name
        assert all(r["usage"] and r["content"] for r in done), name
    assert runs["plain"]["azureStatus"] == "expired"
    retried = runs["retrying"]
    every, _ = results(app, retried["id"], top="1000")
    assert (retried["status"], retried["failure"]) == ("Success", None)
    assert [(s["round"], s["requests"]) for s in retried["outputs"]["shards"]] == [(0, 100), (1, 14)]
    assert sorted(r["custom_id"] for r in every if r["status"] == "succeeded") == ids
