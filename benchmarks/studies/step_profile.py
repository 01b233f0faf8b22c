"""Where one Genie-v0 step spends its time: the MaskGIT decoding passes, the cache commit, the pixel decoder.

Times the three `Simulator` stages over `--steps` batched steps of `--num-worlds` worlds (after filling the context),
for each precision, on the shipped model at its default sampling settings unless told otherwise.

    python benchmarks/studies/step_profile.py --num-worlds 64

writes benchmarks/results/step_profile.{json,md}.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import tyro

STAGES = ("dyn_step", "dyn_commit", "dec_step")  # Simulator methods: a MaskGIT pass, the cache commit, decoding


@dataclass
class Args:
    """Time the stages of a batched Genie-v0 step."""

    model: Path | None = None
    """world-model file (default: the shipped model)"""
    num_worlds: int = 64
    """worlds stepped together"""
    steps: int = 10
    """timed steps (after the context is full)"""
    precisions: list[str] = field(default_factory=lambda: ["float32", "bfloat16"])
    """generation precisions"""
    out: Path = Path("benchmarks/results/step_profile")
    """writes OUT.json and OUT.md"""


def profile(args: Args, precision: str) -> dict:
    from genie_gym.models.simulator import Simulator
    from genie_gym.models.world_model import WorldModel

    wm = WorldModel.load(args.model or WorldModel.default_path())
    N = args.num_worlds
    sim = Simulator(wm, num_worlds=N, device="cpu", precision=precision)
    prompts = np.random.default_rng(0).integers(0, 255, (N, 64, 64, 3), dtype=np.uint8)
    sim.reset(None, prompts, list(range(N)))
    actions = np.zeros(N, dtype=np.int64)
    for _ in range(wm.config.sampling.context_frames):
        sim.step(actions)
    seconds = dict.fromkeys(STAGES, 0.0)
    for name in STAGES:  # wrap each stage on this instance: the timed code is the env's own
        def timed(*a, _f=getattr(sim, f"_{name}"), _name=name, **kw):
            t = time.perf_counter()
            out = _f(*a, **kw)
            seconds[_name] += time.perf_counter() - t
            return out
        setattr(sim, f"_{name}", timed)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        sim.step(actions)
    total = time.perf_counter() - t0
    return {"frames_per_s": N * args.steps / total, "maskgit_steps": sim.maskgit_steps,
            "share": {k: v / total for k, v in seconds.items()}}


def main(args: Args) -> None:
    from genie_gym.utils.io import atomic_write_json, write_markdown

    rows = {p: profile(args, p) for p in args.precisions}
    command = f"python benchmarks/studies/step_profile.py --num-worlds {args.num_worlds} --steps {args.steps}"
    atomic_write_json(args.out.with_suffix(".json"), {"command": command, "torch_threads": torch.get_num_threads(),
                                                      "rows": rows})
    lines = [f"# Genie-v0 step profile ({args.num_worlds} worlds)", "", f"`{command}`, "
             f"{torch.get_num_threads()} torch threads; share of a step's wall time per stage.", "",
             "| precision | MaskGIT steps | frames/s | decoding passes | cache commit | pixel decoder | rest |",
             "|---|---|---|---|---|---|---|"]
    for p, r in rows.items():
        s = r["share"]
        lines.append(f"| {p} | {r['maskgit_steps']} | {r['frames_per_s']:.1f} | {s['dyn_step']:.0%} | "
                     f"{s['dyn_commit']:.0%} | {s['dec_step']:.0%} | {1 - sum(s.values()):.0%} |")
    write_markdown(args.out.with_suffix(".md"), lines)
    print(json.dumps(rows))


if __name__ == "__main__":
    main(tyro.cli(Args))
