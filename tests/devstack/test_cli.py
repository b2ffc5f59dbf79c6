"""`python -m devstack emulators`: options, config file errors, endpoints.json, ports, the shared clock."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509

from devstack.__main__ import main
from tests.conftest import ROOT, TEST_CONFIG, RunningEmulator, wait_for

COMMAND = [sys.executable, "-m", "devstack", "emulators"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVSTACK_")}
    return {**env, **extra}


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs the command to completion (for options and configs it must refuse)."""
    return subprocess.run(
        [*COMMAND, *args], cwd=ROOT, env=env or clean_env(), capture_output=True, text=True, timeout=30, check=False
    )


def free_port(*, also_next: bool = False) -> int:
    """A port nothing listens on now (and, with also_next, whose successor is free too)."""
    for _ in range(50):
        with closing(socket.socket()) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not also_next:
            return port
        if port < 65535:
            with closing(socket.socket()) as sock:
                try:
                    sock.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise AssertionError("no free port pair found")


class Launched:
    """An emulator process started by a test, stopped (SIGTERM) at the end of it."""

    def __init__(self, state_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.endpoints_file = state_dir / "endpoints.json"
        state_dir.mkdir(parents=True, exist_ok=True)
        self.log = state_dir / "emulator.log"
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                [*COMMAND, "--state-dir", str(state_dir), "--config", str(TEST_CONFIG), *args],
                cwd=ROOT,
                env=env or clean_env(),
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> dict[str, Any]:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"emulator exited with {self.process.returncode}: {self.log.read_text()}")
            return self.endpoints_file.exists()

        wait_for(ready, timeout=30, what="endpoints.json")
        return dict(json.loads(self.endpoints_file.read_text()))

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=10)


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Any]:
    with ExitStack() as stack:

        def start(name: str, *args: str, env: dict[str, str] | None = None) -> Launched:
            launched = Launched(tmp_path / name, *args, env=env)
            stack.callback(launched.stop)
            return launched

        yield start


def clock_now(endpoints: dict[str, Any]) -> float:
    return float(requests.get(f"{endpoints['emulator']['control']}/clock", timeout=10).json()["now"])


# Help and options ------------------------------------------------------------------------------------------------
def test_help_lists_the_options() -> None:
    result = run("--help")

    assert result.returncode == 0
    for option in (
        "--host",
        "--port",
        "--keyvault-port",
        "--config",
        "--time-scale",
        "--state-dir",
        "--endpoints-file",
        "--fault-seed",
    ):
        assert option in result.stdout


def test_a_bad_option_exits_2_with_a_usage_message(tmp_path: Path) -> None:
    result = run("--state-dir", str(tmp_path), "--time-scale", "0")

    assert result.returncode == 2
    assert "usage: python -m devstack emulators" in result.stderr
    assert "argument --time-scale: must be a positive number, not '0'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not tmp_path.joinpath("endpoints.json").exists()


def main_exit(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Runs `python -m devstack emulators ARGS` in this process (fast) for arguments it must refuse: the exit code
    and what it printed on stderr."""
    try:
        code = main(["emulators", *args])
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--time-scale", "-3"], "argument --time-scale: must be a positive number, not '-3'"),
        (["--time-scale", "inf"], "argument --time-scale: must be a positive number, not 'inf'"),
        (["--time-scale", "nan"], "argument --time-scale: must be a positive number, not 'nan'"),
        (["--time-scale", "fast"], "argument --time-scale: not a number: 'fast'"),
        (["--port", "70000"], "argument --port: port 70000 is out of range (0-65535)"),
        (["--keyvault-port", "-1"], "argument --keyvault-port: port -1 is out of range (0-65535)"),
        (["--port", "http"], "argument --port: not a port number: 'http'"),
        (["--port", "65535"], "--port 65535 leaves no port for Key Vault"),
    ],
)
def test_bad_options_exit_2_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], problem: str
) -> None:
    code, stderr = main_exit(capsys, "--state-dir", str(tmp_path), *args)

    assert code == 2
    assert problem in stderr
    assert "usage:" in stderr
    assert list(tmp_path.iterdir()) == []


# Config files ------------------------------------------------------------------------------------------------
RESOURCE = {"name": "aoai-ok", "deployments": []}


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (
            '{"resources": [{"name": "bad_name!"}]}',
            "resource name 'bad_name!' is not a valid Azure OpenAI custom subdomain",
        ),
        ('{"resources": [{"name": "aoai-a"}, {"name": "aoai-a"}]}', "resource 'aoai-a' is configured twice"),
        ('{"speeds": {"validationSecs": 5}}', "unknown speed settings: ['validationSecs'] (known: "),
        ('{"resources": [', "cannot read config {path}: Expecting value: line 1 column 16 (char 15)"),
    ],
)
def test_a_bad_config_file_makes_the_process_exit_2_with_a_clear_message(
    tmp_path: Path, config: str, problem: str
) -> None:
    path = tmp_path / "config.json"
    path.write_text(config)

    result = run("--port", "0", "--config", str(path), "--state-dir", str(tmp_path))

    assert result.returncode == 2
    assert result.stderr.startswith("devstack: bad emulator config: ")
    assert problem.format(path=path) in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"resources": [{"name": "msi"}]}, "resource name 'msi' is not a valid"),
        ({"resources": [{"name": "x"}]}, "resource name 'x' is not a valid"),
        ({"resources": [{"name": 7}]}, "resource name 7 is not a valid"),
        ({"resources": [{"name": "aoai-ok\n"}]}, "resource name 'aoai-ok\\n' is not a valid"),
        ({"resources": [RESOURCE, {"name": "AOAI-OK"}]}, "resource 'AOAI-OK' is configured twice"),
        (
            {
                "resources": [
                    {
                        "name": "aoai-ok",
                        "deployments": [
                            {"name": "d", "model": {"name": "m"}, "sku": {"name": "Standard"}},
                            {"name": "d", "model": {"name": "m"}, "sku": {"name": "Standard"}},
                        ],
                    }
                ]
            },
            "deployment 'd' of resource 'aoai-ok' is configured twice",
        ),
        ({"resources": []}, "at least one Azure OpenAI resource must be configured"),
        ({"resources": {"aoai-ok": {}}}, "resources must be a JSON list"),
        ({"resources": ["aoai-ok"]}, "each resource must be a JSON object"),
        (
            {"resources": [{"name": "aoai-ok", "deployments": [{"name": "d", "model": {"name": "gpt-4o"}}]}]},
            "deployment 'd' needs sku.name",
        ),
        ({"speeds": {"validationSecs": 5}}, "unknown speed settings: ['validationSecs']"),
        ({"speeds": {"requestsPerSecond": 0}}, "speed requestsPerSecond must be positive"),
        ({"resources": [{**RESOURCE, "speeds": {"turbo": 1}}]}, "resource 'aoai-ok': unknown speed settings"),
        ({"fault": []}, "unknown config entries ['fault']"),
        ({"faults": [{"status": 200}]}, "fault rule #1: status must be an HTTP error status (400-599)"),
        ({"faults": [{"route": "batch.create", "status": 500}]}, "route 'batch.create' matches no route"),
        ({"faults": {"status": 500}}, "faults must be a JSON list"),
        ({"armPageSize": 0}, "armPageSize must be a positive integer"),
        ({"keyVault": {"secrets": {"ok-name": 5}}}, "Key Vault secret 'ok-name' needs"),
        ({"lineFailures": [{"marker": "x"}]}, "a line failure needs marker, statusCode, code and message"),
        (["not", "an", "object"], "must hold a JSON object, not list"),
        ({"tenantId": 5}, "tenantId must be a non-empty string"),
        ({"emptyFileIds": "false"}, "emptyFileIds must be true or false, not 'false'"),
    ],
)
def test_every_kind_of_bad_config_exits_2_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: Any, problem: str
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))

    code, stderr = main_exit(capsys, "--port", "0", "--config", str(path), "--state-dir", str(tmp_path))

    assert code == 2
    assert stderr.startswith("devstack: bad emulator config: ")
    assert problem in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_a_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stderr = main_exit(
        capsys, "--port", "0", "--config", str(tmp_path / "nowhere.json"), "--state-dir", str(tmp_path)
    )

    assert code == 2
    assert f"cannot read config {tmp_path / 'nowhere.json'}: [Errno 2] No such file or directory" in stderr


def test_a_config_file_that_is_not_text_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(b"\xff\xfe\x00garbage")

    code, stderr = main_exit(capsys, "--port", "0", "--config", str(path), "--state-dir", str(tmp_path))

    assert code == 2
    assert f"cannot read config {path}" in stderr


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("DEVSTACK_TIME_SCALE", "0", "DEVSTACK_TIME_SCALE must be a positive number, not '0'"),
        ("DEVSTACK_TIME_SCALE", "quick", "DEVSTACK_TIME_SCALE must be a number, not 'quick'"),
        ("DEVSTACK_EPOCH", "yesterday", "DEVSTACK_EPOCH must be a number, not 'yesterday'"),
    ],
)
def test_a_bad_clock_variable_exits_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    problem: str,
) -> None:
    monkeypatch.delenv("DEVSTACK_EPOCH", raising=False)
    monkeypatch.delenv("DEVSTACK_TIME_SCALE", raising=False)
    monkeypatch.setenv(variable, value)

    code, stderr = main_exit(capsys, "--port", "0", "--state-dir", str(tmp_path))

    assert code == 2
    assert problem in stderr
    assert list(tmp_path.iterdir()) == []


# endpoints.json and the CA bundle -------------------------------------------------------------------------------
def test_endpoints_json_has_the_contract_keys(emulator: RunningEmulator) -> None:
    published = json.loads((emulator.state_dir / "endpoints.json").read_text())

    assert {"openai", "arm", "keyVault", "identity"} <= set(published)
    assert set(published["openai"]) == {"aoai-devstack-eastus", "aoai-devstack-swedencentral"}
    for name, resource in published["openai"].items():
        assert {"endpoint", "apiKey"} <= set(resource)
        assert resource["endpoint"].startswith("http://127.0.0.1:")
        assert resource["endpoint"].endswith(f"/{name}")
        assert len(resource["apiKey"]) == 32
    assert (
        published["openai"]["aoai-devstack-eastus"]["apiKey"]
        != published["openai"]["aoai-devstack-swedencentral"]["apiKey"]
    )
    assert {"endpoint", "subscriptionId", "resourceGroup"} <= set(published["arm"])
    assert published["arm"]["subscriptionId"] == "3c9e7a41-0b6d-4f28-a5e1-7d2c8b9f6a04"
    assert published["arm"]["resourceGroup"] == "rg-aoai-devstack"
    assert {"url", "caBundle"} <= set(published["keyVault"])
    assert published["keyVault"]["url"].startswith("https://127.0.0.1:")
    assert {"endpoint", "header"} <= set(published["identity"])
    assert published["identity"]["endpoint"].endswith("/msi/token")
    assert published["identity"]["header"]


def test_the_endpoints_work(emulator: RunningEmulator) -> None:
    published = emulator.endpoints
    resource = published["openai"]["aoai-devstack-eastus"]
    files = requests.get(
        f"{resource['endpoint']}/openai/files",
        params={"api-version": "2024-10-21"},
        headers={"api-key": resource["apiKey"]},
        timeout=10,
    )
    identity = requests.get(
        published["identity"]["endpoint"],
        params={"api-version": "2019-08-01", "resource": "https://vault.azure.net"},
        headers={"X-IDENTITY-HEADER": published["identity"]["header"]},
        timeout=10,
    )

    assert files.status_code == 200
    assert identity.status_code == 200


def test_the_ca_bundle_is_a_pem_certificate_that_verifies_key_vault(emulator: RunningEmulator) -> None:
    bundle = Path(emulator.endpoints["keyVault"]["caBundle"])

    assert bundle.is_absolute()
    text = bundle.read_text()
    assert text.startswith("-----BEGIN CERTIFICATE-----")
    assert text.rstrip().endswith("-----END CERTIFICATE-----")
    # TLS verifies against the bundle; the 401 is Key Vault asking for a token.
    response = requests.get(
        f"{emulator.endpoints['keyVault']['url']}/secrets",
        params={"api-version": "7.4"},
        verify=str(bundle),
        timeout=10,
    )
    assert response.status_code == 401
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{emulator.endpoints['keyVault']['url']}/secrets", timeout=10)


def test_tls_publishes_the_ca_and_a_localhost_certificate_it_issued_for_other_local_services(
    emulator: RunningEmulator,
) -> None:
    tls = emulator.endpoints["tls"]
    authority = x509.load_pem_x509_certificate(Path(tls["caBundle"]).read_bytes())
    certificate = x509.load_pem_x509_certificate(Path(tls["certificate"]).read_bytes())
    private_key = Path(tls["privateKey"])
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value

    assert tls["caBundle"] == emulator.endpoints["keyVault"]["caBundle"]
    certificate.verify_directly_issued_by(authority)
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    assert "PRIVATE KEY-----" in private_key.read_text()
    assert private_key.stat().st_mode & 0o077 == 0  # readable by this user only


# Ports, files, lifetime ---------------------------------------------------------------------------------------
def test_port_and_keyvault_port_are_honoured(launch: Any, tmp_path: Path) -> None:
    port, vault_port = free_port(), free_port()
    endpoints_file = tmp_path / "elsewhere" / "endpoints.json"
    emulator = launch(
        "ports", "--port", str(port), "--keyvault-port", str(vault_port), "--endpoints-file", str(endpoints_file)
    )
    emulator.endpoints_file = endpoints_file

    published = emulator.wait_ready()

    assert published["arm"]["endpoint"] == f"http://127.0.0.1:{port}"
    assert published["openai"]["aoai-devstack-eastus"]["endpoint"] == f"http://127.0.0.1:{port}/aoai-devstack-eastus"
    assert published["emulator"]["control"] == f"http://127.0.0.1:{port}/_emulator"
    assert published["keyVault"]["url"] == f"https://127.0.0.1:{vault_port}"
    assert not (tmp_path / "ports" / "endpoints.json").exists()
    assert requests.get(f"http://127.0.0.1:{port}/_emulator/health", timeout=10).status_code == 200
    assert (tmp_path / "ports" / "keyvault-ca.pem").exists()


def test_keyvault_port_defaults_to_the_next_port(launch: Any) -> None:
    port = free_port(also_next=True)
    emulator = launch("next", "--port", str(port))

    published = emulator.wait_ready()

    assert published["arm"]["endpoint"] == f"http://127.0.0.1:{port}"
    assert published["keyVault"]["url"] == f"https://127.0.0.1:{port + 1}"


def test_a_port_in_use_exits_1_and_writes_nothing(tmp_path: Path) -> None:
    with closing(socket.socket()) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        result = run("--port", str(port), "--config", str(TEST_CONFIG), "--state-dir", str(tmp_path))

    assert result.returncode == 1
    assert f"devstack: cannot start the emulators: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # neither a CA bundle nor endpoints.json


def test_sigterm_stops_cleanly_and_removes_endpoints_json(launch: Any) -> None:
    emulator = launch("term", "--port", "0")
    emulator.wait_ready()

    assert emulator.stop() == 0
    assert not emulator.endpoints_file.exists()
    assert "Traceback" not in emulator.log.read_text()


def test_two_processes_with_the_same_devstack_epoch_agree_on_emulated_time(launch: Any) -> None:
    epoch = time.time() - 30
    env = clean_env(DEVSTACK_EPOCH=repr(epoch), DEVSTACK_TIME_SCALE="50")
    first, second = launch("first", "--port", "0", env=env), launch("second", "--port", "0", env=env)
    one, two = first.wait_ready(), second.wait_ready()

    a1 = clock_now(one)
    b = clock_now(two)
    a2 = clock_now(one)

    assert (
        one["emulator"]["clock"]
        == two["emulator"]["clock"]
        == {"DEVSTACK_EPOCH": repr(epoch), "DEVSTACK_TIME_SCALE": "50.0"}
    )
    assert a1 <= b <= a2
    assert a2 - a1 < 50  # under 1 s of real time apart, at x50
    assert b == pytest.approx(epoch + (time.time() - epoch) * 50, abs=50)


def test_time_scale_option_overrides_the_environment(launch: Any) -> None:
    env = clean_env(DEVSTACK_TIME_SCALE="50")
    published = launch("scaled", "--port", "0", "--time-scale", "7", env=env).wait_ready()

    clock = requests.get(f"{published['emulator']['control']}/clock", timeout=10).json()

    assert clock["scale"] == 7.0
    assert published["emulator"]["clock"]["DEVSTACK_TIME_SCALE"] == "7.0"
