"""Genie-v0 speed and memory: the quality-speed table that sets the env's default, plus the memory check.

    python benchmarks/env_speed.py --data data/coinrun_hard_sticky   # the shipped model, the full table
    python benchmarks/env_speed.py --preset small --no-quality       # an untrained preset (speed only)
    python benchmarks/env_speed.py --quick                           # seconds: checks that the script runs

For every MaskGIT steps x precision (float32, bfloat16 autocast) x compiled (torch.compile or eager) setting:
- `single_fps`: `GenieEnv.step` calls per second (cached keys/values, the default path);
- `batched_fps[N]`: frames per second of `GenieVectorEnv(N)` (N frames per step); a measurement whose estimated
  time exceeds `--max-seconds` is skipped (null) rather than left to run for minutes;
- rollout PSNR and delta-PSNR (t = 4) of `genie-gym eval`'s rollouts on `--num-clips` held-out clips with that
  setting (compiling does not change the frames, so compiled rows share the eager row's quality);
and, once: this machine's matmul GFLOP/s (float32 and bfloat16, 1024^3), so every frames/s is also given
normalised to a 170 GFLOP/s float32 machine; one env with `use_cache=False` (the whole context recomputed per
MaskGIT pass); the peak RSS; RSS along a long vector-env run (`--memory-steps` env steps over `--memory-num-envs`
worlds on its own fast model, `--memory-preset`, default tiny): the env machinery must not leak.
The default setting is the fastest single-env row whose rollout PSNR is within 0.3 dB and delta-PSNR within 0.2 dB
of the 25-step float32 eager reference. Writes `benchmarks/results/env_speed.{json,md}`.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from genie_gym.utils.device import matmul_gflops

ROOT = Path(__file__).resolve().parent


@dataclass
class Args:
    """Measure Genie-v0's quality-speed table (MaskGIT steps x precision x compile) and memory over a long run."""

    checkpoint: Path | None = None
    """World-model file; default: the shipped model, or an untrained --preset model if given."""
    preset: str | None = None
    """Build an untrained model of this preset (tiny, small, coinrun) instead of loading a checkpoint."""
    quick: bool = False
    """Tiny sizes (tiny preset, few steps, no quality): checks that the script runs; the figures mean nothing."""
    steps: list[int] = field(default_factory=lambda: [2, 4, 8, 12, 25])
    """MaskGIT steps per frame (25 is the reference: the paper's setting)."""
    precisions: list[str] = field(default_factory=lambda: ["float32", "bfloat16"])
    """Generation precisions."""
    compiled: list[bool] = field(default_factory=lambda: [False, True])
    """Eager and/or torch.compile."""
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 64, 256])
    """Numbers of worlds for batched_fps."""
    seconds: float = 6.0
    """Time budget per speed measurement (at least --min-steps steps run, after filling the context)."""
    min_steps: int = 2
    """Fewest timed steps per measurement."""
    max_seconds: float = 90.0
    """Skip a batched measurement whose estimated time (warm-up + timed steps) is above this."""
    context_frames: int | None = None
    """Context window; default: the model's sampling config."""
    data: Path = Path("data/coinrun_hard_sticky")
    """Dataset whose test split gives the held-out clips of the quality columns."""
    num_clips: int = 32
    """Held-out clips per quality measurement (the same clips for every setting)."""
    quality: bool = True
    """Measure rollout PSNR / delta-PSNR per setting (needs --data)."""
    memory_steps: int = 100_000
    """Env steps (frames, summed over worlds) of the memory-flatness run; 0 skips it."""
    memory_num_envs: int = 32
    """Worlds in the memory-flatness run."""
    memory_preset: str = "tiny"
    """Model of the memory run: a preset name, or 'same' for the benchmarked model."""
    threads: int = 0
    """torch threads; 0 keeps torch's default (all cores)."""
    device: str = "cpu"
    """cpu, cuda or auto."""
    single: bool = True
    """Measure one env per setting (--no-single: batched figures only, e.g. compiled runs on a GPU)."""
    prompt: Path | None = None
    """Start image of every world (default: Procgen start frames; give one where Procgen is not installed)."""
    out: Path = ROOT / "results" / "env_speed.json"
    """Output JSON; the markdown table goes beside it (.md)."""


REFERENCE_GFLOPS = 170.0  # float32 matmul GFLOP/s of the 2-core machine the targets were set on
PSNR_TOLERANCE_DB, DELTA_TOLERANCE_DB = 0.3, 0.2  # a default may lose at most this much against the reference


def rss_mb() -> float:
    """Current resident set size (Linux /proc; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    ru_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB on Linux
    return ru_maxrss / 2**20 if sys.platform == "darwin" else ru_maxrss / 1024


def build_model(checkpoint: Path | None, preset: str | None):
    from genie_gym.config import get_preset
    from genie_gym.models.world_model import WorldModel

    if preset is not None and checkpoint is None:
        torch.manual_seed(0)
        return WorldModel(get_preset(preset)).eval(), f"untrained preset '{preset}'"
    path = Path(checkpoint or WorldModel.default_path())
    if path.resolve().is_relative_to(Path.cwd()):
        path = path.resolve().relative_to(Path.cwd())  # reports name the file as the repository does
    return WorldModel.load(path), str(path)


def time_steps(step_fn, warmup: int, seconds: float, min_steps: int) -> tuple[float, int]:
    """Seconds per step after `warmup` steps, timing at least `min_steps` steps and about `seconds`."""
    for _ in range(warmup):
        step_fn()
    n, t0 = 0, time.perf_counter()
    while n < min_steps or time.perf_counter() - t0 < seconds:
        step_fn()
        n += 1
    return (time.perf_counter() - t0) / n, n


def rollout_quality(args: Args, steps: int, precision: str) -> dict[str, float]:
    """Rollout PSNR (mean of 10 steps from 1 real frame, LAM actions) and delta-PSNR at t = 4, as `genie-gym eval`."""
    from genie_gym.evaluation.evaluate import Args as EvalArgs
    from genie_gym.evaluation.evaluate import evaluate

    r = evaluate(EvalArgs(model=args.checkpoint, data=args.data, out=ROOT.parent / "runs" / "env_speed_eval",
                          num_clips=args.num_clips, seed=0, device=args.device, maskgit_steps=steps,
                          precision=precision, context=(1,), stability_steps=0, strip_steps=1))
    return {"rollout_psnr": r["rollout_psnr_mean"], "delta_psnr_t4": r["delta_psnr_t4"],
            "still_psnr": r["still_psnr_mean"]}


def measure(args: Args) -> dict:
    import gymnasium as gym

    from genie_gym.envs.genie_env import GenieEnv
    from genie_gym.envs.vector_env import GenieVectorEnv

    model, model_name = build_model(args.checkpoint, args.preset)
    if args.preset is not None and args.checkpoint is None:
        args.quality = False  # an untrained model: its frames have no quality to report
    context_frames = args.context_frames or model.config.sampling.context_frames
    common = dict(checkpoint=model, context_frames=context_frames, device=args.device, prompt_levels=(0, 8))
    warmup = context_frames  # fill the window: steady-state cost
    reset_options = None if args.prompt is None else {"prompt": str(args.prompt)}
    rng = np.random.default_rng(0)
    gflops = matmul_gflops(args.device)
    print(f"matmul: {gflops['float32']:.0f} GFLOP/s float32, {gflops['bfloat16']:.0f} bfloat16", flush=True)
    norm = REFERENCE_GFLOPS / gflops["float32"]
    results: dict = {"matmul_gflops": gflops, "rows": []}

    def single_fps(**kw) -> float:
        env = GenieEnv(**common, **kw)
        env.reset(seed=0, options=reset_options)
        sec, _ = time_steps(lambda: env.step(int(rng.integers(8))), warmup, args.seconds, args.min_steps)
        return 1.0 / sec

    quality: dict[tuple[int, str], dict] = {}
    for steps in args.steps:
        for precision in args.precisions:
            if args.quality:
                quality[steps, precision] = rollout_quality(args, steps, precision)
                print(f"quality {steps} steps {precision}: {quality[steps, precision]}", flush=True)
            for compiled in args.compiled:
                kw = dict(maskgit_steps=steps, precision=precision, compile=compiled)
                row = {"maskgit_steps": steps, "precision": precision, "compiled": compiled,
                       "single_fps": single_fps(**kw) if args.single else None, "batched_fps": {},
                       **quality.get((steps, precision), {})}
                for n_envs in args.batch_sizes:
                    # batching gains ~3x over one env (no estimate without the single-env figure)
                    estimate = (warmup + args.min_steps) * n_envs / (3 * row["single_fps"]) if args.single else 0.0
                    if n_envs > 1 and estimate > args.max_seconds:
                        row["batched_fps"][str(n_envs)] = None
                        continue
                    envs = GenieVectorEnv(n_envs, **common, **kw)
                    envs.reset(seed=0, options=reset_options)
                    sec, _ = time_steps(lambda envs=envs, n=n_envs: envs.step(rng.integers(0, 8, n)), warmup,
                                        args.seconds, args.min_steps)
                    row["batched_fps"][str(n_envs)] = n_envs / sec
                    envs.close()
                row["single_fps_normalised"] = row["single_fps"] * norm if args.single else None
                row["batched_fps_normalised"] = {n: None if v is None else v * norm
                                                 for n, v in row["batched_fps"].items()}
                results["rows"].append(row)
                print(json.dumps(row), flush=True)
    results["default"] = choose_default(results["rows"])
    results["full_recompute_fps"] = single_fps(maskgit_steps=args.steps[0], use_cache=False) if args.single else None

    if args.memory_steps > 0:
        mem_model, mem_name = (model, model_name) if args.memory_preset == "same" else \
            build_model(None, args.memory_preset)
        envs = gym.make_vec("Genie-v0", num_envs=args.memory_num_envs, checkpoint=mem_model, device=args.device,
                            prompt_levels=(0, 64), max_episode_steps=1000)
        envs.reset(seed=0, options=reset_options)
        vec_steps = max(1, args.memory_steps // args.memory_num_envs)
        samples, every = [], max(1, vec_steps // 20)
        t0 = time.perf_counter()
        for i in range(vec_steps):
            envs.step(rng.integers(0, 8, args.memory_num_envs))
            if i % every == 0 or i == vec_steps - 1:
                samples.append([int((i + 1) * args.memory_num_envs), round(rss_mb(), 1)])
        # Growth after the first tenth (allocator warm-up, Procgen start frames cached as new levels appear).
        settled = [mb for step, mb in samples if step >= samples[-1][0] / 10] or [samples[-1][1]]
        growth = settled[-1] - settled[0]
        results["memory"] = {
            "model": mem_name,
            "env_steps": vec_steps * args.memory_num_envs,
            "num_envs": args.memory_num_envs,
            "seconds": round(time.perf_counter() - t0, 1),
            "rss_samples_mb": samples,
            "rss_growth_after_warmup_mb": round(growth, 1),
            "flat": bool(growth < 50.0),
        }
        print(f"memory: {results['memory']['env_steps']} env steps, RSS growth after warm-up {growth:.1f} MB",
              flush=True)
        envs.close()

    results["peak_rss_mb"] = round(peak_rss_mb(), 1)
    results["settings"] = {
        "model": model_name,
        "preset": model.config.preset,
        "context_frames": context_frames,
        "temperature": model.config.sampling.temperature,
        "model_default_maskgit_steps": model.config.sampling.maskgit_steps,
        "tokens_per_frame": model.config.tokens_per_frame,
        "dynamics_params_M": round(sum(p.numel() for p in model.dynamics.parameters()) / 1e6, 2),
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "prompt": str(args.prompt) if args.prompt else "Procgen start frames",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "quick": args.quick,
        "num_clips": args.num_clips if args.quality else 0,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/env_speed.py", *sys.argv[1:]]),
    }
    return results


def choose_default(rows: list[dict]) -> dict | None:
    """The fastest single-env row within the tolerances of the 25-step float32 eager reference (None without
    quality figures or a reference row)."""
    ref = next((r for r in rows if r["maskgit_steps"] == 25 and r["precision"] == "float32" and not r["compiled"]
                and "rollout_psnr" in r), None)
    if ref is None:
        return None
    ok = [r for r in rows if "rollout_psnr" in r and r["single_fps"] is not None
          and r["rollout_psnr"] >= ref["rollout_psnr"] - PSNR_TOLERANCE_DB
          and r["delta_psnr_t4"] >= ref["delta_psnr_t4"] - DELTA_TOLERANCE_DB]
    if not ok:
        return None
    best = max(ok, key=lambda r: r["single_fps"])
    return {k: best[k] for k in ("maskgit_steps", "precision", "compiled", "single_fps", "rollout_psnr",
                                 "delta_psnr_t4")} | {"reference_rollout_psnr": ref["rollout_psnr"],
                                                      "reference_delta_psnr_t4": ref["delta_psnr_t4"],
                                                      "reference_single_fps": ref["single_fps"]}


def _f(x: float | None, fmt: str = ".1f") -> str:
    return "skipped" if x is None else format(x, fmt)


def markdown(r: dict) -> str:
    s, g = r["settings"], r["matmul_gflops"]
    sizes = list(r["rows"][0]["batched_fps"]) if r["rows"] else []
    lines = [
        "# Genie-v0 speed",
        "",
        f"Model: {s['model']} (preset {s['preset']}, {s['dynamics_params_M']} M dynamics parameters, "
        f"{s['tokens_per_frame']} tokens/frame); temperature {s['temperature']:g}, {s['context_frames']} frames of "
        f"context; {s['device']}, {s['torch_threads']} torch threads, {s['cpu_count']} cores; torch {s['torch']}; "
        f"{s['date']}{' (QUICK: not meaningful)' if s['quick'] else ''}.",
        f"Command: `{s['command']}`",
        "",
        f"This machine's matmul (1024^3): {g['float32']:.0f} GFLOP/s float32, {g['bfloat16']:.0f} bfloat16; "
        f"\"norm.\" columns scale frames/s to a {REFERENCE_GFLOPS:.0f} GFLOP/s float32 machine (the 2-core machine the "
        "targets were set on). Quality: rollout PSNR (mean of 10 generated frames from 1 real frame, the LAM's "
        f"actions) and delta-PSNR at t = 4 on {s['num_clips']} held-out clips, as `genie-gym eval`; compiled rows "
        "give the eager row's frames.",
        "",
        "| MaskGIT steps | precision | compiled | 1 env frames/s | norm. | "
        + " | ".join(f"N = {n} frames/s" for n in sizes) + " | rollout PSNR | delta-PSNR t=4 |",
        "|---|---|---|---:|---:|" + "---:|" * len(sizes) + "---:|---:|",
    ]
    for row in r["rows"]:
        lines.append(
            f"| {row['maskgit_steps']} | {row['precision']} | {'yes' if row['compiled'] else 'no'} | "
            f"{_f(row['single_fps'])} | {_f(row['single_fps_normalised'])} | "
            + " | ".join(_f(row["batched_fps"][n]) for n in sizes)
            + f" | {_f(row.get('rollout_psnr'), '.2f')} | {_f(row.get('delta_psnr_t4'), '+.2f')} |"
        )
    d = r.get("default")
    if d:
        lines += ["", f"**Default** (fastest within {PSNR_TOLERANCE_DB} dB rollout PSNR and {DELTA_TOLERANCE_DB} dB "
                  f"delta-PSNR of the 25-step float32 eager reference, {d['reference_rollout_psnr']:.2f} dB / "
                  f"{d['reference_delta_psnr_t4']:+.2f} dB at {d['reference_single_fps']:.1f} frames/s): "
                  f"{d['maskgit_steps']} steps, {d['precision']}, {'compiled' if d['compiled'] else 'eager'}: "
                  f"{d['single_fps']:.1f} frames/s, {d['rollout_psnr']:.2f} dB, {d['delta_psnr_t4']:+.2f} dB."]
    lines += ["", f"One env recomputing its whole context per MaskGIT pass (`use_cache=False`, "
              f"{r['rows'][0]['maskgit_steps'] if r['rows'] else '?'} steps): "
              f"{_f(r['full_recompute_fps'], '.2f')} frames/s. "
              f"Peak RSS: {r['peak_rss_mb']:.0f} MB."]
    if "memory" in r:
        m = r["memory"]
        lines.append(f"Memory run ({m['model']}): {m['env_steps']} env steps over {m['num_envs']} worlds in "
                     f"{m['seconds']} s; RSS growth after warm-up {m['rss_growth_after_warmup_mb']} MB "
                     f"({'flat' if m['flat'] else 'NOT flat'}).")
    return "\n".join(lines) + "\n"


def main(args: Args) -> None:
    if args.quick:
        args.preset = args.preset or "tiny"
        args.steps, args.batch_sizes, args.quality, args.compiled = [2, 25], [1, 8], False, [False]
        args.seconds, args.min_steps = 0.5, 2
        args.memory_steps = min(args.memory_steps, 2_000)
        args.memory_num_envs = min(args.memory_num_envs, 8)
        if args.out == Args.out:  # never overwrite the committed figures with quick ones
            args.out = ROOT.parent / "outputs" / "bench" / "env_speed_quick.json"
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    results = measure(args)
    results["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(args).items()}
    from genie_gym.utils.io import atomic_write_bytes, atomic_write_json

    atomic_write_json(args.out, results)
    atomic_write_bytes(args.out.with_suffix(".md"), markdown(results).encode())
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
