"""The official `openai` package's plain `OpenAI` client works against the emulated v1 API unchanged, as Learn's v1
examples use it: `OpenAI(base_url=f"{endpoint}/openai/v1/", api_key=...)`, with the API key or an Entra token
provider as `api_key`."""

from __future__ import annotations

import io

import openai
import pytest
from azure.identity import ManagedIdentityCredential, get_bearer_token_provider
from openai import OpenAI

from tests.conftest import RunningEmulator, wait_for
from tests.devstack.conftest import batch_lines

RESOURCE = "aoai-devstack-eastus"


def v1_base_url(emulator: RunningEmulator) -> str:
    return f"{emulator.resource(RESOURCE)['endpoint']}/openai/v1/"


@pytest.fixture
def key_client(emulator: RunningEmulator) -> OpenAI:
    return OpenAI(base_url=v1_base_url(emulator), api_key=emulator.resource(RESOURCE)["apiKey"], max_retries=0)


@pytest.fixture
def token_client(emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> OpenAI:
    monkeypatch.setenv("IDENTITY_ENDPOINT", emulator.endpoints["identity"]["endpoint"])
    monkeypatch.setenv("IDENTITY_HEADER", emulator.endpoints["identity"]["header"])
    provider = get_bearer_token_provider(ManagedIdentityCredential(), "https://cognitiveservices.azure.com/.default")
    return OpenAI(base_url=v1_base_url(emulator), api_key=provider, max_retries=0)


@pytest.mark.parametrize("client_fixture", ["key_client", "token_client"])
def test_files_and_batches_round_trip_with_the_openai_client(
    request: pytest.FixtureRequest, client_fixture: str, emulator: RunningEmulator
) -> None:
    client: OpenAI = request.getfixturevalue(client_fixture)
    lines = batch_lines(5, url="/v1/chat/completions")

    uploaded = client.files.create(file=("input.jsonl", io.BytesIO(lines.encode())), purpose="batch")
    client.files.wait_for_processing(uploaded.id, poll_interval=0.05, max_wait_seconds=20)
    created = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",  # the only chat value the SDK's types allow
        completion_window="24h",
        metadata={"runId": "sdk-v1"},
    )
    listed = client.batches.list(limit=10)
    done = wait_for(
        lambda: (b := client.batches.retrieve(created.id)).status == "completed" and b, what="the batch to complete"
    )
    output = client.files.content(done.output_file_id).text.splitlines()

    assert uploaded.id.startswith("file-")
    assert created.status == "validating"
    assert created.endpoint == "/chat/completions"
    assert created.metadata == {"runId": "sdk-v1"}
    assert created.id in [b.id for b in listed.data]
    assert done.request_counts is not None
    assert done.request_counts.completed == 5
    assert len(output) == 5
    assert [e["route"] for e in emulator.requests_log(route="v1.batches.create")] == ["v1.batches.create"]


def test_upload_with_expires_after_through_the_sdk(key_client: OpenAI) -> None:
    uploaded = key_client.files.create(
        file=("input.jsonl", io.BytesIO(batch_lines(1).encode())),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 1209600},
    )

    assert uploaded.expires_at == uploaded.created_at + 1209600


def test_cancel_with_the_sdk(key_client: OpenAI) -> None:
    uploaded = key_client.files.create(file=("input.jsonl", io.BytesIO(batch_lines(3).encode())), purpose="batch")
    key_client.files.wait_for_processing(uploaded.id, poll_interval=0.05, max_wait_seconds=20)
    batch = key_client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )

    cancelling = key_client.batches.cancel(batch.id)

    assert cancelling.status == "cancelling"
    wait_for(lambda: key_client.batches.retrieve(batch.id).status == "cancelled", what="the batch to be cancelled")


@pytest.mark.parametrize("client_fixture", ["key_client", "token_client"])
def test_chat_completion_with_the_openai_client(request: pytest.FixtureRequest, client_fixture: str) -> None:
    client: OpenAI = request.getfixturevalue(client_fixture)

    reply = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hello"}], max_tokens=50
    )

    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.total_tokens > 0


def test_sdk_surfaces_errors_with_their_codes(key_client: OpenAI, emulator: RunningEmulator) -> None:
    wrong_key = OpenAI(base_url=v1_base_url(emulator), api_key="wrong", max_retries=0)

    with pytest.raises(openai.AuthenticationError):
        wrong_key.batches.list()
    with pytest.raises(openai.NotFoundError) as missing:
        key_client.files.retrieve("file-0123456789abcdef0123456789abcdef")
    with pytest.raises(openai.NotFoundError) as no_deployment:
        key_client.chat.completions.create(model="no-such-deployment", messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.BadRequestError) as bad_endpoint:
        key_client.batches.create(input_file_id="file-abc", endpoint="/v1/embeddings", completion_window="24h")

    assert missing.value.code == "notFound"
    assert no_deployment.value.code == "DeploymentNotFound"
    assert (bad_endpoint.value.code, bad_endpoint.value.param) == ("invalid_request", "endpoint")
