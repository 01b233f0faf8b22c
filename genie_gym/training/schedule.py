"""Learning-rate schedule: linear warm-up to `lr`, then cosine decay to `min_lr` (the paper's recipe)."""

from __future__ import annotations

import math

import torch

from genie_gym.config import OptimConfig


def lr_at(step: int, optim: OptimConfig, total_steps: int | None = None) -> float:
    """Learning rate for optimizer step `step` (0-indexed). Warm-up starts at lr/warmup, not 0."""
    total = optim.steps if total_steps is None else total_steps
    if optim.warmup_steps > 0 and step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    decay_steps = max(1, total - optim.warmup_steps)
    progress = min(1.0, max(0.0, (step - optim.warmup_steps) / decay_steps))
    return optim.min_lr + 0.5 * (optim.lr - optim.min_lr) * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Sets the lr of every param group before each step; its state is just the step (checkpointed)."""

    def __init__(self, optimizer: torch.optim.Optimizer, optim: OptimConfig, total_steps: int) -> None:
        self.optimizer = optimizer
        self.optim = optim
        self.total_steps = total_steps
        self.step_count = 0
        self._apply()

    def _apply(self) -> None:
        lr = lr_at(self.step_count, self.optim, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def get_lr(self) -> float:
        return lr_at(self.step_count, self.optim, self.total_steps)

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "total_steps": self.total_steps}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self.total_steps = int(state["total_steps"])
        self._apply()
