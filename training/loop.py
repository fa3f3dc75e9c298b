"""The one training loop, for every task, and the TorchTrainer that runs it.

`train_loop_per_worker` reads top to bottom: load the prepared data, build the model, wrap it
for DDP, resume from the last checkpoint if there is one, then step / log / evaluate /
checkpoint until the epochs (or `max_steps`) are done. Rank 0 writes checkpoints; every rank
calls `ray.train.report` the same number of times. The distributed parts are the
`prepare_model`, `prepare_data_loader` and sampler lines; the rest is a plain PyTorch loop.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray.train
import torch
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from torch.utils.data import DataLoader, DistributedSampler
from transformers import get_linear_schedule_with_warmup

from training import checkpoints, events
from training.checkpoints import Position, Trainee
from training.config import FinetuneSpec, PretrainSpec, load_spec
from training.rendezvous import OneNodeTorchConfig
from training.sampling import LengthGroupedSampler
from training.tasks import load_tokenizer, make_task


@dataclass
class Meter:
    """Throughput since this attempt started (training steps only, for samples/s)."""

    world: int
    started: float = field(default_factory=time.monotonic)
    samples: int = 0
    tokens: int = 0
    train_seconds: float = 0.0


def train_loop_per_worker(config: dict) -> None:
    events.quiet(config.get("quiet", False))
    spec = load_spec(config["spec"])
    hp = spec.hyperparameters
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(hp.seed)
    device = ray.train.torch.get_device()

    task, prepared, loader, sampler = _data(spec, Path(config["run_dir"]), rank, world)
    steps_per_epoch = math.ceil(len(loader) / hp.gradient_accumulation)
    total_steps = hp.max_steps or max(1, math.ceil(steps_per_epoch * hp.epochs))
    trainee = _trainee(spec, task, Path(config["run_dir"]), total_steps)
    pos, resumed = _restore(trainee, device, rank)
    evaluate = task.evaluator(prepared["eval"], max(hp.batch_size, 32), device, hp.seed)
    meter = Meter(world)

    def checkpoint(loss: float | None) -> bool:
        """Evaluate and checkpoint; True when training should stop early."""
        _save_and_report(trainee, pos, meter, evaluate, loss, resumed, config["spec"], rank)
        return _stalled(pos.history, task.metric, task.mode, hp.early_stopping_patience, rank)

    evaluate_start = hp.eval_before_training
    if evaluate_start is None:  # a classifier starts at zero-shot: a checkpoint worth keeping
        evaluate_start = task.name == "text-classification"
    if evaluate_start and not pos.history and pos.step == 0:
        checkpoint(None)
    trainee.model.train()
    loss, stop = None, _stalled(pos.history, task.metric, task.mode, hp.early_stopping_patience)
    while pos.step < total_steps and not stop:
        sampler.set_epoch(pos.epoch)
        loss, finished_epoch, stop = _train_epoch(
            trainee, loader, pos, meter, hp, total_steps, resumed, rank, checkpoint
        )
        if finished_epoch:
            pos.epoch, pos.batch_in_epoch = pos.epoch + 1, 0
            if pos.step < total_steps:
                stop = checkpoint(loss)
    if not pos.history or pos.history[-1]["step"] != pos.step:  # the final checkpoint
        checkpoint(loss)


def _data(spec, run_dir: Path, rank: int, world: int):
    """The task, its data as the driver prepared it, and this worker's share of it."""
    hp = spec.hyperparameters
    prepared = torch.load(run_dir / "prepared.pt", weights_only=False)
    tokenizer = load_tokenizer(run_dir / "tokenizer", hp.max_seq_length)
    task = make_task(spec, tokenizer, prepared["labels"])
    train = prepared["train"]
    dealing = {"num_replicas": world, "rank": rank, "shuffle": True, "seed": hp.seed}
    sampler: DistributedSampler = (
        LengthGroupedSampler([len(row["input_ids"]) for row in train], hp.batch_size, **dealing)
        if hp.group_by_length
        else DistributedSampler(train, **dealing)
    )
    loader = DataLoader(train, batch_size=hp.batch_size, sampler=sampler, collate_fn=task.collate)
    loader = ray.train.torch.prepare_data_loader(loader, add_dist_sampler=False)
    return task, prepared, loader, sampler


def _trainee(spec, task, run_dir: Path, total_steps: int) -> Trainee:
    """The model (wrapped for DDP), AdamW with linear warmup and decay, and mixed precision."""
    hp, scaling = spec.hyperparameters, spec.scaling
    model = ray.train.torch.prepare_model(task.build_model(run_dir / "init"))
    optimizer = torch.optim.AdamW(_param_groups(model, hp.weight_decay), lr=hp.learning_rate)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(hp.warmup_ratio * total_steps), total_steps
    )
    use_amp = scaling.mixed_precision != "no"  # the spec allows fp16 on GPUs only
    dtype = torch.bfloat16 if scaling.mixed_precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(enabled=use_amp and dtype == torch.float16)
    device = ray.train.torch.get_device()
    autocast = {"device_type": device.type, "dtype": dtype, "enabled": use_amp}
    return Trainee(model, optimizer, scheduler, scaler, autocast)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    # no weight decay on biases and layer norms, as in BERT
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _restore(trainee: Trainee, device, rank: int) -> tuple[Position, int]:
    """The position to start from, and the step it resumed from: Ray Train hands back the
    latest checkpoint of this run name after a worker retry, or when the run is started again
    with the same RunConfig(name, storage_path)."""
    checkpoint = ray.train.get_checkpoint()
    if not checkpoint:
        return Position(), 0
    with checkpoint.as_directory() as d:
        pos = checkpoints.restore(Path(d), trainee, device)
    if rank == 0:
        events.emit(
            events.Message(
                level="warn",
                message=f"Training resumed from its checkpoint at step {pos.step} "
                f"(epoch {pos.epoch}); the steps after it are trained again",
            )
        )
    return pos, pos.step


def _stalled(
    history: list[dict], metric: str, mode: str, patience: int | None, rank: int = -1
) -> bool:
    """Early stopping: the last `patience` evaluations were no better than the best before
    them. Decided from the checkpointed history, so every rank (and a resumed run) agrees."""
    if not patience or len(history) <= patience:
        return False
    sign = 1 if mode == "max" else -1
    best = max(range(len(history)), key=lambda i: (sign * history[i][metric], -i))
    if len(history) - 1 - best < patience:
        return False
    if rank == 0:
        events.emit(
            events.Message(
                message=f"early stopping: {metric} has not improved on "
                f"{history[best][metric]:.4g} (step {history[best]['step']}) in {patience} "
                "evaluations; the best checkpoint is kept"
            )
        )
    return True


def _train_epoch(trainee, loader, pos, meter, hp, total_steps, resumed, rank, checkpoint):
    """Train from where `pos` is to the end of the epoch (or of training); returns the last
    loss, whether the epoch ended, and whether to stop early."""
    tick = time.monotonic()
    loss = None
    for i, batch in enumerate(loader):
        if i < pos.batch_in_epoch:  # resuming mid-epoch: skip what was already trained on
            continue
        with torch.autocast(**trainee.autocast):
            raw = trainee.model(**batch).loss / hp.gradient_accumulation
        trainee.scaler.scale(raw).backward()
        meter.samples += len(batch["input_ids"])
        meter.tokens += int(batch["attention_mask"].sum())
        pos.batch_in_epoch = i + 1
        if pos.batch_in_epoch % hp.gradient_accumulation and pos.batch_in_epoch != len(loader):
            continue
        _step(trainee, hp.max_grad_norm)
        pos.step += 1
        meter.train_seconds += time.monotonic() - tick
        loss = float(raw.detach()) * hp.gradient_accumulation
        if rank == 0 and (pos.step % hp.log_every_steps == 0 or pos.step == total_steps):
            _log_progress(trainee, pos, meter, loss, total_steps, resumed)
        if pos.step >= total_steps:
            return loss, False, False
        if hp.eval_every_steps and pos.step % hp.eval_every_steps == 0 and checkpoint(loss):
            return loss, False, True
        tick = time.monotonic()
    return loss, True, False


def _step(trainee: Trainee, max_grad_norm: float) -> None:
    trainee.scaler.unscale_(trainee.optimizer)
    torch.nn.utils.clip_grad_norm_(trainee.model.parameters(), max_grad_norm)
    trainee.scaler.step(trainee.optimizer)
    trainee.scaler.update()
    trainee.scheduler.step()
    trainee.optimizer.zero_grad(set_to_none=True)


def _log_progress(trainee, pos, meter, loss: float, total_steps: int, resumed: int) -> None:
    elapsed = time.monotonic() - meter.started
    rate = (pos.step - resumed) / elapsed
    events.emit(
        events.Progress(
            step=pos.step,
            total_steps=total_steps,
            epoch=pos.epoch,
            loss=loss,
            learning_rate=trainee.scheduler.get_last_lr()[0],
            samples_per_s=meter.samples * meter.world / elapsed,
            tokens_per_s=meter.tokens * meter.world / elapsed,
            tokens=meter.tokens * meter.world,
            eta_s=(total_steps - pos.step) / rate if rate else None,
        )
    )


def _save_and_report(trainee, pos, meter, evaluate, loss, resumed, spec_json, rank) -> None:
    """Evaluate, then checkpoint (rank 0 writes it) and report to Ray Train (every rank)."""
    scores = evaluate(trainee.model)
    facts = {
        "step": pos.step,
        "epoch": pos.epoch,
        "resumed_from_step": resumed,
        "workers": meter.world,
        "train_samples_per_s": meter.samples * meter.world / max(meter.train_seconds, 1e-9),
    }
    metrics = {"loss": loss, **scores, **facts}
    pos.history.append(metrics)
    scored = {"loss": loss, "metrics": scores, **facts}
    if rank == 0:
        events.emit(events.Evaluation(**scored))
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = None
        if rank == 0:
            checkpoints.save(Path(tmp), trainee, pos, spec_json)
            ckpt = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=ckpt)
    if rank == 0:  # for the job service's checkpoint list
        events.emit(events.Checkpoint(**scored))


def fit(
    spec: PretrainSpec | FinetuneSpec,
    run_dir: Path,
    storage: Path,
    *,
    metric: str,
    mode: str,
    quiet: bool = False,
):
    """Run the loop on Ray Train; a rerun with the same spec.run_id resumes the same run.
    `quiet`: the workers emit no events (a cross-validation fold's, training/cv.py)."""
    config = {"spec": spec.model_dump_json(), "run_dir": str(run_dir), "quiet": quiet}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        torch_config=OneNodeTorchConfig(folder=str(run_dir)),
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
