"""Dynamics bake-off: why the v0.2 dynamics did not beat copying the last frame, measured.

Every variant trains the `small` dynamics with the same frozen tokenizer and the same frozen LAM (its codes label the
clips), on the same data, for the same wall time, with `genie-gym train --phase dynamics`'s Trainer (bf16 autocast
on CPU). The variants differ only in how training masks and corrupts tokens (`DynamicsConfig`):

- `paper`: one mask rate per clip ~ U(0.5, 1) on frames 1..T-1 (Genie), clean unmasked tokens. The context of a
  frame is then itself at least half masked, while at inference it is clean: the model never practises reading it.
- `per_frame`: an independent rate ~ U(0, 1) per frame, so a frame's past is sometimes (nearly) clean.
- `per_frame_noise`: the same, and up to 10% of each later frame's unmasked tokens replaced by random codes (the
  model learns to read a context holding its own mistakes: against drift in long rollouts).

Each is scored by `genie-gym eval` on held-out clips (test split): next-frame token accuracy from clean context against
copying the last frame's tokens, rollout PSNR (1 real frame, 10 generated, LAM actions) against the still image, and
delta-PSNR at t = 4.

    python benchmarks/studies/dynamics_bakeoff.py --data data/coinrun_hard_sticky \
        --tokenizer-ckpt runs/v1/tokenizer/last.pt --lam-from runs/v02_world_model.pt --minutes 4

writes benchmarks/results/dynamics_bakeoff.{json,md}; runs stay in runs/dynamics_bakeoff/<variant>.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import tyro

from genie_gym.config import GenieConfig, get_preset

VARIANTS: dict[str, dict] = {
    "paper": {"mask_rate_min": 0.5, "mask_rate_max": 1.0, "per_frame_mask": False, "context_noise": 0.0},
    "per_frame": {"mask_rate_min": 0.0, "mask_rate_max": 1.0, "per_frame_mask": True, "context_noise": 0.0},
    "per_frame_noise": {"mask_rate_min": 0.0, "mask_rate_max": 1.0, "per_frame_mask": True, "context_noise": 0.1},
}


@dataclass
class Args:
    """Train each dynamics variant for the same wall time on frozen tokenizer and LAM, then score it held out."""

    tokenizer_ckpt: Path
    """the frozen tokenizer (a phase-tokenizer checkpoint of the `small` preset)"""
    lam_from: Path
    """a world-model file whose LAM labels the clips (kept fixed)"""
    data: Path = Path("data/coinrun_hard_sticky")
    """dataset recorded by `genie-gym data`"""
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    """which variants to run (see VARIANTS)"""
    minutes: float = 4.0
    """wall-clock training time per variant"""
    num_clips: int = 32
    """held-out clips to score"""
    runs: Path = Path("runs/dynamics_bakeoff")
    """where each variant's run directory goes"""
    out: Path = Path("benchmarks/results/dynamics_bakeoff")
    """writes OUT.json and OUT.md"""
    report_only: bool = False
    """skip training: score the runs already in --runs"""
    seed: int = 0
    """seed of initialisation, data order, masking and clip choice"""


def variant_config(name: str) -> GenieConfig:
    cfg = get_preset("small")
    cfg.dynamics = dataclasses.replace(cfg.dynamics, **VARIANTS[name])
    cfg.preset = f"dynamics_bakeoff:{name}"
    return cfg


def main(args: Args) -> None:
    from genie_gym.evaluation.evaluate import Args as EvalArgs
    from genie_gym.evaluation.evaluate import evaluate
    from genie_gym.training.train import Args as TrainArgs
    from genie_gym.training.trainer import Trainer
    from genie_gym.utils.io import atomic_write_json, write_markdown

    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {sorted(VARIANTS)}")
    json_path = args.out.with_suffix(".json")
    results = json.loads(json_path.read_text())["variants"] if json_path.is_file() else {}
    for name in args.variants:
        row = dict(results.get(name, {}))
        run = args.runs / name
        if not args.report_only:
            targs = TrainArgs(phase="dynamics", preset="small", data=args.data, out=run, steps=100_000, batch_size=8,
                              cpu_bf16=True, seed=args.seed, time_limit_min=args.minutes, ckpt_every=100_000,
                              tensorboard=False, image_every=0, tokenizer_ckpt=args.tokenizer_ckpt,
                              init_from=args.lam_from, init_parts=("lam",), freeze_lam=True)
            t0 = time.time()
            trainer = Trainer(targs, config=variant_config(name))
            trainer.run()
            row.update(steps=trainer.step, train_seconds=round(time.time() - t0, 1),
                       train_accuracy=trainer.metrics.get("dynamics_accuracy"),
                       train_copy_accuracy=trainer.metrics.get("dynamics_copy_accuracy"))
        r = evaluate(EvalArgs(model=run / "world_model.pt", data=args.data, out=run / "eval", num_clips=args.num_clips,
                              seed=args.seed, device="cpu", context=(1,), stability_steps=0, strip_steps=1))
        row.update({k: r[k] for k in ("token_accuracy", "copy_token_accuracy", "rollout_psnr_mean", "still_psnr_mean",
                                      "delta_psnr_t4", "maskgit_steps", "temperature")})
        row["rollout_psnr_step1"] = r["rollout_psnr"][0]
        row["config"] = VARIANTS[name]
        results[name] = row
        print(f"{name}: token accuracy {row['token_accuracy']:.1%} (copy {row['copy_token_accuracy']:.1%}), rollout "
              f"{row['rollout_psnr_mean']:.2f} dB (still {row['still_psnr_mean']:.2f}), {row.get('steps')} steps")
        command = (f"python benchmarks/studies/dynamics_bakeoff.py --data {args.data} "
                   f"--tokenizer-ckpt {args.tokenizer_ckpt} --lam-from {args.lam_from} --minutes {args.minutes}")
        atomic_write_json(json_path, {"command": command, "minutes_per_variant": args.minutes, "variants": results})
        lines = [
            "# Dynamics bake-off: masking and context corruption",
            "",
            f"`{command}`: each variant trained {args.minutes:g} min on this machine (bf16 autocast, batch 8 clips x 8 "
            "frames, the `small` optimiser), the tokenizer and the LAM frozen; scored on "
            f"{args.num_clips} held-out clips (test split) by `genie-gym eval` at the preset's sampling settings of "
            f"the time ({row['maskgit_steps']} MaskGIT steps, temperature {row['temperature']:g}).",
            "",
            "| variant | steps | token accuracy, clean context | copy last frame | rollout PSNR (10 steps) | step 1 | "
            "still image | delta-PSNR t=4 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [f"| {k} | {v.get('steps', '')} | {v['token_accuracy']:.1%} | {v['copy_token_accuracy']:.1%} | "
                  f"{v['rollout_psnr_mean']:.2f} | {v['rollout_psnr_step1']:.2f} | {v['still_psnr_mean']:.2f} | "
                  f"{v['delta_psnr_t4']:+.2f} |" for k, v in results.items()]
        lines += ["", "Variants: " + "; ".join(f"`{k}` = {v}" for k, v in VARIANTS.items())]
        write_markdown(args.out.with_suffix(".md"), lines, echo=False)


if __name__ == "__main__":
    main(tyro.cli(Args))
