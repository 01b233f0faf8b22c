"""Optimiser and learning-rate schedule: AdamW with the paper's linear warm-up to `lr`, then cosine decay to
`min_lr`, as a `torch.optim.lr_scheduler.LambdaLR`; weight decay only on the weights of linear and conv layers."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from genie_gym.config import OptimConfig

DECAYED = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)  # their `weight` is decayed; nothing else is


def lr_at(step: int, optim: OptimConfig, total_steps: int | None = None) -> float:
    """Learning rate for optimizer step `step` (0-indexed). Warm-up starts at lr/warmup, not 0."""
    total = optim.steps if total_steps is None else total_steps
    if optim.warmup_steps > 0 and step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    decay_steps = max(1, total - optim.warmup_steps)
    progress = min(1.0, max(0.0, (step - optim.warmup_steps) / decay_steps))
    return optim.min_lr + 0.5 * (optim.lr - optim.min_lr) * (1.0 + math.cos(math.pi * progress))


def decay_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decayed, not decayed) trainable parameters, each in `model.parameters()` order. Decayed: the weight
    matrices of linear and conv layers. Not decayed: biases, norms, positional tables, embeddings, codebooks."""
    decayed_ids = {id(m.weight) for m in model.modules() if isinstance(m, DECAYED)}
    params = [p for p in model.parameters() if p.requires_grad]
    return [p for p in params if id(p) in decayed_ids], [p for p in params if id(p) not in decayed_ids]


def make_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.AdamW:
    decay, no_decay = decay_groups(model)
    groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=optim.lr, betas=tuple(optim.betas))


def make_scheduler(optimizer: torch.optim.Optimizer, optim: OptimConfig, total_steps: int,
                   start_step: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up + cosine over `total_steps`, positioned so that the next optimizer step uses lr_at(start_step):
    a resumed run rebuilds it from its step (nothing to load), and a longer --steps stretches the decay."""
    for group in optimizer.param_groups:
        group["initial_lr"] = optim.lr
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_at(step, optim, total_steps) / optim.lr, last_epoch=start_step - 1
    )


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict, model: nn.Module) -> None:
    """`optimizer.load_state_dict`, also for checkpoints written before the current decay groups (v1.0 and older
    decayed every parameter with >= 2 dims): their AdamW moments are matched to parameters by position."""
    sizes = [len(g["params"]) for g in state["param_groups"]]
    if sizes == [len(g["params"]) for g in optimizer.param_groups]:
        decay, _ = decay_groups(model)
        if sizes[0] == len(decay):
            optimizer.load_state_dict(state)
            return
    params = [p for p in model.parameters() if p.requires_grad]
    legacy = [p for p in params if p.dim() >= 2] + [p for p in params if p.dim() < 2]
    if sizes != [sum(p.dim() >= 2 for p in params), sum(p.dim() < 2 for p in params)]:
        raise ValueError(f"optimizer state has groups of {sizes} parameters, which fits neither the current nor the "
                         "legacy layout of this model")
    old_index = {id(p): i for i, p in enumerate(legacy)}
    current = [p for g in optimizer.param_groups for p in g["params"]]
    remapped = {
        "state": {j: state["state"][old_index[id(p)]] for j, p in enumerate(current)
                  if old_index[id(p)] in state["state"]},
        "param_groups": [],
    }
    start = 0
    for group in optimizer.param_groups:
        n = len(group["params"])
        saved = {k: v for k, v in state["param_groups"][0].items() if k not in ("params", "weight_decay")}
        remapped["param_groups"].append({**saved, "weight_decay": group["weight_decay"],
                                         "params": list(range(start, start + n))})
        start += n
    optimizer.load_state_dict(remapped)
