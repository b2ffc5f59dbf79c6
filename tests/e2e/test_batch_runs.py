"""A user's view of Batch Job runs, over HTTP only, against the real app on the local host."""

from __future__ import annotations

import json

import pytest

from tests.conftest import RunningEmulator, wait_for
from tests.devstack.conftest import batch_lines
from tests.e2e.conftest import RESOURCE, App

JOB = "gpt-4o-batch::batch"


def test_batch_run_succeeds_with_the_five_outputs_of_azures_batch(app: App) -> None:
    file_id = app.upload(batch_lines(12))

    started = app.start(JOB, {"inputFileId": file_id, "metadata": {"team": "e2e"}})
    assert started["status"] == "Starting"
    assert started["id"].startswith("gpt-4o-batch::batch::")
    run = app.wait(started["id"])

    batches = app.batches_of(run["id"])
    assert len(batches) == 1
    batch = batches[0]
    assert batch["metadata"] == {"team": "e2e", "runId": run["id"], "runAttempt": "1"}
    assert (run["status"], run["azureStatus"], run["runId"]) == ("Success", "completed", batch["id"])
    seed_outputs = {
        "output_file_id": batch["output_file_id"],
        "error_file_id": batch["error_file_id"],
        "request_counts_total": 12,
        "request_counts_completed": 12,
        "request_counts_failed": 0,
    }
    assert {name: run["outputs"][name] for name in seed_outputs} == seed_outputs
    usage = run["outputs"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert run["failure"] is None
    assert run["monitorUrl"].endswith(f"/accounts/{RESOURCE}/overview")


def test_batch_run_from_a_key_vault_reference(
    app: App, emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.identity import ManagedIdentityCredential
    from azure.keyvault.secrets import SecretClient

    file_id = app.upload(batch_lines(3))
    vault = emulator.endpoints["keyVault"]
    monkeypatch.setenv("IDENTITY_ENDPOINT", emulator.endpoints["identity"]["endpoint"])
    monkeypatch.setenv("IDENTITY_HEADER", emulator.endpoints["identity"]["header"])
    SecretClient(
        vault["url"], ManagedIdentityCredential(), verify_challenge_resource=False, connection_verify=vault["caBundle"]
    ).set_secret("e2e-input", file_id)
    response = app.call("PATCH", f"jobs/{JOB}", json={"attributes": {"inputFileSecret": "e2e-input"}})
    assert response.status_code == 200, response.text

    run = app.wait(app.start(JOB, {})["id"])

    assert run["status"] == "Success"
    assert file_id not in json.dumps(run)
    history = app.host.status(run["id"], showHistory="true", showHistoryOutput="true", showInput="true")
    assert file_id not in json.dumps(history)


def test_cancel_ends_cancelled_with_partial_counts(app: App, emulator: RunningEmulator) -> None:
    emulator.set_speeds(RESOURCE, requestsPerSecond=0.1)  # 60 requests: ten minutes of emulated time
    started = app.start(JOB, {"inputFileId": app.upload(batch_lines(60))})

    def under_way() -> bool:  # Azure has done some requests (the run may not have looked yet)
        batches = app.batches_of(started["id"])
        return bool(batches) and (batches[0]["request_counts"] or {}).get("completed", 0) > 0

    wait_for(under_way, timeout=60, what="the batch to be under way")

    cancel = app.call("POST", f"runs/{started['id']}/cancel")
    assert cancel.status_code == 202, cancel.text
    run = app.wait(started["id"])

    assert (run["status"], run["azureStatus"]) == ("Cancelled", "cancelled")
    assert 0 < run["outputs"]["request_counts_completed"] < 60
    assert run["outputs"]["output_file_id"]
    again = app.call("POST", f"runs/{started['id']}/cancel")
    assert again.status_code == 409


def test_cancel_before_the_batch_exists_creates_none(app: App, emulator: RunningEmulator) -> None:
    app.limit_quota(1)  # every submit is refused for quota: the run stays Starting
    started = app.start(JOB, {"inputFileId": app.upload(batch_lines(2))})
    app.wait(started["id"], until=lambda r: r.get("phase") == "quota")

    assert app.call("POST", f"runs/{started['id']}/cancel").status_code == 202
    run = app.wait(started["id"])

    assert (run["status"], run["runId"]) == ("Cancelled", None)
    assert app.batches_of(started["id"]) == []


def test_file_of_another_resource_is_refused_before_the_run_starts(app: App) -> None:
    foreign = app.upload(batch_lines(2, "gpt-4o-mini-batch"), resource="aoai-devstack-swedencentral")

    response = app.call("POST", f"jobs/{JOB}/runs", json={"inputFileId": foreign})

    assert response.status_code == 404, response.text
    assert response.json()["errors"] == [{"field": "inputFileId", "message": "is not a file of the job's resource"}]
    assert "belong to the resource that uploaded them" in response.json()["detail"]
    assert app.emulator.batches(RESOURCE) == []


def test_exhausted_token_quota_shows_starting_then_succeeds_once_it_frees(app: App, emulator: RunningEmulator) -> None:
    app.limit_quota(200)
    emulator.set_speeds(RESOURCE, requestsPerSecond=0.5)  # the first batch holds the quota for ~20 emulated s
    first = app.start(JOB, {"inputFileId": app.upload(batch_lines(10))})
    app.wait(first["id"], until=lambda r: r.get("runId") is not None)

    second = app.start(JOB, {"inputFileId": app.upload(batch_lines(10))})
    queued = app.wait(second["id"], until=lambda r: r.get("phase") == "quota")
    assert (queued["status"], queued["runId"]) == ("Starting", None)

    assert app.wait(first["id"])["status"] == "Success"
    done = app.wait(second["id"], timeout=90)
    assert done["status"] == "Success"
    assert done["quotaAttempts"] >= 1
    assert len(app.batches_of(second["id"])) == 1


@pytest.mark.soak
def test_429_and_5xx_storm_still_one_batch_per_run(app: App, emulator: RunningEmulator) -> None:
    emulator.add_fault(service="openai", route="batches.create", status=503, afterHandler=True, times=2)
    emulator.add_fault(service="openai", route="batches.list", status=429, retryAfter=0.2, times=3)
    emulator.add_fault(service="openai", route="batches.get", status=500, times=4)
    emulator.add_fault(service="openai", route="batches.get", status=429, retryAfter=0.5, times=4)
    runs = [app.start(JOB, {"inputFileId": app.upload(batch_lines(4))}) for _ in range(3)]

    finished = [app.wait(run["id"], timeout=120) for run in runs]

    assert [run["status"] for run in finished] == ["Success"] * 3
    for run in finished:
        assert len(app.batches_of(run["id"])) == 1
    creates = emulator.requests_log(service="openai", route="batches.create")
    assert len(creates) >= 3  # the lost replies were retried ...
    assert len(emulator.batches(RESOURCE)) == 3  # ... without paying twice


def test_quota_enforced_at_validation_resubmits_after_the_failed_batch(app: App, emulator: RunningEmulator) -> None:
    import requests

    requests.patch(
        f"{emulator.control}/resources/{RESOURCE}", json={"quotaCheck": "validation"}, timeout=10
    ).raise_for_status()
    app.limit_quota(200)
    emulator.set_speeds(RESOURCE, requestsPerSecond=0.5)
    first = app.start(JOB, {"inputFileId": app.upload(batch_lines(10))})
    app.wait(first["id"], until=lambda r: r.get("runId") is not None)

    second = app.start(JOB, {"inputFileId": app.upload(batch_lines(10))})
    app.wait(second["id"], until=lambda r: (r.get("quotaAttempts") or 0) >= 1)
    done = app.wait(second["id"], timeout=90)

    assert done["status"] == "Success"
    batches = sorted(app.batches_of(second["id"]), key=lambda b: b["metadata"]["runAttempt"])
    assert (batches[0]["metadata"]["runAttempt"], batches[0]["status"]) == ("1", "failed")
    assert batches[-1]["status"] == "completed"
    assert done["runId"] == batches[-1]["id"]


def test_a_retried_start_with_the_same_idempotency_key_is_the_same_run(app: App) -> None:
    file_id = app.upload(batch_lines(3))
    headers = {"Idempotency-Key": "nightly-2026-11-26"}

    first = app.call("POST", f"jobs/{JOB}/runs", json={"inputFileId": file_id}, headers=headers)
    again = app.call("POST", f"jobs/{JOB}/runs", json={"inputFileId": file_id}, headers=headers)
    run = app.wait(first.json()["id"])
    after = app.call("POST", f"jobs/{JOB}/runs", json={"inputFileId": file_id}, headers=headers)
    other = app.call("POST", f"jobs/{JOB}/runs", json={"inputFileId": file_id}, headers={"Idempotency-Key": "x"})

    assert (first.status_code, again.status_code, after.status_code) == (202, 200, 200)
    assert first.json()["id"] == again.json()["id"] == after.json()["id"]
    assert after.json()["status"] == run["status"] == "Success"
    assert other.status_code == 202
    assert other.json()["id"] != first.json()["id"]
    assert len(app.batches_of(run["id"])) == 1
