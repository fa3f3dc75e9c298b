"""bench/soak.py, shortened for CI: steady load on a tuneserve of its own for 30 s in six
windows, so every check of the soak applies: 0 errors, the service's memory not growing by
10%, and the p99 of the last windows not double that of the first."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_short_soak_has_no_errors_and_no_memory_growth(store):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "soak.py"),
            "--home",
            str(store),
            "--model",
            "base",
            "--minutes",
            "0.5",
            "--window",
            "5",
            "--capacity-s",
            "3",
            # 3 s probes read above what the 2 cores sustain for 30 s with the Python client
            # sharing them (since direct ingress, seen once at 345/s, then 276/s not held)
            "--share",
            "0.6",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "TUNESERVE_ADMIN_KEY": ""},
    )
    tail = done.stdout[-3000:] + done.stderr[-1500:]
    assert done.returncode == 0, tail
    assert "0 errors" in done.stdout and "PASS" in done.stdout, tail
    assert "p99 median of the first third" in done.stdout, tail  # the stability check ran
