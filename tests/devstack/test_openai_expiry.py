"""Expiry: a batch still running when its 24-hour window closes ends `expired`, keeping the results it had.

These tests run their own emulator with a fast virtual clock (24 emulated hours in under 2 real seconds).
"""

from __future__ import annotations

import pytest

from tests.conftest import RunningEmulator, wait_for
from tests.devstack.conftest import DataPlane, batch_lines


@pytest.fixture
def plane(fast_emulator: RunningEmulator) -> DataPlane:
    fast_emulator.reset()
    resource = fast_emulator.resource("aoai-devstack-eastus")
    return DataPlane(resource["endpoint"], resource["apiKey"])


def test_batch_past_its_window_expires_with_partial_results(plane: DataPlane, fast_emulator: RunningEmulator) -> None:
    # 100 requests at one per 1000 emulated seconds cannot finish in 86,400 s: 86 are done when the window closes.
    fast_emulator.set_speeds("aoai-devstack-eastus", validationSeconds=10, requestsPerSecond=0.001)
    file_id = plane.upload(batch_lines(100))["id"]
    batch = plane.create_batch(file_id).json()

    final = wait_for(
        lambda: (b := plane.batch(batch["id"]))["status"] == "expired" and b, timeout=30, what="the batch to expire"
    )

    assert final["expired_at"] == final["expires_at"] == final["created_at"] + 86400
    assert final["completed_at"] is None
    assert final["failed_at"] is None
    assert final["request_counts"] == {"total": 100, "completed": 86, "failed": 0}
    assert len(plane.content_lines(final["output_file_id"])) == 86
    not_run = plane.content_lines(final["error_file_id"])
    assert len(not_run) == 14
    assert {line["error"]["code"] for line in not_run} == {"batch_expired"}
    assert all(line["response"] is None for line in not_run)


def test_batch_still_validating_at_expiry_expires_without_results(
    plane: DataPlane, fast_emulator: RunningEmulator
) -> None:
    fast_emulator.set_speeds("aoai-devstack-eastus", validationSeconds=90_000)
    batch = plane.create_batch(plane.upload(batch_lines(3))["id"]).json()

    final = wait_for(
        lambda: (b := plane.batch(batch["id"]))["status"] == "expired" and b, timeout=30, what="the batch to expire"
    )

    assert final["expired_at"] == final["created_at"] + 86400
    assert final["in_progress_at"] is None
    assert (final["output_file_id"], final["error_file_id"]) == ("", "")


def test_quota_frees_when_a_batch_expires(plane: DataPlane, fast_emulator: RunningEmulator) -> None:
    fast_emulator.put_deployment(
        "aoai-devstack-eastus",
        "gpt-4o-batch",
        model={"format": "OpenAI", "name": "gpt-4o", "version": "2024-08-06"},
        sku={"name": "GlobalBatch", "capacity": 10},
        enqueuedTokenLimit=100,
    )
    fast_emulator.set_speeds("aoai-devstack-eastus", validationSeconds=10, requestsPerSecond=0.00001)
    file_id = plane.upload(batch_lines(5))["id"]  # 60 tokens: one batch fits, two do not
    first = plane.create_batch(file_id).json()
    assert plane.create_batch(file_id).status_code == 400

    wait_for(lambda: plane.batch(first["id"])["status"] == "expired", timeout=30, what="the first batch to expire")

    assert plane.create_batch(file_id).status_code == 200
