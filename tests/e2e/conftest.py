"""End to end, over HTTP only: the real function_app.py on the local host, the emulators and Azurite, one clock."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ROOT, RunningAzurite, RunningEmulator, wait_for
from tests.devstack.conftest import DataPlane
from tests.host.conftest import RunningHost, launch
from tests.test_openapi import run_schema_validator

RESOURCE = "aoai-devstack-eastus"
TERMINAL = ("Success", "Failed", "Cancelled")
RUN_SCHEMA = run_schema_validator()


class App:
    """The app's HTTP API as a user calls it, plus the emulators' control routes for checking."""

    def __init__(self, host: RunningHost, emulator: RunningEmulator) -> None:
        self.host = host
        self.emulator = emulator

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.host.api(method, path, **kwargs)

    def import_jobs(self) -> dict[str, Any]:
        response = self.call("POST", "jobs/import")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def upload(self, content: str, resource: str = RESOURCE) -> str:
        """Uploads a batch input file and waits until it reads `processed`, as a user must before starting a run
        with it (Azure refuses a batch from a file still `pending`)."""
        target = self.emulator.resource(resource)
        return str(DataPlane(target["endpoint"], target["apiKey"]).upload(content)["id"])

    def start(self, external_id: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.call("POST", f"jobs/{external_id}/runs", json=body)
        assert response.status_code == 202, response.text
        return dict(response.json())

    def run(self, run_id: str) -> dict[str, Any]:
        """The run as the API reports it; every reply is checked against openapi.yaml's closed Run schema."""
        response = self.call("GET", f"runs/{run_id}")
        assert response.status_code == 200, response.text
        run = dict(response.json())
        assert [e.message for e in RUN_SCHEMA.iter_errors(run)] == []
        return run

    def wait(self, run_id: str, until: Any = None, timeout: float = 60.0) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            run = self.run(run_id)
            done = until(run) if until else run["status"] in TERMINAL
            return run if done else None

        return wait_for(reached, timeout=timeout, interval=0.1, what=f"run {run_id}")

    def limit_quota(self, enqueued_tokens: int) -> None:
        """Gives the batch deployment this enqueued-token limit."""
        self.emulator.put_deployment(
            RESOURCE,
            "gpt-4o-batch",
            model={"format": "OpenAI", "name": "gpt-4o", "version": "1"},
            sku={"name": "GlobalBatch", "capacity": 1},
            capabilities={"chatCompletion": "true"},
            enqueuedTokenLimit=enqueued_tokens,
        )

    def batches_of(self, run_id: str, resource: str = RESOURCE) -> list[dict[str, Any]]:
        """The run's batches on `resource`: its own, or its shards' (`<run id>::s<n>`)."""
        return [
            b
            for b in self.emulator.batches(resource)
            if (b.get("metadata") or {}).get("runId") == run_id
            or str((b.get("metadata") or {}).get("runId")).startswith(f"{run_id}::s")
        ]


def host_settings(
    emulator: RunningEmulator,
    azurite: RunningAzurite,
    table: str,
    resource_settings: dict[str, dict[str, Any]] | None = None,
    more: dict[str, str] | None = None,
) -> dict[str, str]:
    """The app settings of an e2e host: every emulated resource, with `resource_settings` added to the entries they
    name (e.g. `tokenLimits`), and `more` app settings."""
    arm = emulator.endpoints["arm"]
    resources = [
        {
            "name": name,
            "endpoint": emulator.resource(name)["endpoint"],
            "subscriptionId": arm["subscriptionId"],
            "resourceGroup": arm["resourceGroup"],
            "tenantId": emulator.endpoints["tenantId"],
        }
        | (resource_settings or {}).get(name, {})
        for name in emulator.resource_names
    ]
    return {
        "AzureWebJobsStorage": azurite.connection_string,
        "DURABLE_TASK_HUB": "e2e",
        "AZURE_OPENAI_RESOURCES": json.dumps(resources),
        "ARM_ENDPOINT": arm["endpoint"],
        "CATALOG_TABLE": table,
        "KEY_VAULT_URL": emulator.endpoints["keyVault"]["url"],
        "KEY_VAULT_VERIFY_CHALLENGE_RESOURCE": "false",
        "DEPLOYMENT_SYNC_SCHEDULE": "0 0 0 1 1 *",
    } | (more or {})


def start_host(
    state_dir: Path,
    emulator: RunningEmulator,
    azurite: RunningAzurite,
    table: str,
    resource_settings: dict[str, dict[str, Any]] | None = None,
    more: dict[str, str] | None = None,
) -> RunningHost:
    clock = emulator.endpoints["emulator"]["clock"]
    return launch(
        state_dir,
        app=ROOT,
        settings=host_settings(emulator, azurite, table, resource_settings, more),
        args=["--endpoints-file", str(emulator.state_dir / "endpoints.json")],
        epoch=clock["DEVSTACK_EPOCH"],
        time_scale=float(clock["DEVSTACK_TIME_SCALE"]),
    )


@pytest.fixture(scope="module")
def e2e_host(
    tmp_path_factory: pytest.TempPathFactory, emulator_process: RunningEmulator, azurite: RunningAzurite
) -> Iterator[RunningHost]:
    host = start_host(tmp_path_factory.mktemp("e2e-host"), emulator_process, azurite, f"e2e{os.urandom(3).hex()}")
    yield host
    host.stop()


@pytest.fixture
def app(e2e_host: RunningHost, emulator: RunningEmulator) -> App:
    """The app on the shared e2e host, with the emulators reset and the deployments imported."""
    application = App(e2e_host, emulator)
    application.import_jobs()
    return application
