"""Chat Completion Job runs and bad requests, over HTTP only."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
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


def test_a_rebuild_goes_on_by_its_next_link_rewrites_old_rows_and_keeps_later_writes(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rebuild route, called in this process with the host's own durable client binding (so its time budget can
    be cut to one task hub page a request), against the host's task hub and run index."""
    from azure.data.tables import TableServiceClient, UpdateMode

    import blueprints.batch_sets
    import blueprints.runs_api
    from devstack.host.durable_api import Links
    from shared import services
    from shared.runs import iso, parse_iso
    from tests.functions import call_http

    started = [app.start("gpt-4o", {"user_prompt": f"even {n}"}) for n in range(3)]
    for run in started:
        app.wait(run["id"])
    settings = json.loads((app.host.state_dir / "local.settings.json").read_text())["Values"]
    index = TableServiceClient.from_connection_string(settings["AzureWebJobsStorage"]).get_table_client(
        f"{settings['CATALOG_TABLE']}runs"
    )
    rows = {e["RunId"]: e for e in index.list_entities() if e["RunId"] in {run["id"] for run in started}}
    old, later = started[:2], started[2]

    def last_updated(run: dict[str, Any]) -> datetime:  # as the task hub says it: on whole seconds
        return parse_iso(app.host.durable("GET", f"instances/{run['id']}").json()["lastUpdatedTime"])

    for run in old:  # as an earlier version wrote it, in the second the task hub last updated the run
        row = {k: v for k, v in rows[run["id"]].items() if k != "ParentRun"}
        row["IndexedAt"] = iso(last_updated(run) + timedelta(milliseconds=999))
        index.upsert_entity(row, mode=UpdateMode.REPLACE)
    view = json.loads(rows[later["id"]]["View"]) | {"status": "Cancelled"}  # written after the rebuild read the hub
    written = iso(last_updated(later) + timedelta(seconds=1, milliseconds=1))
    index.update_entity(rows[later["id"]] | {"View": json.dumps(view), "IndexedAt": written})

    def listed() -> dict[str, str]:
        page = app.call("GET", "runs", params={"jobId": "gpt-4o", "top": "1000"}).json()
        return {run["id"]: run["status"] for run in page["value"]}

    assert not {run["id"] for run in old} & set(listed())

    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    services.reset()
    monkeypatch.setattr(blueprints.runs_api, "REBUILD_SECONDS", 0.0)
    monkeypatch.setattr(blueprints.batch_sets, "TASK_HUB_PAGE", 1)
    binding = Links(app.host.info["taskHub"], app.host.system_key).client_binding(app.host.base)
    replies: list[dict[str, Any]] = []
    params: dict[str, str] = {}
    while not replies or "nextLink" in replies[-1]:
        response = call_http(
            "rebuild_run_index", "POST", "maintenance/rebuild-run-index", params=params, client=binding
        )
        assert response.status_code == 200, response.get_body()
        replies.append(json.loads(response.get_body()))
        if "nextLink" in replies[-1]:
            params = {k: v[0] for k, v in parse_qs(urlsplit(replies[-1]["nextLink"]).query).items()}
    services.reset()

    assert len(replies) >= len(started)  # a page of one instance each
    assert all(reply["rebuilt"] <= 1 for reply in replies)
    now = listed()
    assert all(now[run["id"]] == "Success" for run in old)
    assert now[later["id"]] == "Cancelled"


@pytest.mark.parametrize("token", ["!!!", "bm90LWEtdG9rZW4"])  # not base64url; base64url of "not-a-token"
def test_a_rebuild_with_a_token_it_never_gave_is_400_naming_it(app: App, token: str) -> None:
    response = app.host.api(
        "POST", "maintenance/rebuild-run-index", key=MASTER_KEY, params={"continuationToken": token}
    )

    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert "continuationToken" in response.text
