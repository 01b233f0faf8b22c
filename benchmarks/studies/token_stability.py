"""Is the tokenizer's code for a frame stable? Share of tokens that change between consecutive held-out frames,
for pairs identical in pixels (nothing moved: any change is tokenizer jitter no dynamics can predict) and for the
rest (the change a dynamics model has to predict).

And how many of the next frame's tokens would a good *pixel* prediction get right? For the last pair of each clip
that differs in pixels, three stand-ins for frame t+1 are tokenized in the clip's place (the tokenizer is causal, so
with the same 7 frames before it) and scored against the real frame's tokens, with their PSNR: frame t itself
(copy), frame t shifted by the true camera scroll (`metrics.best_shift`; what a dynamics that knew where the view
goes and nothing else would draw), and the real frame with Gaussian noise of sigma 2/255 (a near-perfect drawing);
beside them, the world model's own dynamics on the same pairs (argmax, all of frame t+1's tokens masked, the real
tokens of the 7 frames before as context, its LAM's codes: `evaluate.token_accuracy`).

    python benchmarks/studies/token_stability.py --data data/coinrun_hard_sticky

Writes benchmarks/results/token_stability.{json,md}.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro


@dataclass
class Args:
    """Token changes between consecutive held-out frames, identical pairs against the rest."""

    model: Path | None = None
    """world-model file (default: the shipped one)"""
    data: Path = Path("data/coinrun_hard_sticky")
    """dataset whose test split gives the clips"""
    num_clips: int = 256
    """held-out clips of 8 frames (seed 0)"""
    out: Path = Path("benchmarks/results/token_stability")
    """writes OUT.json and OUT.md"""


def main(args: Args) -> None:
    from genie_gym.models.world_model import WorldModel
    from genie_gym.utils.io import atomic_write_json, write_markdown

    wm = WorldModel.load(args.model).eval()
    ds, idx = held_out_clips(args.data, args.num_clips)
    rows = changed_shares(wm, ds, idx)
    stand_ins = stand_in_scores(wm, ds, idx)
    command = " ".join(["python", "benchmarks/studies/token_stability.py", *sys.argv[1:]])
    atomic_write_json(args.out.with_suffix(".json"), {"command": command, "clips": len(idx), "rows": rows,
                                                      "stand_ins": stand_ins})
    lines = ["# Token stability", "", f"`{command}`: {len(idx)} held-out clips of 8 frames (test split), the shipped "
             "tokenizer unless --model.", "", "| consecutive frame pairs | pairs | tokens changed |", "|---|---|---|"]
    lines += [f"| {k} in pixels | {r['pairs']} | {100 * r['tokens_changed']:.1f}% |" for k, r in rows.items()]
    n = stand_ins.pop("pairs")
    lines += ["", f"Stand-ins for frame t+1 on the last pair of the {n} clips whose last two frames differ in pixels, "
              "tokenized in its place after the same 7 frames: the share of the real frame's tokens each gets, and "
              "its PSNR against the real frame.", "", "| stand-in for frame t+1 | tokens right | PSNR (dB) |",
              "|---|---|---|"]
    lines += [f"| {k} | {100 * r['token_accuracy']:.1f}% | {r['psnr']:.2f} |" if "psnr" in r else
              f"| {k} | {100 * r['token_accuracy']:.1f}% | |" for k, r in stand_ins.items()]
    write_markdown(args.out.with_suffix(".md"), lines)


def held_out_clips(data: Path, num_clips: int):
    """The study's clips: `num_clips` 8-frame clips of the test split, drawn with seed 0."""
    from genie_gym.data.dataset import ClipDataset

    ds = ClipDataset(data, "test", 8)
    return ds, np.random.default_rng(0).choice(len(ds), min(num_clips, len(ds)), replace=False)


@torch.no_grad()
def changed_shares(wm, ds, idx: np.ndarray) -> dict:
    """Share of tokens that change between consecutive frames, for pairs identical in pixels and the rest."""
    from genie_gym.models.frames import to_float

    changed = {"identical": [0.0, 0], "different": [0.0, 0]}
    for c in range(0, len(idx), 32):
        u8 = torch.stack([ds[int(i)] for i in idx[c:c + 32]])
        tokens_BTN = wm.tokenizer.encode(to_float(u8))
        same_BT = (u8[:, 1:] == u8[:, :-1]).flatten(2).all(-1)
        share_BT = (tokens_BTN[:, 1:] != tokens_BTN[:, :-1]).float().mean(-1)
        for key, mask in (("identical", same_BT), ("different", ~same_BT)):
            changed[key][0] += float(share_BT[mask].sum())
            changed[key][1] += int(mask.sum())
    return {k: {"pairs": n, "tokens_changed": s / max(n, 1)} for k, (s, n) in changed.items()}


@torch.no_grad()
def stand_in_scores(wm, ds, idx: np.ndarray) -> dict:
    """Token accuracy and PSNR of copy / true-scroll shift / light noise as frame t+1 (pairs differing in pixels)."""
    from genie_gym.evaluation.evaluate import infer_actions_windowed, token_accuracy
    from genie_gym.evaluation.metrics import psnr, scrolls
    from genie_gym.models.frames import to_float

    gen = torch.Generator().manual_seed(0)
    acc: dict[str, list[float]] = {"copy frame t": [], "frame t shifted by the true scroll": [],
                                   "the real frame + noise (sigma 2/255)": []}
    db: dict[str, list[float]] = {k: [] for k in acc}
    dynamics: list[float] = []
    for c in range(0, len(idx), 32):
        f = to_float(torch.stack([ds[int(i)] for i in idx[c:c + 32]]))
        f = f[(f[:, -1] != f[:, -2]).flatten(1).any(-1)]
        if not len(f):
            continue
        prev, real = f[:, -2], f[:, -1]
        dx_B, dy_B = (d[:, 0] for d in scrolls(torch.stack([prev, real], 1).numpy()))
        shifted = torch.stack([torch.roll(p, shifts=(-int(dy), -int(dx)), dims=(0, 1))
                               for p, dx, dy in zip(prev, dx_B, dy_B, strict=True)])
        noisy = (real + torch.randn(real.shape, generator=gen) * 2 / 255).clamp(0, 1)
        tokens_BTN = wm.tokenizer.encode(f)
        real_N = tokens_BTN[:, -1]
        hits, _ = token_accuracy(wm, tokens_BTN, infer_actions_windowed(wm.lam, f, wm.config.seq_len), f.shape[1] - 1)
        dynamics += [hits] * len(f)
        for key, stand_in in zip(acc, (prev, shifted, noisy), strict=True):
            tokens = wm.tokenizer.encode(torch.cat([f[:, :-1], stand_in[:, None]], 1))[:, -1]
            acc[key] += (tokens == real_N).float().mean(-1).tolist()
            db[key] += psnr(stand_in, real).tolist()
    return {"pairs": len(acc["copy frame t"]),
            **{k: {"token_accuracy": float(np.mean(acc[k])), "psnr": float(np.mean(db[k]))} for k in acc},
            "the world model's dynamics (argmax, LAM codes)": {"token_accuracy": float(np.mean(dynamics))}}


if __name__ == "__main__":
    main(tyro.cli(Args))
