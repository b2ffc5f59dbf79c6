"""`python -m devstack upload-input`: a batch input file on the emulated Azure OpenAI resource, as a user prepares
one for a Batch Job — uploaded through the Files API with purpose `batch`, and its id optionally kept in the local
Key Vault as the secret a job's `inputFileSecret` names."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import requests

API_VERSION = "2024-10-21"
PROCESSING_TIMEOUT = 60.0  # real seconds; the emulator processes a file in seconds of emulated time


class InputError(RuntimeError):
    """The stack is not there, or it refused the file or the secret; the message says which."""


def read_endpoints(path: Path) -> dict[str, Any]:
    try:
        endpoints = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"no {path}: start the local stack first (make up)") from None
    if not isinstance(endpoints, dict) or not endpoints.get("openai"):
        raise InputError(f"{path} lists no Azure OpenAI resource: start the local stack first (make up)")
    return endpoints


def upload_input(
    endpoints: dict[str, Any], content: bytes, filename: str, resource: str | None = None, *, wait: bool = True
) -> str:
    """Uploads a JSONL batch input file (purpose `batch`) and returns its id. As with the real service, the file
    is usable once it reads `processed`, which `wait` waits for."""
    resources = endpoints["openai"]
    name = resource or next(iter(resources))
    if name not in resources:
        raise InputError(f"no Azure OpenAI resource '{name}' in the stack; it has {', '.join(resources)}")
    target = resources[name]
    files = f"{target['endpoint']}/openai/files"
    headers = {"api-key": target["apiKey"]}
    response = requests.post(
        files,
        params={"api-version": API_VERSION},
        headers=headers,
        data={"purpose": "batch"},
        files={"file": (filename, content)},
        timeout=60,
    )
    if response.status_code != 201:
        raise InputError(f"{name} refused the upload ({response.status_code}): {response.text}")
    uploaded = response.json()
    file_id = str(uploaded["id"])
    deadline = time.monotonic() + PROCESSING_TIMEOUT
    while wait and uploaded.get("status") != "processed":
        if uploaded.get("status") == "error" or time.monotonic() > deadline:
            raise InputError(f"file {file_id} was not processed: {uploaded.get('status_details') or 'timeout'}")
        time.sleep(0.2)
        check = requests.get(f"{files}/{file_id}", params={"api-version": API_VERSION}, headers=headers, timeout=30)
        check.raise_for_status()
        uploaded = check.json()
    return file_id


def store_secret(endpoints: dict[str, Any], name: str, value: str) -> None:
    """Sets the secret in the local Key Vault with the emulated managed identity, as the app reads it."""
    from azure.core.exceptions import AzureError
    from azure.identity import ManagedIdentityCredential
    from azure.keyvault.secrets import SecretClient

    os.environ["IDENTITY_ENDPOINT"] = endpoints["identity"]["endpoint"]  # what App Service sets for the identity
    os.environ["IDENTITY_HEADER"] = endpoints["identity"]["header"]
    vault = endpoints["keyVault"]
    client = SecretClient(
        vault["url"],
        ManagedIdentityCredential(),
        verify_challenge_resource=False,  # 127.0.0.1 cannot end in .vault.azure.net
        connection_verify=vault["caBundle"],  # trust the local CA
    )
    try:
        client.set_secret(name, value)
    except AzureError as error:
        raise InputError(f"the Key Vault refused secret '{name}': {error.message}") from error


def main(path: Path, secret: str | None, resource: str | None, endpoints_file: Path) -> int:
    try:
        endpoints = read_endpoints(endpoints_file)
        content = path.read_bytes()
        file_id = upload_input(endpoints, content, path.name, resource)
        if secret:
            store_secret(endpoints, secret, file_id)
    except (InputError, OSError, requests.RequestException) as error:
        print(f"devstack: {error}", file=sys.stderr)
        return 1
    print(file_id)
    return 0
