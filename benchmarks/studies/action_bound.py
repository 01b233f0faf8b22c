"""What would a perfect latent action model give the dynamics? The same dynamics fine-tuned on two action sources.

The world model's dynamics beats copying the last frame's tokens by only a few points, and the suspect is the LAM:
its 8 codes carry little of the action (NMI ~0.13, no code means left or right), so the dynamics cannot know which
way the camera will scroll. This bounds the gain of a better LAM: from the same start (a world-model file's
dynamics), on the same clips, for the same steps, the dynamics is fine-tuned

- `lam`: on its own frozen LAM's codes (the control: what the extra training alone gives), and
- `true_movement`: on the true movement class of the player's key (LEFT, LEFT+UP, NONE, NONE+UP, RIGHT, RIGHT+UP;
  `genie_gym.data.games.movement_class`) in the same 8-slot action embedding,
- `scroll`: on the camera's integer scroll between the two frames (`evaluation.metrics.best_shift`: dx left / none /
  right x dy up / none, and dy down with dx left-or-none / right: 8 classes), what a LAM whose codes followed the
  picture's motion exactly would give (like the LAM, it reads the next frame),

and scored on held-out clips (test split) with the action source it was trained on: next-frame token accuracy from
clean real context against copying the last frame, and 10-step rollout PSNR from 1 real frame against the still
image. The LAM sees the next frame, the player's key does not: the true classes are what a player can give.

    python benchmarks/studies/action_bound.py --data data/coinrun_hard_sticky --steps 1000

writes benchmarks/results/action_bound.{json,md}.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import tyro
from tqdm import tqdm

ARMS = ("lam", "true_movement", "scroll")


@dataclass
class Args:
    """Fine-tune one world model's dynamics on LAM codes and on true movement classes; score both held out."""

    model: Path | None = None
    """world-model file to start from (default: the shipped model)"""
    data: Path = Path("data/coinrun_hard_sticky")
    """dataset recorded by `genie-gym data` (train split to train, test split to score)"""
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    """which action sources to train (lam, true_movement, scroll)"""
    steps: int = 1000
    """training steps per arm (the same clips in the same order for every arm)"""
    batch_size: int = 8
    """clips per step"""
    lr: float = 3e-4
    """peak learning rate (50 warm-up steps, cosine to a tenth)"""
    num_clips: int = 64
    """held-out clips to score"""
    seed: int = 0
    """seed of the clip order, masking and clip choice"""
    quick: bool = False
    """a few steps and clips: checks that the script runs; the figures mean nothing"""
    save_dir: Path | None = None
    """also write each arm's fine-tuned world model as DIR/ARM.pt (its actions are the arm's source: for `scroll`
    and `true_movement` the file's LAM does not give them; `dream_response.py --model` holds them fixed)"""
    out: Path = Path("benchmarks/results/action_bound")
    """writes OUT.json and OUT.md"""


def scroll_classes(frames_BTHWC: torch.Tensor) -> torch.Tensor:
    """(B, T-1) scroll classes of consecutive frames: 3 x (dx < 0, 0, > 0) for dy = 0, 3 more for dy < 0 (up),
    then dy > 0 (down) with dx <= 0 and with dx > 0."""
    from genie_gym.evaluation.metrics import scrolls

    dx, dy = scrolls(frames_BTHWC.float().numpy())
    return torch.from_numpy(np.where(dy > 0, 6 + (dx > 0), 3 * (dy < 0) + np.sign(dx) + 1).astype(np.int64))


def arm_actions(arm: str, wm, ds, idx: list[int], frames_BTHWC: torch.Tensor) -> torch.Tensor:
    """(B, T-1) action ids of the clips: the frozen LAM's codes, the true movement classes or the scroll classes."""
    from genie_gym.data.games import movement_class
    from genie_gym.evaluation.evaluate import infer_actions_windowed

    if arm == "lam":
        return infer_actions_windowed(wm.lam, frames_BTHWC, wm.config.seq_len)
    if arm == "scroll":
        return scroll_classes(frames_BTHWC)
    return torch.stack([torch.from_numpy(movement_class(ds.clip_actions(i).numpy())) for i in idx])


def train_arm(arm: str, wm, args: Args) -> dict:
    from genie_gym.data.dataset import ClipDataset
    from genie_gym.models.frames import to_float
    from genie_gym.training.schedule import make_optimizer, make_scheduler

    ds = ClipDataset(args.data, split="train", clip_len=wm.config.seq_len)
    optim = dataclasses.replace(wm.config.dynamics_optim, lr=args.lr, min_lr=args.lr / 10, warmup_steps=50)
    dyn = wm.dynamics
    dyn.train()
    opt = make_optimizer(dyn, optim)
    sched = make_scheduler(opt, optim, args.steps)
    rng = np.random.default_rng(args.seed)  # the same clips, in the same order, for every arm
    gen = torch.Generator().manual_seed(args.seed)
    t0, losses, accs = time.time(), [], []
    for _ in tqdm(range(args.steps), desc=f"train {arm}"):
        idx = rng.integers(0, len(ds), args.batch_size).tolist()
        frames = to_float(torch.stack([ds[i] for i in idx]))
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            tokens_BTN = wm.tokenizer.encode(frames)
            actions_BT = arm_actions(arm, wm, ds, idx, frames)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, stats = dyn.loss(tokens_BTN, actions_BT, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dyn.parameters(), optim.grad_clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
        accs.append(float(stats["accuracy"]))
    dyn.eval()
    tail = max(1, args.steps // 10)
    return {"steps": args.steps, "train_seconds": round(time.time() - t0, 1),
            "train_loss_last10pct": float(np.mean(losses[-tail:])),
            "train_accuracy_last10pct": float(np.mean(accs[-tail:]))}


@torch.no_grad()
def score(arm: str, wm, args: Args) -> dict:
    """Held-out token accuracy (clean context) and 10-step rollout PSNR, with the arm's action source."""
    from genie_gym.evaluation.evaluate import open_clips, pick_clips, simulate, token_accuracy
    from genie_gym.evaluation.metrics import psnr, still_image_baseline
    from genie_gym.models.frames import to_float

    K = 10
    ds = open_clips(args.data, "test", 1 + K, f"1 context frame + {K} generated")
    idx_all = pick_clips(len(ds), args.num_clips, args.seed + 1)
    acc, copy_acc, p_gen, p_still = [], [], [], []
    for b in range(0, len(idx_all), 16):
        idx = idx_all[b: b + 16]
        u8 = torch.stack([ds[i] for i in idx])
        real = to_float(u8)
        actions_BK = arm_actions(arm, wm, ds, idx, real)
        a, c = token_accuracy(wm, wm.tokenizer.encode(real), actions_BK, 1)
        acc.append(a * len(idx))
        copy_acc.append(c * len(idx))
        gen = simulate(wm, u8[:, :1].numpy(), actions_BK.numpy(), [args.seed * 100_003 + i for i in idx], None,
                        torch.device("cpu"))
        p_gen.append(psnr(gen, real[:, 1:]))
        p_still.append(still_image_baseline(real))
    n = len(idx_all)
    return {"token_accuracy": sum(acc) / n, "copy_token_accuracy": sum(copy_acc) / n,
            "rollout_psnr_mean": float(torch.cat(p_gen).mean()), "still_psnr_mean": float(torch.cat(p_still).mean()),
            "rollout_psnr_step1": float(torch.cat(p_gen)[:, 0].mean())}


def main(args: Args) -> None:
    from genie_gym.models.world_model import WorldModel
    from genie_gym.utils.io import atomic_write_json, write_markdown

    unknown = set(args.arms) - set(ARMS)
    if unknown:
        raise SystemExit(f"unknown arms {sorted(unknown)}; choose from {list(ARMS)}")
    if args.quick:
        args.steps, args.num_clips = 3, 4
    torch.manual_seed(args.seed)
    start = WorldModel.load(args.model or WorldModel.default_path())
    need = {"true_movement": 6, "scroll": 8}
    short = [a for a in args.arms if need.get(a, 0) > start.num_actions]
    if short:
        raise SystemExit(f"arms {short} need {max(need[a] for a in short)} action slots; the model has "
                         f"{start.num_actions}: use a world model with at least that many latent actions")
    results = {"start (no fine-tuning), lam": score("lam", start, args)}
    for arm in args.arms:
        wm = copy.deepcopy(start)
        row = train_arm(arm, wm, args)
        row.update(score(arm, wm, args))
        results[arm] = row
        if args.save_dir is not None:
            args.save_dir.mkdir(parents=True, exist_ok=True)
            wm.save(args.save_dir / f"{arm}.pt", {**wm.metadata, "action_source": arm,
                                                    "action_bound": {k: v for k, v in row.items()}})
        print(f"{arm}: {json.dumps(row)}", flush=True)
    command = f"python benchmarks/studies/action_bound.py --data {args.data} --steps {args.steps}" + \
        (f" --model {args.model}" if args.model else "") + (" --quick" if args.quick else "") + \
        (f" --arms {' '.join(args.arms)}" if list(args.arms) != list(ARMS) else "") + \
        (f" --lr {args.lr:g}" if args.lr != 3e-4 else "") + \
        (f" --num-clips {args.num_clips}" if args.num_clips != 64 else "") + \
        (f" --out {args.out}" if args.out != Path("benchmarks/results/action_bound") else "")
    atomic_write_json(args.out.with_suffix(".json"), {"command": command, "model": str(args.model or "shipped"),
                                                      "batch_size": args.batch_size, "lr": args.lr,
                                                      "num_clips": args.num_clips, "arms": results})
    lines = [
        "# Action bound: the dynamics fine-tuned on LAM codes vs other action sources",
        "",
        f"`{command}`: from the same world model, each arm fine-tunes the dynamics for {args.steps} steps of "
        f"{args.batch_size} clips (the same clips, bf16 autocast on the CPU, lr {args.lr:g} cosine to a tenth), the "
        f"tokenizer and LAM frozen; scored on {args.num_clips} held-out clips (test split) with the action source "
        "it was trained on, at the model's sampling settings.",
        "",
        "| arm | steps | token accuracy, clean context | copy last frame | over copy | rollout PSNR (10 steps) | "
        "step 1 | still image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {k} | {v.get('steps', 0)} | {v['token_accuracy']:.1%} | {v['copy_token_accuracy']:.1%} | "
              f"{100 * (v['token_accuracy'] - v['copy_token_accuracy']):+.1f} | {v['rollout_psnr_mean']:.2f} | "
              f"{v['rollout_psnr_step1']:.2f} | {v['still_psnr_mean']:.2f} |" for k, v in results.items()]
    write_markdown(args.out.with_suffix(".md"), lines)


if __name__ == "__main__":
    main(tyro.cli(Args))
