"""A stand-in for `python -m training SPEC --home HOME`, run by real Ray Jobs in the job
runner's tests: it follows the plan the test wrote beside the spec (plan.json), one step at a
time, so the test decides exactly what the job's log holds and when.

Steps: {"event": text} appends text (no newline added) to this process's events file, where
a run under the job runner writes its events (TUNESERVE_EVENTS_DIR); {"print": text} writes it
on stdout, the Ray Job's log; {"wait_for": name} waits until a file of that name exists beside
the spec; {"model": id} writes a model folder for id (a copy of base); {"exit": code} ends the
run.
"""

import json
import os
import shutil
import sys
import time
from pathlib import Path

spec_path = Path(sys.argv[1])
home = Path(sys.argv[sys.argv.index("--home") + 1])
folder = spec_path.parent
attempt = len(list(folder.glob("started-*"))) + 1
(folder / f"started-{attempt}").touch()
plan = json.loads((folder / "plan.json").read_text())[f"attempt {attempt}"]
events = Path(os.environ["TUNESERVE_EVENTS_DIR"])
events.mkdir(parents=True, exist_ok=True)
for step in plan:
    if "event" in step:
        with (events / f"{os.getpid()}.jsonl").open("a") as f:
            f.write(step["event"])
    elif "print" in step:
        sys.stdout.write(step["print"])
        sys.stdout.flush()
    elif "wait_for" in step:
        # Bounded, so a test that dies before writing the file cannot leave this process
        # behind once Ray is gone.
        deadline = time.monotonic() + 120
        while not (folder / step["wait_for"]).exists():
            if time.monotonic() > deadline or not folder.exists():
                sys.exit(3)
            time.sleep(0.1)
    elif "model" in step:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from training import artifacts

        src = artifacts.model_dir(home, "base")
        manifest = artifacts.read_manifest(src)
        with artifacts.staged_model_dir(home, step["model"]) as stage:
            for sub in ("tokenizer", "onnx", "hf"):
                shutil.copytree(src / sub, stage / sub)
            artifacts.write_manifest(stage, manifest.model_copy(update={"id": step["model"]}))
    elif "exit" in step:
        sys.exit(step["exit"])
