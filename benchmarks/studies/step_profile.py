"""Where one Genie-v0 step spends its time: the MaskGIT decoding passes, the cache commit, the pixel decoder, and
the event heads (which Genie-v0 runs after every step of a model that has them).

Times those `Simulator` stages over `--steps` batched steps of `--num-worlds` worlds (after filling the context),
for each precision, on the shipped model at its default sampling settings unless told otherwise. Each stage's
floating-point work per frame is counted once (`torch.utils.flop_counter`: matmuls, convolutions, attention; the
elementwise rest is not counted) and set against this machine's dense matmul speed measured in the same run
(`matmul_gflops`, 1024^3 in the row's precision): `ceiling_fps` = that speed / the work per frame, the frames/s
this model could reach if every multiply-add ran as fast as one large matmul.

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
HEADS = "event_probs"  # the event heads: timed and counted where the model has them


def attr(stage: str) -> str:
    """The Simulator attribute a stage runs through (the compiled-or-eager calls are `_dyn_step`, ...)."""
    return stage if stage == HEADS else f"_{stage}"


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


def wrap_stages(sim, stages: tuple[str, ...], around) -> dict:
    """Run each stage's calls on this instance through `around(stage, call, *args, **kwargs)` (the timed or counted
    code is the env's own); returns the instance's own calls, for `unwrap_stages`."""
    originals = {name: getattr(sim, attr(name)) for name in stages}
    for name, f in originals.items():
        setattr(sim, attr(name), lambda *a, _f=f, _name=name, **kw: around(_name, _f, *a, **kw))
    return originals


def unwrap_stages(sim, originals: dict) -> None:
    for name, f in originals.items():
        setattr(sim, attr(name), f)


def count_flops(sim, env_step, stages: tuple[str, ...]) -> dict[str, float]:
    """Floating-point operations per frame of each stage over one env step, counted by `torch.utils.flop_counter`
    (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    flops = dict.fromkeys(stages, 0.0)

    def counted(name, f, *a, **kw):
        with FlopCounterMode(display=False) as counter:
            out = f(*a, **kw)
        flops[name] += counter.get_total_flops() / sim.num_worlds
        return out

    originals = wrap_stages(sim, stages, counted)
    env_step()
    unwrap_stages(sim, originals)
    return flops


def profile(args: Args, precision: str, peak_gflops: dict[str, float]) -> dict:
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
    heads = sim.heads_frames > 0
    stages = STAGES + ((HEADS,) if heads else ())

    def env_step() -> None:  # what Genie-v0 does per step
        sim.step(actions)
        if heads:
            sim.event_probs()

    for _ in range(wm.config.sampling.context_frames):
        env_step()
    flops = count_flops(sim, env_step, stages)
    seconds = dict.fromkeys(stages, 0.0)

    def timed(name, f, *a, **kw):
        sync()
        t = time.perf_counter()
        out = f(*a, **kw)
        sync()
        seconds[name] += time.perf_counter() - t
        return out

    wrap_stages(sim, stages, timed)
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        env_step()
    sync()
    total = time.perf_counter() - t0
    frames = N * args.steps
    peak = peak_gflops[precision]
    per_frame = sum(flops.values())
    row = {"frames_per_s": frames / total, "maskgit_steps": sim.maskgit_steps,
           "share": {k: v / total for k, v in seconds.items()},
           "mflop_per_frame": {k: v / 1e6 for k, v in flops.items()},
           "stage_gflop_per_s": {k: flops[k] * frames / max(seconds[k], 1e-9) / 1e9 for k in stages},
           "matmul_gflop_per_s": peak, "ceiling_fps": peak * 1e9 / per_frame,
           "achieved_gflop_per_s": per_frame * frames / total / 1e9}
    if args.kernels:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                env_step()
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
    from genie_gym.utils.device import matmul_gflops
    from genie_gym.utils.io import atomic_write_json, write_markdown

    peak = matmul_gflops(args.device)  # once, for every precision's ceiling
    rows = {p: profile(args, p, peak) for p in args.precisions}
    command = (f"python benchmarks/studies/step_profile.py --num-worlds {args.num_worlds} --steps {args.steps}"
               + (f" --precisions {' '.join(args.precisions)}" if args.precisions != ["float32", "bfloat16"] else "")
               + (f" --device {args.device}" if args.device != "cpu" else "")
               + (f" --kernels {args.kernels}" if args.kernels else "")
               + (f" --out {args.out}" if args.out != Args.out else ""))
    atomic_write_json(args.out.with_suffix(".json"), {"command": command, "torch_threads": torch.get_num_threads(),
                                                      "rows": rows})
    lines = [f"# Genie-v0 step profile ({args.num_worlds} worlds)", "", f"`{command}`, "
             f"{torch.get_num_threads()} torch threads; share of a step's wall time per stage (the event heads run "
             "after each step, as in Genie-v0, where the model has them).", "",
             "| precision | MaskGIT steps | frames/s | decoding passes | cache commit | pixel decoder | event heads | "
             "rest |", "|---|---|---|---|---|---|---|---|"]
    for p, r in rows.items():
        s = r["share"]
        lines.append(f"| {p} | {r['maskgit_steps']} | {r['frames_per_s']:.1f} | {s['dyn_step']:.0%} | "
                     f"{s['dyn_commit']:.0%} | {s['dec_step']:.0%} | "
                     f"{f'{s[HEADS]:.0%}' if HEADS in s else 'none'} | {1 - sum(s.values()):.0%} |")
    lines += ["", "The work per frame (MFLOP: matmuls, convolutions and attention, counted by "
              "`torch.utils.flop_counter` over one step) and the speed each stage runs it at (GFLOP/s of its own "
              "wall time), against this "
              "machine's 1024^3 matmul in the same precision, measured in the same run. Ceiling: the frames/s if "
              "every stage ran at that matmul speed.", "",
              "| precision | decoding passes | cache commit | pixel decoder | event heads | per frame | achieved "
              "GFLOP/s | matmul GFLOP/s | ceiling frames/s | frames/s of the ceiling |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for p, r in rows.items():
        f, g = r["mflop_per_frame"], r["stage_gflop_per_s"]
        cells = [f"{f[k]:.0f} MFLOP at {g[k]:.0f}" if k in f else "none" for k in (*STAGES, HEADS)]
        lines.append(f"| {p} | {' | '.join(cells)} | {sum(f.values()):.0f} MFLOP | {r['achieved_gflop_per_s']:.0f} | "
                     f"{r['matmul_gflop_per_s']:.0f} | {r['ceiling_fps']:.0f} | "
                     f"{r['frames_per_s'] / r['ceiling_fps']:.0%} |")
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
