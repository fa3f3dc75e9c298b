"""The job entry point: `python -m training SPEC.json [--home DIR]`.

Validate the spec and the data (before any compute), prepare the run once, train on Ray
Train, export the best checkpoint into the model store (training/run.py). Rerunning the same
spec resumes the same run from its last checkpoint. Progress and metrics are events on stdout
(training/events.py), read by the job service and the CLI. A refused spec or data file is a
`Failure` event and the exit status EXIT_BAD_INPUT.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from training import data, events
from training.config import load_spec


def _refuse(code: Literal["invalid_spec", "invalid_training_file"], message: str) -> int:
    events.emit(events.Failure(code=code, message=message))
    print(message, file=sys.stderr)
    return events.EXIT_BAD_INPUT


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training", description="run one training spec")
    p.add_argument("spec", type=Path, help="a PretrainSpec or FinetuneSpec as JSON")
    p.add_argument(
        "--home", type=Path, default=Path(os.environ.get("TUNESERVE_HOME", ".tuneserve"))
    )
    p.add_argument("--replace-model", action="store_true", help="overwrite an exported model")
    p.add_argument("--ray-address", help="the Ray cluster to train on (default: RAY_ADDRESS)")
    args = p.parse_args(argv)
    try:
        spec = load_spec(args.spec.read_text())
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(x) for x in err['loc'][1:]) or 'spec'}: {err['msg']}"
            for err in exc.errors()
        ]
        return _refuse(
            "invalid_spec", f"invalid spec {args.spec.name}:\n  " + "\n  ".join(problems)
        )

    from training.run import run  # torch and ray: only once the spec is known to be good

    try:
        summary = run(
            spec, args.home, replace_model=args.replace_model, ray_address=args.ray_address
        )
    except (data.DataError, FileNotFoundError) as exc:
        return _refuse("invalid_training_file", f"invalid data: {exc}")
    except ValueError as exc:  # a run id reused with another spec
        return _refuse("invalid_spec", f"invalid spec {args.spec.name}: {exc}")
    shown = {k: v for k, v in summary.items() if k not in ("parity", "history")}
    print(json.dumps(shown, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
