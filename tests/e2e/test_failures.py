"""How a run that fails says why, over HTTP: the cause in a sentence, never a traceback, a path or a wrapper."""

from __future__ import annotations

import json

from tests.e2e.conftest import App

JOB = "gpt-4o-batch::batch"
INTERNALS = ("Traceback", "Exception", "Stack:", "wwwroot", ".py", "RpcException", "\n")


def test_a_missing_key_vault_secret_fails_the_run_naming_the_secret_in_a_sentence(app: App) -> None:
    run = app.wait(app.start(JOB, {"inputFileSecret": "no-such-secret"})["id"])

    failure = run["failure"]
    assert (run["status"], failure["code"], failure["param"]) == (
        "Failed",
        "input_secret_unavailable",
        "inputFileSecret",
    )
    assert failure["message"] == "Key Vault secret 'no-such-secret' was not found in the vault"
    for internal in INTERNALS:
        assert internal not in json.dumps(run)
    assert app.batches_of(run["id"]) == []


def test_a_malformed_run_id_is_400_not_a_look_into_the_task_hub(app: App) -> None:
    for path in ("runs/x%2F..%2F..%2Finstances%3FshowInput%3Dtrue", "runs/x%2F..%2Finstances/cancel"):
        response = app.call("POST" if path.endswith("cancel") else "GET", path)

        assert response.status_code in (400, 404), response.text
        assert response.headers["Content-Type"] == "application/problem+json"
        assert "instanceId" not in response.text
