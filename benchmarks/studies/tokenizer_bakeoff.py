"""Tokenizer bake-off: every design trained by the same trainer, on the same data, for the same wall time.

Each variant is a `TokenizerConfig` (stem, quantiser, groups, loss) trained with `genie-gym train --phase tokenizer`'s
Trainer for `--minutes` on this machine (bf16 autocast on CPU, batch 8 clips x 8 frames, the `small` preset's
optimiser), then scored on held-out clips (the data's test split, level seeds never trained on):
PSNR and SSIM of reconstructions, codebook usage and perplexity, tokens and bits per frame, the share of tokens
equal in consecutive real frames (what copying the last frame gets right: tokens that change only where the
picture changes are easier for the dynamics), decode time per frame (batch 64, one thread and all threads), and
the dynamics' cost per frame (64 tokens a frame for every 8x8 grid, whatever the groups).

    python benchmarks/studies/tokenizer_bakeoff.py --data data/coinrun_hard_sticky --minutes 5

writes benchmarks/results/tokenizer_bakeoff.{json,md}; the runs stay in runs/bakeoff/<variant> (a winner can be
trained on with `genie-gym train --phase tokenizer --resume` once the preset names its config).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import tyro

from genie_gym.config import GenieConfig, TokenizerConfig, get_preset

CONV = {"stem": "conv", "conv_channels": (64, 128), "d_model": 128, "num_layers": 2, "num_heads": 4,
        "patch_size": 8}
FSQ = {"quantizer": "fsq", "fsq_levels": (8, 5, 5, 5), "code_dim": 4, "codebook_size": 1000}
VARIANTS: dict[str, dict] = {
    # today's shipped tokenizer: ST-ViT, linear patches of 8, VQ 1024 x 32, MSE
    "patch8_vq": {},
    "conv8_vq": {**CONV},
    "conv8_fsq": {**CONV, **FSQ},
    "conv8_fsq_g2": {**CONV, **FSQ, "groups": 2},
    "conv8_fsq_g4": {**CONV, **FSQ, "groups": 4},
    "conv8_fsq_g4_l1grad": {**CONV, **FSQ, "groups": 4, "mse_weight": 1.0, "l1_weight": 1.0, "grad_weight": 1.0},
}


@dataclass
class Args:
    """Train each tokenizer variant for the same wall time, then score it on held-out clips."""

    data: Path = Path("data/coinrun_hard_sticky")
    """dataset recorded by `genie-gym data` (train split for training, --split for scoring)"""
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    """which variants to run (see VARIANTS)"""
    minutes: float = 5.0
    """wall-clock training time per variant"""
    split: str = "test"
    """held-out split to score on"""
    num_clips: int = 64
    """held-out clips of 8 frames to score"""
    runs: Path = Path("runs/bakeoff")
    """where each variant's run directory goes"""
    out: Path = Path("benchmarks/results/tokenizer_bakeoff")
    """writes OUT.json and OUT.md"""
    report_only: bool = False
    """skip training: score the runs already in --runs"""
    seed: int = 0
    """seed of initialisation, data order and clip choice"""


def variant_config(name: str) -> GenieConfig:
    cfg = get_preset("small")
    base = dataclasses.asdict(get_preset("small").tokenizer)
    base.update({"stem": "patch", "quantizer": "vq", "groups": 1, "patch_size": 8, "codebook_size": 1024,
                 "code_dim": 32, "d_model": 128, "num_layers": 4, "num_heads": 4, "mse_weight": 1.0,
                 "l1_weight": 0.0, "grad_weight": 0.0})
    base.update(VARIANTS[name])
    cfg.tokenizer = TokenizerConfig(**base)
    cfg.preset = f"bakeoff:{name}"
    return cfg


def train_variant(name: str, args: Args) -> dict:
    from genie_gym.training.train import Args as TrainArgs
    from genie_gym.training.trainer import Trainer

    cfg = variant_config(name)
    targs = TrainArgs(phase="tokenizer", preset="small", data=args.data, out=args.runs / name, steps=100_000,
                      batch_size=8, cpu_bf16=True, seed=args.seed, time_limit_min=args.minutes, ckpt_every=1000,
                      dead_code_every=100, tensorboard=False, image_every=0)
    t0 = time.time()
    trainer = Trainer(targs, config=cfg)
    trainer.run()
    return {"steps": trainer.step, "train_seconds": time.time() - t0,
            "frames_seen": trainer.step * 8 * cfg.seq_len}


@torch.no_grad()
def score(name: str, args: Args) -> dict:
    from genie_gym.data.dataset import ClipDataset
    from genie_gym.evaluation.metrics import psnr, ssim
    from genie_gym.models.frames import to_float
    from genie_gym.training.checkpoint import load_checkpoint
    from genie_gym.training.trainer import build_tokenizer

    ckpt = load_checkpoint(args.runs / name / "tokenizer" / "last.pt")
    cfg = GenieConfig.from_dict(ckpt["config"])
    tok = build_tokenizer(cfg)
    tok.load_state_dict(ckpt["model"]["tokenizer"])
    tok.eval()
    ds = ClipDataset(args.data, split=args.split, clip_len=cfg.seq_len, stride=1)
    g = torch.Generator().manual_seed(args.seed)
    pick = sorted(torch.randperm(len(ds), generator=g)[: args.num_clips].tolist())
    psnrs, ssims, tokens, same = [], [], [], []
    for i in range(0, len(pick), 16):
        x = to_float(torch.stack([ds[j] for j in pick[i : i + 16]]))
        t = tok.encode(x)
        r = tok.decode(t).clamp(0, 1)
        psnrs.append(psnr(r, x).flatten())
        ssims.append(ssim(r, x).flatten())
        tokens.append(t.flatten())
        same.append((t[:, 1:] == t[:, :-1]).float().flatten())
    counts = torch.bincount(torch.cat(tokens), minlength=tok.codebook_size).float()
    p = counts / counts.sum()
    # decode cost per frame: 64 frames decoded from tokens in one batch
    t64 = tok.encode(to_float(torch.stack([ds[j] for j in pick[:8]])))
    timings = {}
    for threads in (1, torch.get_num_threads()):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        tok.decode(t64)
        t0 = time.perf_counter()
        for _ in range(3):
            tok.decode(t64)
        timings[f"decode_ms_per_frame_{threads}thread"] = (time.perf_counter() - t0) / 3 / t64[:, :].numel() * \
            tok.tokens_per_frame * 1000
        torch.set_num_threads(old)
    return {
        "psnr": float(torch.cat(psnrs).mean()),
        "ssim": float(torch.cat(ssims).mean()),
        "codebook_usage": float((counts > 0).float().mean()),
        "perplexity": float(torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())),
        "tokens_per_frame": tok.tokens_per_frame,
        "bits_per_frame": tok.tokens_per_frame * math.log2(tok.codebook_size),
        "dynamics_positions_per_frame": tok.grid_cells,
        "tokens_equal_to_previous_frame": float(torch.cat(same).mean()),
        "parameters_M": sum(q.numel() for q in tok.parameters()) / 1e6,
        "steps": int(ckpt["step"]),
        **timings,
        "config": dataclasses.asdict(cfg.tokenizer),
    }


def main(args: Args) -> None:
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {sorted(VARIANTS)}")
    json_path = args.out.with_suffix(".json")
    results = json.loads(json_path.read_text())["variants"] if json_path.is_file() else {}
    for name in args.variants:
        row = dict(results.get(name, {}))
        if not args.report_only:
            row.update(train_variant(name, args))
        row.update(score(name, args))
        results[name] = row
        print(f"{name}: PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.3f}, {row['steps']} steps")
        write(args, results)


def write(args: Args, results: dict) -> None:
    from genie_gym.utils.io import atomic_write_json, write_markdown

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out.with_suffix(".json"), {
        "command": f"python benchmarks/studies/tokenizer_bakeoff.py --data {args.data} --minutes {args.minutes}",
        "minutes_per_variant": args.minutes, "split": args.split, "num_clips": args.num_clips,
        "torch_threads": torch.get_num_threads(), "variants": results})
    lines = [
        "# Tokenizer bake-off",
        "",
        f"`python benchmarks/studies/tokenizer_bakeoff.py --data {args.data} --minutes {args.minutes}`: each variant "
        "trained "
        f"{args.minutes:g} min on {torch.get_num_threads()} CPU threads (bf16 autocast, batch 8 clips x 8 frames, the "
        f"`small` optimiser), scored on {args.num_clips} clips of the `{args.split}` split (held-out level seeds).",
        "",
        "| variant | steps | PSNR dB | SSIM | tokens/frame | bits/frame | dynamics positions | code usage | "
        "tokens = previous frame | decode ms/frame (1 thread) | params M |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if "psnr" not in r:
            continue
        lines.append(
            f"| {name} | {r['steps']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['tokens_per_frame']} | "
            f"{r['bits_per_frame']:.0f} | {r['dynamics_positions_per_frame']} | {r['codebook_usage']:.0%} | "
            f"{r['tokens_equal_to_previous_frame']:.1%} | {r['decode_ms_per_frame_1thread']:.2f} | "
            f"{r['parameters_M']:.2f} |")
    lines += ["", "Variants: " + "; ".join(f"`{k}` = {v or 'the v0.2 tokenizer'}" for k, v in VARIANTS.items())]
    write_markdown(args.out.with_suffix(".md"), lines, echo=False)


if __name__ == "__main__":
    main(tyro.cli(Args))
