"""Helpers for talking to the emulated Azure OpenAI data plane with plain HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from tests.conftest import RunningEmulator, wait_for

API_VERSION = "2024-10-21"


class DataPlane:
    """Raw HTTP access to one emulated Azure OpenAI resource, authenticated with its api-key: api-version 2024-10-21
    (`/openai/...?api-version=2024-10-21`), or with `v1` the v1 API (`/openai/v1/...`, no api-version)."""

    def __init__(self, endpoint: str, api_key: str, *, v1: bool = False) -> None:
        self.endpoint = endpoint
        self.v1 = v1
        self.session = requests.Session()
        self.session.headers["api-key"] = api_key

    def url(self, path: str) -> str:
        return f"{self.endpoint}/openai/{'v1/' if self.v1 else ''}{path.lstrip('/')}"

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        params = {**({} if self.v1 else {"api-version": API_VERSION}), **kwargs.pop("params", {})}
        return self.session.request(method, self.url(path), params=params, timeout=30, **kwargs)

    def upload(
        self, content: bytes | str, filename: str = "input.jsonl", purpose: str = "batch", *, wait: bool = True
    ) -> dict[str, Any]:
        """Uploads a file and, with `wait`, polls it until it reads `processed`, as a client must before it creates
        a batch from it; returns the file as last read."""
        data = content.encode() if isinstance(content, str) else content
        response = self.request("POST", "files", data={"purpose": purpose}, files={"file": (filename, data)})
        assert response.status_code == (200 if self.v1 else 201), response.text
        uploaded = dict(response.json())
        if not wait or uploaded["status"] == "processed":
            return uploaded

        def processed() -> dict[str, Any] | None:
            current = self.request("GET", f"files/{uploaded['id']}")
            assert current.status_code == 200, current.text
            return dict(current.json()) if current.json()["status"] == "processed" else None

        return wait_for(processed, timeout=20, what=f"file {uploaded['id']} to be processed")

    def create_batch(self, input_file_id: str, **extra: Any) -> requests.Response:
        body = {"input_file_id": input_file_id, "endpoint": "/chat/completions", "completion_window": "24h", **extra}
        return self.request("POST", "batches", json=body)

    def batch(self, batch_id: str) -> dict[str, Any]:
        response = self.request("GET", f"batches/{batch_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def content_lines(self, file_id: str) -> list[dict[str, Any]]:
        response = self.request("GET", f"files/{file_id}/content")
        assert response.status_code == 200, response.text
        return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def batch_lines(
    count: int, deployment: str = "gpt-4o-batch", *, prompt: str = "Summarise item {i}", **overrides: Any
) -> str:
    """A batch input file of `count` chat requests to `deployment`."""
    lines = []
    for i in range(count):
        line = {
            "custom_id": f"task-{i}",
            "method": "POST",
            "url": "/chat/completions",
            "body": {"model": deployment, "messages": [{"role": "user", "content": prompt.format(i=i)}]},
        }
        line.update(overrides)
        lines.append(json.dumps(line))
    return "\n".join(lines) + "\n"


@pytest.fixture
def eastus(emulator: RunningEmulator) -> DataPlane:
    resource = emulator.resource("aoai-devstack-eastus")
    return DataPlane(resource["endpoint"], resource["apiKey"])


@pytest.fixture
def sweden(emulator: RunningEmulator) -> DataPlane:
    resource = emulator.resource("aoai-devstack-swedencentral")
    return DataPlane(resource["endpoint"], resource["apiKey"])


@pytest.fixture
def eastus_v1(emulator: RunningEmulator) -> DataPlane:
    resource = emulator.resource("aoai-devstack-eastus")
    return DataPlane(resource["endpoint"], resource["apiKey"], v1=True)


@pytest.fixture
def sweden_v1(emulator: RunningEmulator) -> DataPlane:
    resource = emulator.resource("aoai-devstack-swedencentral")
    return DataPlane(resource["endpoint"], resource["apiKey"], v1=True)
