"""Training speed and memory per phase and preset, and sampling seconds per generated frame.

    python benchmarks/train_speed.py            # tiny + small (+ coinrun when it fits), a few steps each
    python benchmarks/train_speed.py --quick    # tiny + small, 2 timed steps each (a smoke run, ~1 minute)

Each (preset, phase) runs in its own subprocess so that its peak RSS is its own. Steps use the real training
code (`genie_gym.training.trainer`: objectives, AdamW, grad clipping) on random uint8 clips of the preset's
batch shape;
speed does not depend on the pixels. Writes benchmarks/results/train_speed.json and train_speed.md.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass
class Args:
    quick: bool = False
    """smoke run: tiny and small only, 2 timed steps, 3 sampled frames"""
    presets: list[str] = field(default_factory=lambda: ["tiny", "small", "coinrun"])
    """presets to measure (coinrun is tried for one step and skipped if it does not fit)"""
    steps: int = 5
    """timed training steps per (preset, phase), after one warm-up step"""
    sample_frames: int = 5
    """generated frames timed per preset for the sampling speed"""
    threads: int = 0
    """torch threads (0: all cores)"""
    bf16: bool = False
    """autocast to bf16 on CPU (CUDA always uses bf16)"""
    device: str = "cpu"
    """cpu | cuda | auto"""
    timeout_s: int = 900
    """per-measurement limit; a preset that runs past it is reported as skipped"""
    out: Path = HERE / "results" / "train_speed.json"
    """JSON output (a .md table is written beside it)"""
    worker: str = ""
    """internal: 'train:PRESET:PHASE' or 'sample:PRESET' runs one measurement and prints JSON"""


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _estimated_train_gib(preset: str, phase: str) -> float:
    """Rough activation memory of one training step: ~48 floats per token, width and layer (calibrated on
    `small`, whose tokenizer step peaks at ~3.3 GiB RSS). Used to skip presets that cannot fit, instead of
    letting the kernel's OOM killer find out on a shared machine."""
    from genie_gym.config import get_preset

    cfg = get_preset(preset)
    o = cfg.tokenizer_optim if phase == "tokenizer" else cfg.dynamics_optim
    frames = o.batch_size * cfg.seq_len
    if phase == "tokenizer":
        parts = [(cfg.tokens_per_frame, cfg.tokenizer.d_model, 2 * cfg.tokenizer.num_layers)]
    else:
        lam_tokens = (cfg.image_size // cfg.lam.patch_size) ** 2 + 1
        parts = [(lam_tokens, cfg.lam.d_model, 2 * cfg.lam.num_layers),
                 (cfg.tokens_per_frame, cfg.dynamics.d_model, cfg.dynamics.num_layers)]
    return sum(frames * n * d * layers * 4 * 48 for n, d, layers in parts) / 2**30 + 0.5


def _available_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def _train_worker(preset: str, phase: str, steps: int, args: Args) -> dict:
    import torch

    from genie_gym.config import get_preset
    from genie_gym.models.frames import to_float
    from genie_gym.training.schedule import make_optimizer
    from genie_gym.training.trainer import (
        DynamicsObjective,
        TokenizerObjective,
        build_tokenizer,
        phase_optim,
    )
    from genie_gym.utils.device import resolve_device

    device = resolve_device(args.device)
    cfg = get_preset(preset)
    optim = phase_optim(cfg, phase)
    torch.manual_seed(0)
    if phase == "tokenizer":
        model = TokenizerObjective(cfg)
    else:
        model = DynamicsObjective(cfg, build_tokenizer(cfg).to(device).eval().requires_grad_(False))
    model.to(device).train()
    opt = make_optimizer(model, optim)
    B, T, S = optim.batch_size, cfg.seq_len, cfg.image_size
    g = torch.Generator().manual_seed(0)
    frames_u8 = torch.randint(0, 256, (B, T, S, S, cfg.channels), dtype=torch.uint8, generator=g)
    amp = device.type == "cuda" or args.bf16

    def step() -> None:
        frames = to_float(frames_u8.to(device))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(frames, torch.Generator(device=device).manual_seed(1))
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    step()  # warm-up (allocations, kernel selection)
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dt = (time.perf_counter() - t0) / max(steps, 1)
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "preset": preset,
        "phase": phase,
        "batch_size": B,
        "seq_len": T,
        "timed_steps": steps,
        "step_s": dt,
        "warmup_step_s": warmup_s,
        "frames_per_s": B * T / dt,
        "tokens_per_s": B * T * cfg.tokens_per_frame / dt,
        "trainable_params": n_params,
        "peak_rss_mb": _peak_rss_mb(),
        "bf16": amp,
        "device": str(device),
        "cuda_peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
    }


def _sample_worker(preset: str, frames: int, args: Args) -> dict:
    import numpy as np
    import torch

    from genie_gym.config import get_preset
    from genie_gym.models.simulator import Simulator
    from genie_gym.models.world_model import WorldModel
    from genie_gym.utils.device import resolve_device

    torch.manual_seed(0)
    cfg = get_preset(preset)
    device = resolve_device(args.device)
    sim = Simulator(WorldModel(cfg), num_worlds=1, device=device)
    prompt = np.random.default_rng(0).integers(0, 256, (1, cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    sim.reset(None, prompt, [0])
    sim.step([0])  # warm-up
    t0 = time.perf_counter()
    for k in range(frames):
        sim.step([k % cfg.lam.num_actions])
    dt = (time.perf_counter() - t0) / frames
    return {
        "preset": preset,
        "seconds_per_frame": dt,
        "frames_per_s": 1 / dt,
        "timed_frames": frames,
        "maskgit_steps": cfg.sampling.maskgit_steps,
        "context_frames": cfg.sampling.context_frames,
        "num_worlds": 1,
        "peak_rss_mb": _peak_rss_mb(),
        "device": str(device),
    }


def _run_worker(spec: str, args: Args, steps: int) -> dict:
    """Run one measurement in a fresh process; a crash, OOM kill or timeout becomes a 'skipped' record."""
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        spec,
        "--steps",
        str(steps),
        "--sample-frames",
        str(args.sample_frames),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
    ]
    cmd += ["--bf16"] if args.bf16 else []
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout_s)
    except subprocess.TimeoutExpired:
        return {"spec": spec, "skipped": f"did not finish within {args.timeout_s} s"}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        why = "killed (out of memory?)" if proc.returncode in (-9, 137) else tail[0][:300]
        return {"spec": spec, "skipped": why}
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    rec["wall_s"] = time.perf_counter() - t0
    return rec


def _markdown(result: dict) -> str:
    lines = [
        f"# Training speed ({result['machine']}, {result['threads']} threads, device {result['device']})",
        "",
        "| preset | phase | batch x frames | step (s) | frames/s | tokens/s | peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["train"]:
        if "skipped" in r:
            lines.append(f"| {r['spec']} | | | skipped: {r['skipped']} | | | |")
        else:
            lines.append(
                f"| {r['preset']} | {r['phase']} | {r['batch_size']} x {r['seq_len']} | {r['step_s']:.3f} | "
                f"{r['frames_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['peak_rss_mb']:.0f} |"
            )
    lines += ["", "| preset | MaskGIT steps | s / generated frame | peak RSS (MiB) |", "|---|---|---|---|"]
    for r in result["sampling"]:
        if "skipped" in r:
            lines.append(f"| {r['spec']} | skipped: {r['skipped']} | | |")
        else:
            lines.append(
                f"| {r['preset']} | {r['maskgit_steps']} | {r['seconds_per_frame']:.4f} | "
                f"{r['peak_rss_mb']:.0f} |"
            )
    lines += ["", f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def main(args: Args) -> None:
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.worker:
        kind, *rest = args.worker.split(":")
        rec = (
            _train_worker(rest[0], rest[1], args.steps, args)
            if kind == "train"
            else _sample_worker(rest[0], args.sample_frames, args)
        )
        print(json.dumps(rec))
        return
    presets = [p for p in args.presets if not (args.quick and p == "coinrun")]
    steps = 2 if args.quick else args.steps
    if args.quick:
        args.sample_frames = min(args.sample_frames, 3)
    train, sampling = [], []
    for preset in presets:
        for phase in ("tokenizer", "dynamics"):
            need, have = _estimated_train_gib(preset, phase), _available_gib()
            if args.device == "cpu" and need > 0.8 * have:
                rec = {"spec": f"train:{preset}:{phase}", "preset": preset, "phase": phase,
                       "skipped": f"one step needs ~{need:.0f} GiB (estimate), {have:.0f} GiB available"}
            else:
                rec = _run_worker(f"train:{preset}:{phase}", args, 1 if preset == "coinrun" else steps)
            train.append(rec)
            print(json.dumps(rec), flush=True)
        rec = _run_worker(f"sample:{preset}", args, steps)
        sampling.append(rec)
        print(json.dumps(rec), flush=True)
    from genie_gym.utils.io import atomic_write_bytes, atomic_write_json

    result = {
        "command": " ".join(["python", "benchmarks/train_speed.py", *sys.argv[1:]]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "threads": args.threads or torch.get_num_threads(),
        "device": args.device,
        "torch": torch.__version__,
        "quick": args.quick,
        "train": train,
        "sampling": sampling,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_json(args.out, result)
    atomic_write_bytes(Path(args.out).with_suffix(".md"), _markdown(result).encode())
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.md')}")


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
