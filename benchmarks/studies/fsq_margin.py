"""Do FSQ codes kept away from their bins' boundaries make the next frame's tokens easier to predict?

The shipped tokenizer's FSQ latents sit anywhere in their bins: 13% of the channels lie within 0.1 of a boundary,
where a faint change of the frame flips the code, and a real frame with faint noise (sigma 2/255, 42 dB) keeps only
89% of its tokens (`token_stability.md`). A margin loss (`tokenizer.fsq_margin_weight`, models/fsq.py) pulls every
channel towards its bin's centre. Each arm fine-tunes the shipped tokenizer whole (encoder and decoder, so the
tokens move in every arm) with one margin weight, then fine-tunes the shipped dynamics on that arm's tokens, the
LAM frozen; weight 0 is the control. Each arm's world model is scored on held-out clips:

- the tokenizer: PSNR and gradient-energy ratio of reconstructions (64 test clips, `checkpoint_scores`), the mean
  distance of the latents to their bins' boundaries (0.5 = at the centre), the share of tokens equal to the base (shipped)
  tokenizer's on the same frames;
- the codes: tokens changed between consecutive frames identical / different in pixels, and the share of the next
  frame's tokens that pixel stand-ins get (copy, true scroll, real + faint noise; `token_stability`, 256 test clips);
- the dynamics: next-frame token accuracy over copy on 64 validation clips (`checkpoint_scores`);
- the world model: `genie-gym eval` on 64 test clips (rollout PSNR beside the still image, pooled PSNR, token
  accuracy over copy, 200-step gradient-energy ratio).

The runs (written by the commands in `benchmarks/results/fsq_margin.md`) are read from `--runs`/w<weight>;
this script only scores them:

    python benchmarks/studies/fsq_margin.py --data data/coinrun_hard_sticky --weights 0 0.3 1

Writes benchmarks/results/fsq_margin.{json,md}.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import tyro
from checkpoint_scores import Args as ScoreArgs
from checkpoint_scores import dynamics_scores
from token_stability import changed_shares, held_out_clips, stand_in_scores

from genie_gym.evaluation.evaluate import Args as EvalArgs
from genie_gym.evaluation.evaluate import evaluate, open_clips, pick_clips
from genie_gym.evaluation.metrics import gradient_energy, psnr
from genie_gym.models.frames import to_float
from genie_gym.models.world_model import WorldModel
from genie_gym.utils.io import atomic_write_json, write_markdown


@dataclass
class Args:
    """Score the margin-loss arms (tokenizer + dynamics fine-tunes) against the shipped model."""

    data: Path = Path("data/coinrun_hard_sticky")
    """dataset directory (test split for the tokenizer and eval, validation for token accuracy)"""
    weights: list[str] = field(default_factory=lambda: ["0", "0.3", "1"])
    """margin weights of the arms, as written in their run directories' names (RUNS/w<weight>)"""
    runs: Path = Path("runs/fm")
    """where the arms' runs are"""
    base: Path = Path("genie_gym/assets/world_model.pt")
    """the model the arms were fine-tuned from (scored beside them; its tokens are the reference)"""
    num_clips: int = 64
    """clips for the tokenizer, token-accuracy and eval scores"""
    stability_clips: int = 256
    """clips for the token-stability scores"""
    stability_steps: int = 200
    """steps of `genie-gym eval`'s long-horizon sharpness rollouts"""
    threads: int = 2
    """torch threads"""
    out: Path = Path("benchmarks/results/fsq_margin")
    """writes OUT.json and OUT.md"""


@torch.no_grad()
def code_scores(wm: WorldModel, base: WorldModel, frames_BTHWC: torch.Tensor) -> dict[str, float]:
    """Reconstruction PSNR and sharpness, the latents' distance to their bins' boundaries, tokens shared with base."""
    tok, fsq = wm.tokenizer, wm.tokenizer.vq
    psnrs, ratios, dist, same = [], [], [], []
    for b in range(0, len(frames_BTHWC), 16):
        real = frames_BTHWC[b:b + 16]
        tokens = tok.encode(real)
        recon = tok.decode(tokens).float().clamp(0, 1)
        psnrs.append(psnr(recon, real).flatten())
        ratios.append((gradient_energy(recon) / gradient_energy(real).clamp_min(1e-8)).flatten())
        bounded = torch.tanh(tok.encode_latents(real).float() + fsq.shift) * fsq.half_l - fsq.offset
        dist.append((0.5 - (bounded - torch.round(bounded)).abs()).flatten())
        same.append((tokens == base.tokenizer.encode(real)).float().flatten())
    d = torch.cat(dist)
    return {"psnr": float(torch.cat(psnrs).mean()), "gradient_energy_ratio": float(torch.cat(ratios).mean()),
            "boundary_distance": float(d.mean()), "near_boundary": float((d < 0.1).float().mean()),
            "tokens_as_base": float(torch.cat(same).mean())}


def score(path: Path, base: WorldModel, frames_BTHWC: torch.Tensor, args: Args) -> dict:
    wm = WorldModel.load(path).eval()
    r: dict = {"model": str(path), "margin_weight": wm.config.tokenizer.fsq_margin_weight}
    r["codes"] = code_scores(wm, base, frames_BTHWC)
    ds, idx = held_out_clips(args.data, args.stability_clips)
    r["changed"] = changed_shares(wm, ds, idx)
    r["stand_ins"] = stand_in_scores(wm, ds, idx)
    r["validation"] = dynamics_scores(path, ScoreArgs(base=path, data=args.data, num_clips=args.num_clips))
    e = evaluate(EvalArgs(model=path, data=args.data, num_clips=args.num_clips, stability_steps=args.stability_steps,
                          out=args.out.parent / f"{args.out.name}_eval" / path.parent.name))
    r["eval"] = {k: e[k] for k in ("tokenizer_psnr", "rollout_psnr_mean", "still_psnr_mean", "still_tokens_psnr_mean",
                                   "rollout_psnr_of_mean_mse", "still_psnr_of_mean_mse", "token_accuracy",
                                   "copy_token_accuracy", "delta_psnr_t4")}
    r["eval"]["gradient_energy_ratio_last"] = e["stability"]["gradient_energy_ratio"][-1] if e["stability"] else None
    print(f"{path}: {r}", flush=True)
    return r


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    base = WorldModel.load(args.base).eval()
    ds = open_clips(args.data, "test", base.config.seq_len, "tokenizer clips")
    frames = to_float(torch.stack([ds[i] for i in pick_clips(len(ds), args.num_clips, 0)]))
    rows = {"base (no fine-tune)": score(args.base, base, frames, args)}
    for w in args.weights:
        rows[f"margin {w}"] = score(args.runs / f"w{w}" / "world_model.pt", base, frames, args)
    command = " ".join(["python", "benchmarks/studies/fsq_margin.py", *sys.argv[1:]])
    atomic_write_json(args.out.with_suffix(".json"), {"command": command, "rows": rows})
    lines = ["# FSQ margin loss: codes away from their bins' boundaries", "", f"`{command}`", "",
             "| arm | PSNR (dB) | sharpness | distance to boundary | within 0.1 | tokens as base | changed, same "
             "pixels | changed, different pixels | copy / scroll / noise stand-ins | validation gain over copy | "
             "rollout PSNR (still) | pooled rollout (still) | test token acc. (copy) | Δt-PSNR | "
             f"sharpness at step {args.stability_steps} |",
             "|---|" + "---|" * 14]
    for name, r in rows.items():
        c, s, e = r["codes"], r["stand_ins"], r["eval"]
        si = " / ".join(f"{100 * v['token_accuracy']:.1f}%" for k, v in s.items()
                        if isinstance(v, dict) and "psnr" in v)
        lines.append(
            f"| {name} | {c['psnr']:.2f} | {c['gradient_energy_ratio']:.3f} | {c['boundary_distance']:.3f} | "
            f"{100 * c['near_boundary']:.1f}% | {100 * c['tokens_as_base']:.1f}% | "
            f"{100 * r['changed']['identical']['tokens_changed']:.1f}% | "
            f"{100 * r['changed']['different']['tokens_changed']:.1f}% | {si} | "
            f"{100 * r['validation']['gain_over_copy']:+.2f} | "
            f"{e['rollout_psnr_mean']:.2f} ({e['still_psnr_mean']:.2f}) | "
            f"{e['rollout_psnr_of_mean_mse']:.2f} ({e['still_psnr_of_mean_mse']:.2f}) | "
            f"{100 * e['token_accuracy']:.1f}% ({100 * e['copy_token_accuracy']:.1f}%) | {e['delta_psnr_t4']:+.2f} | "
            f"{e['gradient_energy_ratio_last'] or float('nan'):.2f} |")
    write_markdown(args.out.with_suffix(".md"), lines)


if __name__ == "__main__":
    main(tyro.cli(Args))
