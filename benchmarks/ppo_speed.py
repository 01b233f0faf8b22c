"""PPO throughput inside Genie-v0: stable-baselines3 PPO on `GenieSB3VecEnv`, env frames/s including learning.

    python benchmarks/ppo_speed.py                 # shipped model, 16 worlds, float32 and bfloat16 (~4 min)
    python benchmarks/ppo_speed.py --quick         # tiny sizes, a few seconds; writes runs/bench_quick/

For each precision, side by side in one run on the same worlds: the env alone (random latent actions for one PPO
rollout's worth of frames, after 8 untimed steps) and `agents.dream_ppo`'s PPO (its Nature-CNN policy and
settings) for `--frames` frames, so the cost of learning shows next to the cost of dreaming. The model's event heads
run as in dream training (learned rewards and episode ends, the default when a model has them; the shipped model
does since v1.5). Writes `<out>/ppo_speed.{json,md}`.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tyro

from agents import dream_ppo
from agents.ppo_expert import make_model
from genie_gym.errors import ConfigError
from genie_gym.utils.io import atomic_write_json, write_markdown


@dataclass
class Args:
    world_model: str | None = None
    """world-model file (default: the shipped model)"""
    num_envs: int = 16
    """Genie-v0 worlds stepped together (the speed issue's PPO target is set at 16)"""
    n_steps: int = 128
    """PPO rollout length per world per update"""
    frames: int = 6144
    """PPO frames to time per precision (after one untimed update that warms everything up)"""
    precisions: tuple[str, ...] = ("float32", "bfloat16")
    """Genie-v0 generation precisions to measure"""
    threads: int = 2
    """torch CPU threads"""
    quick: bool = False
    """tiny sizes: checks that the script runs; the figures mean nothing"""
    out: str | None = None
    """results directory (default benchmarks/results, or runs/bench_quick with --quick)"""
    seed: int = 0
    """seed of PPO and the worlds"""


def measure(args: Args, precision: str) -> dict[str, Any]:
    from stable_baselines3.common.vec_env import VecMonitor

    from genie_gym.envs.sb3 import GenieSB3VecEnv

    venv = GenieSB3VecEnv(args.num_envs, checkpoint=args.world_model,
                          prompt_levels=(0, 10_000), prompt_mode="hard", max_episode_steps=500, precision=precision)
    venv.seed(args.seed)
    venv.reset()
    rng = np.random.default_rng(args.seed)
    n_actions = int(venv.action_space.n)
    for _ in range(8):  # untimed: first-call costs (kernel selection for each shape)
        venv.step(rng.integers(0, n_actions, args.num_envs))
    t0 = time.perf_counter()
    for _ in range(args.n_steps):
        venv.step(rng.integers(0, n_actions, args.num_envs))
    env_fps = args.n_steps * args.num_envs / (time.perf_counter() - t0)
    ppo_args = dream_ppo.Args(num_envs=args.num_envs, n_steps=args.n_steps, seed=args.seed, threads=args.threads,
                              device="cpu", cnn="nature", n_minibatches=2 if args.quick else 8,
                              n_epochs=1 if args.quick else 3)
    model = make_model(ppo_args, VecMonitor(venv))
    model.tensorboard_log = None  # a measurement, not a training run: no logs
    model.learn(args.n_steps * args.num_envs)  # warm-up update: allocations, first-call costs
    t0, frames0 = time.perf_counter(), model.num_timesteps
    model.learn(args.frames, reset_num_timesteps=False)  # whole rollouts: may run past --frames
    ppo_fps = (model.num_timesteps - frames0) / (time.perf_counter() - t0)
    venv.close()
    return {"precision": precision, "env_frames_per_s": round(env_fps, 1), "ppo_frames_per_s": round(ppo_fps, 1),
            "learning_share": round(1 - ppo_fps / env_fps, 3)}


def main(args: Args) -> dict[str, Any]:
    if args.quick:
        args = Args(**{**asdict(args), "num_envs": 2, "n_steps": 8, "frames": 32})
    if args.frames < args.num_envs * args.n_steps:
        raise ConfigError(f"--frames {args.frames} is less than one PPO rollout (num_envs x n_steps = "
                          f"{args.num_envs * args.n_steps}); raise --frames")
    torch.set_num_threads(args.threads)
    out = Path(args.out or ("runs/bench_quick" if args.quick else "benchmarks/results"))
    rows = [measure(args, p) for p in args.precisions]
    model_path = args.world_model or "genie_gym/assets/world_model.pt (shipped)"
    report = {"args": asdict(args), "model": model_path, "machine": f"{platform.machine()}, {torch.get_num_threads()} "
              f"torch threads, torch {torch.__version__}", "rows": rows, "target_ppo_frames_per_s": 150}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "ppo_speed.json", report)
    cmd = "python benchmarks/ppo_speed.py" + (" --quick" if args.quick else "")
    lines = ["# PPO inside Genie-v0: env frames/s including learning", "",
             f"Command: `{cmd}`. Model: `{model_path}`; {args.num_envs} worlds, PPO rollouts of {args.n_steps} steps "
             f"(`agents.dream_ppo`'s settings, Nature CNN), {args.frames} timed frames; {report['machine']}.", "",
             "| precision | env alone, frames/s | PPO, frames/s including learning | share of time learning | target |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['precision']} | {r['env_frames_per_s']} | {r['ppo_frames_per_s']} | {r['learning_share']:.0%} | "
              "150 |" for r in rows]
    lines += ["", "The env alone is timed over one PPO rollout (num_envs x n_steps frames), PPO over --frames; a share "
              "near 0 means learning cost less than the run-to-run noise of a shared machine."]
    write_markdown(out / "ppo_speed.md", lines, echo=False)
    print(json.dumps(rows))
    return report


if __name__ == "__main__":
    main(tyro.cli(Args))
