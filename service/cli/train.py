"""`tuneserve finetune | pretrain | export`: training on this machine, as a job would, with a
progress bar. The spec is built and checked here; `python -m training` runs it."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from pydantic import ValidationError

from service.cli.local_ray import local_ray_env
from service.cli.progress import evaluation_line, progress_line
from service.cli.store import import_base
from service.settings import Settings
from training import data, events
from training.config import TASKS, auto_epochs, build_spec


def _default_cpus_per_worker(args: argparse.Namespace) -> float:
    """On CPU, the workers share this machine's cores (a worker's torch uses as many threads as
    it has CPUs); on GPU one CPU a worker feeds its GPU."""
    if args.gpu:
        return 1.0
    return max(1.0, (os.cpu_count() or 1) // args.workers)


def _epochs(args: argparse.Namespace, task: str) -> float | None:
    """--epochs, or for a fine-tune the job API's "auto" (by the training file's rows)."""
    if args.epochs is not None or task == "masked-lm":
        return args.epochs
    train = data.READERS[TASKS[task].file_format](Path(args.train))
    rows = len(train.texts) if isinstance(train, data.ClassificationData) else len(train)
    return auto_epochs(task, rows)


def spec_from_args(args: argparse.Namespace, task: str) -> dict:
    hp = {
        "epochs": _epochs(args, task),
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "max_seq_length": args.max_length,
        "doc_stride": getattr(args, "doc_stride", None),
        "max_steps": args.max_steps,
        "seed": args.seed,
        "log_every_steps": args.log_every,
        "cv_folds": getattr(args, "cv_folds", None),
    }
    spec = build_spec(
        run_id=args.run_id or f"{task}-{time.strftime('%Y%m%d-%H%M%S')}",
        task=task,
        base_model=args.base,
        train_file=Path(args.train).resolve(),
        validation_file=Path(args.validation).resolve() if args.validation else None,
        output_model_id=args.model_id,
        hyperparameters={k: v for k, v in hp.items() if v is not None},
        scaling={
            "num_workers": args.workers,
            "use_gpu": args.gpu,
            "cpus_per_worker": args.cpus_per_worker or _default_cpus_per_worker(args),
            **({"mixed_precision": args.mixed_precision} if args.mixed_precision else {}),
        },
        **{
            k: getattr(args, k, None) for k in ("objective", "scratch_size", "vocab_size", "method")
        },
    )
    return spec.model_dump(mode="json", exclude_unset=True)


def run_training(spec: dict, home: Path, *, replace_model: bool = False) -> int:
    """Run `python -m training` on the spec (as a Ray Job does) and show its progress."""
    runs = home / "runs" / spec["run_id"]
    runs.mkdir(parents=True, exist_ok=True)
    spec_path = runs / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    ray_tmp = local_ray_env()
    cmd = [sys.executable, "-m", "training", str(spec_path), "--home", str(home)]
    if replace_model:
        cmd.append("--replace-model")
    print(
        f"run {spec['run_id']}: {spec['task']} from {spec['base_model']} (logs: {runs / 'train.log'})"
    )
    try:
        with (
            (runs / "train.log").open("a") as log,
            subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=os.environ.copy(),
                # a group of its own: Ctrl-C reaches this process alone, which stops the run
                # with one SIGINT (a second one could cut its shutdown short: _interrupt)
                process_group=0,
            ) as proc,
        ):
            assert proc.stdout is not None
            try:
                result = _show(proc.stdout, log)
            except KeyboardInterrupt:
                _interrupt(proc, log)
                print(
                    f"\nrun {spec['run_id']} interrupted; rerun with --run-id {spec['run_id']} "
                    "to resume it from its last checkpoint",
                    file=sys.stderr,
                )
                return 130
        if proc.returncode:
            print(
                f"\nrun {spec['run_id']} failed (exit {proc.returncode}); see {runs / 'train.log'}",
                file=sys.stderr,
            )
            return proc.returncode
        if result and result.model:
            print(
                f"\nmodel {result.model} is in the store (serving {result.precision}); "
                "a running service serves it on the next request"
            )
        if result:
            print(result_lines(result, spec["base_model"]))
        return 0
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _interrupt(proc: subprocess.Popen, log: IO[str], grace_s: float = 30.0) -> None:
    """Stop the run with one SIGINT, as Ctrl-C would (its Ray shut down, its checkpoints
    kept); terminate it if it does not stop in time. Its output is still read meanwhile, so
    that a full pipe cannot hold it."""

    def drain() -> None:
        with contextlib.suppress(ValueError, OSError):  # the log closes when we return
            for line in proc.stdout or ():
                log.write(line)

    threading.Thread(target=drain, daemon=True).start()
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def result_lines(result: events.Result, base: str) -> str:
    """The run's validation scores beside its base's zero-shot scores on the same data."""
    method = f" ({result.method})" if result.method else ""
    rows = [f"validation{method}:"]
    for key, value in result.metrics.items():
        if key in result.baseline:
            zero = result.baseline[key]
            rows.append(f"  {key}: {value:.4g}  ({base} zero-shot {zero:.4g}, {value - zero:+.4g})")
    return "\n".join(rows) if len(rows) > 1 else ""


def _show(lines, log) -> events.Result | None:
    """Show a run's events as they come (Ray may print a worker's line twice: each step once)."""
    last_step, last_eval, result = 0, -1, None
    for line in lines:
        log.write(line)
        for event in events.parse(line):
            if isinstance(event, events.Progress) and event.step > last_step:
                last_step = event.step
                print(progress_line(event), end="", flush=True)
            elif isinstance(event, events.Evaluation) and event.step > last_eval:
                last_eval = event.step
                print(evaluation_line(event), flush=True)
            elif isinstance(event, events.Message):
                print(f"  {event.message}", flush=True)
            elif isinstance(event, events.Baseline):
                print(f"  {event.summary()}", flush=True)
            elif isinstance(event, events.Failure):
                print(event.message, file=sys.stderr, flush=True)
            elif isinstance(event, events.Result):
                result = event
    return result


def _train_from_args(args: argparse.Namespace, task: str) -> int:
    settings = Settings(**({"home": args.home} if args.home else {}))
    try:
        spec = spec_from_args(args, task)
    except ValidationError as exc:
        for err in exc.errors():
            print(
                f"invalid spec: {'.'.join(str(x) for x in err['loc'][1:])}: {err['msg']}",
                file=sys.stderr,
            )
        return events.EXIT_BAD_INPUT
    except (data.DataError, FileNotFoundError) as exc:  # read for the "auto" epochs
        print(f"invalid data: {exc}", file=sys.stderr)
        return events.EXIT_BAD_INPUT
    if spec["base_model"] == settings.base_model:
        import_base(settings)  # a fresh store: the bundled encoder is the default base
    return run_training(spec, settings.home)


def cmd_finetune(args: argparse.Namespace) -> int:
    return _train_from_args(args, args.task)


def cmd_pretrain(args: argparse.Namespace) -> int:
    return _train_from_args(args, "masked-lm")


def cmd_export(args: argparse.Namespace) -> int:
    """Export (again) the best checkpoint of a finished run: reruns its spec, which resumes at
    its end and trains nothing."""
    settings = Settings(**({"home": args.home} if args.home else {}))
    spec_path = settings.home / "runs" / args.run_id / "spec.json"
    if not spec_path.is_file():
        print(f"no run {args.run_id!r} under {settings.home / 'runs'}", file=sys.stderr)
        return 2
    spec = {**json.loads(spec_path.read_text()), "export": True}
    return run_training(spec, settings.home, replace_model=True)


def _training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", required=True, help="training data file")
    p.add_argument(
        "--validation",
        help="validation file (default: 10%% of --train held out, by label, at least 100 rows "
        "or a quarter; the head method cross-validates instead)",
    )
    p.add_argument("--base", default="base", help="model to start from (default base)")
    p.add_argument("--run-id", help="name of the run; rerunning a name resumes it")
    p.add_argument("--model-id", help="id of the exported model (default: the run id)")
    p.add_argument("--epochs", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--max-length", type=int, help="max sequence length in tokens")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--log-every", type=int, help="log every N steps")
    p.add_argument("--workers", type=int, default=1, help="data-parallel workers")
    p.add_argument("--cpus-per-worker", type=float, help="default: this machine's cores / workers")
    p.add_argument("--gpu", action="store_true", help="train on GPUs (one per worker)")
    p.add_argument("--mixed-precision", choices=["bf16", "fp16"], help="GPU only")
    p.add_argument("--home", type=Path)


def add_commands(sub) -> None:
    ft = sub.add_parser("finetune", help="fine-tune a model for classification or QA")
    ft.add_argument("--task", required=True, choices=["text-classification", "extractive-qa"])
    ft.add_argument("--doc-stride", type=int, help="QA: tokens shared by adjacent windows")
    ft.add_argument(
        "--method",
        choices=["auto", "full", "head"],
        help="classification: head (seconds, kilobytes) or full (every weight); auto: by data size",
    )
    ft.add_argument(
        "--cv-folds",
        type=int,
        help="full method under 128 rows a label: folds that decide whether training beats "
        "zero-shot, else a head variant is made (default 4; 0: off)",
    )
    _training_args(ft)
    ft.set_defaults(func=cmd_finetune)

    pt = sub.add_parser("pretrain", help="masked-LM pretraining, from an encoder or from scratch")
    pt.add_argument("--objective", choices=["mlm", "mlm+nsp"])
    pt.add_argument("--scratch-size", choices=["tiny", "mini", "small", "medium", "base"])
    pt.add_argument("--vocab-size", type=int, help="scratch: WordPiece vocabulary size")
    _training_args(pt)
    pt.set_defaults(func=cmd_pretrain)

    ex = sub.add_parser("export", help="export the best checkpoint of a run again")
    ex.add_argument("run_id")
    ex.add_argument("--home", type=Path)
    ex.set_defaults(func=cmd_export)
