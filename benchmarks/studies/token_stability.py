"""Is the tokenizer's code for a frame stable? Share of tokens that change between consecutive held-out frames,
for pairs identical in pixels (nothing moved: any change is tokenizer jitter no dynamics can predict) and for the
rest (the change a dynamics model has to predict).

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
    from genie_gym.data.dataset import ClipDataset
    from genie_gym.models.frames import to_float
    from genie_gym.models.world_model import WorldModel
    from genie_gym.utils.io import atomic_write_json, write_markdown

    wm = WorldModel.load(args.model).eval()
    ds = ClipDataset(args.data, "test", 8)
    idx = np.random.default_rng(0).choice(len(ds), min(args.num_clips, len(ds)), replace=False)
    changed = {"identical": [0.0, 0], "different": [0.0, 0]}
    with torch.no_grad():
        for c in range(0, len(idx), 32):
            u8 = torch.stack([ds[int(i)] for i in idx[c:c + 32]])
            tokens_BTN = wm.tokenizer.encode(to_float(u8))
            same_BT = (u8[:, 1:] == u8[:, :-1]).flatten(2).all(-1)
            share_BT = (tokens_BTN[:, 1:] != tokens_BTN[:, :-1]).float().mean(-1)
            for key, mask in (("identical", same_BT), ("different", ~same_BT)):
                changed[key][0] += float(share_BT[mask].sum())
                changed[key][1] += int(mask.sum())
    rows = {k: {"pairs": n, "tokens_changed": s / max(n, 1)} for k, (s, n) in changed.items()}
    command = " ".join(["python", "benchmarks/studies/token_stability.py", *sys.argv[1:]])
    atomic_write_json(args.out.with_suffix(".json"), {"command": command, "clips": len(idx), "rows": rows})
    lines = ["# Token stability", "", f"`{command}`: {len(idx)} held-out clips of 8 frames (test split), the shipped "
             "tokenizer unless --model.", "", "| consecutive frame pairs | pairs | tokens changed |", "|---|---|---|"]
    lines += [f"| {k} in pixels | {r['pairs']} | {100 * r['tokens_changed']:.1f}% |" for k, r in rows.items()]
    write_markdown(args.out.with_suffix(".md"), lines)


if __name__ == "__main__":
    main(tyro.cli(Args))
