"""Batches on the emulated Azure OpenAI data plane: create, lifecycle, results, validation errors, cancel, quota."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import RunningEmulator, wait_for
from tests.devstack.conftest import DataPlane, batch_lines

TERMINAL = {"completed", "failed", "expired", "cancelled"}


def run_to_end(plane: DataPlane, batch_id: str, timeout: float = 20) -> dict[str, Any]:
    return wait_for(
        lambda: (b := plane.batch(batch_id))["status"] in TERMINAL and b,
        timeout=timeout,
        what=f"batch {batch_id} to finish",
    )


def submit(plane: DataPlane, content: str | bytes, **extra: Any) -> dict[str, Any]:
    file_id = plane.upload(content)["id"]
    response = plane.create_batch(file_id, **extra)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_create_answers_200_validating_with_azure_fields(eastus: DataPlane) -> None:
    file_id = eastus.upload(batch_lines(3))["id"]

    response = eastus.create_batch(file_id, metadata={"run": "run-1"})

    assert response.status_code == 200
    batch = response.json()
    assert batch["id"].startswith("batch_")
    assert batch["object"] == "batch"
    assert batch["status"] == "validating"
    assert batch["input_file_id"] == file_id
    assert batch["endpoint"] == "/chat/completions"
    assert batch["completion_window"] == "24h"
    assert batch["metadata"] == {"run": "run-1"}
    assert batch["expires_at"] == batch["created_at"] + 86400
    assert batch["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert batch["errors"] is None
    # Azure's quirk: unset result file ids come back as "" rather than null.
    assert (batch["output_file_id"], batch["error_file_id"]) == ("", "")
    for stamp in (
        "in_progress_at",
        "finalizing_at",
        "completed_at",
        "failed_at",
        "expired_at",
        "cancelling_at",
        "cancelled_at",
    ):
        assert batch[stamp] is None


def test_batch_goes_validating_in_progress_finalizing_completed_with_timestamps(
    eastus: DataPlane, emulator: RunningEmulator
) -> None:
    # Each phase lasts a few real seconds at the tests' time scale, so a busy machine still sees every one.
    speeds = {"validationSeconds": 60, "requestsPerSecond": 0.5, "finalizingSeconds": 60}
    emulator.set_speeds("aoai-devstack-eastus", **speeds)
    seen: list[str] = []
    batch = submit(eastus, batch_lines(20))

    def finished() -> dict[str, Any] | None:
        current = eastus.batch(batch["id"])
        if not seen or seen[-1] != current["status"]:
            seen.append(current["status"])
        return current if current["status"] in TERMINAL else None

    done = wait_for(finished, timeout=60, interval=0.02)

    assert seen[0] == "validating"
    assert seen[-1] == "completed"
    assert [s for s in ("validating", "in_progress", "finalizing", "completed") if s in seen] == seen
    assert "in_progress" in seen
    assert done["in_progress_at"] - done["created_at"] in (59, 60)
    # 20 requests at one every two emulated seconds take 40 emulated seconds.
    assert 39 <= done["finalizing_at"] - done["in_progress_at"] <= 41
    assert 59 <= done["completed_at"] - done["finalizing_at"] <= 61
    assert done["request_counts"] == {"total": 20, "completed": 20, "failed": 0}
    assert done["failed_at"] is None
    assert done["errors"] is None


def test_completed_batch_has_output_lines_and_an_empty_error_file(eastus: DataPlane) -> None:
    batch = run_to_end(eastus, submit(eastus, batch_lines(12))["id"])

    output = eastus.content_lines(batch["output_file_id"])
    error_file = eastus.request("GET", f"files/{batch['error_file_id']}").json()

    assert sorted(line["custom_id"] for line in output) == sorted(f"task-{i}" for i in range(12))
    assert [line["custom_id"] for line in output] != [f"task-{i}" for i in range(12)], "Azure does not keep order"
    for line in output:
        assert line["error"] is None
        assert line["response"]["status_code"] == 200
        body = line["response"]["body"]
        assert body["object"] == "chat.completion"
        assert body["model"] == "gpt-4o-2024-08-06"
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert body["choices"][0]["finish_reason"] == "stop"
        usage = body["usage"]
        assert usage["prompt_tokens"] > 0
        assert usage["completion_tokens"] > 0
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert error_file["purpose"] == "batch_output"
    assert error_file["bytes"] == 0
    assert eastus.request("GET", f"files/{batch['output_file_id']}").json()["purpose"] == "batch_output"


def test_results_are_deterministic_for_the_same_input(eastus: DataPlane) -> None:
    first = run_to_end(eastus, submit(eastus, batch_lines(4))["id"])
    second = run_to_end(eastus, submit(eastus, batch_lines(4))["id"])

    def replies(batch: dict[str, Any]) -> dict[str, str]:
        lines = eastus.content_lines(batch["output_file_id"])
        return {line["custom_id"]: line["response"]["body"]["choices"][0]["message"]["content"] for line in lines}

    assert replies(first) == replies(second)


def test_lines_carrying_the_failure_marker_go_to_the_error_file(eastus: DataPlane) -> None:
    content = batch_lines(6, prompt="Item {i}") + batch_lines(1, prompt="[[fail]] please").replace("task-0", "bad-0")
    batch = run_to_end(eastus, submit(eastus, content)["id"])

    errors = eastus.content_lines(batch["error_file_id"])
    output = eastus.content_lines(batch["output_file_id"])

    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 7, "completed": 6, "failed": 1}
    assert [line["custom_id"] for line in errors] == ["bad-0"]
    assert errors[0]["response"]["status_code"] == 500
    assert errors[0]["response"]["body"]["error"]["code"] == "server_error"
    assert len(output) == 6


def test_content_filter_marker_fails_the_line_with_400(eastus: DataPlane) -> None:
    batch = run_to_end(eastus, submit(eastus, batch_lines(2, prompt="[[content_filter]] {i}"))["id"])

    errors = eastus.content_lines(batch["error_file_id"])

    assert batch["request_counts"] == {"total": 2, "completed": 0, "failed": 2}
    assert {line["response"]["status_code"] for line in errors} == {400}
    assert {line["response"]["body"]["error"]["code"] for line in errors} == {"content_filter"}


def _line(custom_id: str = "task-0", model: str = "gpt-4o-batch", **overrides: Any) -> str:
    line: dict[str, Any] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": "hi"}]},
    }
    line.update(overrides)
    return json.dumps(line)


VALIDATION_FAILURES = [
    pytest.param(_line() + "\n{not json\n", "invalid_json_line", 2, id="invalid_json_line"),
    pytest.param(_line("a") + "\n" + _line("a") + "\n", "duplicate_custom_id", 2, id="duplicate_custom_id"),
    pytest.param(_line("a") + "\n" + _line("b", url="/embeddings") + "\n", "url_mismatch", 2, id="url_mismatch"),
    pytest.param(_line("a", model="no-such-deployment") + "\n", "model_not_found", 1, id="model_not_found"),
    pytest.param(
        _line("a") + "\n" + _line("b", model="gpt-4o-mini-dz-batch") + "\n", "model_mismatch", 2, id="model_mismatch"
    ),
    pytest.param(_line("a", model="gpt-4o") + "\n", "invalid_request", 1, id="invalid_request_non_batch_sku"),
    pytest.param(_line("a", method="GET") + "\n", "invalid_request", 1, id="invalid_request_method"),
    pytest.param(
        json.dumps({"custom_id": "a", "method": "POST", "url": "/chat/completions"}) + "\n",
        "invalid_request",
        1,
        id="invalid_request_missing_body",
    ),
    pytest.param(_line("a", model="gpt-4-retiring") + "\n", "model_not_found", 1, id="model_not_found_failed_deploy"),
    pytest.param(b"", "empty_file", None, id="empty_file"),
    pytest.param("\n  \n\n", "empty_file", None, id="empty_file_blank_lines"),
]


@pytest.mark.parametrize(("content", "code", "line"), VALIDATION_FAILURES)
def test_invalid_input_fails_validation_with_azure_code_and_line(
    eastus: DataPlane, content: str | bytes, code: str, line: int | None
) -> None:
    batch = run_to_end(eastus, submit(eastus, content)["id"])

    assert batch["status"] == "failed"
    assert batch["failed_at"] is not None
    assert batch["in_progress_at"] is None
    assert batch["errors"]["object"] == "list"
    error = batch["errors"]["data"][0]
    assert (error["code"], error["line"]) == (code, line)
    assert error["message"]
    assert batch["request_counts"]["completed"] is None
    assert batch["request_counts"]["failed"] is None
    assert (batch["output_file_id"], batch["error_file_id"]) == ("", "")


def test_too_many_tasks_fails_validation(eastus: DataPlane) -> None:
    content = "".join(_line(f"t{i}") + "\n" for i in range(100_001))

    batch = run_to_end(eastus, submit(eastus, content)["id"], timeout=60)

    assert batch["status"] == "failed"
    assert batch["errors"]["data"][0]["code"] == "too_many_tasks"
    assert "100,000" in batch["errors"]["data"][0]["message"]


def test_file_from_another_resource_fails_with_input_file_not_found(eastus: DataPlane, sweden: DataPlane) -> None:
    foreign_file = sweden.upload(batch_lines(2, "gpt-4o-mini-batch"))["id"]

    created = eastus.create_batch(foreign_file)
    batch = run_to_end(eastus, created.json()["id"])

    assert created.status_code == 200
    assert batch["status"] == "failed"
    assert batch["errors"]["data"][0]["code"] == "input_file_not_found"
    assert foreign_file in batch["errors"]["data"][0]["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"endpoint": "/chat/completions", "completion_window": "24h"}, "input_file_id"),
        ({"input_file_id": "", "endpoint": "/chat/completions", "completion_window": "24h"}, "input_file_id"),
        ({"input_file_id": "not-a-file", "endpoint": "/chat/completions", "completion_window": "24h"}, "input_file_id"),
        ({"input_file_id": "file-abc", "endpoint": "/embeddings", "completion_window": "24h"}, "endpoint"),
        ({"input_file_id": "file-abc", "completion_window": "24h"}, "endpoint"),
        (
            {"input_file_id": "file-abc", "endpoint": "/chat/completions", "completion_window": "48h"},
            "completion_window",
        ),
        (
            {
                "input_file_id": "file-abc",
                "endpoint": "/chat/completions",
                "completion_window": "24h",
                "metadata": {f"k{i}": "v" for i in range(17)},
            },
            "metadata",
        ),
        (
            {
                "input_file_id": "file-abc",
                "endpoint": "/chat/completions",
                "completion_window": "24h",
                "metadata": {"k": 1},
            },
            "metadata",
        ),
        (
            {
                "input_file_id": "file-abc",
                "endpoint": "/chat/completions",
                "completion_window": "24h",
                "metadata": {"k": "v" * 513},
            },
            "metadata",
        ),
    ],
)
def test_create_refuses_bad_bodies_with_400_naming_the_param(
    eastus: DataPlane, emulator: RunningEmulator, body: dict[str, Any], param: str
) -> None:
    response = eastus.request("POST", "batches", json=body)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert emulator.batches("aoai-devstack-eastus") == []


def test_create_from_a_file_still_pending_is_400_until_it_is_processed(
    eastus: DataPlane, emulator: RunningEmulator
) -> None:
    emulator.set_speeds("aoai-devstack-eastus", fileProcessingSeconds=3600)
    pending = eastus.upload(batch_lines(2), wait=False)
    emulator.set_speeds("aoai-devstack-eastus", fileProcessingSeconds=0)
    processed = eastus.upload(batch_lines(2), wait=False)

    refused = eastus.create_batch(pending["id"])
    accepted = eastus.create_batch(processed["id"])

    assert (pending["status"], processed["status"]) == ("pending", "processed")
    assert refused.status_code == 400
    assert refused.json() == {
        "error": {
            "code": "invalid_request",
            "message": f"The input file '{pending['id']}' has not been processed yet (status 'pending'). "
            "Wait until the file's status is 'processed', then create the batch.",
            "param": "input_file_id",
        }
    }
    assert accepted.status_code == 200
    assert [b["id"] for b in emulator.batches("aoai-devstack-eastus")] == [accepted.json()["id"]]


def test_create_with_non_json_body_is_400(eastus: DataPlane) -> None:
    response = eastus.request("POST", "batches", data=b"{oops", headers={"Content-Type": "application/json"})
    assert response.status_code == 400


def test_sixteen_metadata_pairs_are_accepted(eastus: DataPlane) -> None:
    file_id = eastus.upload(batch_lines(1))["id"]
    metadata = {f"key{i}": f"value{i}" for i in range(16)}

    response = eastus.create_batch(file_id, metadata=metadata)

    assert response.status_code == 200
    assert eastus.batch(response.json()["id"])["metadata"] == metadata


def test_unknown_batch_is_404(eastus: DataPlane) -> None:
    assert eastus.request("GET", "batches/batch_00000000-0000-0000-0000-000000000000").status_code == 404
    assert eastus.request("POST", "batches/batch_00000000-0000-0000-0000-000000000000/cancel").status_code == 404


def test_batches_are_scoped_to_their_resource(eastus: DataPlane, sweden: DataPlane) -> None:
    batch = submit(eastus, batch_lines(1))
    assert sweden.request("GET", f"batches/{batch['id']}").status_code == 404


def test_cancel_in_progress_keeps_partial_results(eastus: DataPlane, emulator: RunningEmulator) -> None:
    emulator.set_speeds("aoai-devstack-eastus", requestsPerSecond=2)  # 40 requests take 20 emulated s (1 s real)
    batch = submit(eastus, batch_lines(40))
    wait_for(lambda: (eastus.batch(batch["id"])["request_counts"]["completed"] or 0) >= 4, what="some progress")

    cancelled = eastus.request("POST", f"batches/{batch['id']}/cancel")

    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelling"
    assert cancelled.json()["cancelling_at"] is not None
    done_at_cancel = cancelled.json()["request_counts"]["completed"]
    assert 0 < done_at_cancel < 40
    final = run_to_end(eastus, batch["id"])
    assert final["status"] == "cancelled"
    assert final["cancelled_at"] - final["cancelling_at"] in (19, 20, 21)
    assert final["completed_at"] is None
    assert final["request_counts"] == {"total": 40, "completed": done_at_cancel, "failed": 0}
    assert len(eastus.content_lines(final["output_file_id"])) == done_at_cancel
    not_run = eastus.content_lines(final["error_file_id"])
    assert len(not_run) == 40 - done_at_cancel
    assert {line["error"]["code"] for line in not_run} == {"batch_cancelled"}


def test_cancel_during_validation_ends_cancelled_without_results(eastus: DataPlane) -> None:
    batch = submit(eastus, batch_lines(3))

    cancelling = eastus.request("POST", f"batches/{batch['id']}/cancel").json()
    again = eastus.request("POST", f"batches/{batch['id']}/cancel")
    final = run_to_end(eastus, batch["id"])

    assert cancelling["status"] == "cancelling"
    assert again.status_code == 200
    assert again.json()["status"] == "cancelling"
    assert final["status"] == "cancelled"
    assert final["in_progress_at"] is None
    assert final["request_counts"] == {"total": 0, "completed": 0, "failed": 0}


def test_cancel_of_a_finished_batch_is_409(eastus: DataPlane) -> None:
    batch = run_to_end(eastus, submit(eastus, batch_lines(1))["id"])

    response = eastus.request("POST", f"batches/{batch['id']}/cancel")

    assert response.status_code == 409
    assert "completed" in response.json()["error"]["message"]
    assert eastus.batch(batch["id"])["status"] == "completed"


def test_token_quota_refuses_create_with_400_until_a_batch_finishes(
    eastus: DataPlane, emulator: RunningEmulator
) -> None:
    emulator.put_deployment(
        "aoai-devstack-eastus",
        "gpt-4o-batch",
        model={"format": "OpenAI", "name": "gpt-4o", "version": "2024-08-06"},
        sku={"name": "GlobalBatch", "capacity": 10},
        capabilities={"chatCompletion": "true"},
        enqueuedTokenLimit=200,
    )
    emulator.set_speeds("aoai-devstack-eastus", requestsPerSecond=1)
    first = submit(eastus, batch_lines(10))  # 120 prompt tokens: 10 x (5 content + 4 framing + 3 priming)
    file_id = eastus.upload(batch_lines(10))["id"]

    refused = eastus.create_batch(file_id)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "token_limit_exceeded"
    assert error["message"] == (
        "The number of enqueued tokens has surpassed the configured limit of 200 for the deployment 'gpt-4o-batch'. "
        "Please either increase the limit or try again once the current jobs have finished."
    )
    assert len(emulator.batches("aoai-devstack-eastus")) == 1

    run_to_end(eastus, first["id"])
    accepted = eastus.create_batch(file_id)
    assert accepted.status_code == 200


def test_token_limit_message_shows_thousands_and_millions_as_azure_does(
    eastus: DataPlane, emulator: RunningEmulator
) -> None:
    emulator.put_deployment(
        "aoai-devstack-eastus",
        "gpt-4o-batch",
        model={"format": "OpenAI", "name": "gpt-4o", "version": "2024-08-06"},
        sku={"name": "GlobalBatch", "capacity": 10},
        enqueuedTokenLimit=30_000,
    )
    big = batch_lines(5, prompt="x" * 30_000)
    response = eastus.create_batch(eastus.upload(big)["id"])

    assert response.status_code == 400
    assert "configured limit of 30K for the deployment 'gpt-4o-batch'" in response.json()["error"]["message"]


def test_list_pages_newest_first_with_after_and_limit(eastus: DataPlane, emulator: RunningEmulator) -> None:
    file_id = eastus.upload(batch_lines(1))["id"]
    created = [eastus.create_batch(file_id).json()["id"] for _ in range(5)]
    newest_first = [
        b["id"]
        for b in sorted(
            emulator.batches("aoai-devstack-eastus"),
            key=lambda b: (b["created_at"], created.index(b["id"])),
            reverse=True,
        )
    ]

    first = eastus.request("GET", "batches", params={"limit": 2}).json()
    second = eastus.request("GET", "batches", params={"limit": 2, "after": first["last_id"]}).json()
    third = eastus.request("GET", "batches", params={"limit": 2, "after": second["last_id"]}).json()
    everything = eastus.request("GET", "batches").json()

    assert first["object"] == "list"
    assert (first["has_more"], second["has_more"], third["has_more"]) == (True, True, False)
    paged = [b["id"] for page in (first, second, third) for b in page["data"]]
    assert sorted(paged) == sorted(created)
    assert len(set(paged)) == 5
    assert first["first_id"] == first["data"][0]["id"]
    assert first["last_id"] == first["data"][-1]["id"]
    assert [b["id"] for b in everything["data"]] == paged
    assert everything["has_more"] is False
    assert len(newest_first) == 5


def test_list_limit_out_of_range_is_400(eastus: DataPlane) -> None:
    for limit in ("0", "101", "ten"):
        assert eastus.request("GET", "batches", params={"limit": limit}).status_code == 400


def test_quota_checked_at_validation_creates_the_batch_then_fails_it(
    eastus: DataPlane, emulator: RunningEmulator
) -> None:
    import requests

    requests.patch(
        f"{emulator.control}/resources/aoai-devstack-eastus", json={"quotaCheck": "validation"}, timeout=10
    ).raise_for_status()
    emulator.put_deployment(
        "aoai-devstack-eastus",
        "gpt-4o-batch",
        model={"format": "OpenAI", "name": "gpt-4o", "version": "2024-08-06"},
        sku={"name": "GlobalBatch", "capacity": 10},
        enqueuedTokenLimit=200,
    )
    emulator.set_speeds("aoai-devstack-eastus", requestsPerSecond=1)
    first = submit(eastus, batch_lines(10))  # 120 tokens of 200

    second = eastus.create_batch(eastus.upload(batch_lines(10))["id"])  # accepted, as in regions without fail-fast
    assert second.status_code == 200
    failed = run_to_end(eastus, second.json()["id"])

    assert failed["status"] == "failed"
    error = failed["errors"]["data"][0]
    assert (error["code"], error["line"], error["param"]) == ("token_limit_exceeded", None, None)
    assert "configured limit of 200 for the deployment 'gpt-4o-batch'" in error["message"]
    assert eastus.batch(first["id"])["status"] in ("validating", "in_progress", "finalizing", "completed")


def test_quota_check_setting_is_validated(emulator: RunningEmulator) -> None:
    import requests

    response = requests.patch(
        f"{emulator.control}/resources/aoai-devstack-eastus", json={"quotaCheck": "never"}, timeout=10
    )
    assert response.status_code == 400
