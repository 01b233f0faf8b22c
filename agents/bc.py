"""The oracle: an IMPALA-CNN policy trained by cross-entropy on the real actions of the whole expert set.

    python -m agents.bc --data runs/expert_data --out runs/bc/oracle.pt

The upper reference for latent BC (docs/paper.md section 4): same architecture, real labels for every frame.
`train_classifier` is shared with `agents.latent_bc`, which trains the same network on LAM codes.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from agents.baselines import NUM_ACTIONS
from agents.policies import ImpalaPolicy, check_frames
from genie_gym.errors import ConfigError, DatasetError


def train_classifier(
    frames_NHWC: np.ndarray,
    targets_N: np.ndarray,
    num_outputs: int,
    steps: int = 2000,
    batch_size: int = 64,
    lr: float = 5e-4,
    seed: int = 0,
    channels: tuple[int, ...] = (16, 32, 32),
    progress: bool = True,
    desc: str = "bc",
) -> tuple[ImpalaPolicy, dict[str, float]]:
    """Cross-entropy on (frame, label) pairs; minibatches drawn with a seeded generator, so runs repeat exactly."""
    if len(frames_NHWC) == 0:
        raise DatasetError("no training frames: the expert set is empty; record one with `python -m agents.collect`")
    check_frames(frames_NHWC, "training frames")
    if len(frames_NHWC) != len(targets_N):
        raise ValueError(f"{len(frames_NHWC)} frames but {len(targets_N)} labels; they must pair one to one")
    targets = torch.as_tensor(np.asarray(targets_N), dtype=torch.long)
    if targets.min() < 0 or targets.max() >= num_outputs:
        raise ConfigError(f"labels span {int(targets.min())}..{int(targets.max())} but the policy has {num_outputs}"
                          " outputs; build the policy with as many outputs as there are label values")
    torch.manual_seed(seed)
    net = ImpalaPolicy(num_outputs, channels)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    frames = torch.from_numpy(np.ascontiguousarray(frames_NHWC))
    net.train()
    losses, accs = [], []
    for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        idx = torch.randint(0, len(frames), (min(batch_size, len(frames)),), generator=g)
        logits = net(frames[idx])
        loss = F.cross_entropy(logits, targets[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        accs.append(float((logits.argmax(1) == targets[idx]).float().mean()))
    net.eval()
    tail = max(1, steps // 10)
    return net, {"final_loss": float(np.mean(losses[-tail:])) if losses else float("nan"),
                 "final_train_acc": float(np.mean(accs[-tail:])) if accs else float("nan")}


@dataclass
class Args:
    data: str = "runs/expert_data"
    """expert dataset directory written by agents/collect.py"""
    out: str = "runs/bc/oracle.pt"
    """where to save the trained policy"""
    steps: int = 2000
    """optimiser steps"""
    batch_size: int = 64
    """frames per minibatch"""
    lr: float = 5e-4
    """Adam learning rate"""
    seed: int = 0
    """seed for initialisation and minibatch sampling"""


def main(args: Args) -> None:
    from agents.collect import load_expert_set

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    frames, actions = load_expert_set(args.data).frames_actions()
    net, stats = train_classifier(frames, actions, NUM_ACTIONS, args.steps, args.batch_size, args.lr, args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    net.save(args.out, metadata={"kind": "oracle", "labels": "real actions", "args": asdict(args), **stats})
    print(json.dumps({"frames": len(frames), **stats, "seconds": round(time.perf_counter() - t0, 1),
                      "out": args.out}))


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
