"""The main flows end to end on resources configured for Azure OpenAI's v1 API (`"apiVersion": "v1"`): the app calls
`/openai/v1/...` without an api-version, names the deployment in a chat body's `model`, and gets the same runs,
results and usage as on 2024-10-21. A pool may mix a v1 resource with a 2024-10-21 one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import RunningAzurite, RunningEmulator
from tests.devstack.conftest import batch_lines
from tests.e2e.conftest import RESOURCE, App, start_host
from tests.e2e.test_inputs_results import results
from tests.host.conftest import RunningHost

JOB = "gpt-4o-batch::batch"
OTHER = "aoai-devstack-swedencentral"


@pytest.fixture(scope="module")
def v1_host(
    tmp_path_factory: pytest.TempPathFactory, emulator_process: RunningEmulator, azurite: RunningAzurite
) -> Iterator[RunningHost]:
    """eastus on the v1 API; swedencentral stays on 2024-10-21."""
    settings = {RESOURCE: {"apiVersion": "v1"}}
    host = start_host(
        tmp_path_factory.mktemp("v1-host"), emulator_process, azurite, f"v1{os.urandom(3).hex()}", settings
    )
    yield host
    host.stop()


@pytest.fixture
def app(v1_host: RunningHost, emulator: RunningEmulator) -> App:
    application = App(v1_host, emulator)
    application.import_jobs()
    return application


def openai_calls(emulator: RunningEmulator, resource: str = RESOURCE) -> list[dict[str, Any]]:
    return emulator.requests_log(service="openai", resource=resource)


def assert_all_v1(calls: list[dict[str, Any]]) -> None:
    assert calls
    assert {c["route"].split(".")[0] for c in calls} == {"v1"}, sorted({c["route"] for c in calls})
    assert all(c["path"].startswith(f"/{RESOURCE}/openai/v1/") for c in calls)
    assert all("api-version" not in c["query"] for c in calls)
    assert {c["status"] for c in calls} <= {200, 201}


def test_a_batch_run_of_an_uploaded_file_on_the_v1_api(app: App, emulator: RunningEmulator) -> None:
    file_id = app.upload(batch_lines(12))
    before = len(openai_calls(emulator))

    run = app.wait(app.start(JOB, {"inputFileId": file_id})["id"])

    assert (run["status"], run["outputs"]["request_counts_completed"]) == ("Success", 12)
    assert run["outputs"]["prompt_tokens"] > 0
    calls = openai_calls(emulator)[before:]
    assert_all_v1(calls)
    routes = {c["route"] for c in calls}
    assert {"v1.files.get", "v1.batches.create", "v1.batches.get", "v1.files.content"} <= routes
    [batch] = app.batches_of(run["id"])
    assert batch["metadata"]["runId"] == run["id"]


def test_prompts_in_and_results_out_on_the_v1_api(app: App, emulator: RunningEmulator) -> None:
    prompts = [{"id": f"q{n}", "user": f"Name a prime number bigger than {n}."} for n in range(8)]
    prompts.append({"id": "bad", "user": "Please [[fail]]"})
    built = app.call("POST", f"jobs/{JOB}/inputs", json={"prompts": prompts})
    assert built.status_code == 201, built.text

    run = app.wait(app.start(JOB, {"inputId": built.json()["id"]})["id"], timeout=120)

    assert run["status"] == "Success", run["failure"]
    every, _ = results(app, run["id"], top="100")
    assert sorted(r["custom_id"] for r in every) == sorted(p["id"] for p in prompts)
    answer = next(r for r in every if r["custom_id"] == "q5")
    assert (answer["status"], answer["attempts"]) == ("succeeded", 1)
    assert "bigger than 5" in answer["content"]
    failed = next(r for r in every if r["custom_id"] == "bad")
    assert (failed["status"], failed["attempts"]) == ("failed", 3)  # tried again twice, on v1 too
    assert_all_v1(openai_calls(emulator))
    uploads = [c for c in openai_calls(emulator) if c["route"] == "v1.files.upload"]
    assert len(uploads) == 4  # the input, then the shard and its two follow-ups' uploads


def test_a_chat_run_names_the_deployment_in_the_body_on_the_v1_api(app: App, emulator: RunningEmulator) -> None:
    run = app.wait(app.start("gpt-4o", {"user_prompt": "Say hello."})["id"])

    assert run["status"] == "Success", run["failure"]
    [call] = [c for c in openai_calls(emulator) if c["route"].endswith("chat.completions")]
    assert call["route"] == "v1.chat.completions"
    assert call["path"] == f"/{RESOURCE}/openai/v1/chat/completions"
    assert call["body"]["model"] == "gpt-4o"
    assert "api-version" not in call["query"]


def test_a_pool_mixes_a_v1_resource_with_a_2024_10_21_one(app: App, emulator: RunningEmulator) -> None:
    emulator.put_deployment(
        OTHER,
        "gpt-4o-batch-se",
        model={"format": "OpenAI", "name": "gpt-4o", "version": "1"},
        sku={"name": "GlobalBatch", "capacity": 1},
        capabilities={"chatCompletion": "true"},
    )
    # eastus has no quota left: the shard moves to swedencentral, which the app reaches on 2024-10-21.
    app.limit_quota(1)
    app.import_jobs()
    assert app.call("PATCH", f"jobs/{JOB}", json={"attributes": {"pool": [OTHER]}}).status_code == 200
    built = app.call("POST", f"jobs/{JOB}/inputs", json={"prompts": [{"user": f"Question {n}"} for n in range(3)]})

    run = app.wait(app.start(JOB, {"inputId": built.json()["id"]})["id"], timeout=120)

    assert run["status"] == "Success", run["failure"]
    assert [s["resource"] for s in run["outputs"]["shards"]] == [OTHER]
    refused = [c for c in openai_calls(emulator) if c["status"] == 400]
    assert [c["route"] for c in refused] == ["v1.batches.create"]  # over quota: nothing created
    assert_all_v1([c for c in openai_calls(emulator) if c not in refused])
    other = openai_calls(emulator, OTHER)
    assert {c["route"] for c in other} >= {"files.upload", "batches.create", "batches.get"}
    assert all(c["query"].get("api-version") == "2024-10-21" for c in other)
