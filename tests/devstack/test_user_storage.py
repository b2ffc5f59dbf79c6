"""The user-storage account: blobs put there with the account key are read over HTTPS with the managed identity,
as the app reads a `blobUrl` input in Azure; no token, or a token for another audience, is refused."""

from __future__ import annotations

import uuid

import pytest
import requests
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
from azure.storage.blob import BlobClient, BlobServiceClient

from tests.conftest import RunningEmulator, RunningUserStorage, identity_token

STORAGE_API_VERSION = "2023-11-03"
CONTENT = b'{"custom_id": "task-0", "method": "POST", "url": "/chat/completions", "body": {}}\n' * 3


@pytest.fixture
def managed_identity(emulator_process: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> RunningEmulator:
    """IDENTITY_ENDPOINT and IDENTITY_HEADER from the identity emulator, as App Service sets them."""
    identity = emulator_process.endpoints["identity"]
    monkeypatch.setenv("IDENTITY_ENDPOINT", identity["endpoint"])
    monkeypatch.setenv("IDENTITY_HEADER", identity["header"])
    return emulator_process


def put_blob(storage: RunningUserStorage, content: bytes = CONTENT) -> str:
    """Uploads a blob with the account key (as a user puts an input there) and returns its URL."""
    container, name = f"inputs-{uuid.uuid4().hex[:12]}", "requests.jsonl"
    service = BlobServiceClient.from_connection_string(storage.connection_string, connection_verify=storage.ca_bundle)
    service.create_container(container).upload_blob(name, content)
    return storage.blob_url(container, name)


def get_blob(storage: RunningUserStorage, url: str, token: str | None = None) -> requests.Response:
    """A plain Get Blob over HTTPS trusting the local CA, with a bearer token or none."""
    headers = {"x-ms-version": STORAGE_API_VERSION}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(url, headers=headers, verify=storage.ca_bundle, timeout=10)


@pytest.mark.usefixtures("managed_identity")
def test_a_blob_put_with_the_account_key_reads_with_the_managed_identity(
    user_storage: RunningUserStorage,
) -> None:
    url = put_blob(user_storage)

    blob = BlobClient.from_blob_url(
        url, credential=ManagedIdentityCredential(), connection_verify=user_storage.ca_bundle
    )

    assert url.startswith("https://127.0.0.1:")
    assert blob.download_blob().readall() == CONTENT


@pytest.mark.usefixtures("managed_identity")
def test_app_code_trusts_the_account_through_requests_ca_bundle(
    user_storage: RunningUserStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = put_blob(user_storage)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", user_storage.ca_bundle)  # what the local Functions host sets

    blob = BlobClient.from_blob_url(url, credential=DefaultAzureCredential())  # the app's code, unchanged

    assert blob.download_blob().readall() == CONTENT


def test_a_request_without_a_token_is_refused(user_storage: RunningUserStorage) -> None:
    url = put_blob(user_storage)

    response = get_blob(user_storage, url)

    assert response.status_code == 403
    assert response.headers["x-ms-error-code"] == "AuthorizationFailure"
    assert CONTENT not in response.content


@pytest.mark.parametrize("audience", ["https://vault.azure.net", "https://cognitiveservices.azure.com"])
def test_a_token_for_another_audience_is_refused(
    user_storage: RunningUserStorage, emulator_process: RunningEmulator, audience: str
) -> None:
    url = put_blob(user_storage)
    token = identity_token(emulator_process, audience)

    response = get_blob(user_storage, url, token)

    assert response.status_code == 403
    assert response.headers["x-ms-error-code"] == "AuthenticationFailed"


@pytest.mark.parametrize("resource", ["https://storage.azure.com", "https://storage.azure.com/"])
def test_the_identity_emulators_storage_tokens_are_accepted(
    user_storage: RunningUserStorage, emulator_process: RunningEmulator, resource: str
) -> None:
    url = put_blob(user_storage)
    token = identity_token(emulator_process, resource)

    response = get_blob(user_storage, url, token)

    assert response.status_code == 200
    assert response.content == CONTENT


def test_the_certificate_is_trusted_only_with_the_ca_bundle(user_storage: RunningUserStorage) -> None:
    url = put_blob(user_storage)

    session = requests.Session()
    session.trust_env = False  # the default trust store only, whatever REQUESTS_CA_BUNDLE says

    with pytest.raises(requests.exceptions.SSLError):
        session.get(url, headers={"x-ms-version": STORAGE_API_VERSION}, timeout=10)
