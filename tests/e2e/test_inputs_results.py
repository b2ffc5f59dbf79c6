"""A user's whole job over HTTP: prompts in as an input, a run started with it, the answers and the cost out."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests

from tests.conftest import RunningEmulator, wait_for
from tests.e2e.conftest import RESOURCE, App
from tests.test_openapi import schema_validator

JOB = "gpt-4o-batch::batch"
RESULT = schema_validator("/components/schemas/Result")


def build_input(app: App, body: Any, **kwargs: Any) -> dict[str, Any]:
    response = app.call("POST", f"jobs/{JOB}/inputs", json=body, **kwargs)
    assert response.status_code == 201, response.text
    return dict(response.json())


def results(app: App, run_id: str, **params: str) -> tuple[list[dict[str, Any]], int]:
    """Every result the API gives for the run with `params`, following the Link headers; and the page count."""
    found: list[dict[str, Any]] = []
    pages = 0
    query = dict(params)
    while True:
        response = app.call("GET", f"runs/{run_id}/results", params=query)
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("application/x-ndjson")
        pages += 1
        found += [json.loads(line) for line in response.text.splitlines()]
        link = response.headers.get("Link")
        if not link:
            return found, pages
        target = re.fullmatch(r'<(.+)>; rel="next"', link)
        assert target, link
        query = dict(parse_qsl(urlsplit(target[1]).query))


def test_prompts_in_answers_and_cost_out(app: App, emulator: RunningEmulator) -> None:
    patch = app.call("PATCH", f"jobs/{JOB}", json={"attributes": {"systemPrompt": "Be brief.", "maxTokens": 40}})
    assert patch.status_code == 200, patch.text
    prompts = [{"id": f"q{n}", "user": f"Name a prime number bigger than {n}."} for n in range(25)]
    prompts.append({"id": "bad", "user": "Please [[fail]]"})

    built = build_input(app, {"prompts": prompts})
    run = app.wait(app.start(JOB, {"inputId": built["id"]})["id"])

    assert (built["requests"], run["status"], run["inputId"]) == (26, "Success", built["id"])
    # framing and system prompt 3 + 4 + 5 ("Be brief.") + 4 a request; "Name a prime number bigger than {n}." is
    # 14½ + 1 for the period + 1 a digit, rounded up (17 for 0-9, 18 for 10-24); "Please [[fail]]" is 11
    assert built["estimatedTokens"] == 26 * 16 + 10 * 17 + 15 * 18 + 11 == 867
    assert run["estimatedTokens"] == built["estimatedTokens"]
    every, pages = results(app, run["id"], top="10")
    assert pages == 3
    assert sorted(r["custom_id"] for r in every) == sorted(p["id"] for p in prompts)
    for result in every:
        assert [e.message for e in RESULT.iter_errors(result)] == []
    answer = next(r for r in every if r["custom_id"] == "q7")
    assert (answer["status"], answer["statusCode"], answer["finishReason"]) == ("succeeded", 200, "stop")
    assert "bigger than 7" in answer["content"]
    outputs = run["outputs"]
    for name in ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens"):
        assert outputs[name] == sum((r["usage"] or {}).get(name, 0) for r in every), name
    assert outputs["total_tokens"] > 0
    assert outputs["estimatedCost"] is None  # the e2e host has no price table
    failed, _ = results(app, run["id"], status="failed")
    assert [(r["custom_id"], r["error"]["code"]) for r in failed] == [("bad", "server_error")]
    raw, _ = results(app, run["id"], format="raw")
    assert sorted(line["custom_id"] for line in raw) == sorted(p["id"] for p in prompts)
    assert all("response" in line for line in raw)  # Azure's own lines, untouched
    listed = app.call("GET", "runs", params={"jobId": JOB, "status": "Success"}).json()
    indexed = next(r for r in listed["value"] if r["id"] == run["id"])
    assert indexed["outputs"]["total_tokens"] == outputs["total_tokens"]  # the index has the run as it ended


def test_a_cancelled_run_gives_the_partial_results(app: App, emulator: RunningEmulator) -> None:
    emulator.set_speeds(RESOURCE, requestsPerSecond=0.1)
    built = build_input(app, {"prompts": [{"user": f"Question {n}"} for n in range(40)]})
    started = app.start(JOB, {"inputId": built["id"]})

    def under_way() -> bool:
        batches = app.batches_of(started["id"])
        return bool(batches) and (batches[0]["request_counts"] or {}).get("completed", 0) > 0

    wait_for(under_way, timeout=60, what="the batch to be under way")
    assert app.call("POST", f"runs/{started['id']}/cancel").status_code == 202
    run = app.wait(started["id"], timeout=120)

    every, _ = results(app, run["id"], top="1000")
    assert run["status"] == "Cancelled"
    assert len(every) == 40
    done = [r for r in every if r["status"] == "succeeded"]
    assert 0 < len(done) == run["outputs"]["request_counts_completed"]
    assert {r["error"]["code"] for r in every if r["status"] == "failed"} == {"batch_cancelled"}


def test_results_wait_for_the_run_and_refuse_what_is_not_theirs(app: App, emulator: RunningEmulator) -> None:
    emulator.set_speeds(RESOURCE, validationSeconds=3600)
    started = app.start(JOB, {"inputId": build_input(app, {"prompts": [{"user": "Hi"}]})["id"]})
    chat = app.wait(app.start("gpt-4o", {"user_prompt": "hi"})["id"])

    running = app.call("GET", f"runs/{started['id']}/results")
    not_batch = app.call("GET", f"runs/{chat['id']}/results")
    bad_token = app.call("GET", f"runs/{started['id']}/results", params={"continuationToken": "x"})

    assert (running.status_code, running.json()["code"]) == (409, "results-not-ready")
    assert not_batch.status_code == 409
    assert bad_token.status_code in (400, 409)
    app.call("POST", f"runs/{started['id']}/cancel")


def test_a_missing_input_or_secret_is_refused_before_the_run_starts(app: App) -> None:
    for body, status, field in (
        ({"inputId": "0" * 32}, 404, "inputId"),
        ({"inputFileId": "file-made-up"}, 404, "inputFileId"),
        ({"inputFileSecret": "no-such-secret"}, 404, "inputFileSecret"),
    ):
        response = app.call("POST", f"jobs/{JOB}/runs", json=body)
        assert response.status_code == status, response.text
        assert [e["field"] for e in response.json()["errors"]] == [field]
    listed = requests.get(f"{app.host.base}/api/runs", params={"code": "wrong"}, timeout=10)
    assert listed.status_code == 401
