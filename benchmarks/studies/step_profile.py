"""Where one Genie-v0 step spends its time: the MaskGIT decoding passes, the cache commit, the pixel decoder.

Times the three `Simulator` stages over `--steps` batched steps of `--num-worlds` worlds (after filling the context),
for each precision, on the shipped model at its default sampling settings unless told otherwise.

    python benchmarks/studies/step_profile.py --num-worlds 64
    python benchmarks/studies/step_profile.py --device cuda --num-worlds 1024 --kernels 25 --out OUT/step_profile_cuda

writes benchmarks/results/step_profile.{json,md}. On CUDA each stage is timed between synchronisations, and
`--kernels K` adds the K kernels that took the most GPU time over the timed steps (torch.profiler); on the CPU, the K
operators with the most CPU time of their own (where the casts and copies show).
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
    device: str = "cpu"
    """cpu or cuda"""
    kernels: int = 0
    """also list the K kernels (CUDA) or operators (CPU) with the most time over the timed steps (0: none)"""
    out: Path = Path("benchmarks/results/step_profile")
    """writes OUT.json and OUT.md"""


def profile(args: Args, precision: str) -> dict:
    from genie_gym.models.simulator import Simulator
    from genie_gym.models.world_model import WorldModel

    wm = WorldModel.load(args.model or WorldModel.default_path())
    N = args.num_worlds
    sim = Simulator(wm, num_worlds=N, device=args.device, precision=precision)
    cuda = sim.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    prompts = np.random.default_rng(0).integers(0, 255, (N, 64, 64, 3), dtype=np.uint8)
    sim.reset(None, prompts, list(range(N)))
    actions = np.zeros(N, dtype=np.int64)
    for _ in range(wm.config.sampling.context_frames):
        sim.step(actions)
    seconds = dict.fromkeys(STAGES, 0.0)
    for name in STAGES:  # wrap each stage on this instance: the timed code is the env's own
        def timed(*a, _f=getattr(sim, f"_{name}"), _name=name, **kw):
            sync()
            t = time.perf_counter()
            out = _f(*a, **kw)
            sync()
            seconds[_name] += time.perf_counter() - t
            return out
        setattr(sim, f"_{name}", timed)
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        sim.step(actions)
    sync()
    total = time.perf_counter() - t0
    row = {"frames_per_s": N * args.steps / total, "maskgit_steps": sim.maskgit_steps,
           "share": {k: v / total for k, v in seconds.items()}}
    if args.kernels:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                sim.step(actions)
            sync()
        own = (lambda e: e.self_device_time_total) if cuda else (lambda e: e.self_cpu_time_total)
        events = sorted(prof.key_averages(), key=own, reverse=True)
        busy_us = sum(own(e) for e in events)
        if cuda:
            row["gpu_busy"] = busy_us / 1e6 / total  # GPU time / wall time of as many steps (timed above)
        row["kernels"] = [{"name": e.key[:90], "calls_per_step": e.count / args.steps,
                           "share": own(e) / max(busy_us, 1)} for e in events[:args.kernels]]
    return row


def main(args: Args) -> None:
    from genie_gym.utils.io import atomic_write_json, write_markdown

    rows = {p: profile(args, p) for p in args.precisions}
    command = (f"python benchmarks/studies/step_profile.py --num-worlds {args.num_worlds} --steps {args.steps}"
               + (f" --precisions {' '.join(args.precisions)}" if args.precisions != ["float32", "bfloat16"] else "")
               + (f" --device {args.device}" if args.device != "cpu" else "")
               + (f" --kernels {args.kernels}" if args.kernels else "")
               + (f" --out {args.out}" if args.out != Args.out else ""))
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
    for p, r in rows.items():
        if "kernels" in r and "gpu_busy" in r:
            lines += ["", f"{p}: the GPU was busy {r['gpu_busy']:.0%} of the wall time; kernels by GPU time:", "",
                      "| kernel | calls per step | share of GPU time |", "|---|---:|---:|"]
            lines += [f"| `{k['name']}` | {k['calls_per_step']:.0f} | {k['share']:.1%} |" for k in r["kernels"]]
        elif "kernels" in r:
            lines += ["", f"{p}: operators by their own CPU time (torch.profiler, the same number of steps again):",
                      "", "| operator | calls per step | share of CPU time |", "|---|---:|---:|"]
            lines += [f"| `{k['name']}` | {k['calls_per_step']:.0f} | {k['share']:.1%} |" for k in r["kernels"]]
    write_markdown(args.out.with_suffix(".md"), lines)
    print(json.dumps(rows))


if __name__ == "__main__":
    main(tyro.cli(Args))
