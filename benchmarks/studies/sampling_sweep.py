"""Sampling settings by measurement: MaskGIT steps x temperature, scored by rollout quality and speed.

For each setting, `genie-gym eval`'s rollouts (1 real context frame, 10 generated frames with the LAM's actions, and
with random actions for delta-PSNR) on the same held-out clips, and the frames/s of one world stepped alone (the
env's hot path, 2 CPU threads). The paper's settings (25 steps, temperature 1.0) are a row like any other.

    python benchmarks/studies/sampling_sweep.py --data data/coinrun_hard_sticky

writes benchmarks/results/sampling_sweep.{json,md}.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tyro


@dataclass
class Args:
    """Rollout PSNR, delta-PSNR and single-world frames/s for each MaskGIT steps x temperature."""

    model: Path | None = None
    """world-model file (default: the shipped one)"""
    data: Path = Path("data/coinrun_hard_sticky")
    """dataset whose test split gives the held-out clips"""
    steps: list[int] = field(default_factory=lambda: [4, 8, 25])
    """MaskGIT steps per frame"""
    temperatures: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])
    """sampling temperatures (0 = argmax)"""
    num_clips: int = 32
    """held-out clips per setting (the same clips for every setting)"""
    speed_frames: int = 30
    """frames timed for the single-world speed"""
    seed: int = 0
    """seed of clip choice and sampling"""
    out: Path = Path("benchmarks/results/sampling_sweep")
    """writes OUT.json and OUT.md"""


def single_world_fps(world_model, steps: int, temperature: float, frames: int, seed: int) -> float:
    from genie_gym.envs.procgen_prompt import procgen_start_frame
    from genie_gym.models.simulator import Simulator

    sim = Simulator(world_model, num_worlds=1, maskgit_steps=steps, temperature=temperature)
    sim.reset(None, procgen_start_frame("coinrun", level=seed, distribution_mode="hard")[None], [seed])
    rng = np.random.default_rng(seed)
    sim.step(rng.integers(0, world_model.num_actions, 1))  # warm-up
    t0 = time.perf_counter()
    for _ in range(frames):
        sim.step(rng.integers(0, world_model.num_actions, 1))
    return frames / (time.perf_counter() - t0)


def main(args: Args) -> None:
    from genie_gym.evaluation.evaluate import Args as EvalArgs
    from genie_gym.evaluation.evaluate import evaluate
    from genie_gym.models.world_model import WorldModel
    from genie_gym.utils.io import atomic_write_json, write_markdown

    wm = WorldModel.load(args.model)
    rows = []
    for steps in args.steps:
        for temp in args.temperatures:
            r = evaluate(EvalArgs(model=args.model, data=args.data, out=Path("runs/sampling_sweep"),
                                  num_clips=args.num_clips, seed=args.seed, device="cpu", maskgit_steps=steps,
                                  temperature=temp, context=(1,), stability_steps=0, strip_steps=1))
            fps = single_world_fps(wm, steps, temp, args.speed_frames, args.seed)
            rows.append({"maskgit_steps": steps, "temperature": temp, "rollout_psnr_mean": r["rollout_psnr_mean"],
                         "rollout_ssim_mean": r["rollout_ssim_mean"], "step1_psnr": r["rollout_psnr"][0],
                         "still_psnr_mean": r["still_psnr_mean"], "delta_psnr_t4": r["delta_psnr_t4"],
                         "single_world_fps": fps})
            print(json.dumps(rows[-1]))
    command = " ".join(["python", "benchmarks/studies/sampling_sweep.py", *sys.argv[1:]])
    atomic_write_json(args.out.with_suffix(".json"), {"command": command, "model_sha256": wm.payload_sha256,
                                                      "num_clips": args.num_clips, "rows": rows})
    lines = [
        "# Sampling settings: MaskGIT steps x temperature",
        "",
        f"`{command}`: {args.num_clips} held-out clips (test split), 1 real context frame, 10 generated frames with "
        "the LAM's actions (delta-PSNR: against random actions at t = 4); frames/s of one world alone on this machine. "
        f"Still image (the first frame repeated) on the same clips: {rows[0]['still_psnr_mean']:.2f} dB.",
        "",
        "| MaskGIT steps | temperature | rollout PSNR (mean of 10) | step 1 | rollout SSIM | delta-PSNR t=4 | "
        "frames/s (1 world) |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['maskgit_steps']} | {r['temperature']:g} | {r['rollout_psnr_mean']:.2f} | {r['step1_psnr']:.2f} | "
              f"{r['rollout_ssim_mean']:.3f} | {r['delta_psnr_t4']:+.2f} | {r['single_world_fps']:.1f} |" for r in rows]
    write_markdown(args.out.with_suffix(".md"), lines, echo=False)


if __name__ == "__main__":
    main(tyro.cli(Args))
