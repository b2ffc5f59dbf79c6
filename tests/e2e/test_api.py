"""Chat Completion Job runs and bad requests, over HTTP only."""

from __future__ import annotations

import json

import requests

from tests.e2e.conftest import App
from tests.host.conftest import MASTER_KEY


def test_chat_run_returns_outputs(app: App) -> None:
    response = app.call("PATCH", "jobs/gpt-4o", json={"attributes": {"systemPrompt": "Be brief.", "maxTokens": 64}})
    assert response.status_code == 200, response.text

    started = app.start("gpt-4o", {"user_prompt": "Name a prime number."})
    run = app.wait(started["id"])

    assert (run["status"], run["runId"], run["jobType"]) == ("Success", "gpt-4o#sync#Success", "chat_completion")
    outputs = run["outputs"]
    assert "Name a prime number." in outputs["response"]
    assert outputs["total_tokens"] == outputs["prompt_tokens"] + outputs["completion_tokens"]
    assert outputs["finish_reason"] == "stop"
    sent = app.emulator.requests_log(service="openai", route="chat.completions")[-1]["body"]
    assert sent["max_tokens"] == 64
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert "temperature" not in sent
    assert app.call("POST", f"runs/{started['id']}/cancel").status_code == 409


def test_bad_requests_get_documented_4xx(app: App) -> None:
    unknown = app.call("POST", "jobs/gpt-9::batch/runs", json={"inputFileId": "file-x"})
    malformed = app.call(
        "POST", "jobs/gpt-4o-batch::batch/runs", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    wrong_key = requests.post(f"{app.host.base}/api/jobs/import", params={"code": "wrong"}, timeout=10)
    no_key = requests.get(f"{app.host.base}/api/jobs", timeout=10)
    health = requests.get(f"{app.host.base}/api/health", timeout=10)

    assert (unknown.status_code, unknown.headers["Content-Type"]) == (404, "application/problem+json")
    assert malformed.status_code == 400
    assert malformed.json()["errors"][0]["field"] == "body"
    assert wrong_key.status_code == 401
    assert no_key.status_code == 401
    assert health.status_code == 200


def test_runs_list_filters_by_job_and_status(app: App) -> None:
    started = app.start("gpt-4o", {"user_prompt": "hi"})
    app.wait(started["id"])

    listed = app.call("GET", "runs", params={"jobId": "gpt-4o", "status": "Success"}).json()

    assert started["id"] in [run["id"] for run in listed["value"]]
    assert all(run["jobId"] == "gpt-4o" and run["status"] == "Success" for run in listed["value"])


def test_the_run_index_lists_every_run_and_a_rebuild_restores_it_from_the_task_hub(app: App) -> None:
    from azure.data.tables import TableServiceClient

    started = [app.start("gpt-4o", {"user_prompt": f"prime {n}"}) for n in range(3)]
    for run in started:
        app.wait(run["id"])
    ids = {run["id"] for run in started}

    def listed() -> set[str]:
        page = app.call("GET", "runs", params={"jobId": "gpt-4o", "status": "Success", "top": "1000"}).json()
        assert "nextLink" not in page
        return {run["id"] for run in page["value"]}

    assert ids <= listed()  # a run that reads Success is listed as Success
    settings = json.loads((app.host.state_dir / "local.settings.json").read_text())["Values"]
    index = TableServiceClient.from_connection_string(settings["AzureWebJobsStorage"]).get_table_client(
        f"{settings['CATALOG_TABLE']}runs"
    )
    for entity in list(index.list_entities()):
        index.delete_entity(entity["PartitionKey"], entity["RowKey"])
    assert not ids & listed()

    refused = app.call("POST", "maintenance/rebuild-run-index")  # the function key is not enough
    rebuilt = app.host.api("POST", "maintenance/rebuild-run-index", key=MASTER_KEY)

    assert refused.status_code == 401
    assert rebuilt.status_code == 200, rebuilt.text
    assert rebuilt.json()["rebuilt"] >= 3
    assert ids <= listed()
