"""Which features should the reward / episode-end heads read? (the RL-environment issue's heads are below target)

`genie-gym train --phase heads` trains `EventHeads` on the dynamics transformer's output for each frame. A death in
CoinRun is a contact of a few pixels, which the dynamics' 8x8 grid of features may blur, so this study trains the
same heads, with the same clips, steps and held-out scoring, on other features of the same real frames:

- `dynamics`: the library's (d 192 per grid position);
- `tokenizer`: the tokenizer encoder's output before quantisation (d 128 per grid position: the frame's pixels seen
  through the conv stem and the causal ST transformer, no action);
- `both`: the two concatenated (d 320).

    python benchmarks/studies/heads_features.py --model runs/v14/world_model.pt --data data/coinrun_hard_sticky

writes <out>/heads_features.{json,md} (default out: benchmarks/results) and one heads run per variant under --run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import tyro

import genie_gym.training.heads as heads_module
from genie_gym.models.frames import to_float
from genie_gym.training.train import Args as TrainArgs
from genie_gym.utils.io import atomic_write_json, write_markdown

Variant = Literal["dynamics", "tokenizer", "both"]


@dataclass
class Args:
    """Event-head precision and recall on held-out episodes for each choice of input features."""

    model: Path
    """world-model file whose parts give the features (a float32 training output, e.g. runs/v14/world_model.pt)"""
    data: Path = Path("data/coinrun_hard_sticky")
    """dataset (train split: heads training; validation: scoring)"""
    variants: tuple[Variant, ...] = ("dynamics", "tokenizer", "both")
    """feature sets to compare"""
    horizon: int = 2
    """--heads-horizon (label the k frames before each event)"""
    clips: int = 512
    """--heads-clips"""
    steps: int = 1000
    """heads training steps"""
    eval_episodes: int = 40
    """held-out validation episodes scored"""
    run: Path = Path("runs/heads_features")
    """directory for one heads run per variant"""
    out: Path = Path("benchmarks/results")
    """directory for heads_features.{json,md}"""


@torch.no_grad()
def tokenizer_features(wm, frames_BTHWC_u8: torch.Tensor, amp: bool) -> torch.Tensor:
    frames = to_float(frames_BTHWC_u8)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        tok = wm.tokenizer
        return tok.encoder(tok._embed(frames) + tok.enc_pos).to(torch.bfloat16)


def main(args: Args) -> dict:
    from genie_gym.models.world_model import WorldModel

    d_tok = WorldModel.load(args.model).config.tokenizer.d_model
    rows = {}
    for variant in args.variants:
        library_features, library_heads = heads_module.clip_features, heads_module.EventHeads
        extra = 0 if variant == "dynamics" else d_tok

        def clip_features(wm, frames, amp, variant=variant, library_features=library_features):
            if variant == "dynamics":
                return library_features(wm, frames, amp)
            tok = tokenizer_features(wm, frames, amp)
            return tok if variant == "tokenizer" else torch.cat([library_features(wm, frames, amp), tok], dim=-1)

        def event_heads(cfg, d_model, variant=variant, extra=extra, library_heads=library_heads):
            return library_heads(cfg, (0 if variant == "tokenizer" else d_model) + extra)

        library_eval, scores = heads_module.evaluate_heads, {}

        def evaluate_heads(*a, library_eval=library_eval, scores=scores, **kw):
            scores.update(library_eval(*a, **kw))  # the file it writes holds heads of another width than the
            return scores                           # library builds: read the scores here, not from the file

        heads_module.clip_features, heads_module.EventHeads = clip_features, event_heads
        heads_module.evaluate_heads = evaluate_heads
        try:
            heads_module.train_heads(TrainArgs(
                phase="heads", model=args.model, data=args.data, out=args.run / variant, cpu_bf16=True,
                heads_eval_episodes=args.eval_episodes, steps=args.steps, heads_horizon=args.horizon,
                heads_clips=args.clips))
        finally:
            heads_module.clip_features, heads_module.EventHeads = library_features, library_heads
            heads_module.evaluate_heads = library_eval
        rows[variant] = scores
    command = (f"python benchmarks/studies/heads_features.py --model {args.model} --data {args.data} "
               f"--horizon {args.horizon} --clips {args.clips}")
    result = {"command": command, "rows": rows}
    atomic_write_json(args.out / "heads_features.json", result)
    lines = ["# Event heads: which features to read\n",
             f"`{command}`: heads trained {args.steps} steps on {args.clips} event clips (and as many random ones), "
             f"labels within {args.horizon} transitions of an event; precision / recall on {args.eval_episodes} "
             "held-out validation episodes (event-level, as `genie-gym train --phase heads` reports). Target: "
             "precision 0.8, recall 0.9; the constant \"never\" predictor: recall 0.\n",
             "| features | episode end precision / recall | coin precision / recall |", "|---|---|---|"]
    for name, s in rows.items():
        lines.append(f"| {name} | {s['terminal']['precision']:.2f} / {s['terminal']['recall']:.2f} "
                     f"({s['terminal']['events']} events) | {s['reward']['precision']:.2f} / "
                     f"{s['reward']['recall']:.2f} ({s['reward']['events']} events) |")
    write_markdown(args.out / "heads_features.md", lines)
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
