"""Schemathesis against the running service's own /openapi.json, every check it has
(`--checks all`) and every phase, the stateful one included: generated requests, valid and
not, for every operation. No 5xx; every response matches its declared schema, status and
headers (a 405's Allow among them); what the schema calls valid is accepted and what it calls
invalid is refused (tests/e2e/schemathesis.toml names the few 400s that depend on data)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.mark.slow
def test_the_api_survives_schemathesis(service_url, tmp_path):
    exe = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    if not Path(exe).exists():
        pytest.skip("schemathesis is not installed (PyPI schemathesis, in the dev extra)")
    cmd = [
        exe,
        "--config-file",
        str(CONFIG),
        "run",
        f"{service_url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        "40",
        "--seed",
        "7",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        # a health probe and the metrics scrape have no inputs to fuzz
        "--exclude-path-regex",
        "^/(metrics|readyz|healthz|docs.*|redoc.*)$",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path / "report"),
    ]
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,  # its cache (.schemathesis/) stays out of the repository
        env={**os.environ, "NO_COLOR": "1"},
    )
    out = done.stdout[-8000:] + done.stderr[-2000:]
    assert done.returncode == 0, out
