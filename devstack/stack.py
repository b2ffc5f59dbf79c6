"""`python -m devstack up`: Azurite, the Azure emulators, a user's storage account and the local Functions host
together, in the foreground, on one virtual clock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack import azurite
from devstack.clock import EPOCH_ENV, SCALE_ENV
from devstack.plumbing import write_json_atomically

ROOT = Path(__file__).resolve().parent.parent
# Azurite's default ports, so the sample settings' `UseDevelopmentStorage=true` reaches it.
AZURITE_PORTS = azurite.AzuritePorts(blob=10000, queue=10001, table=10002)
# The user-storage Azurite (HTTPS, bearer tokens) takes the next port.
USER_STORAGE_PORT = 10003


@dataclass
class StackOptions:
    port: int = 8480
    time_scale: float = 1.0
    state_dir: Path = Path(".devstack")
    config: Path | None = None
    functions_port: int | None = 7071  # None: no Functions host
    app: Path | None = None
    user_storage_port: int = USER_STORAGE_PORT  # 0: any free port


class StackError(RuntimeError):
    """A part of the stack did not come up; the message says which and where its log is."""


def up(options: StackOptions) -> int:
    state_dir = options.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, EPOCH_ENV: os.environ.get(EPOCH_ENV) or repr(time.time()), SCALE_ENV: repr(options.time_scale)}
    processes: list[subprocess.Popen[bytes]] = []
    stop = {"now": False}

    def request_stop(signum: int, frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        storage_dir = state_dir / "azurite"
        storage_dir.mkdir(exist_ok=True)
        processes.append(_start("azurite", azurite.command(AZURITE_PORTS, location=storage_dir), state_dir, env))
        endpoints_file = state_dir / "endpoints.json"
        endpoints_file.unlink(missing_ok=True)
        emulator_command = [
            sys.executable,
            "-m",
            "devstack",
            "emulators",
            "--port",
            str(options.port),
            "--state-dir",
            str(state_dir),
        ]
        if options.config is not None:
            emulator_command += ["--config", str(options.config)]
        processes.append(_start("emulators", emulator_command, state_dir, env))
        _wait(lambda: _table_answers(AZURITE_PORTS), "Azurite", state_dir / "azurite.log", processes[0])
        _wait(endpoints_file.exists, "the emulators", state_dir / "emulators.log", processes[1])
        endpoints = json.loads(endpoints_file.read_text())
        endpoints["storage"] = {"connectionString": azurite.connection_string(AZURITE_PORTS)}
        # A user's storage account: Azurite's blob service over HTTPS with the emulators' certificate, taking bearer
        # tokens (`--oauth basic`) as Azure Storage takes the app's managed-identity tokens.
        user_storage_dir = state_dir / "user-storage"
        user_storage_dir.mkdir(exist_ok=True)
        user_storage_port = options.user_storage_port or azurite.free_port()
        tls = endpoints["tls"]
        user_storage_command = azurite.user_storage_command(
            user_storage_port, Path(tls["certificate"]), Path(tls["privateKey"]), user_storage_dir
        )
        processes.append(_start("user-storage", user_storage_command, state_dir, env))
        _wait(
            lambda: azurite.user_storage_answers(user_storage_port, Path(tls["caBundle"])),
            "the user-storage Azurite",
            state_dir / "user-storage.log",
            processes[-1],
        )
        endpoints["userStorage"] = {
            "blobEndpoint": azurite.user_storage_endpoint(user_storage_port),
            "connectionString": azurite.user_storage_connection_string(user_storage_port),
            "caBundle": tls["caBundle"],
        }
        write_json_atomically(endpoints_file, endpoints)
        host = None
        if options.functions_port is not None:
            host = _start_functions(options, state_dir, endpoints_file, env)
        print(f"devstack is up (Ctrl-C stops it); endpoints in {endpoints_file}", flush=True)
        print(
            f"  Azurite       blob {AZURITE_PORTS.blob}, queue {AZURITE_PORTS.queue}, table {AZURITE_PORTS.table}"
            f"  (UseDevelopmentStorage=true), data in {storage_dir}",
            flush=True,
        )
        print(
            f"  User storage  {endpoints['userStorage']['blobEndpoint']}  (HTTPS, bearer tokens or the account key;"
            f" CA bundle {endpoints['userStorage']['caBundle']}), data in {user_storage_dir}",
            flush=True,
        )
        print((state_dir / "emulators.log").read_text().rstrip(), flush=True)
        if host is not None:
            processes.append(host)
            print((state_dir / "functions.log").read_text().rstrip(), flush=True)
        while not stop["now"]:
            for process in processes:
                if process.poll() is None:
                    continue
                if process is host:
                    # The app is the part under development: the local Azure stays up while it is fixed.
                    print(
                        f"devstack: the Functions host exited with {process.returncode}; see {state_dir}/functions.log",
                        file=sys.stderr,
                        flush=True,
                    )
                    processes.remove(host)
                    host = None
                    _forget_functions(endpoints_file)
                    break
                raise StackError(f"{process.args[0]} exited with {process.returncode}; see {state_dir}")
            time.sleep(0.2)
        return 0
    except StackError as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return 1
    finally:
        (state_dir / "endpoints.json").unlink(missing_ok=True)  # nothing answers there any more
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def _start_functions(
    options: StackOptions, state_dir: Path, endpoints_file: Path, env: dict[str, str]
) -> subprocess.Popen[bytes] | None:
    """The local Functions host for the project's app (identity and Key Vault CA from endpoints.json), published
    there as "functions". An app that does not start is reported, not fatal: Azurite and the emulators stay up."""
    info = state_dir / "functions.json"
    info.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "devstack",
        "host",
        "--app",
        str((options.app or ROOT).resolve()),
        "--port",
        str(options.functions_port),
        "--state-dir",
        str(state_dir),
        "--endpoints-file",
        str(endpoints_file),
        "--info-file",
        str(info),
    ]
    process = _start("functions", command, state_dir, env)
    log = state_dir / "functions.log"

    def ready() -> bool:
        return info.exists() and json.loads(info.read_text()).get("pid") == process.pid

    try:
        _wait(ready, "the Functions host", log, process)
    except StackError as exc:
        print(f"devstack: {exc}", file=sys.stderr, flush=True)
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)
        return None
    published = json.loads(info.read_text())
    endpoints = json.loads(endpoints_file.read_text())
    endpoints["functions"] = {
        key: published[key]
        for key in ("baseUrl", "key", "masterKey", "systemKey", "taskHub", "durableTaskWebhook")
        if key in published
    }
    write_json_atomically(endpoints_file, endpoints)
    return process


def _forget_functions(endpoints_file: Path) -> None:
    try:
        endpoints = json.loads(endpoints_file.read_text())
    except (OSError, ValueError):
        return
    if endpoints.pop("functions", None) is not None:
        write_json_atomically(endpoints_file, endpoints)


def _start(name: str, command: list[str], state_dir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with (state_dir / f"{name}.log").open("wb") as log:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait(ready: Any, what: str, log: Path, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise StackError(f"{what} exited during start; see {log}:\n{log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise StackError(f"{what} did not answer within {timeout:.0f} s; see {log}")
        time.sleep(0.2)


def _table_answers(ports: azurite.AzuritePorts) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{ports.table}/{azurite.ACCOUNT}/Tables", timeout=1)
    except urllib.error.HTTPError:
        return True  # any HTTP answer (it wants a signature) means the table service is listening
    except OSError:
        return False
    return True
