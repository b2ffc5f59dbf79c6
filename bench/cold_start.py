"""Cold start: importing function_app.py as the worker does, with our deferred imports vs. the usual eager ones.

Every trigger here imports the Azure SDKs it needs (azure-identity, azure-data-tables, azure-keyvault-secrets,
requests, the domain modules) inside its body, so the worker's indexing pays only for azure-functions and
azure-functions-durable. The usual way imports everything at module level. Each sample is a fresh interpreter.

    .venv/bin/python bench/cold_start.py [runs]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = "import function_app"
# What the same app costs when its modules import their dependencies at the top, as most samples do.
EAGER = (
    "import function_app, shared.services, shared.catalog, shared.azure_openai, shared.batching, shared.importing, "
    "shared.secrets, azure.identity, azure.keyvault.secrets, azure.data.tables"
)
PROBE = "import time; t = time.perf_counter(); {imports}; print((time.perf_counter() - t) * 1000)"


def sample(imports: str) -> float:
    output = subprocess.run(
        [sys.executable, "-c", PROBE.format(imports=imports)], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return float(output.strip())


def main(runs: int = 15) -> None:
    results = {
        "ours (deferred imports)": [sample(OURS) for _ in range(runs)],
        "eager module-level imports": [sample(EAGER) for _ in range(runs)],
    }
    print(f"import of function_app.py in a fresh interpreter, {runs} runs each (ms)\n")
    print(f"| {'':28} | {'median':>7} | {'p90':>7} | {'min':>7} |")
    print(f"|{'-' * 30}|{'-' * 9}|{'-' * 9}|{'-' * 9}|")
    for name, values in results.items():
        ordered = sorted(values)
        p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
        print(f"| {name:28} | {statistics.median(values):7.0f} | {p90:7.0f} | {min(values):7.0f} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
