"""`make demo`: the main job, run as a user would, against the local stack.

Over the app's HTTP API only (no SDK in the path): imports deployments, builds an input from prompts (checked,
staged and uploaded by the app), starts `<deployment>::batch` with it, shows progress, prints the final run with its
usage and cost, reads the answers from the results API, then cancels a second run. Exits 0 only if the run reached
Success with one answer per prompt.
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

ROOT = Path(__file__).resolve().parent.parent
RESOURCE = "aoai-devstack-eastus"
DEPLOYMENT = "gpt-4o-batch"
REQUESTS = 40
TIME_SCALE = 20.0


class DemoFailed(RuntimeError):
    pass


class Stack:
    """What the demo talks to, read from .devstack/endpoints.json: the app's HTTP API, and nothing else."""

    def __init__(self, endpoints: dict[str, Any]) -> None:
        self.api = endpoints["functions"]["baseUrl"].rstrip("/") + "/api"
        self.http = requests.Session()
        self.http.headers["x-functions-key"] = endpoints["functions"]["key"]

    def call(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        response = self.http.request(method, f"{self.api}/{path}", timeout=60, **kwargs)
        if response.status_code != expect:
            raise DemoFailed(f"{method} /api/{path} answered {response.status_code}: {response.text}")
        return response.json() if response.content else None

    def results(self, run_id: str, **params: str) -> tuple[list[dict[str, Any]], int]:
        """Every result of the run, following the results' Link headers; and how many pages it took."""
        found: list[dict[str, Any]] = []
        url: str | None = f"{self.api}/runs/{run_id}/results"
        pages = 0
        while url:
            response = self.http.get(url, params=params if pages == 0 else None, timeout=60)
            if response.status_code != 200:
                raise DemoFailed(f"GET {url} answered {response.status_code}: {response.text}")
            found += [json.loads(line) for line in response.text.splitlines()]
            pages += 1
            url = response.links.get("next", {}).get("url")
        return found, pages


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
    job_id = f"{DEPLOYMENT}::batch"
    print("1. Import the resource's deployments as jobs", flush=True)
    counts = stack.call("POST", "jobs/import", 200)
    print(
        f"   added {counts['added']}, updated {counts['updated']}, retired {counts['retired']}, "
        f"skipped {counts['skipped']}",
        flush=True,
    )
    job = stack.call("GET", f"jobs/{job_id}", 200)
    print(f"   {job['externalId']}: {job['jobTypeName']}, SKU {job['sku']}, status {job['status']}", flush=True)

    print(f"2. Build an input of {REQUESTS} prompts with the job's system prompt", flush=True)
    attributes = {"systemPrompt": "You write one-line product descriptions.", "maxTokens": 60}
    stack.call("PATCH", f"jobs/{job_id}", 200, json={"attributes": attributes})
    prompts = [{"id": f"gadget-{i}", "user": f"Describe gadget #{i}."} for i in range(REQUESTS)]
    built = stack.call("POST", f"jobs/{job_id}/inputs", 201, json={"prompts": prompts})
    print(
        f"   input {built['id']}: {built['requests']} requests, {built['bytes']:,} bytes, about "
        f"{built['estimatedTokens']:,} prompt tokens, uploaded as {built['fileId']} ({built['status']})",
        flush=True,
    )

    print(f"3. Run {job_id} with that input", flush=True)
    started = stack.call(
        "POST", f"jobs/{job_id}/runs", 202, json={"inputId": built["id"], "metadata": {"purpose": "demo"}}
    )
    print(f"   run {started['id']}", flush=True)
    run = wait_for_end(stack, started["id"])
    print(json.dumps(run, indent=2), flush=True)
    outputs = run["outputs"]
    if run["status"] != "Success" or outputs["request_counts_completed"] != REQUESTS or not outputs["total_tokens"]:
        raise DemoFailed(f"the run ended {run['status']} with outputs {outputs}")
    cost = outputs.get("estimatedCost")
    spent = f"{cost['amount']:.6f} {cost['currency']}" if cost else "no price configured"
    print(f"   used {outputs['total_tokens']:,} tokens ({outputs['cached_tokens']:,} cached prompt tokens): {spent}")

    print("4. Read the answers (the results API, a page at a time)", flush=True)
    answers, pages = stack.results(started["id"], top="15")
    if sorted(a["custom_id"] for a in answers) != sorted(p["id"] for p in prompts):
        raise DemoFailed(f"the results hold {len(answers)} answers, not one per prompt")
    for answer in sorted(answers, key=lambda a: int(a["custom_id"].split("-")[1]))[:3]:
        print(f"   {answer['custom_id']}: {answer['content']}", flush=True)
    print(f"   {len(answers)} answers in {pages} pages", flush=True)

    print("5. Start a second run with the same input and cancel it", flush=True)
    second = stack.call("POST", f"jobs/{job_id}/runs", 202, json={"inputId": built["id"]})
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
    except (DemoFailed, requests.RequestException) as exc:
        print(f"Demo failed: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        stack_process.send_signal(signal.SIGTERM)
        try:
            stack_process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stack_process.kill()
