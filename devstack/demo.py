"""`make demo`: the main job, run as a user would, against the local stack.

Imports deployments through the HTTP API, uploads a sample JSONL to the emulated resource, stores its file id in
the emulated Key Vault, starts `<deployment>::batch` with the secret reference, shows progress, prints the final run
and the first lines of the output file, then cancels a second run. Exits 0 only if the run reached Success with
the expected outputs.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from devstack.inputs import InputError, store_secret, upload_input

ROOT = Path(__file__).resolve().parent.parent
RESOURCE = "aoai-devstack-eastus"
DEPLOYMENT = "gpt-4o-batch"
SECRET = "demo-batch-input-file"
REQUESTS = 40
TIME_SCALE = 20.0


class DemoFailed(RuntimeError):
    pass


class Stack:
    """What the demo talks to, read from .devstack/endpoints.json."""

    def __init__(self, endpoints: dict[str, Any]) -> None:
        self.endpoints = endpoints
        self.api = endpoints["functions"]["baseUrl"].rstrip("/") + "/api"
        self.http = requests.Session()
        self.http.headers["x-functions-key"] = endpoints["functions"]["key"]
        self.openai = endpoints["openai"][RESOURCE]

    def call(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        response = self.http.request(method, f"{self.api}/{path}", timeout=60, **kwargs)
        if response.status_code != expect:
            raise DemoFailed(f"{method} /api/{path} answered {response.status_code}: {response.text}")
        return response.json() if response.content else None

    def upload_sample(self) -> str:
        lines = []
        for i in range(REQUESTS):
            prompt = f"Write a one-line product description for gadget #{i}."
            lines.append(
                json.dumps(
                    {
                        "custom_id": f"gadget-{i}",
                        "method": "POST",
                        "url": "/chat/completions",
                        "body": {
                            "model": DEPLOYMENT,
                            "messages": [{"role": "user", "content": prompt}],
                            "max_tokens": 60,
                        },
                    }
                )
            )
        return upload_input(self.endpoints, ("\n".join(lines) + "\n").encode(), "gadgets.jsonl", RESOURCE)

    def store_secret(self, name: str, value: str) -> None:
        store_secret(self.endpoints, name, value)

    def output_lines(self, file_id: str, count: int) -> list[dict[str, Any]]:
        response = requests.get(
            f"{self.openai['endpoint']}/openai/files/{file_id}/content",
            params={"api-version": "2024-10-21"},
            headers={"api-key": self.openai["apiKey"]},
            timeout=60,
        )
        response.raise_for_status()
        return [json.loads(line) for line in response.text.splitlines()[:count]]


def progress_bar(run: dict[str, Any], width: int = 30) -> str:
    progress = run.get("progress") or {}
    total = progress.get("total") or 0
    done = (progress.get("completed") or 0) + (progress.get("failed") or 0)
    filled = int(width * done / total) if total else 0
    counts = f"{done}/{total}" if total else "-/-"
    return f"[{'#' * filled}{'.' * (width - filled)}] {counts:>9}  {run['status']:<9} {run.get('azureStatus') or ''}"


def wait_for_end(stack: Stack, run_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        run = stack.call("GET", f"runs/{run_id}", 200)
        line = progress_bar(run)
        if line != last:
            print(f"  {line}", flush=True)
            last = line
        if run["status"] in ("Success", "Failed", "Cancelled"):
            return dict(run)
        time.sleep(0.5)
    raise DemoFailed(f"run {run_id} did not end within {timeout:.0f} s")


def scenario(stack: Stack) -> None:
    print("1. Import the resource's deployments as jobs", flush=True)
    counts = stack.call("POST", "jobs/import", 200)
    print(
        f"   added {counts['added']}, updated {counts['updated']}, retired {counts['retired']}, "
        f"skipped {counts['skipped']}",
        flush=True,
    )
    job = stack.call("GET", f"jobs/{DEPLOYMENT}::batch", 200)
    print(f"   {job['externalId']}: {job['jobTypeName']}, SKU {job['sku']}, status {job['status']}", flush=True)

    print(f"2. Upload {REQUESTS} requests to {RESOURCE} and keep the file id in Key Vault as '{SECRET}'", flush=True)
    file_id = stack.upload_sample()
    stack.store_secret(SECRET, file_id)
    print(f"   file {file_id} → secret {SECRET}", flush=True)

    print(f"3. Run {DEPLOYMENT}::batch with the secret reference", flush=True)
    started = stack.call(
        "POST", f"jobs/{DEPLOYMENT}::batch/runs", 202, json={"inputFileSecret": SECRET, "metadata": {"purpose": "demo"}}
    )
    print(f"   run {started['id']}", flush=True)
    run = wait_for_end(stack, started["id"])
    print(json.dumps(run, indent=2), flush=True)
    outputs = run["outputs"]
    if run["status"] != "Success" or outputs["request_counts_completed"] != REQUESTS or not outputs["output_file_id"]:
        raise DemoFailed(f"the run ended {run['status']} with outputs {outputs}")
    print("   first lines of the output file:", flush=True)
    for line in stack.output_lines(outputs["output_file_id"], 3):
        reply = line["response"]["body"]["choices"][0]["message"]["content"]
        print(f"   {line['custom_id']}: {reply}", flush=True)

    print("4. Start a second run and cancel it", flush=True)
    second = stack.call("POST", f"jobs/{DEPLOYMENT}::batch/runs", 202, json={"inputFileSecret": SECRET})
    time.sleep(1.0)
    stack.call("POST", f"runs/{second['id']}/cancel", 202)
    cancelled = wait_for_end(stack, second["id"])
    if cancelled["status"] != "Cancelled":
        raise DemoFailed(f"the cancelled run ended {cancelled['status']}")
    print(f"   {second['id']} ended Cancelled", flush=True)
    print("Demo passed.", flush=True)


def main(state_dir: Path = Path(".devstack"), time_scale: float = TIME_SCALE) -> int:
    endpoints_file = (ROOT / state_dir).resolve() / "endpoints.json"
    endpoints_file.unlink(missing_ok=True)
    print(f"Starting the local stack (time runs x{time_scale:g}) ...", flush=True)
    stack_process = subprocess.Popen(
        [sys.executable, "-m", "devstack", "up", "--time-scale", str(time_scale), "--state-dir", str(state_dir)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while not (endpoints_file.exists() and "functions" in json.loads(endpoints_file.read_text() or "{}")):
            if stack_process.poll() is not None:
                raise DemoFailed(f"the local stack exited with {stack_process.returncode}; see {state_dir}/*.log")
            if time.monotonic() > deadline:
                raise DemoFailed("the local stack did not come up within 120 s")
            time.sleep(0.3)
        scenario(Stack(json.loads(endpoints_file.read_text())))
        return 0
    except (DemoFailed, InputError, requests.RequestException) as exc:
        print(f"Demo failed: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        stack_process.send_signal(signal.SIGTERM)
        try:
            stack_process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stack_process.kill()
