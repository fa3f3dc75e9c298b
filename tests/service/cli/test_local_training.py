"""`tuneserve finetune` end to end: its subprocess joins the session's Ray (RAY_ADDRESS)."""

import os
import subprocess
import sys

import pytest
from testdata import classification_file

from training import artifacts


@pytest.fixture
def env(ray_session):
    import ray

    return {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}


def _tuneserve(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def test_finetune_shows_progress_and_registers_the_model(env, store, tmp_path):
    data = classification_file(tmp_path / "cls.jsonl")
    out = _tuneserve(
        env,
        "finetune",
        "--task",
        "text-classification",
        "--train",
        str(data),
        "--home",
        str(store),
        "--run-id",
        "cli-cls",
        "--method",
        "full",
        "--cv-folds",
        "0",  # every epoch as asked: what is shown is under test (cross-validation: test_cv.py)
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--log-every",
        "2",
        "--learning-rate",
        "0.002",
        "--cpus-per-worker",
        "0.5",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "step 18/18" in out.stdout and "[####" in out.stdout  # 72 rows: 24 held out
    assert "eval at step 9:" in out.stdout and "'accuracy'" in out.stdout
    assert "model cli-cls is in the store" in out.stdout
    assert "validation (full):" in out.stdout and "(base zero-shot " in out.stdout
    assert artifacts.read_manifest(artifacts.model_dir(store, "cli-cls")).labels == [
        "negative",
        "positive",
    ]
    # export again from the finished run: nothing is trained, the model is replaced
    again = _tuneserve(env, "export", "cli-cls", "--home", str(store))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "model cli-cls is in the store" in again.stdout and "step 1/" not in again.stdout


def test_finetune_by_default_trains_a_head_on_small_data_and_prints_what_it_bought(
    env, store, tmp_path
):
    data = classification_file(tmp_path / "cls.jsonl", rows=40)
    out = _tuneserve(
        env, "finetune", "--task", "text-classification", "--train", str(data),
        "--home", str(store), "--run-id", "cli-head",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "embedded 40 training texts" in out.stdout
    assert "validation (head):" in out.stdout
    line = next(ln for ln in out.stdout.splitlines() if ln.strip().startswith("accuracy:"))
    assert "(base zero-shot " in line
    assert artifacts.read_manifest(artifacts.model_dir(store, "cli-head")).method == "head"


def test_finetune_refuses_bad_data_with_the_line(env, store, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n{"label": "x"}\n')
    out = _tuneserve(
        env,
        "finetune",
        "--task",
        "text-classification",
        "--train",
        str(bad),
        "--home",
        str(store),
        "--run-id",
        "cli-bad",
        "--cpus-per-worker",
        "0.5",
    )
    assert out.returncode == 2
    assert 'bad.jsonl line 3: "text" is missing or empty' in out.stderr


def test_an_interrupted_finetune_stops_its_run_and_says_how_to_resume(env, store, tmp_path):
    """SIGINT to the command alone (as a supervisor sends it; Ctrl-C in a terminal reaches
    only it too: the run has a process group of its own): the run is stopped, not left
    training, and the command says how to resume it."""
    import signal
    import time
    from pathlib import Path

    data = classification_file(tmp_path / "cls.jsonl", rows=400)
    args = ["finetune", "--task", "text-classification", "--train", str(data), "--home",
            str(store), "--run-id", "cli-interrupted", "--method", "full", "--cv-folds", "0",
            "--epochs", "50", "--batch-size", "2", "--log-every", "1", "--cpus-per-worker", "0.5"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    log = store / "runs" / "cli-interrupted" / "train.log"
    deadline = time.monotonic() + 300
    while not (log.is_file() and '"type":"progress"' in log.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    assert "run cli-interrupted interrupted; rerun with --run-id cli-interrupted" in err
    spec = str(store / "runs" / "cli-interrupted" / "spec.json").encode()
    running = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and spec in (p / "cmdline").read_bytes():
                running.append(p.name)
        except OSError:
            continue
    assert running == []  # its `python -m training` is gone
