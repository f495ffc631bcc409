"""The bad-input audit (benchmarks/bad_inputs.py) still runs and still finds its cases clean: a few of its cases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bad_inputs.py"


def test_the_bad_input_audit_runs_and_its_data_loss_cases_are_clean(tmp_path):
    cases = ["segment: output = input folder", "evaluate: --output = masks folder", "properties: --output = one*"]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--workdir", str(tmp_path), "--only", *cases],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "3 cases: 3 handled cleanly, 0 not; 0 traceback(s), 0 case(s) that changed" in result.stdout
