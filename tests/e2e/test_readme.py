"""The README's API examples run as written: on the stack `make up` starts, in bash, in order, from the project
directory, each to exit 0 — and the runs they start end as the README says."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ROOT, wait_for

README = ROOT / "README.md"
TESTED = "<!-- tested: tests/e2e/test_readme.py runs this block -->"
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<code>.*?)^```$", re.MULTILINE | re.DOTALL)
# What `make up` listens on; local.settings.json (from local.settings.sample.json) points the app at these.
STACK_PORTS = (7071, 8480, 8481, 10000, 10001, 10002, 10003)
TIME_SCALE = 40.0  # `make up` runs on real time; the same stack 40 times faster ends the sample batch in seconds
# Stricter than a user's shell, so that a broken example cannot pass: an unset variable, a failing command (also
# inside a pipe or $(...)) or an HTTP error answer (curl --fail-with-body) ends the script.
PRELUDE = """\
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true  # bash 4.4+
exec 2>&1
curl() { command curl --silent --show-error --fail-with-body "$@"; }
"""


@dataclass(frozen=True)
class Example:
    line: int  # where the block starts in README.md
    lang: str
    code: str
    tested: bool


def readme_examples(text: str) -> list[Example]:
    return [
        Example(
            line=text.count("\n", 0, match.start()) + 1,
            lang=match["lang"],
            code=match["code"],
            tested=text[: match.start()].rstrip().endswith(TESTED),
        )
        for match in FENCE.finditer(text)
    ]


def script(examples: list[Example]) -> str:
    parts = [PRELUDE]
    for example in examples:
        parts.append(f'printf "\\n--- README.md line {example.line}\\n"\n{example.code}')
    parts.append('printf "\\n--- all examples ran\\n"\n')
    return "\n".join(parts)


def test_every_example_that_calls_the_app_is_run_by_this_test() -> None:
    examples = readme_examples(README.read_text())
    calling_the_app = [e for e in examples if "$BASE" in e.code]

    assert len(calling_the_app) >= 6
    assert all(e.tested for e in calling_the_app), [e.line for e in calling_the_app if not e.tested]
    assert all(e.lang == "sh" for e in examples if e.tested)


def port_in_use(port: int) -> bool:
    with closing(socket.socket()) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class Stack:
    endpoints_file: Path
    endpoints: dict[str, Any]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """`python -m devstack up`, as `make up` runs it but faster and with its state in a temporary directory, once
    its endpoints.json lists the app."""
    busy = [port for port in STACK_PORTS if port_in_use(port)]
    assert not busy, f"ports {busy} are taken (is `make up` running?); this test starts the stack on them"
    state = tmp_path / "devstack"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVSTACK_")}
    command = [sys.executable, "-m", "devstack", "up", "--time-scale", str(TIME_SCALE), "--state-dir", str(state)]
    log = tmp_path / "up.log"
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    endpoints_file = state / "endpoints.json"

    def app_is_up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"devstack up exited with {process.returncode}:\n{log.read_text()}")
        return endpoints_file.exists() and "functions" in json.loads(endpoints_file.read_text())

    try:
        wait_for(app_is_up, timeout=90, interval=0.3, what="devstack up with the Functions host")
        yield Stack(endpoints_file, json.loads(endpoints_file.read_text()))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
@pytest.mark.timeout(360)
def test_readme_examples_run_as_written_after_make_up(stack: Stack) -> None:
    examples = [e for e in readme_examples(README.read_text()) if e.tested]

    result = subprocess.run(
        ["bash", "-c", script(examples)],
        cwd=ROOT,
        env={**os.environ, "ENDPOINTS": str(stack.endpoints_file)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    output = result.stdout
    assert result.returncode == 0, f"a README example failed (the last '--- README.md line' names it):\n{output}"
    assert output.rstrip().endswith("--- all examples ran")
    answers = [json.loads(line) for line in output.splitlines() if line.startswith('{"custom_id"')]
    assert {a["custom_id"] for a in answers if a["status"] == "succeeded"} == {"q1", "q2"}  # the results API's lines
    functions = stack.endpoints["functions"]
    runs = requests.get(
        f"{functions['baseUrl']}/api/runs", headers={"x-functions-key": functions["key"]}, timeout=30
    ).json()["value"]
    assert not [run for run in runs if run.get("parentRun")]  # a listing shows the runs users started, never shards
    batch = [run for run in runs if run["jobId"] == "gpt-4o-batch::batch"]
    chat = [run for run in runs if run["jobId"] == "gpt-4o"]
    # Three runs succeeded, the Idempotency-Key's retry started no fourth one, and the cancelled run ended Cancelled.
    assert sorted(run["status"] for run in batch) == ["Cancelled", "Success", "Success", "Success"]
    completed = [run["outputs"]["request_counts_completed"] for run in batch if run["status"] == "Success"]
    assert sorted(completed) == [2, 5, 5]
    assert [run["status"] for run in chat] == ["Success"]
