"""`genie-gym demo` (`make demo`): the shipped world model, played from a CoinRun frame and from a sketch.

Writes `outputs/demo/coinrun.mp4`, `outputs/demo/sketch.mp4` and `outputs/demo/action_strip.png` (each prompt x the
8 latent actions x k steps), and prints frames/s. Needs no network: the model ships inside the package.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class Args:
    """Play the shipped Genie world model and write videos and an action strip."""

    steps: int = 200
    """Steps to play in each world."""
    out: Path = Path("outputs/demo")
    """Where the videos and the action strip go."""
    checkpoint: Path | None = None
    """World-model file; default: the model shipped in genie_gym/assets/."""
    seed: int = 0
    """Seed of the CoinRun prompt level, the action sequence and the sampling."""
    strip_steps: int = 6
    """Steps per action in the action strip."""
    repeat: int = 4
    """Each random latent action is held this many steps, so that its effect is visible."""
    device: str = "cpu"
    """cpu, cuda or auto."""
    threads: int = 0
    """Torch CPU threads; 0 keeps torch's default."""


def demo_actions(steps: int, num_actions: int, repeat: int, seed: int) -> list[int]:
    """Random latent actions, each held for `repeat` steps (seeded)."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, num_actions, size=(steps + repeat - 1) // max(repeat, 1))
    return np.repeat(codes, max(repeat, 1))[:steps].tolist()


def main(args: Args) -> None:
    from genie_gym.envs.genie_env import GenieEnv
    from genie_gym.envs.play import action_strip, play_headless
    from genie_gym.envs.procgen_prompt import procgen_start_frame
    from genie_gym.envs.prompts import sketch_path
    from genie_gym.models.world_model import WorldModel

    if args.steps <= 0:
        raise SystemExit(f"--steps must be positive, got {args.steps}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    path = args.checkpoint or WorldModel.default_path()
    world_model = WorldModel.load(path)
    steps = world_model.metadata.get("steps", {})
    trained = ", ".join(f"{phase} {n} steps" for phase, n in steps.items()) if isinstance(steps, dict) else steps
    source = world_model.metadata.get("init_from") or {}
    if isinstance(source.get("steps"), dict):  # fine-tuned: name what it started from
        trained += ", starting from a model of " + ", ".join(f"{p} {n}" for p, n in source["steps"].items())
    print(f"world model: {path} (preset {world_model.config.preset}, "
          f"{sum(p.numel() for p in world_model.parameters()) / 1e6:.1f}M parameters; trained: {trained or '?'})")
    # The demo shows the world; a model without reward heads needs no warning about rewards here.
    env = GenieEnv(checkpoint=world_model, device=args.device,
                   learned_rewards=None if world_model.heads is not None else False)
    print(f"latent actions: {', '.join(f'{a}={m}' for a, m in enumerate(env.get_action_meanings()))}")
    heads = world_model.metadata.get("heads", {}).get("validation", {})
    if world_model.heads is not None and "terminal" in heads:
        print("learned reward / episode end: yes (held-out precision/recall: "
              + ", ".join(f"{e} {heads[e]['precision']:.2f}/{heads[e]['recall']:.2f}" for e in ("terminal", "reward"))
              + ")")
    actions = demo_actions(args.steps, int(env.action_space.n), args.repeat, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    level = args.seed
    prompts = {
        "coinrun": procgen_start_frame("coinrun", level=level, distribution_mode="hard"),
        "sketch": str(sketch_path()),
    }
    for name, prompt in prompts.items():
        t0 = time.perf_counter()
        frames = play_headless(env, actions, record_path=args.out / f"{name}.mp4", prompt=prompt, seed=args.seed)
        dt = time.perf_counter() - t0
        print(f"{name:>8}: {len(frames) - 1} steps in {dt:.1f} s = {(len(frames) - 1) / dt:.1f} frames/s "
              f"-> {args.out / (name + '.mp4')}")
    env.close()
    t0 = time.perf_counter()
    strip = args.out / "action_strip.png"
    action_strip(world_model, [prompts["coinrun"], np.asarray(env_prompt(prompts["sketch"]))], args.strip_steps,
                 out_png=strip, seed=args.seed, device=args.device)
    rows = 2 * world_model.num_actions
    print(f"action strip: 2 prompts x {world_model.num_actions} actions x {args.strip_steps} steps in "
          f"{time.perf_counter() - t0:.1f} s ({rows * args.strip_steps / (time.perf_counter() - t0):.1f} "
          f"frames/s batched) -> {strip}")


def env_prompt(prompt: str | np.ndarray) -> np.ndarray:
    """A prompt (path or array) as the 64x64 uint8 frame the model sees."""
    from genie_gym.envs.prompts import load_prompt

    return load_prompt(prompt)[0]
