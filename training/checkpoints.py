"""A run's checkpoint: the model, optimizer, schedule and where training is, saved by rank 0
at each evaluation and restored on resume (a worker retry, or the run started again)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "trainer_state.pt"
HF_DIR = "hf"  # the model's weights, as Hugging Face saves them: what export reads


@dataclass
class Position:
    """Where training is: saved in every checkpoint, restored on resume."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    history: list[dict] = field(default_factory=list)


@dataclass
class Trainee:
    """The model and what steps it: built once per worker."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    autocast: dict


def unwrap(model: torch.nn.Module) -> Any:
    """The model inside DDP's wrapper (an HF model: save_pretrained, state_dict)."""
    return model.module if hasattr(model, "module") else model


def save(folder: Path, trainee: Trainee, pos: Position, spec_json: str) -> None:
    """Everything a resume needs, and the weights export reads, into `folder`."""
    torch.save(
        {
            "model": unwrap(trainee.model).state_dict(),
            "optimizer": trainee.optimizer.state_dict(),
            "scheduler": trainee.scheduler.state_dict(),
            "scaler": trainee.scaler.state_dict(),
            "step": pos.step,
            "epoch": pos.epoch,
            "batch_in_epoch": pos.batch_in_epoch,
            "history": pos.history,
            "spec": spec_json,  # the whole spec, so a checkpoint says what it is
        },
        folder / STATE_FILE,
    )
    unwrap(trainee.model).save_pretrained(folder / HF_DIR)


def restore(folder: Path, trainee: Trainee, device) -> Position:
    """Load a checkpoint into the trainee; returns where training was."""
    state = torch.load(folder / STATE_FILE, map_location=device, weights_only=False)
    unwrap(trainee.model).load_state_dict(state["model"])
    trainee.optimizer.load_state_dict(state["optimizer"])
    trainee.scheduler.load_state_dict(state["scheduler"])
    if "scaler" in state:
        trainee.scaler.load_state_dict(state["scaler"])
    return Position(state["step"], state["epoch"], state["batch_in_epoch"], state["history"])


def history(folder: Path) -> list[dict]:
    """The metrics of every evaluation up to a checkpoint."""
    return torch.load(folder / STATE_FILE, weights_only=False)["history"]
