"""The one training loop, for every task, and the TorchTrainer that runs it.

`train_loop_per_worker` reads top to bottom: load the prepared data, build the model, wrap it
for DDP, resume from the last checkpoint if there is one, then step / log / evaluate /
checkpoint until the epochs (or `max_steps`) are done. Rank 0 writes checkpoints; every rank
calls `ray.train.report` the same number of times. The distributed parts are the
`prepare_model`, `prepare_data_loader` and sampler lines; the rest is a plain PyTorch loop.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

import ray.train
import torch
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from torch.utils.data import DataLoader, DistributedSampler
from transformers import get_linear_schedule_with_warmup

from training.config import FinetuneSpec, PretrainSpec, load_spec
from training.tasks import ClassificationTask, MaskedLMTask, QATask, load_tokenizer

STATE_FILE = "trainer_state.pt"
HF_SUBDIR = "hf"


TASKS = {
    "text-classification": ClassificationTask,
    "extractive-qa": QATask,
    "masked-lm": MaskedLMTask,
}


def make_task(spec, tokenizer, labels: list[str]):
    if spec.task == "text-classification":
        return ClassificationTask(spec, tokenizer, labels)
    return TASKS[spec.task](spec, tokenizer)


def _emit(event: dict) -> None:
    """One JSON line on stdout: the job service reads these as events (rank 0 only)."""
    print(json.dumps({"tuneserve_event": event}), flush=True)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    # no weight decay on biases and layer norms, as in BERT
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def train_loop_per_worker(config: dict) -> None:
    spec = load_spec(config["spec"])
    hp = spec.hyperparameters
    run_dir = Path(config["run_dir"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(hp.seed)

    # data, prepared once by the driver (training/__main__.py)
    prepared = torch.load(run_dir / "prepared.pt", weights_only=False)
    tokenizer = load_tokenizer(run_dir / "tokenizer", hp.max_seq_length)
    task = make_task(spec, tokenizer, prepared["labels"])
    train = prepared["train"]
    sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=hp.seed)
    loader = DataLoader(train, batch_size=hp.batch_size, sampler=sampler, collate_fn=task.collate)
    loader = ray.train.torch.prepare_data_loader(loader, add_dist_sampler=False)
    device = ray.train.torch.get_device()

    # model, optimizer, schedule
    model = task.build_model(run_dir / "init")
    model = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.AdamW(_param_groups(model, hp.weight_decay), lr=hp.learning_rate)
    steps_per_epoch = math.ceil(len(loader) / hp.gradient_accumulation)
    total_steps = hp.max_steps or max(1, math.ceil(steps_per_epoch * hp.epochs))
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(hp.warmup_ratio * total_steps), total_steps
    )
    use_amp = spec.scaling.use_gpu and spec.scaling.mixed_precision != "no"
    amp_dtype = torch.bfloat16 if spec.scaling.mixed_precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(enabled=use_amp and amp_dtype == torch.float16)

    # resume: Ray Train hands back the latest checkpoint of this run name, after a retry or
    # when the run is started again with the same RunConfig(name, storage_path)
    step, epoch, batch_in_epoch, history = 0, 0, 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, map_location=device, weights_only=False)
        _unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        step, epoch, batch_in_epoch, history = (
            state["step"],
            state["epoch"],
            state["batch_in_epoch"],
            state["history"],
        )
    resumed_from = step
    if checkpoint and rank == 0:
        _emit(
            {
                "type": "message",
                "level": "warn",
                "message": f"Training resumed from its checkpoint at step {step} "
                f"(epoch {epoch}); the steps after it are trained again",
            }
        )

    evaluate = _evaluator(task, prepared, hp, device)
    if hp.eval_before_training and not checkpoint:
        before = {
            **evaluate(model),
            "step": 0,
            "epoch": 0,
            "resumed_from_step": 0,
            "workers": world,
        }
        history.append(before)  # recorded, not reported: nothing to checkpoint yet
        if rank == 0:
            _emit({"type": "metrics", **before})
    model.train()
    started, samples, tokens = time.monotonic(), 0, 0
    train_seconds = 0.0  # time in training steps only, not evaluation or checkpoints

    def save_and_report(metrics: dict) -> None:
        metrics = {
            **metrics,
            "step": step,
            "epoch": epoch,
            "resumed_from_step": resumed_from,
            "workers": world,
            "train_samples_per_s": samples * world / max(train_seconds, 1e-9),
        }
        history.append(metrics)
        if rank == 0:
            _emit({"type": "metrics", **metrics})
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                torch.save(
                    {
                        "model": _unwrap(model).state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        "step": step,
                        "epoch": epoch,
                        "batch_in_epoch": batch_in_epoch,
                        "history": history,
                        "spec": config["spec"],
                    },
                    Path(tmp) / STATE_FILE,
                )
                _unwrap(model).save_pretrained(Path(tmp) / HF_SUBDIR)
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)
        if rank == 0:  # for the job service's checkpoint list
            _emit({"type": "checkpoint", **metrics})

    done = step >= total_steps
    while not done:
        sampler.set_epoch(epoch)
        tick = time.monotonic()
        for i, batch in enumerate(loader):
            if i < batch_in_epoch:  # resuming mid-epoch: skip what was already trained on
                continue
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                loss = model(**batch).loss / hp.gradient_accumulation
            scaler.scale(loss).backward()
            samples += len(batch["input_ids"])
            tokens += int(batch["attention_mask"].sum())
            batch_in_epoch = i + 1
            if batch_in_epoch % hp.gradient_accumulation and batch_in_epoch != len(loader):
                continue
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), hp.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            now = time.monotonic()
            train_seconds += now - tick

            if rank == 0 and (step % hp.log_every_steps == 0 or step == total_steps):
                elapsed = time.monotonic() - started
                rate = (step - resumed_from) / elapsed
                _emit(
                    {
                        "type": "progress",
                        "step": step,
                        "total_steps": total_steps,
                        "epoch": epoch,
                        "loss": float(loss) * hp.gradient_accumulation,
                        "learning_rate": scheduler.get_last_lr()[0],
                        "samples_per_s": samples * world / elapsed,
                        "tokens_per_s": tokens * world / elapsed,
                        "tokens": tokens * world,  # trained since this attempt started
                        "eta_s": (total_steps - step) / rate if rate else None,
                    }
                )
            if step >= total_steps:
                done = True
                break
            if hp.eval_every_steps and step % hp.eval_every_steps == 0:
                save_and_report({"loss": float(loss) * hp.gradient_accumulation, **evaluate(model)})
            tick = time.monotonic()
        else:
            epoch, batch_in_epoch = epoch + 1, 0
            if not done:
                save_and_report({"loss": float(loss) * hp.gradient_accumulation, **evaluate(model)})
    # the final evaluation and checkpoint
    if not history or history[-1]["step"] != step:
        save_and_report({"loss": float(loss) * hp.gradient_accumulation, **evaluate(model)})


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _evaluator(task, prepared: dict, hp, device):
    """A function model -> metrics over the validation data of this task."""
    ev = prepared["eval"]
    bs = max(hp.batch_size, 32)
    if isinstance(task, QATask):
        windows, examples = ev["windows"], ev["examples"]
        loader = DataLoader(windows, batch_size=bs, collate_fn=task.collate)
        return lambda m: task.evaluate(m, loader, device, examples, windows)
    if isinstance(task, MaskedLMTask):
        batches = task.fixed_eval(ev, bs, seed=hp.seed)
        return lambda m: task.evaluate(m, batches, device)
    loader = DataLoader(ev, batch_size=bs, collate_fn=task.collate)
    return lambda m: task.evaluate(m, loader, device)


def fit(
    spec: PretrainSpec | FinetuneSpec,
    run_dir: Path,
    storage: Path,
    *,
    metric: str,
    mode: str,
):
    """Run the loop on Ray Train; a rerun with the same spec.run_id resumes the same run."""
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "spec": spec.model_dump_json(),
            "run_dir": str(run_dir),
        },
        scaling_config=ScalingConfig(
            num_workers=spec.scaling.num_workers,
            use_gpu=spec.scaling.use_gpu,
            resources_per_worker={
                "CPU": spec.scaling.cpus_per_worker,
                **({"GPU": 1} if spec.scaling.use_gpu else {}),
            },
        ),
        run_config=RunConfig(
            name=spec.run_id,
            storage_path=str(storage),
            failure_config=FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute=metric, checkpoint_score_order=mode
            ),
        ),
    )
    return trainer.fit()
