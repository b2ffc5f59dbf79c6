"""How a run that fails says why, over HTTP: the cause in a sentence, never a traceback, a path or a wrapper."""

from __future__ import annotations

import json

import pytest

from tests.conftest import RunningEmulator
from tests.e2e.conftest import App

JOB = "gpt-4o-batch::batch"
INTERNALS = ("Traceback", "Exception", "Stack:", "wwwroot", ".py", "RpcException", "\n")


def test_a_secret_holding_no_file_id_fails_the_run_in_a_sentence_without_the_value(
    app: App, emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.identity import ManagedIdentityCredential
    from azure.keyvault.secrets import SecretClient

    vault = emulator.endpoints["keyVault"]
    monkeypatch.setenv("IDENTITY_ENDPOINT", emulator.endpoints["identity"]["endpoint"])
    monkeypatch.setenv("IDENTITY_HEADER", emulator.endpoints["identity"]["header"])
    SecretClient(
        vault["url"], ManagedIdentityCredential(), verify_challenge_resource=False, connection_verify=vault["caBundle"]
    ).set_secret("not-a-file", "not-a-file-id")

    run = app.wait(app.start(JOB, {"inputFileSecret": "not-a-file"})["id"])

    failure = run["failure"]
    assert (run["status"], failure["code"]) == ("Failed", "invalid_request")
    assert failure["message"] == "Invalid file id '<input file id>'."
    for internal in (*INTERNALS, "not-a-file-id"):
        assert internal not in json.dumps(run)


def test_a_malformed_run_id_is_400_not_a_look_into_the_task_hub(app: App) -> None:
    for path in ("runs/x%2F..%2F..%2Finstances%3FshowInput%3Dtrue", "runs/x%2F..%2Finstances/cancel"):
        response = app.call("POST" if path.endswith("cancel") else "GET", path)

        assert response.status_code in (400, 404), response.text
        assert response.headers["Content-Type"] == "application/problem+json"
        assert "instanceId" not in response.text
