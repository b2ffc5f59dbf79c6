"""Fixtures that run the real emulators in a subprocess and talk to them over HTTP, as production code would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
TEST_CONFIG = Path(__file__).with_name("emulator-config.json")
# Emulated time runs this much faster than real time in the shared emulator (10 emulated s = 0.25 real s).
TIME_SCALE = 40.0

T = TypeVar("T")


# How long a test waits for an event before it fails: generous, so that a busy machine (every core taken by other
# work) slows a test down without failing it. A test never waits for a fixed real time instead of an event.
PATIENCE = 60.0


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`make soak`: each test marked `soak` runs SOAK_ROUNDS times (its kills and faults land anew each time)."""
    rounds = int(os.environ.get("SOAK_ROUNDS") or 1)
    if rounds > 1 and metafunc.definition.get_closest_marker("soak"):
        metafunc.fixturenames.append("soak_round")
        metafunc.parametrize("soak_round", range(1, rounds + 1), ids=lambda n: f"round{n}")


def wait_for(
    condition: Callable[[], T], timeout: float = PATIENCE, interval: float = 0.05, what: str = "condition"
) -> T:
    """Polls `condition` until it returns something truthy, and returns that."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_for_clock(now: Callable[[], float], moment: float, timeout: float = PATIENCE, what: str = "") -> float:
    """Reads the virtual clock `now` (emulated Unix seconds) until it is past `moment`; returns that reading. How a
    test lets emulated time pass: it waits for the clock to read past the point, never for a real duration."""
    return wait_for(
        lambda: (reading := now()) > moment and reading,
        timeout=timeout,
        interval=0.02,
        what=what or f"the virtual clock to pass {moment}",
    )


@dataclass
class RunningEmulator:
    """A running `python -m devstack emulators` process and what its endpoints.json says."""

    process: subprocess.Popen[bytes]
    endpoints: dict[str, Any]
    state_dir: Path

    @property
    def control(self) -> str:
        return str(self.endpoints["emulator"]["control"])

    def resource(self, name: str | None = None) -> dict[str, str]:
        """Endpoint and key of a resource (the first configured one by default)."""
        resources = self.endpoints["openai"]
        return dict(resources[name or next(iter(resources))])

    @property
    def resource_names(self) -> list[str]:
        return list(self.endpoints["openai"])

    def log_text(self) -> str:
        """What the emulator process printed (tracebacks of emulator bugs end up here)."""
        return (self.state_dir / "emulator.log").read_text()

    def reset(self) -> None:
        requests.post(f"{self.control}/reset", timeout=10).raise_for_status()

    def add_fault(self, **rule: Any) -> dict[str, Any]:
        response = requests.post(f"{self.control}/faults", json=rule, timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def requests_log(self, **filters: str) -> list[dict[str, Any]]:
        response = requests.get(f"{self.control}/requests", params=filters, timeout=10)
        response.raise_for_status()
        return list(response.json()["value"])

    def batches(self, resource: str) -> list[dict[str, Any]]:
        response = requests.get(f"{self.control}/resources/{resource}/batches", timeout=10)
        response.raise_for_status()
        return list(response.json()["value"])

    def put_deployment(self, resource: str, name: str, **deployment: Any) -> None:
        requests.put(
            f"{self.control}/resources/{resource}/deployments/{name}", json=deployment, timeout=10
        ).raise_for_status()

    def delete_deployment(self, resource: str, name: str) -> None:
        requests.delete(f"{self.control}/resources/{resource}/deployments/{name}", timeout=10).raise_for_status()

    def set_speeds(self, resource: str, **speeds: float) -> None:
        requests.patch(f"{self.control}/resources/{resource}/speeds", json=speeds, timeout=10).raise_for_status()

    def clock_now(self) -> float:
        return float(requests.get(f"{self.control}/clock", timeout=10).json()["now"])


def identity_token(emulator: RunningEmulator, resource: str) -> str:
    """An access token for `resource` from the emulator's managed-identity endpoint, as App Service hands it out."""
    identity = emulator.endpoints["identity"]
    response = requests.get(
        identity["endpoint"],
        params={"resource": resource, "api-version": "2019-08-01"},
        headers={"X-IDENTITY-HEADER": identity["header"]},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def start_emulator(
    state_dir: Path, *, time_scale: float, config: Path = TEST_CONFIG, extra_args: list[str] | None = None
) -> RunningEmulator:
    endpoints_file = state_dir / "endpoints.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVSTACK_")}
    command = [
        sys.executable,
        "-m",
        "devstack",
        "emulators",
        "--port",
        "0",
        "--state-dir",
        str(state_dir),
        "--config",
        str(config),
        "--time-scale",
        str(time_scale),
        *(extra_args or []),
    ]
    log = state_dir / "emulator.log"
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"emulator exited: {log.read_text()}")
        return endpoints_file.exists()

    wait_for(ready, what="the emulator's endpoints.json")
    return RunningEmulator(process, json.loads(endpoints_file.read_text()), state_dir)


def stop_emulator(emulator: RunningEmulator) -> None:
    emulator.process.terminate()
    try:
        emulator.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        emulator.process.kill()


@pytest.fixture(scope="session")
def emulator_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    emulator = start_emulator(tmp_path_factory.mktemp("devstack"), time_scale=TIME_SCALE)
    yield emulator
    stop_emulator(emulator)


# A second emulator whose clock runs 24 emulated hours in under two real seconds: for expiry and deadlines.
FAST_TIME_SCALE = 50_000.0


@pytest.fixture(scope="session")
def fast_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    emulator = start_emulator(tmp_path_factory.mktemp("fast"), time_scale=FAST_TIME_SCALE)
    yield emulator
    stop_emulator(emulator)


@pytest.fixture
def emulator(emulator_process: RunningEmulator) -> Iterator[RunningEmulator]:
    """The shared emulator, reset to its configured state for this test; fails the test if the emulator crashed
    while handling any request (a client mistake must never be a 500 from an emulator bug)."""
    emulator_process.reset()
    before = emulator_process.log_text().count("Error handling request")
    yield emulator_process
    log = emulator_process.log_text()
    assert log.count("Error handling request") == before, f"the emulator raised while handling a request:\n{log}"


@dataclass
class RunningAzurite:
    process: subprocess.Popen[bytes]
    connection_string: str


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAzurite]:
    """Azurite from the project's node_modules, in memory, on free ports."""
    from azure.core.exceptions import AzureError
    from azure.data.tables import TableServiceClient

    from devstack import azurite as azurite_cli

    ports = azurite_cli.AzuritePorts.free()
    log = tmp_path_factory.mktemp("azurite") / "azurite.log"
    with log.open("wb") as output:
        process = subprocess.Popen(azurite_cli.command(ports), cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
    connection = azurite_cli.connection_string(ports)
    service = TableServiceClient.from_connection_string(connection)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"azurite exited: {log.read_text()}")
        try:
            list(service.list_tables())
        except AzureError:
            return False
        return True

    wait_for(ready, timeout=60, interval=0.2, what="Azurite")
    yield RunningAzurite(process, connection)
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@dataclass
class RunningUserStorage:
    """A user's storage account as the app meets it in Azure: blob over HTTPS (a certificate from the emulators' local
    CA) that accepts bearer tokens from the identity emulator, as well as the account key."""

    process: subprocess.Popen[bytes]
    blob_endpoint: str  # https://127.0.0.1:<port>/devstoreaccount1 (https://<account>.blob.core.windows.net in Azure)
    connection_string: str  # account key over HTTPS: for putting test data there
    ca_bundle: str  # the emulators' CA: what REQUESTS_CA_BUNDLE / connection_verify must trust

    def blob_url(self, container: str, name: str) -> str:
        return f"{self.blob_endpoint}/{container}/{name}"


@pytest.fixture(scope="session")
def user_storage(
    emulator_process: RunningEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningUserStorage]:
    """A second Azurite, blob only and in memory, with the shared emulator's TLS certificate and `--oauth basic`, as
    `python -m devstack up` publishes it under "userStorage"."""
    from devstack import azurite as azurite_cli

    tls = emulator_process.endpoints["tls"]
    port = azurite_cli.free_port()
    log = tmp_path_factory.mktemp("user-storage") / "azurite.log"
    command = azurite_cli.user_storage_command(port, Path(tls["certificate"]), Path(tls["privateKey"]))
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"user-storage azurite exited: {log.read_text()}")
        return azurite_cli.user_storage_answers(port, Path(tls["caBundle"]))

    wait_for(ready, timeout=60, interval=0.2, what="the user-storage Azurite")
    yield RunningUserStorage(
        process,
        azurite_cli.user_storage_endpoint(port),
        azurite_cli.user_storage_connection_string(port),
        tls["caBundle"],
    )
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def app_settings(
    emulator: RunningEmulator, azurite: RunningAzurite, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """App settings for the Functions code, pointing at the emulators and Azurite as local.settings.json would,
    with a catalogue table of its own for this test."""
    from shared import services

    resource = emulator.resource("aoai-devstack-eastus")
    settings = {
        "AZURE_OPENAI_RESOURCES": json.dumps(
            [
                {
                    "name": "aoai-devstack-eastus",
                    "endpoint": resource["endpoint"],
                    "subscriptionId": emulator.endpoints["arm"]["subscriptionId"],
                    "resourceGroup": emulator.endpoints["arm"]["resourceGroup"],
                    "tenantId": emulator.endpoints["tenantId"],
                }
            ]
        ),
        "ARM_ENDPOINT": emulator.endpoints["arm"]["endpoint"],
        "AzureWebJobsStorage": azurite.connection_string,
        "CATALOG_TABLE": f"jobs{os.urandom(4).hex()}",
        "KEY_VAULT_URL": emulator.endpoints["keyVault"]["url"],
        "KEY_VAULT_VERIFY_CHALLENGE_RESOURCE": "false",
        "DEPLOYMENT_SYNC_SCHEDULE": "0 */30 * * * *",
        "IDENTITY_ENDPOINT": emulator.endpoints["identity"]["endpoint"],
        "IDENTITY_HEADER": emulator.endpoints["identity"]["header"],
        "STAGING_CONTAINER": f"staging{os.urandom(4).hex()}",
        # The emulated vault's certificate comes from the local CA, which the local host trusts the same way.
        "REQUESTS_CA_BUNDLE": emulator.endpoints["keyVault"]["caBundle"],
        "SSL_CERT_FILE": emulator.endpoints["keyVault"]["caBundle"],
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    services.reset()
    yield settings
    services.reset()
