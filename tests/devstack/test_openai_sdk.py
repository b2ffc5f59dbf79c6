"""The official `openai` package's AzureOpenAI client works against the emulator unchanged."""

from __future__ import annotations

import io

import openai
import pytest
from azure.identity import ManagedIdentityCredential, get_bearer_token_provider
from openai import AzureOpenAI

from tests.conftest import RunningEmulator, wait_for
from tests.devstack.conftest import batch_lines

RESOURCE = "aoai-devstack-eastus"


@pytest.fixture
def key_client(emulator: RunningEmulator) -> AzureOpenAI:
    resource = emulator.resource(RESOURCE)
    return AzureOpenAI(
        azure_endpoint=resource["endpoint"], api_key=resource["apiKey"], api_version="2024-10-21", max_retries=0
    )


@pytest.fixture
def token_client(emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> AzureOpenAI:
    monkeypatch.setenv("IDENTITY_ENDPOINT", emulator.endpoints["identity"]["endpoint"])
    monkeypatch.setenv("IDENTITY_HEADER", emulator.endpoints["identity"]["header"])
    provider = get_bearer_token_provider(ManagedIdentityCredential(), "https://cognitiveservices.azure.com/.default")
    return AzureOpenAI(
        azure_endpoint=emulator.resource(RESOURCE)["endpoint"],
        azure_ad_token_provider=provider,
        api_version="2024-10-21",
        max_retries=0,
    )


@pytest.mark.parametrize("client_fixture", ["key_client", "token_client"])
def test_files_and_batches_round_trip_with_the_sdk(request: pytest.FixtureRequest, client_fixture: str) -> None:
    client: AzureOpenAI = request.getfixturevalue(client_fixture)

    uploaded = client.files.create(file=("input.jsonl", io.BytesIO(batch_lines(5).encode())), purpose="batch")
    client.files.wait_for_processing(uploaded.id, poll_interval=0.05, max_wait_seconds=20)
    created = client.batches.create(
        input_file_id=uploaded.id, endpoint="/chat/completions", completion_window="24h", metadata={"runId": "sdk-test"}
    )
    listed = client.batches.list(limit=10)
    done = wait_for(
        lambda: (b := client.batches.retrieve(created.id)).status == "completed" and b, what="the batch to complete"
    )
    output = client.files.content(done.output_file_id).text.splitlines()

    assert uploaded.id.startswith("file-")
    assert uploaded.purpose == "batch"
    assert created.status == "validating"
    assert created.metadata == {"runId": "sdk-test"}
    assert created.id in [b.id for b in listed.data]
    assert done.request_counts is not None
    assert done.request_counts.completed == 5
    assert len(output) == 5


def test_cancel_with_the_sdk(key_client: AzureOpenAI) -> None:
    uploaded = key_client.files.create(file=("input.jsonl", io.BytesIO(batch_lines(3).encode())), purpose="batch")
    key_client.files.wait_for_processing(uploaded.id, poll_interval=0.05, max_wait_seconds=20)
    batch = key_client.batches.create(input_file_id=uploaded.id, endpoint="/chat/completions", completion_window="24h")

    cancelling = key_client.batches.cancel(batch.id)

    assert cancelling.status == "cancelling"
    wait_for(lambda: key_client.batches.retrieve(batch.id).status == "cancelled", what="the batch to be cancelled")


@pytest.mark.parametrize("client_fixture", ["key_client", "token_client"])
def test_chat_completion_with_the_sdk(request: pytest.FixtureRequest, client_fixture: str) -> None:
    client: AzureOpenAI = request.getfixturevalue(client_fixture)

    reply = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hello"}], max_tokens=50
    )

    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.total_tokens > 0


def test_sdk_surfaces_wrong_key_as_authentication_error(emulator: RunningEmulator) -> None:
    client = AzureOpenAI(
        azure_endpoint=emulator.resource(RESOURCE)["endpoint"], api_key="wrong", api_version="2024-10-21", max_retries=0
    )

    with pytest.raises(openai.AuthenticationError):
        client.batches.list()


def test_sdk_surfaces_token_limit_as_bad_request(key_client: AzureOpenAI, emulator: RunningEmulator) -> None:
    emulator.put_deployment(
        RESOURCE,
        "gpt-4o-batch",
        model={"format": "OpenAI", "name": "gpt-4o", "version": "1"},
        sku={"name": "GlobalBatch", "capacity": 1},
        enqueuedTokenLimit=10,
    )
    uploaded = key_client.files.create(file=("input.jsonl", io.BytesIO(batch_lines(5).encode())), purpose="batch")
    key_client.files.wait_for_processing(uploaded.id, poll_interval=0.05, max_wait_seconds=20)

    with pytest.raises(openai.BadRequestError) as raised:
        key_client.batches.create(input_file_id=uploaded.id, endpoint="/chat/completions", completion_window="24h")

    assert raised.value.code == "token_limit_exceeded"
