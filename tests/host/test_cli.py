"""`python -m devstack host`: options, app settings as Core Tools loads them, the devstack wiring, stopping."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.conftest import ROOT, RunningEmulator, wait_for
from tests.host.conftest import HOST_APP, RunningHost, launch


def run_host(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devstack", "host", *args],
        cwd=ROOT,
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def started(process: subprocess.Popen[bytes], state: Path, log: Path) -> bool:
    """Whether the host published functions.json; an AssertionError with its output if it exited instead."""
    assert process.poll() is None, f"the host exited with {process.returncode}:\n{log.read_text()}"
    return (state / "functions.json").exists()


def test_help_lists_the_options() -> None:
    result = run_host("--help")

    for option in (
        "--app",
        "--port",
        "--state-dir",
        "--settings",
        "--env",
        "--function-key",
        "--master-key",
        "--time-scale",
        "--activity-concurrency",
        "--endpoints-file",
    ):
        assert option in result.stdout


def test_a_missing_settings_file_exits_2(tmp_path: Path) -> None:
    result = run_host("--app", str(HOST_APP), "--port", "0", "--state-dir", str(tmp_path), "--settings", "/nonexistent")

    assert result.returncode == 2
    assert "/nonexistent does not exist" in result.stderr


def test_bad_options_exit_2(tmp_path: Path) -> None:
    assert run_host("--activity-concurrency", "0").returncode == 2
    assert run_host("--env", "NO_EQUALS_SIGN").returncode == 2
    assert run_host("--time-scale", "-1").returncode == 2


def test_a_second_host_on_the_same_task_hub_is_refused(launcher: Callable[..., RunningHost], tmp_path: Path) -> None:
    first = launcher(tmp_path / "shared")

    result = run_host(
        "--app",
        str(HOST_APP),
        "--port",
        "0",
        "--state-dir",
        str(tmp_path / "shared"),
        "--settings",
        str(tmp_path / "shared" / "local.settings.json"),
    )

    assert result.returncode == 2
    assert "another host is running" in result.stderr
    assert first.process.poll() is None


def test_sigterm_stops_cleanly_and_removes_functions_json(tmp_path: Path) -> None:
    host = launch(tmp_path / "stop")

    host.process.send_signal(signal.SIGTERM)
    host.process.wait(timeout=15)

    assert host.process.returncode == 0
    assert not (tmp_path / "stop" / "functions.json").exists()


def test_local_settings_json_is_created_from_the_sample_and_read(tmp_path: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(HOST_APP, app, ignore=shutil.ignore_patterns("__pycache__"))
    records = tmp_path / "records"
    records.mkdir()
    sample = {
        "IsEncrypted": False,
        "Values": {
            "HOST_APP_RECORD_DIR": str(records),
            "HOST_APP_HUB": "samplehub",
            "TICK_SCHEDULE": "0 0 0 1 1 *",
            "HOST_APP_GREETING": "from the sample",
            "SHADOWED": "from local.settings.json",
        },
    }
    (app / "local.settings.sample.json").write_text(json.dumps(sample))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVSTACK_")} | {"SHADOWED": "from the environment"}
    state = tmp_path / "state"
    log = (tmp_path / "host.log").open("wb")
    # --port 0: a free port, not 7071, which a `make up` or `make demo` on the same machine may hold
    command = ["host", "--app", str(app), "--port", "0", "--state-dir", str(state), "--env", "EXTRA=x=y"]
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack", *command],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: started(process, state, tmp_path / "host.log"), what="functions.json")
        info = json.loads((state / "functions.json").read_text())
        import requests

        names = "HOST_APP_GREETING,SHADOWED,EXTRA,WEBSITE_HOSTNAME,FUNCTIONS_WORKER_RUNTIME"
        seen = requests.get(f"{info['baseUrl']}/api/environment", params={"names": names}, timeout=10).json()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        log.close()

    assert (app / "local.settings.json").exists()
    assert info["taskHub"] == "samplehub"
    assert seen["HOST_APP_GREETING"] == "from the sample"
    assert seen["SHADOWED"] == "from the environment"  # Core Tools: the environment wins over local.settings.json
    assert seen["EXTRA"] == "x=y"
    assert seen["WEBSITE_HOSTNAME"] == info["baseUrl"].split("//")[1]
    assert seen["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert seen["cwd"] == str(app)


def test_function_code_reaches_the_emulated_key_vault_with_managed_identity_unchanged(
    launcher: Callable[..., RunningHost], emulator_process: RunningEmulator, tmp_path: Path
) -> None:
    endpoints = emulator_process.state_dir / "endpoints.json"
    host = launcher(
        settings={"KEY_VAULT_URL": emulator_process.endpoints["keyVault"]["url"]},
        args=["--endpoints-file", str(endpoints)],
    )

    secret = host.api("GET", "vault/configured-secret", key=None)
    seen = host.api(
        "GET",
        "environment",
        key=None,
        params={"names": "IDENTITY_ENDPOINT,IDENTITY_HEADER,REQUESTS_CA_BUNDLE,SSL_CERT_FILE"},
    ).json()

    assert secret.status_code == 200, host.log_text()[-3000:]
    assert secret.json() == {"value": "file-0123456789abcdef0123456789abcdef"}
    assert seen["IDENTITY_ENDPOINT"] == emulator_process.endpoints["identity"]["endpoint"]
    assert seen["IDENTITY_HEADER"] == emulator_process.endpoints["identity"]["header"]
    bundle = Path(seen["REQUESTS_CA_BUNDLE"]).read_text()
    assert seen["SSL_CERT_FILE"] == seen["REQUESTS_CA_BUNDLE"]
    assert Path(emulator_process.endpoints["keyVault"]["caBundle"]).read_text().strip() in bundle
    assert bundle.count("BEGIN CERTIFICATE") > 10  # the system CAs are still trusted
