"""Genie-v0 speed and memory: frames/s of one env, of the batched vector env, and of the uncached baseline.

    python benchmarks/env_speed.py                          # the shipped model, default sampling settings
    python benchmarks/env_speed.py --preset small           # an untrained model of a preset (no checkpoint)
    python benchmarks/env_speed.py --quick                  # seconds: checks that the script runs

Writes `benchmarks/results/env_speed.json` and `env_speed.md`:
- `single_env_fps`: `GenieEnv.step` calls per second (cached keys/values, the default path);
- `batched_fps[N]`: frames per second of `gym.make_vec("Genie-v0", num_envs=N)` (N frames per step);
- `full_recompute_fps`: one env with `use_cache=False` (the whole context window recomputed per MaskGIT pass),
  same model and settings, same run;
- `peak_rss_mb`: the process's peak resident memory;
- `memory`: RSS sampled along a long vector-env run (`--memory-steps` env steps, i.e. frames, across
  `--memory-num-envs` worlds, episodes truncated and auto-reset every 1000 steps). It checks the env machinery for
  leaks (caches are fixed-size ring buffers), so it runs on its own, fast model (`--memory-preset`, default tiny)
  unless `--memory-preset same` is given.
Every speed is measured after warming up `context_frames` steps, so the context window is full (steady state).
"""

from __future__ import annotations

import datetime
import os
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent


@dataclass
class Args:
    """Measure Genie-v0 frames/s (single, batched, uncached) and memory over a long run."""

    checkpoint: Path | None = None
    """World-model file; default: the shipped model, or an untrained --preset model if given."""
    preset: str | None = None
    """Build an untrained model of this preset (tiny, small, coinrun) instead of loading a checkpoint."""
    quick: bool = False
    """Tiny sizes (tiny preset, few steps): checks that the script runs; the figures are not meaningful."""
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32, 128])
    """Numbers of worlds for batched_fps."""
    seconds: float = 20.0
    """Time budget per measurement (at least --min-steps steps run)."""
    min_steps: int = 3
    """Fewest timed steps per measurement."""
    maskgit_steps: int | None = None
    """MaskGIT steps per frame; default: the model's sampling config."""
    context_frames: int | None = None
    """Context window; default: the model's sampling config."""
    memory_steps: int = 100_000
    """Env steps (frames, summed over worlds) of the memory-flatness run; 0 skips it."""
    memory_num_envs: int = 32
    """Worlds in the memory-flatness run."""
    memory_preset: str = "tiny"
    """Model of the memory run: a preset name, or 'same' for the benchmarked model."""
    bf16_batch_sizes: list[int] = field(default_factory=lambda: [32])
    """Numbers of worlds for batched_fps_bf16 (precision="bfloat16"); single_env_fps_bf16 is always measured."""
    threads: int = 0
    """torch threads; 0 keeps torch's default (all cores)."""
    device: str = "cpu"
    """cpu, cuda or auto."""
    out: Path = ROOT / "results" / "env_speed.json"
    """Output JSON; the markdown table goes beside it (.md)."""


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
    path = checkpoint or WorldModel.default_path()
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


def measure(args: Args) -> dict:
    import gymnasium as gym

    from genie_gym.envs.genie_env import GenieEnv
    from genie_gym.envs.vector_env import GenieVectorEnv

    model, model_name = build_model(args.checkpoint, args.preset)
    sampling = model.config.sampling
    maskgit_steps = args.maskgit_steps or sampling.maskgit_steps
    context_frames = args.context_frames or sampling.context_frames
    common = dict(checkpoint=model, maskgit_steps=maskgit_steps, context_frames=context_frames,
                  device=args.device, prompt_levels=(0, 8))
    warmup = context_frames  # fill the window: steady-state cost
    rng = np.random.default_rng(0)
    results: dict = {"batched_fps": {}, "steps_timed": {}}

    def single_fps(use_cache: bool, precision: str = "float32") -> tuple[float, int]:
        env = GenieEnv(**common, use_cache=use_cache, precision=precision)
        env.reset(seed=0)
        sec, n = time_steps(lambda: env.step(int(rng.integers(8))), warmup, args.seconds, args.min_steps)
        return 1.0 / sec, n

    results["single_env_fps"], results["steps_timed"]["single"] = single_fps(True)
    print(f"single env (cached): {results['single_env_fps']:.2f} frames/s", flush=True)
    results["full_recompute_fps"], results["steps_timed"]["full_recompute"] = single_fps(False)
    print(f"single env (full recompute): {results['full_recompute_fps']:.2f} frames/s", flush=True)
    def batched_fps(n_envs: int, precision: str = "float32") -> None:
        envs = GenieVectorEnv(n_envs, **common, precision=precision)
        envs.reset(seed=0)
        sec, n = time_steps(lambda: envs.step(rng.integers(0, 8, n_envs)), warmup, args.seconds, args.min_steps)
        key, tag = ("batched_fps", "") if precision == "float32" else ("batched_fps_bf16", "_bf16")
        results.setdefault(key, {})[str(n_envs)] = n_envs / sec
        results["steps_timed"][f"batched_{n_envs}{tag}"] = n
        print(f"vector env N={n_envs} ({precision}): {n_envs / sec:.2f} frames/s", flush=True)
        envs.close()

    for n_envs in args.batch_sizes:
        batched_fps(n_envs)
    results["speedup_cached_vs_full"] = results["single_env_fps"] / results["full_recompute_fps"]
    results["single_env_fps_bf16"], results["steps_timed"]["single_bf16"] = single_fps(True, "bfloat16")
    print(f"single env (bf16 autocast): {results['single_env_fps_bf16']:.2f} frames/s", flush=True)
    results["batched_fps_bf16"] = {}
    for n_envs in args.bf16_batch_sizes:
        batched_fps(n_envs, "bfloat16")

    if args.memory_steps > 0:
        mem_model, mem_name = (model, model_name) if args.memory_preset == "same" else \
            build_model(None, args.memory_preset)
        envs = gym.make_vec("Genie-v0", num_envs=args.memory_num_envs, checkpoint=mem_model, device=args.device,
                            prompt_levels=(0, 64), max_episode_steps=1000)
        envs.reset(seed=0)
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
        "maskgit_steps": maskgit_steps,
        "context_frames": context_frames,
        "temperature": sampling.temperature,
        "tokens_per_frame": model.config.tokens_per_frame,
        "dynamics_params_M": round(sum(p.numel() for p in model.dynamics.parameters()) / 1e6, 2),
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "quick": args.quick,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/env_speed.py", *sys.argv[1:]]),
    }
    return results


def markdown(r: dict) -> str:
    s = r["settings"]
    lines = [
        "# Genie-v0 speed",
        "",
        f"Model: {s['model']} (preset {s['preset']}, {s['dynamics_params_M']} M dynamics parameters, "
        f"{s['tokens_per_frame']} tokens/frame); {s['maskgit_steps']} MaskGIT steps, {s['context_frames']} frames of "
        f"context; {s['device']}, {s['torch_threads']} torch threads, {s['cpu_count']} cores; torch {s['torch']}; "
        f"{s['date']}{' (QUICK: not meaningful)' if s['quick'] else ''}.",
        f"Command: `{s['command']}`",
        "",
        "| measurement | frames/s |",
        "|---|---:|",
        f"| single env, cached keys/values | {r['single_env_fps']:.2f} |",
        f"| single env, full recompute of the context | {r['full_recompute_fps']:.2f} |",
    ]
    lines += [f"| vector env, N = {n} | {fps:.2f} |" for n, fps in r["batched_fps"].items()]
    if "single_env_fps_bf16" in r:
        lines.append(f"| single env, bf16 autocast (`precision=\"bfloat16\"`) | {r['single_env_fps_bf16']:.2f} |")
        lines += [f"| vector env, N = {n}, bf16 autocast | {fps:.2f} |" for n, fps in r["batched_fps_bf16"].items()]
    lines += ["", f"Peak RSS: {r['peak_rss_mb']:.0f} MB."]
    if "memory" in r:
        m = r["memory"]
        lines.append(f"Memory run ({m['model']}): {m['env_steps']} env steps over {m['num_envs']} worlds in "
                     f"{m['seconds']} s; RSS growth after warm-up {m['rss_growth_after_warmup_mb']} MB "
                     f"({'flat' if m['flat'] else 'NOT flat'}).")
    return "\n".join(lines) + "\n"


def main(args: Args) -> None:
    if args.quick:
        args.preset = args.preset or "tiny"
        args.batch_sizes = [1, 8]
        args.bf16_batch_sizes = [8]
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
