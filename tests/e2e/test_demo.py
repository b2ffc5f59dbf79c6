"""`make demo` (python -m devstack demo) runs the main job end to end and exits 0 only on success."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_demo_runs_the_main_job_and_exits_zero(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devstack", "demo", "--state-dir", str(tmp_path / "stack")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout
    assert "1. Import the resource's deployments as jobs" in output
    assert '"status": "Success"' in output
    assert '"request_counts_completed": 40' in output
    assert "gadget-" in output  # the first lines of the output file
    assert "ended Cancelled" in output
    assert output.rstrip().endswith("Demo passed.")
