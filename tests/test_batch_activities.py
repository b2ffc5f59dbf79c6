"""The batch-run activities (resolve_batch_input, submit_batch, check_batch, cancel_batch) and the shared code
under them, called as the Functions worker calls them, against the emulated Azure OpenAI, Key Vault and identity
over real HTTP, with the cancel records in Azurite."""

from __future__ import annotations

import json
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

from shared import services
from shared.azure_openai import AzureOpenAIClient, Batch
from shared.batch_run import (
    INPUT_FILE_PLACEHOLDER,
    RUN_ID_METADATA,
    BatchRun,
    BatchSnapshot,
    CollectResults,
    Phase,
    ResolveInput,
    run_status,
)
from shared.batching import CLAIM_TIMEOUT, SubmitUnknown, submit
from shared.http import AzureError, azure_session, retry_policy
from shared.results import staged_name
from shared.runs import HINTS, Failure, RunStatus, iso_of_unix
from shared.secrets import SecretUnavailable
from tests.conftest import RunningEmulator, wait_for
from tests.devstack.conftest import DataPlane, batch_lines
from tests.functions import functions_by_name

RESOURCE = "aoai-devstack-eastus"
OTHER_RESOURCE = "aoai-devstack-swedencentral"
DEPLOYMENT = "gpt-4o-batch"
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
GPT_4O = {"format": "OpenAI", "name": "gpt-4o", "version": "2024-08-06"}


# Helpers ----------------------------------------------------------------------------------------------------------


def activity(name: str, payload: dict[str, Any]) -> Any:
    """Runs activity `name` as the worker does: its user function with the (JSON-shaped) activity input."""
    return functions_by_name()[name].get_user_function()(json.loads(json.dumps(payload)))


class Run:
    """A batch run as the orchestrator carries it: its state, and the activities it calls with its steps."""

    def __init__(self, input_file_id: str | None = None, **overrides: Any) -> None:
        now = datetime.now(UTC)
        values: dict[str, Any] = {
            "run_id": f"{DEPLOYMENT}::batch::{uuid.uuid4().hex}",
            "resource": RESOURCE,
            "external_id": f"{DEPLOYMENT}::batch",
            "deployment": DEPLOYMENT,
            "endpoint": "/chat/completions",
            "completion_window": "24h",
            "requested_at": now.isoformat().replace("+00:00", "Z"),
            "deadline": (now + timedelta(hours=25)).isoformat().replace("+00:00", "Z"),
            "monitor_url": "https://portal.azure.com/#/resource/x/overview",
            "input_file_id": input_file_id,
            "phase": Phase.SUBMITTING,
        }
        self.state = BatchRun(**(values | overrides))

    @property
    def run_id(self) -> str:
        return self.state.run_id

    def change(self, **changes: Any) -> Run:
        self.state = replace(self.state, **changes)
        return self

    def resolve(self) -> dict[str, Any]:
        assert self.state.input_file_secret
        answer: dict[str, Any] = activity(
            "resolve_batch_input", ResolveInput(self.run_id, self.state.input_file_secret).to_dict()
        )
        return answer

    def submit(self, *, lookup_only: bool = False, at: datetime | None = None) -> dict[str, Any]:
        """One submit, as decided at `at` on the run's clock (now by default)."""
        step = self.state.submit_step(at or datetime.now(UTC), lookup_only=lookup_only)
        answer: dict[str, Any] = activity("submit_batch", step.to_dict())
        return answer

    def cancel(self) -> dict[str, Any]:
        answer: dict[str, Any] = activity("cancel_batch", self.state.cancel_step().to_dict())
        return answer

    def submitted(self) -> Run:
        """After a successful submit, as the orchestrator carries on."""
        answer = self.submit()
        assert answer["outcome"] == "submitted", answer
        return self.took(answer["batch"])

    def took(self, batch: dict[str, Any]) -> Run:
        snapshot = BatchSnapshot.from_dict(batch)
        return self.change(batch=snapshot, phase=Phase.POLLING, status=run_status(snapshot.status))

    def check(self) -> dict[str, Any]:
        """One check_batch call; the state takes the new snapshot, as the orchestrator does."""
        checked: dict[str, Any] = activity("check_batch", self.state.check_step().to_dict())
        self.took(checked["batch"])
        return checked

    def check_until(self, status: str, timeout: float = 20) -> tuple[dict[str, Any], list[str]]:
        """Checks until the batch reports `status`; returns that check and every status seen on the way."""
        seen: list[str] = []

        def reached() -> dict[str, Any]:
            checked = self.check()
            if not seen or seen[-1] != checked["batch"]["status"]:
                seen.append(checked["batch"]["status"])
            return checked if checked["batch"]["status"] == status else {}

        return wait_for(reached, timeout=timeout, interval=0.02, what=f"the batch to be {status}"), seen

    @property
    def batch(self) -> BatchSnapshot:
        assert self.state.batch is not None
        return self.state.batch

    def view(self) -> dict[str, Any]:
        return self.state.resource_view()


def emulator_batch(emulator: RunningEmulator, batch_id: str, resource: str = RESOURCE) -> dict[str, Any]:
    return next(b for b in emulator.batches(resource) if b["id"] == batch_id)


def set_secret(emulator: RunningEmulator, name: str, value: str) -> str:
    """Stores a secret with the Key Vault SDK as an operator would; returns its version."""
    vault = emulator.endpoints["keyVault"]
    client = SecretClient(
        vault["url"], ManagedIdentityCredential(), connection_verify=vault["caBundle"], verify_challenge_resource=False
    )
    return str(client.set_secret(name, value).properties.version)


@pytest.fixture
def eastus(emulator: RunningEmulator) -> DataPlane:
    """Raw access to the job's resource, as an operator uploading input files has it."""
    resource = emulator.resource(RESOURCE)
    return DataPlane(resource["endpoint"], resource["apiKey"])


@pytest.fixture
def sweden(emulator: RunningEmulator) -> DataPlane:
    resource = emulator.resource(OTHER_RESOURCE)
    return DataPlane(resource["endpoint"], resource["apiKey"])


@pytest.fixture
def settings(
    app_settings: dict[str, str], emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The app settings, with the emulated vault's CA trusted (the Functions code builds its SecretClient plainly)."""
    ca_bundle = emulator.endpoints["keyVault"]["caBundle"]
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_bundle)
    monkeypatch.setenv("SSL_CERT_FILE", ca_bundle)
    services.reset()
    return app_settings


pytestmark = pytest.mark.usefixtures("settings")


# submit_batch -----------------------------------------------------------------------------------------------------


def test_submit_creates_one_batch_with_exactly_azures_body_and_the_run_id_in_metadata(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    file_id = eastus.upload(batch_lines(3))["id"]
    run = Run(file_id, metadata={"team": "search", "ticket": "T-42"})

    outcome = run.submit()

    assert outcome["outcome"] == "submitted"
    creates = emulator.requests_log(service="openai", route="batches.create")
    assert [c["body"] for c in creates] == [
        {
            "input_file_id": file_id,
            "endpoint": "/chat/completions",
            "completion_window": "24h",
            "metadata": {"team": "search", "ticket": "T-42", RUN_ID_METADATA: run.run_id, "runAttempt": "1"},
        }
    ]
    (batch,) = emulator.batches(RESOURCE)
    assert outcome["batch"]["id"] == batch["id"] == creates[0]["batch"]["id"]
    assert batch["metadata"] == {"team": "search", "ticket": "T-42", "runId": run.run_id, "runAttempt": "1"}
    assert outcome["batch"]["status"] == "validating"
    assert outcome["batch"]["created_at"] == batch["created_at"]
    assert "input_file_id" not in outcome["batch"]


def test_resubmitting_the_same_run_reattaches_to_its_batch(emulator: RunningEmulator, eastus: DataPlane) -> None:
    run = Run(eastus.upload(batch_lines(2))["id"])
    first = run.submit()

    again = run.submit()

    assert again["outcome"] == "reattached"
    assert again["batch"]["id"] == first["batch"]["id"]
    assert [b["id"] for b in emulator.batches(RESOURCE)] == [first["batch"]["id"]]
    assert len(emulator.requests_log(service="openai", route="batches.create")) == 1


def test_other_runs_batches_are_never_reattached(emulator: RunningEmulator, eastus: DataPlane) -> None:
    file_id = eastus.upload(batch_lines(2))["id"]
    one, two = Run(file_id), Run(file_id)

    first = one.submit()
    second = two.submit()

    assert (first["outcome"], second["outcome"]) == ("submitted", "submitted")
    assert first["batch"]["id"] != second["batch"]["id"]
    assert sorted(b["metadata"]["runId"] for b in emulator.batches(RESOURCE)) == sorted([one.run_id, two.run_id])


@pytest.mark.parametrize(
    "fault",
    [{"status": 500, "afterHandler": True}, {"drop": True, "afterHandler": True}],
    ids=["500-after-create", "connection-cut-after-create"],
)
def test_lost_create_reply_raises_then_the_retry_finds_the_one_batch_in_azures_list(
    emulator: RunningEmulator, eastus: DataPlane, fault: dict[str, Any]
) -> None:
    run = Run(eastus.upload(batch_lines(2))["id"])
    emulator.add_fault(service="openai", route="batches.create", times=1, **fault)

    with pytest.raises(SubmitUnknown, match="submit outcome unknown"):
        run.submit()
    assert emulator.requests_log(service="openai", route="batches.list") == []  # the first try had nothing to look for
    retried = run.submit()  # the run's next try
    again = run.submit()  # and one more: the ledger has the outcome now

    (batch,) = emulator.batches(RESOURCE)
    assert (retried["outcome"], again["outcome"]) == ("reattached", "reattached")
    assert retried["batch"]["id"] == again["batch"]["id"] == batch["id"]
    assert batch["metadata"]["runId"] == run.run_id
    (create,) = emulator.requests_log(service="openai", route="batches.create")
    assert create["handledStatus"] == 200  # Azure did create it: only the reply was lost
    assert create["batch"]["id"] == batch["id"]
    assert len(emulator.requests_log(service="openai", route="batches.list")) == 1  # only the try after the loss


def test_a_submitted_run_never_lists_azures_batches(emulator: RunningEmulator, eastus: DataPlane) -> None:
    run = Run(eastus.upload(batch_lines(2))["id"])

    first = run.submit()
    again = run.submit()  # an activity delivered twice, one after the other

    assert (first["outcome"], again["outcome"]) == ("submitted", "reattached")
    assert emulator.requests_log(service="openai", route="batches.list") == []
    assert len(emulator.batches(RESOURCE)) == 1


def lose_the_create_reply(emulator: RunningEmulator, run: Run, **fault: Any) -> None:
    emulator.add_fault(service="openai", route="batches.create", times=1, **fault)
    with pytest.raises(SubmitUnknown):
        run.submit()


def test_throttled_and_failing_listing_is_retried_inside_the_client(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    run = Run(eastus.upload(batch_lines(2))["id"])
    lose_the_create_reply(emulator, run, status=500, afterHandler=True)
    emulator.add_fault(service="openai", route="batches.list", status=429, times=1)
    emulator.add_fault(service="openai", route="batches.list", status=503, times=1)

    outcome = run.submit()

    assert outcome["outcome"] == "reattached"
    assert [e["status"] for e in emulator.requests_log(service="openai", route="batches.list")] == [429, 503, 200]
    assert len(emulator.batches(RESOURCE)) == 1


def test_listing_that_fails_past_the_retries_never_creates_blind(emulator: RunningEmulator, eastus: DataPlane) -> None:
    run = Run(eastus.upload(batch_lines(2))["id"])
    lose_the_create_reply(emulator, run, status=503)  # refused before handling: no batch, but the run cannot know
    resource = emulator.resource(RESOURCE)
    quick = azure_session(retry_policy(attempts=2, backoff=0))
    client = AzureOpenAIClient(resource["endpoint"], "2024-10-21", api_key=resource["apiKey"], session=quick)
    emulator.add_fault(service="openai", route="batches.list", status=503, times=3)

    with pytest.raises(SubmitUnknown, match="could not look for an earlier batch: ServiceUnavailable"):
        submit(run.state.submit_step(datetime.now(UTC)), client, services.submit_ledger(), None, False)

    assert len(emulator.requests_log(service="openai", route="batches.list")) == 3
    assert len(emulator.requests_log(service="openai", route="batches.create")) == 1  # only the first try's
    assert emulator.batches(RESOURCE) == []


def test_a_twin_running_at_once_never_creates_a_second_batch(emulator: RunningEmulator, eastus: DataPlane) -> None:
    run = Run(eastus.upload(batch_lines(2))["id"])
    at = datetime.now(UTC)
    emulator.add_fault(
        service="openai", route="batches.create", latencyMs=1000, times=1
    )  # still creating when the twin looks

    with ThreadPoolExecutor(2) as pool:
        copies = [pool.submit(run.submit, at=at) for _ in range(2)]
    outcomes = []
    for copy in copies:
        try:
            outcomes.append(copy.result()["outcome"])
        except SubmitUnknown as unknown:
            outcomes.append(str(unknown))

    assert sorted(outcomes)[0].startswith("another")  # the twin that lost the claim never creates ...
    assert "submitted" in outcomes
    assert len(emulator.requests_log(service="openai", route="batches.create")) == 1
    assert run.submit()["outcome"] == "reattached"  # ... and the run's next try finds the winner's batch


def test_a_claim_whose_copy_crashed_is_taken_over_once_it_is_old_enough(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    run = Run(eastus.upload(batch_lines(2))["id"])
    crashed_at = datetime.now(UTC)
    services.submit_ledger().claim(run.run_id, 1, crashed_at)  # a copy claimed, then was killed before creating

    with pytest.raises(SubmitUnknown, match="may still be creating"):
        run.submit(at=crashed_at + CLAIM_TIMEOUT - timedelta(seconds=1))
    taken_over = run.submit(at=crashed_at + CLAIM_TIMEOUT)

    assert taken_over["outcome"] == "submitted"
    assert len(emulator.batches(RESOURCE)) == 1
    assert len(emulator.requests_log(service="openai", route="batches.list")) == 2  # each look reached the claim


def test_a_cancel_while_a_claim_is_open_looks_and_waits_rather_than_orphaning_a_batch(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    run = Run(eastus.upload(batch_lines(2))["id"])
    claimed_at = datetime.now(UTC)
    services.submit_ledger().claim(run.run_id, 1, claimed_at)
    services.catalog().request_cancel(run.run_id, claimed_at)

    with pytest.raises(SubmitUnknown):
        run.submit(at=claimed_at)
    later = run.submit(at=claimed_at + CLAIM_TIMEOUT)

    assert later["outcome"] == "cancelled"
    assert emulator.requests_log(service="openai", route="batches.create") == []


def test_a_refused_create_releases_its_claim_so_a_later_try_creates(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    run = Run(eastus.upload(batch_lines(2))["id"])
    emulator.add_fault(service="openai", route="batches.create", status=400, times=1)

    refused = run.submit()
    accepted = run.submit()

    assert refused["outcome"] == "rejected"
    assert accepted["outcome"] == "submitted"
    assert services.submit_ledger().intent(run.run_id, 1).batch_id == accepted["batch"]["id"]  # type: ignore[union-attr]


def test_create_storm_is_retried_by_the_activity_without_a_second_batch(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    run = Run(eastus.upload(batch_lines(2))["id"])
    emulator.add_fault(service="openai", route="batches.create", status=429, retryAfter=1, times=1)
    emulator.add_fault(service="openai", route="batches.create", status=503, afterHandler=True, times=1)

    outcomes: list[str] = []
    for _ in range(5):  # Durable's retry policy: up to five attempts
        try:
            outcomes.append(run.submit()["outcome"])
            break
        except SubmitUnknown as unknown:
            outcomes.append(str(unknown))

    assert outcomes == [
        "submit outcome unknown (429 429)",
        "submit outcome unknown (503 ServiceUnavailable)",
        "reattached",
    ]
    assert len(emulator.batches(RESOURCE)) == 1
    creates = emulator.requests_log(service="openai", route="batches.create")
    assert [(c["status"], c.get("handledStatus")) for c in creates] == [(429, None), (503, 200)]


def test_token_limit_exceeded_is_quota_without_a_batch_then_submits_once_the_blocking_batch_ends(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    emulator.put_deployment(
        RESOURCE,
        DEPLOYMENT,
        model=GPT_4O,
        sku={"name": "GlobalBatch", "capacity": 10},
        capabilities={"chatCompletion": "true"},
        enqueuedTokenLimit=100,
    )
    file_id = eastus.upload(batch_lines(5))["id"]  # one such batch fits in 100 tokens, two do not
    blocking = eastus.create_batch(file_id).json()
    run = Run(file_id)

    waiting = run.submit()

    assert (waiting["outcome"], waiting["batch"], waiting["refusal"]) == ("quota", None, None)
    assert [c["status"] for c in emulator.requests_log(service="openai", route="batches.create")] == [200, 400]
    assert [b["id"] for b in emulator.batches(RESOURCE)] == [blocking["id"]]

    wait_for(lambda: eastus.batch(blocking["id"])["status"] == "completed", what="the blocking batch to complete")
    outcome = run.submit()

    assert outcome["outcome"] == "submitted"
    ours = [b for b in emulator.batches(RESOURCE) if (b["metadata"] or {}).get("runId") == run.run_id]
    assert [b["id"] for b in ours] == [outcome["batch"]["id"]]
    statuses = [c["status"] for c in emulator.requests_log(service="openai", route="batches.create")]
    assert statuses == [200, 400, 200]


@pytest.mark.parametrize(
    ("override", "param"),
    [({"completion_window": "48h"}, "completion_window"), ({"endpoint": "/embeddings"}, "endpoint")],
)
def test_request_azure_refuses_is_rejected_with_azures_code(
    emulator: RunningEmulator, eastus: DataPlane, override: dict[str, str], param: str
) -> None:
    run = Run(eastus.upload(batch_lines(2))["id"], **override)

    outcome = run.submit()

    assert outcome["outcome"] == "rejected"
    assert outcome["refusal"]["code"] == "invalid_request"
    assert repr(next(iter(override.values()))) in outcome["refusal"]["message"]
    (create,) = emulator.requests_log(service="openai", route="batches.create")
    assert create["status"] == 400
    assert emulator.batches(RESOURCE) == []


def test_cancel_requested_before_submission_creates_no_batch(emulator: RunningEmulator, eastus: DataPlane) -> None:
    run = Run(eastus.upload(batch_lines(2))["id"])
    services.catalog().request_cancel(run.run_id, datetime.now(UTC))

    outcome = run.submit()

    assert (outcome["outcome"], outcome["cancel_requested"], outcome["batch"]) == ("cancelled", True, None)
    assert emulator.batches(RESOURCE) == []
    assert emulator.requests_log(service="openai", route="batches.create") == []


def test_cancel_requested_after_a_lost_create_reply_reattaches_rather_than_orphaning_the_batch(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    run = Run(eastus.upload(batch_lines(2))["id"])
    emulator.add_fault(service="openai", route="batches.create", status=500, afterHandler=True, times=1)
    with pytest.raises(SubmitUnknown):
        run.submit()
    services.catalog().request_cancel(run.run_id, datetime.now(UTC))

    outcome = run.submit()

    # The orchestrator then cancels the batch it now knows about.
    assert outcome["outcome"] == "reattached"
    assert outcome["batch"]["id"] == emulator.batches(RESOURCE)[0]["id"]


# Input from Key Vault ---------------------------------------------------------------------------------------------


def test_resolve_batch_input_pins_the_secret_version_without_its_value(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    file_id = eastus.upload(batch_lines(2))["id"]
    version = set_secret(emulator, "batch-input", file_id)
    run = Run(input_file_secret="batch-input", phase="resolving")

    resolved = run.resolve()

    assert (resolved["version"], resolved["refusal"]) == (version, None)
    assert file_id not in json.dumps(resolved)


def test_submit_uses_the_pinned_secret_version_not_the_latest(emulator: RunningEmulator, eastus: DataPlane) -> None:
    pinned_file = eastus.upload(batch_lines(2), filename="pinned.jsonl")["id"]
    later_file = eastus.upload(batch_lines(3), filename="later.jsonl")["id"]
    set_secret(emulator, "batch-input", pinned_file)
    run = Run(input_file_secret="batch-input")
    run.change(secret_version=run.resolve()["version"])
    set_secret(emulator, "batch-input", later_file)  # the secret moves on after the run resolved it

    outcome = run.submit()

    assert outcome["outcome"] == "submitted"
    (batch,) = emulator.batches(RESOURCE)
    assert batch["input_file_id"] == pinned_file
    assert pinned_file not in json.dumps(outcome)


def test_missing_secret_is_a_refusal_naming_the_secret(emulator: RunningEmulator) -> None:
    run = Run(input_file_secret="no-such-secret", phase="resolving")

    resolved = run.resolve()

    assert resolved["version"] is None
    assert (
        resolved["refusal"]
        == Failure.of(
            "input_secret_unavailable",
            "Key Vault secret 'no-such-secret' was not found in the vault",
            param="inputFileSecret",
        ).to_dict()
    )


def test_a_secret_name_with_a_trailing_newline_never_reaches_the_vault(emulator: RunningEmulator) -> None:
    run = Run(input_file_secret="batch-input\n", phase="resolving")

    resolved = run.resolve()

    assert resolved["refusal"]["message"] == "Key Vault secret 'batch-input\\n' is not a valid secret name"
    assert emulator.requests_log(service="keyvault") == []


def test_an_unreachable_vault_at_resolve_raises_so_the_run_tries_again(emulator: RunningEmulator) -> None:
    emulator.add_fault(service="keyvault", route="secrets.get*", status=503)
    run = Run(input_file_secret="batch-input", phase="resolving")

    with pytest.raises(SecretUnavailable) as raised:
        run.resolve()

    assert raised.value.transient


def test_missing_secret_version_is_a_refusal_naming_the_secret_and_not_its_value(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    file_id = eastus.upload(batch_lines(2))["id"]
    set_secret(emulator, "batch-input", file_id)
    run = Run(input_file_secret="batch-input", secret_version="0" * 32)

    outcome = run.submit()

    assert outcome["outcome"] == "rejected"
    assert (
        outcome["refusal"]
        == Failure.of(
            "input_secret_unavailable",
            f"Key Vault secret 'batch-input' has no version {'0' * 32}",
            param="inputFileSecret",
        ).to_dict()
    )
    assert file_id not in str(outcome)
    assert emulator.batches(RESOURCE) == []


def test_secret_input_file_id_appears_in_no_activity_output_even_when_azure_quotes_it(
    emulator: RunningEmulator, sweden: DataPlane
) -> None:
    # A file of the other resource: Azure accepts the batch, then fails it quoting the file id in its message.
    secret_value = sweden.upload(batch_lines(2, "gpt-4o-mini-batch"))["id"]
    set_secret(emulator, "batch-input", secret_value)
    emulator.set_speeds(RESOURCE, validationSeconds=1)
    run = Run(input_file_secret="batch-input", phase="resolving")

    outputs: list[Any] = [resolved := run.resolve()]
    run.change(secret_version=resolved["version"], phase=Phase.SUBMITTING)
    outputs.append(outcome := run.submit())
    run.took(outcome["batch"])
    checked, _ = run.check_until("failed")
    outputs.append(checked)
    outputs.append(run.cancel())
    run.change(failure=BatchSnapshot.from_dict(checked["batch"]).failure())
    outputs.append(run.view())
    outputs.append(run.submit())  # a late retry re-attaches
    outputs.append(run.state.to_dict())  # what the orchestration carries (and Durable stores in its history)

    assert emulator_batch(emulator, outcome["batch"]["id"])["input_file_id"] == secret_value
    azure_message = emulator_batch(emulator, outcome["batch"]["id"])["errors"]["data"][0]["message"]
    assert secret_value in azure_message
    for output in outputs:
        assert secret_value not in json.dumps(output)
    assert run.state.failure is not None
    assert run.state.failure.message == azure_message.replace(secret_value, INPUT_FILE_PLACEHOLDER)


def test_secret_input_file_id_azure_refuses_is_not_quoted_in_the_rejection(emulator: RunningEmulator) -> None:
    set_secret(emulator, "batch-input", "not-a-file-id")
    run = Run(input_file_secret="batch-input")
    run.change(secret_version=run.resolve()["version"])

    outcome = run.submit()

    assert outcome["outcome"] == "rejected"
    assert outcome["refusal"] == Failure.of("invalid_request", "Invalid file id '<input file id>'.").to_dict()
    (create,) = emulator.requests_log(service="openai", route="batches.create")
    assert create["body"]["input_file_id"] == "not-a-file-id"  # the value itself did reach Azure


def test_resource_view_carries_no_input_file_id(emulator: RunningEmulator, eastus: DataPlane) -> None:
    file_id = eastus.upload(batch_lines(2))["id"]
    set_secret(emulator, "batch-input", file_id)
    run = Run(input_file_secret="batch-input")
    run.change(secret_version=run.resolve()["version"]).submitted()

    view = run.view()

    assert file_id not in json.dumps(view)
    assert view["runId"] == run.batch.id


# check_batch ------------------------------------------------------------------------------------------------------


def test_check_follows_the_lifecycle_to_completed_with_the_five_outputs(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    emulator.set_speeds(RESOURCE, validationSeconds=40, requestsPerSecond=0.5, finalizingSeconds=40)
    run = Run(eastus.upload(batch_lines(20))["id"]).submitted()

    validating = run.check()
    assert validating["batch"]["status"] == "validating"
    assert validating["cancel_requested"] is False
    # Azure's quirk: "" for result files not made yet; the snapshot has None.
    assert emulator_batch(emulator, run.batch.id)["output_file_id"] == ""
    assert (validating["batch"]["output_file_id"], validating["batch"]["error_file_id"]) == (None, None)
    assert run.view()["status"] == "Running"

    running, _ = run.check_until("in_progress")
    wait_for(lambda: 0 < (run.check()["batch"]["completed"] or 0) < 20, interval=0.02, what="partial progress")
    partial = run.batch
    assert partial.total == 20
    assert partial.failed == 0
    assert run.view()["progress"] == {
        "total": 20,
        "completed": partial.completed,
        "failed": 0,
        "percent": round(100 * (partial.completed or 0) / 20, 1),
    }
    assert running["batch"]["in_progress_at"] is not None

    finalizing, _ = run.check_until("finalizing")
    assert (finalizing["batch"]["total"], finalizing["batch"]["completed"]) == (20, 20)
    assert run.view()["status"] == "Running"

    completed, _ = run.check_until("completed")
    azure = emulator_batch(emulator, run.batch.id)
    snapshot = BatchSnapshot.from_dict(completed["batch"])
    assert snapshot.outputs() == {
        "output_file_id": azure["output_file_id"],
        "error_file_id": azure["error_file_id"],
        "request_counts_total": azure["request_counts"]["total"],
        "request_counts_completed": azure["request_counts"]["completed"],
        "request_counts_failed": azure["request_counts"]["failed"],
        "output_blob": None,  # a batch of a file: no result blobs
        "error_blob": None,
    }
    assert snapshot.outputs()["request_counts_completed"] == 20
    assert len(eastus.content_lines(azure["output_file_id"])) == 20
    assert snapshot.failure() is None

    view = run.view()
    assert view["status"] == RunStatus.SUCCESS.value
    assert view["azureStatus"] == "completed"
    assert {name: view["outputs"][name] for name in snapshot.outputs()} == snapshot.outputs()
    assert view["startedAt"] == iso_of_unix(azure["created_at"])
    assert view["endedAt"] == iso_of_unix(azure["completed_at"])
    assert ISO_UTC.match(view["startedAt"])
    assert ISO_UTC.match(view["endedAt"])
    assert view["startedAt"] < view["endedAt"]


def _lines(*lines: Any) -> str:
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)


def _line(custom_id: str = "a", model: str = DEPLOYMENT, url: str = "/chat/completions") -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


FAILURES = {
    "invalid_json_line": (_lines(_line("a"), "{not json"), 2, None),
    "duplicate_custom_id": (_lines(_line("a"), _line("b"), _line("a")), 3, "custom_id"),
    "empty_file": ("\n\n", None, None),
    "url_mismatch": (_lines(_line("a", url="/embeddings")), 1, "url"),
    "model_mismatch": (_lines(_line("a"), _line("b", model="gpt-4o-mini-dz-batch")), 2, "body.model"),
    "model_not_found": (_lines(_line("a", model="no-such-deployment")), 1, "body.model"),
    "invalid_request": (_lines(_line("a", model="gpt-4o")), 1, "body.model"),  # a GlobalStandard deployment
    "input_file_not_found": (None, None, None),  # a file of the other resource
}


@pytest.mark.parametrize("code", list(FAILURES))
def test_failed_batch_reports_azures_code_message_line_and_hint(
    emulator: RunningEmulator, eastus: DataPlane, sweden: DataPlane, code: str
) -> None:
    content, line, param = FAILURES[code]
    emulator.set_speeds(RESOURCE, validationSeconds=1)
    if content is None:
        file_id = sweden.upload(batch_lines(2, "gpt-4o-mini-batch"))["id"]
    else:
        file_id = eastus.upload(content)["id"]
    run = Run(file_id).submitted()

    checked, seen = run.check_until("failed")

    assert seen[-1] == "failed"
    azure = emulator_batch(emulator, checked["batch"]["id"])
    (error,) = azure["errors"]["data"]
    snapshot = BatchSnapshot.from_dict(checked["batch"])
    assert snapshot.failure() == Failure(
        code, error["message"].replace(file_id, INPUT_FILE_PLACEHOLDER), line, param, HINTS.get(code)
    )
    # Azure's quirk for a batch that failed validation: request counts with null members.
    assert azure["request_counts"]["completed"] is None
    assert (snapshot.completed, snapshot.failed) == (None, None)
    assert snapshot.total == azure["request_counts"]["total"]
    if code in ("input_file_not_found", "model_not_found"):
        assert HINTS[code]
    view = run.view()
    assert view["status"] == "Failed"
    assert view["endedAt"] == iso_of_unix(azure["failed_at"])
    assert view["outputs"]["output_file_id"] is None


def test_cancel_requested_reflects_the_catalogues_cancel_record(eastus: DataPlane) -> None:
    run = Run(eastus.upload(batch_lines(2))["id"]).submitted()
    assert run.check()["cancel_requested"] is False

    services.catalog().request_cancel(run.run_id, datetime.now(UTC))

    assert run.check()["cancel_requested"] is True


def test_check_survives_transient_errors_within_the_clients_retries(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    run = Run(eastus.upload(batch_lines(2))["id"]).submitted()
    emulator.add_fault(service="openai", route="batches.get", status=503, times=1)
    emulator.add_fault(service="openai", route="batches.get", status=429, times=1)

    checked = run.check()

    assert checked["batch"]["id"] == run.batch.id
    assert [e["status"] for e in emulator.requests_log(service="openai", route="batches.get")] == [503, 429, 200]


def test_check_of_a_vanished_batch_raises_with_azures_status(eastus: DataPlane) -> None:
    run = Run(eastus.upload(batch_lines(2))["id"], batch=BatchSnapshot("batch_missing", "validating"))

    with pytest.raises(AzureError) as raised:
        run.check()

    assert (raised.value.status, raised.value.code, raised.value.transient) == (404, "notFound", False)


# cancel_batch -----------------------------------------------------------------------------------------------------


def test_cancelling_a_running_batch_goes_cancelling_then_cancelled_with_partial_counts(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    emulator.set_speeds(RESOURCE, validationSeconds=2, requestsPerSecond=0.5, cancellingSeconds=4)
    run = Run(eastus.upload(batch_lines(100))["id"]).submitted()
    wait_for(lambda: (run.check()["batch"]["completed"] or 0) > 0, interval=0.02, what="some requests to finish")

    cancelling = run.cancel()["batch"]

    assert cancelling["status"] == "cancelling"
    assert cancelling["cancelling_at"] is not None
    run.took(cancelling)
    checked, seen = run.check_until("cancelled")
    assert seen[0] == "cancelling"
    azure = emulator_batch(emulator, run.batch.id)
    snapshot = BatchSnapshot.from_dict(checked["batch"])
    assert 0 < (snapshot.completed or 0) < 100
    assert snapshot.outputs() == {
        "output_file_id": azure["output_file_id"],
        "error_file_id": azure["error_file_id"],
        "request_counts_total": 100,
        "request_counts_completed": azure["request_counts"]["completed"],
        "request_counts_failed": 0,
        "output_blob": None,
        "error_blob": None,
    }
    not_run = eastus.content_lines(azure["error_file_id"])
    assert len(not_run) == 100 - (snapshot.completed or 0)
    assert {line["error"]["code"] for line in not_run} == {"batch_cancelled"}
    assert snapshot.failure() is None
    view = run.view()
    assert view["status"] == "Cancelled"
    assert view["endedAt"] == iso_of_unix(azure["cancelled_at"])


def test_cancelling_a_finished_batch_returns_it_as_it_is(emulator: RunningEmulator, eastus: DataPlane) -> None:
    emulator.set_speeds(RESOURCE, validationSeconds=1, finalizingSeconds=1)
    run = Run(eastus.upload(batch_lines(2))["id"]).submitted()
    completed, _ = run.check_until("completed")

    result = run.cancel()

    assert result["batch"] == completed["batch"]
    (cancel,) = emulator.requests_log(service="openai", route="batches.cancel")
    assert cancel["status"] == 409
    assert emulator_batch(emulator, run.batch.id)["status"] == "completed"


def test_cancelling_twice_keeps_cancelling(emulator: RunningEmulator, eastus: DataPlane) -> None:
    run = Run(eastus.upload(batch_lines(2))["id"]).submitted()

    first = run.cancel()["batch"]
    again = run.cancel()["batch"]

    assert (first["status"], again["status"]) == ("cancelling", "cancelling")
    assert again["cancelling_at"] == first["cancelling_at"]


# Expiry, on an emulator of its own whose clock runs 24 hours in under two seconds --------------------------------


@pytest.fixture
def fast_settings(
    settings: dict[str, str], fast_emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The app settings pointed at the fast emulator instead of the shared one."""
    fast_emulator.reset()
    resources = json.loads(settings["AZURE_OPENAI_RESOURCES"])
    resources[0]["endpoint"] = fast_emulator.resource(RESOURCE)["endpoint"]
    changed = {
        "AZURE_OPENAI_RESOURCES": json.dumps(resources),
        "IDENTITY_ENDPOINT": fast_emulator.endpoints["identity"]["endpoint"],
        "IDENTITY_HEADER": fast_emulator.endpoints["identity"]["header"],
    }
    for name, value in changed.items():
        monkeypatch.setenv(name, value)
    services.reset()
    return {**settings, **changed}


@pytest.mark.usefixtures("fast_settings")
def test_batch_past_its_window_is_expired_with_partial_results_and_a_hint(fast_emulator: RunningEmulator) -> None:
    resource = fast_emulator.resource(RESOURCE)
    plane = DataPlane(resource["endpoint"], resource["apiKey"])
    fast_emulator.set_speeds(RESOURCE, validationSeconds=10, requestsPerSecond=0.001)  # 100 requests need 28 h
    run = Run(plane.upload(batch_lines(100))["id"]).submitted()

    checked, seen = run.check_until("expired", timeout=30)

    assert seen[-1] == "expired"
    assert set(seen) <= {"validating", "in_progress", "expired"}
    azure = emulator_batch(fast_emulator, run.batch.id)
    snapshot = BatchSnapshot.from_dict(checked["batch"])
    assert (snapshot.total, snapshot.completed, snapshot.failed) == (100, 86, 0)
    assert snapshot.outputs()["output_file_id"] == azure["output_file_id"]
    assert snapshot.outputs()["error_file_id"] == azure["error_file_id"]
    assert snapshot.failure() == Failure(
        "expired", "The batch expired before all requests finished.", None, None, HINTS["expired"]
    )
    view = run.view()
    assert view["status"] == "Failed"
    assert view["endedAt"] == iso_of_unix(azure["expired_at"]) == iso_of_unix(azure["created_at"] + 86400)


# runs.py ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("azure_status", "expected"),
    [
        ("validating", RunStatus.RUNNING),
        ("in_progress", RunStatus.RUNNING),
        ("finalizing", RunStatus.RUNNING),
        ("cancelling", RunStatus.RUNNING),
        ("completed", RunStatus.SUCCESS),
        ("failed", RunStatus.FAILED),
        ("expired", RunStatus.FAILED),
        ("cancelled", RunStatus.CANCELLED),
    ],
)
def test_run_status_maps_each_azure_status(azure_status: str, expected: RunStatus) -> None:
    assert run_status(azure_status) is expected


@pytest.mark.parametrize("end", ["completed", "failed", "expired", "cancelled"])
def test_started_and_ended_are_iso_utc_from_created_at_and_the_end_stamp(end: str) -> None:
    batch = {"id": "batch_1", "status": end, "created_at": 1_700_000_000, f"{end}_at": 1_700_003_661}
    run = Run("file-x", batch=BatchSnapshot.of(Batch.from_azure(batch)))

    view = run.view()

    assert (view["startedAt"], view["endedAt"]) == ("2023-11-14T22:13:20Z", "2023-11-14T23:14:21Z")


def test_running_batch_has_no_end_and_an_unsubmitted_run_no_start() -> None:
    running = Run("file-x", batch=BatchSnapshot("batch_1", "in_progress", created_at=1_700_000_000))
    assert (running.view()["startedAt"], running.view()["endedAt"]) == ("2023-11-14T22:13:20Z", None)
    view = Run("file-x").view()
    assert (view["startedAt"], view["endedAt"], view["runId"]) == (None, None, None)
    assert view["outputs"] == dict.fromkeys(
        [
            "output_file_id",
            "error_file_id",
            "request_counts_total",
            "request_counts_completed",
            "request_counts_failed",
            "output_blob",
            "error_blob",
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "cached_tokens",
            "estimatedCost",
        ]
    )


def test_snapshot_tolerates_azures_quirks() -> None:
    batch = Batch.from_azure(
        {
            "id": "batch_1",
            "status": "failed",
            "input_file_id": "file-secret",
            "output_file_id": "",
            "error_file_id": "",
            "request_counts": None,
            "errors": {"data": [{"code": "input_file_not_found", "message": "The input file 'file-secret' was lost."}]},
            "completed_at": None,
            "failed_at": 0,
        }
    )
    snapshot = BatchSnapshot.of(batch)

    assert (snapshot.output_file_id, snapshot.error_file_id) == (None, None)
    assert (snapshot.total, snapshot.completed, snapshot.failed) == (None, None, None)
    assert snapshot.failed_at is None
    assert batch.input_file_id == "file-secret"
    assert snapshot.errors == (Failure.of("input_file_not_found", "The input file '<input file id>' was lost."),)
    assert "file-secret" not in json.dumps(snapshot.to_dict())
    assert BatchSnapshot.from_dict(snapshot.to_dict()) == snapshot


# azure_openai.AzureOpenAIClient -----------------------------------------------------------------------------------


def test_client_authenticates_with_an_entra_token_by_default(emulator: RunningEmulator) -> None:
    client = services.openai_client(RESOURCE)

    list(client.list_batches())

    (listing,) = emulator.requests_log(service="openai", route="batches.list")
    assert listing["auth"] == "bearer"
    assert listing["query"] == {"api-version": "2024-10-21", "limit": "100"}


def test_client_with_an_api_key_sends_it(emulator: RunningEmulator) -> None:
    resource = emulator.resource(RESOURCE)
    client = AzureOpenAIClient(resource["endpoint"], "2024-10-21", api_key=resource["apiKey"])

    list(client.list_batches())

    assert [e["auth"] for e in emulator.requests_log(service="openai", route="batches.list")] == ["api-key"]


def test_client_uses_the_api_key_from_key_vault_when_the_resource_names_apiKeySecret(
    emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_secret(emulator, "aoai-eastus-key", emulator.resource(RESOURCE)["apiKey"])
    resource = emulator.resource(RESOURCE)
    monkeypatch.setenv(
        "AZURE_OPENAI_RESOURCES",
        json.dumps(
            [
                {
                    "name": RESOURCE,
                    "endpoint": resource["endpoint"],
                    "subscriptionId": emulator.endpoints["arm"]["subscriptionId"],
                    "resourceGroup": emulator.endpoints["arm"]["resourceGroup"],
                    "apiKeySecret": "aoai-eastus-key",
                }
            ]
        ),
    )
    services.reset()

    list(services.openai_client(RESOURCE).list_batches())

    assert [e["auth"] for e in emulator.requests_log(service="openai", route="batches.list")] == ["api-key"]


def test_a_rotated_api_key_in_key_vault_takes_over_without_a_restart(
    emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    resource = emulator.resource(RESOURCE)
    set_secret(emulator, "aoai-eastus-key", "0" * 32)  # a key that no longer works
    monkeypatch.setenv(
        "AZURE_OPENAI_RESOURCES",
        json.dumps(
            [
                {
                    "name": RESOURCE,
                    "endpoint": resource["endpoint"],
                    "apiKeySecret": "aoai-eastus-key",
                    "subscriptionId": emulator.endpoints["arm"]["subscriptionId"],
                    "resourceGroup": emulator.endpoints["arm"]["resourceGroup"],
                }
            ]
        ),
    )
    services.reset()
    with pytest.raises(AzureError) as refused:
        list(services.openai_client(RESOURCE).list_batches())
    assert refused.value.status == 401

    set_secret(emulator, "aoai-eastus-key", resource["apiKey"])  # rotated in the vault
    monkeypatch.setattr(services, "API_KEY_REFRESH_SECONDS", 0.0)

    assert list(services.openai_client(RESOURCE).list_batches()) == []


def test_errors_carry_status_code_and_retry_after(emulator: RunningEmulator, eastus: DataPlane) -> None:
    client = services.openai_client(RESOURCE)
    file_id = eastus.upload(batch_lines(1))["id"]
    emulator.add_fault(service="openai", route="batches.create", status=429, retryAfter=2.5, times=1)

    with pytest.raises(AzureError) as throttled:
        client.create_batch(file_id, "/chat/completions", "24h")
    with pytest.raises(AzureError) as refused:
        client.create_batch(file_id, "/chat/completions", "1h")
    with pytest.raises(AzureError) as missing:
        client.get_batch("batch_missing")

    assert (throttled.value.status, throttled.value.code, throttled.value.retry_after) == (429, "429", 2.5)
    assert throttled.value.transient
    assert (refused.value.status, refused.value.code, refused.value.retry_after) == (400, "invalid_request", None)
    assert refused.value.message == "The completion window '1h' is not supported. Supported values: 24h."
    assert not refused.value.transient
    assert (missing.value.status, missing.value.code) == (404, "notFound")
    assert missing.value.message == "Batch with id 'batch_missing' was not found."
    assert len(emulator.requests_log(service="openai", route="batches.create")) == 2  # a create is never retried


def test_auth_failures_carry_azures_401_bodies(emulator: RunningEmulator) -> None:
    class WrongToken:
        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            from azure.core.credentials import AccessToken

            return AccessToken("not-a-jwt", 0)

    endpoint = emulator.resource(RESOURCE)["endpoint"]

    with pytest.raises(AzureError) as bad_token:
        AzureOpenAIClient(endpoint, "2024-10-21", credential=WrongToken()).get_batch("batch_1")
    with pytest.raises(AzureError) as bad_key:
        AzureOpenAIClient(endpoint, "2024-10-21", api_key="wrong").get_batch("batch_1")

    assert (bad_token.value.status, bad_token.value.code) == (401, "401")
    assert bad_token.value.message.startswith("Unauthorized. Access token is missing, invalid")
    assert (bad_key.value.status, bad_key.value.code) == (401, "401")
    assert bad_key.value.message.startswith("Access denied due to invalid subscription key")


def test_no_reply_is_an_error_without_status(emulator: RunningEmulator, eastus: DataPlane) -> None:
    client = services.openai_client(RESOURCE)
    emulator.add_fault(service="openai", route="batches.create", drop=True, times=1)

    with pytest.raises(AzureError) as dropped:
        client.create_batch(eastus.upload(batch_lines(1))["id"], "/chat/completions", "24h")

    assert (dropped.value.status, dropped.value.code, dropped.value.transient) == (None, "NoReply", True)
    assert emulator.batches(RESOURCE) == []


def test_list_batches_pages_past_100_and_find_batch_reaches_the_second_page(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    # Batches of a file the resource does not hold cost nothing: they fail validation and enqueue no tokens.
    created = []
    for index in range(105):
        response = eastus.create_batch("file-notheld", metadata={"n": str(index)})
        assert response.status_code == 200, response.text
        created.append(response.json())
    client = services.openai_client(RESOURCE)

    listed = list(client.list_batches())
    oldest = client.find_batch({"n": "0"}, created_since=0)

    assert [b.id for b in listed] == [b["id"] for b in reversed(created)]  # newest first, each once
    assert oldest is not None
    assert oldest.id == created[0]["id"]
    pages = emulator.requests_log(service="openai", route="batches.list")
    assert [p["query"].get("after") for p in pages] == [None, listed[99].id] * 2
    assert {p["query"]["limit"] for p in pages} == {"100"}
    newest = client.find_batch({"n": "104"}, created_since=0)
    assert newest is not None
    assert newest.id == created[-1]["id"]
    assert len(emulator.requests_log(service="openai", route="batches.list")) == 5  # found on the first page


def test_a_lookup_only_submit_creates_nothing_and_finds_an_earlier_batch(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    run = Run(input_file_id=eastus.upload(batch_lines(2))["id"])

    assert run.submit(lookup_only=True)["outcome"] == "not_created"
    assert emulator.batches(RESOURCE) == []

    created = run.submit()
    found = run.submit(lookup_only=True)
    assert (created["outcome"], found["outcome"]) == ("submitted", "reattached")
    assert found["batch"]["id"] == created["batch"]["id"]


def test_an_unreachable_vault_at_submit_raises_so_it_is_retried(emulator: RunningEmulator, eastus: DataPlane) -> None:
    set_secret(emulator, "batch-input", eastus.upload(batch_lines(2))["id"])
    ref = Run(input_file_secret="batch-input").resolve()
    emulator.add_fault(service="keyvault", route="secrets.get*", status=503)
    run = Run(input_file_secret="batch-input", secret_version=ref["version"])

    with pytest.raises(SecretUnavailable) as raised:
        run.submit()

    assert raised.value.transient
    assert emulator.batches(RESOURCE) == []


def test_the_next_attempt_after_a_quota_failure_does_not_reattach_to_the_failed_batch(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    file_id = eastus.upload(batch_lines(2))["id"]
    first = Run(file_id).submit()

    second = Run(file_id, attempt=2).submit()

    assert (first["outcome"], second["outcome"]) == ("submitted", "submitted")
    assert first["batch"]["id"] != second["batch"]["id"]
    attempts = sorted(b["metadata"]["runAttempt"] for b in emulator.batches(RESOURCE))
    assert attempts == ["1", "2"]


# collect_results ----------------------------------------------------------------------------------------------------


def collect_step(run: Run) -> dict[str, Any]:
    batch = run.batch
    file_ids = [f for f in (batch.output_file_id, batch.error_file_id) if f]
    return CollectResults(run.run_id, RESOURCE, file_ids, "gpt-4o", "2024-08-06").to_dict()


def staged(run: Run, kind: str) -> list[bytes]:
    return b"".join(services.staging().chunks(staged_name(run.run_id, kind))).splitlines()


def test_collecting_a_completed_batch_stages_one_result_per_request_and_sums_usage(
    emulator: RunningEmulator, eastus: DataPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    prices = {
        "currency": "USD",
        "batchDiscount": 0.5,
        "models": {"gpt-4o": {"input": 2.5, "cachedInput": 1.25, "output": 10}},
    }
    monkeypatch.setenv("PRICES", json.dumps(prices))
    services.reset()
    emulator.set_speeds(RESOURCE, validationSeconds=1, finalizingSeconds=1)
    run = Run(
        eastus.upload(
            batch_lines(12)
            + _lines(
                _line("boom") | {"body": {"model": DEPLOYMENT, "messages": [{"role": "user", "content": "[[fail]]"}]}}
            )
        )["id"]
    ).submitted()
    run.check_until("completed")

    answer = activity("collect_results", collect_step(run))

    output = eastus.content_lines(run.batch.output_file_id)  # type: ignore[arg-type]
    errors = eastus.content_lines(run.batch.error_file_id)  # type: ignore[arg-type]
    expected = {
        k: sum(line["response"]["body"]["usage"][k] for line in output)
        for k in ("prompt_tokens", "completion_tokens", "total_tokens")
    }
    assert (answer["seen"], answer["succeeded"], answer["failed"]) == ("ResultsCollected", 12, 1)
    assert {k: answer["usage"][k] for k in expected} == expected
    uncached = expected["prompt_tokens"] - answer["usage"]["cached_tokens"]
    standard = (uncached * 2.5 + answer["usage"]["cached_tokens"] * 1.25 + expected["completion_tokens"] * 10) / 1e6
    assert answer["estimated_cost"] == {"amount": round(standard * 0.5, 6), "currency": "USD"}
    results = [json.loads(line) for line in staged(run, "all")]
    assert sorted(r["custom_id"] for r in results) == sorted(
        [line["custom_id"] for line in output] + [errors[0]["custom_id"]]
    )
    failed = [json.loads(line) for line in staged(run, "failed")]
    assert [(r["custom_id"], r["status"], r["statusCode"], r["error"]["code"]) for r in failed] == [
        ("boom", "failed", 500, "server_error")
    ]
    succeeded = next(r for r in results if r["status"] == "succeeded")
    source = next(line for line in output if line["custom_id"] == succeeded["custom_id"])
    assert succeeded["content"] == source["response"]["body"]["choices"][0]["message"]["content"]
    assert succeeded["usage"]["total_tokens"] == source["response"]["body"]["usage"]["total_tokens"]
    raw = staged(run, "raw")
    assert sorted(json.loads(line)["custom_id"] for line in raw) == sorted(r["custom_id"] for r in results)
    assert [json.loads(line) for line in staged(run, "raw-failed")] == errors


def test_collecting_a_cancelled_batch_keeps_its_partial_results(emulator: RunningEmulator, eastus: DataPlane) -> None:
    emulator.set_speeds(RESOURCE, validationSeconds=1, requestsPerSecond=2, cancellingSeconds=2)
    run = Run(eastus.upload(batch_lines(60))["id"]).submitted()
    wait_for(lambda: (run.check()["batch"]["completed"] or 0) > 0, interval=0.02, what="some requests to finish")
    run.took(run.cancel()["batch"])
    run.check_until("cancelled")

    answer = activity("collect_results", collect_step(run))

    assert answer["succeeded"] == run.batch.completed
    assert answer["succeeded"] + answer["failed"] == 60
    assert answer["estimated_cost"] is None  # no price table configured
    codes = {json.loads(line)["error"]["code"] for line in staged(run, "failed")}
    assert codes == {"batch_cancelled"}


def test_collecting_a_batch_that_failed_validation_stages_empty_results(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    emulator.set_speeds(RESOURCE, validationSeconds=1)
    run = Run(eastus.upload(_lines(_line("a", url="/embeddings")))["id"]).submitted()
    run.check_until("failed")

    answer = activity("collect_results", collect_step(run))

    assert (answer["succeeded"], answer["failed"], answer["usage"]["total_tokens"]) == (0, 0, 0)
    assert staged(run, "all") == []


def test_a_shards_uploads_are_deleted_and_a_file_already_gone_is_no_error(emulator: RunningEmulator) -> None:
    target = emulator.resource(RESOURCE)
    plane = DataPlane(target["endpoint"], target["apiKey"])
    file_id = plane.upload(batch_lines(2))["id"]
    delete = functions_by_name()["delete_uploads"]
    step = {
        "run_id": f"gpt-4o-batch::batch::{'0' * 32}::s0",
        "files": {RESOURCE: file_id},
    }

    assert delete(step) == {"seen": "UploadsDeleted", "cancel_requested": False}
    assert plane.request("GET", f"files/{file_id}").status_code == 404
    assert delete(step)["seen"] == "UploadsDeleted"  # done again (Durable may run an activity twice): no error
    emulator.add_fault(service="openai", route="files.delete", status=500, times=1)
    with pytest.raises(AzureError) as failed:
        delete(step | {"files": {RESOURCE: plane.upload(batch_lines(1))["id"]}})
    assert failed.value.status == 500
