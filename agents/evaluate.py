"""Evaluation harness: percentage of held-out CoinRun levels solved and mean return, with 95% CIs over seeds.

Every (seed, level) pair is one episode on a fresh Procgen env pinned to that level (`start_level=level,
num_levels=1`), so each level is counted exactly once per seed. The per-level envs of a chunk are stepped together
through `gym3.ConcatEnv`, and the policy sees one batch per step. CoinRun pays 10 for the coin and then ends the
episode, so "solved" means episode return > 0. An episode still running after `max_steps` counts as unsolved
(CoinRun's own time limit is 1000 steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from agents.baselines import NOOP, Policy
from agents.policies import ImpalaPolicy, check_frames, sample_categorical

# Held-out evaluation levels: disjoint from the world model's training levels (0..10k) and the expert data (100k..).
EVAL_START_LEVEL = 200_000

# Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom (no scipy dependency).
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t confidence interval (0 for a single value)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_ci95 needs at least one value")
    if x.size == 1:
        return float(x[0]), 0.0
    t = _T975[x.size - 2] if x.size - 1 <= len(_T975) else 1.96
    return float(x.mean()), float(t * x.std(ddof=1) / math.sqrt(x.size))


@dataclass
class EvalResult:
    """Outcome of `evaluate_policy`. `solved` is a percentage of levels; per-seed lists keep the raw numbers."""

    solved: float
    solved_ci95: float
    mean_return: float
    return_ci95: float
    seeds: list[int]
    levels: list[int]
    solved_per_seed: list[float] = field(default_factory=list)
    return_per_seed: list[float] = field(default_factory=list)
    level_returns: list[list[float]] = field(default_factory=list)  # [seed][level]
    episode_lengths: list[list[int]] = field(default_factory=list)  # [seed][level]

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("level_returns")
        d.pop("episode_lengths")
        d["num_levels"] = len(d.pop("levels"))
        return d


def _make_level_env(level: int, seed: int, distribution_mode: str, env_name: str, paint_vel_info: bool) -> Any:
    from procgen import ProcgenGym3Env

    return ProcgenGym3Env(num=1, env_name=env_name, start_level=int(level), num_levels=1,
                          distribution_mode=distribution_mode, rand_seed=int(seed), paint_vel_info=paint_vel_info)


def run_levels(
    policy: Policy,
    levels: Sequence[int],
    seed: int,
    distribution_mode: str = "easy",
    max_steps: int = 1000,
    env_name: str = "coinrun",
    chunk: int = 64,
    rng: np.random.Generator | None = None,
    paint_vel_info: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """One episode per level: returns (episode returns, episode lengths), one entry per level, in order.
    `paint_vel_info`: the policy sees frames with Procgen's velocity bar (the same game otherwise)."""
    import gym3

    rng = np.random.default_rng(seed) if rng is None else rng
    returns = np.zeros(len(levels), dtype=np.float64)
    lengths = np.full(len(levels), max_steps, dtype=np.int64)
    for c0 in range(0, len(levels), chunk):
        lv = list(levels[c0 : c0 + chunk])
        env = gym3.ConcatEnv([_make_level_env(level, seed, distribution_mode, env_name, paint_vel_info)
                               for level in lv])
        n = len(lv)
        active = np.ones(n, dtype=bool)
        ret = np.zeros(n, dtype=np.float64)
        _, obs, _ = env.observe()
        for t in range(max_steps):
            frames = obs["rgb"]
            actions = np.full(n, NOOP, dtype=np.int32)
            actions[active] = policy.act(frames[active], rng)
            env.act(actions)
            rew, obs, first = env.observe()
            ret[active] += rew[active]
            ended = active & first  # first[i]: obs is the start of a new episode -> the step just taken ended one
            lengths[c0 : c0 + n][ended] = t + 1
            active &= ~first
            if not active.any():
                break
        returns[c0 : c0 + n] = ret
        del env
    return returns, lengths


def evaluate_policy(
    policy: Policy | Callable[[int], Policy],
    levels: Sequence[int] | None = None,
    num_levels: int = 100,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    distribution_mode: str = "easy",
    max_steps: int = 1000,
    env_name: str = "coinrun",
    progress: bool = True,
    desc: str = "eval",
    paint_vel_info: bool = False,
) -> EvalResult:
    """Runs `policy` once per (seed, level); default levels are `EVAL_START_LEVEL + range(num_levels)`.

    `policy` may also be a factory `seed -> Policy` (e.g. latent BC whose N labelled samples depend on the seed),
    so the confidence interval covers that variation too.
    """
    levels = list(range(EVAL_START_LEVEL, EVAL_START_LEVEL + num_levels)) if levels is None else list(levels)
    if not levels:
        raise ValueError("evaluate_policy needs at least one level; pass levels=[...] or num_levels >= 1")
    if not seeds:
        raise ValueError("evaluate_policy needs at least one seed")
    rets, lens = [], []
    for s in tqdm(list(seeds), desc=desc, disable=not progress, leave=False):
        pol = policy if hasattr(policy, "act") else policy(int(s))  # type: ignore[operator]
        r, ln = run_levels(pol, levels, s, distribution_mode, max_steps, env_name, paint_vel_info=paint_vel_info)
        rets.append(r)
        lens.append(ln)
    solved_ps = [100.0 * float((r > 0).sum()) / len(r) for r in rets]
    return_ps = [float(r.mean()) for r in rets]
    s_mean, s_ci = mean_ci95(solved_ps)
    r_mean, r_ci = mean_ci95(return_ps)
    return EvalResult(
        solved=s_mean, solved_ci95=s_ci, mean_return=r_mean, return_ci95=r_ci, seeds=[int(s) for s in seeds],
        levels=levels, solved_per_seed=solved_ps, return_per_seed=return_ps,
        level_returns=[r.tolist() for r in rets], episode_lengths=[ln.tolist() for ln in lens],
    )


class CategoricalTorchPolicy:
    """A trained `ImpalaPolicy` over the 15 real actions (the oracle), sampling with the harness's generator."""

    def __init__(self, net: ImpalaPolicy, batch_size: int = 256) -> None:
        self.net = net
        self.batch_size = batch_size

    def act(self, obs_BHWC: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        check_frames(obs_BHWC)
        probs = np.concatenate([self.net.probs(obs_BHWC[i : i + self.batch_size])
                                for i in range(0, len(obs_BHWC), self.batch_size)])
        return sample_categorical(probs, rng)


class SB3Policy:
    """A stable-baselines3 PPO model as a harness policy: its action distribution, sampled with our generator."""

    def __init__(self, model: Any, deterministic: bool = False) -> None:
        self.model = model
        self.deterministic = deterministic

    def act(self, obs_BHWC: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        import torch

        check_frames(obs_BHWC)
        policy = self.model.policy
        policy.set_training_mode(False)
        with torch.no_grad():
            obs_t, _ = policy.obs_to_tensor(obs_BHWC)
            probs = policy.get_distribution(obs_t).distribution.probs.double().cpu().numpy()
        if self.deterministic:
            return probs.argmax(axis=1).astype(np.int64)
        return sample_categorical(probs, rng)


@dataclass
class Args:
    policy: str = "run_right"
    """random | run_right | expert | oracle | latent"""
    checkpoint: str | None = None
    """expert: PPO zip (default the shipped one); oracle: policy .pt; latent: the agents/latent_bc.py --out dir"""
    world_model: str | None = None
    """latent only: check that this world model's LAM has as many codes as the policy predicts"""
    num_levels: int = 100
    """held-out levels, starting at --start-level"""
    start_level: int = EVAL_START_LEVEL
    """first evaluation level (keep >= 200000: disjoint from training and expert data)"""
    seeds: int = 5
    """seeds 0..seeds-1; each plays every level once"""
    distribution_mode: str = "easy"
    """Procgen difficulty"""
    max_steps: int = 1000
    """per-episode step limit (CoinRun's own is 1000)"""
    out: str | None = None
    """optional JSON file for the summary"""


def load_policy(kind: str, checkpoint: str | None = None, world_model: str | None = None) -> Policy:
    """Any agent of this folder by name, ready for `evaluate_policy`."""
    from agents.baselines import RandomPolicy, RunRightPolicy
    from genie_gym.errors import ConfigError

    if kind == "random":
        return RandomPolicy()
    if kind == "run_right":
        return RunRightPolicy()
    if kind == "expert":
        from agents.ppo_expert import load_expert

        return SB3Policy(load_expert(checkpoint))
    if kind == "oracle":
        return CategoricalTorchPolicy(ImpalaPolicy.load(checkpoint or "runs/bc/oracle.pt")[0])
    if kind == "latent":
        from agents.latent_bc import load_lam, load_latent_bc

        lam = load_lam(world_model)[0] if world_model else None
        return load_latent_bc(checkpoint or "runs/latent_bc", None if lam is None else int(lam.num_actions), lam)
    raise ConfigError(f"--policy {kind!r} is unknown; use random, run_right, expert, oracle or latent")


def main(args: Args) -> None:
    import json

    import torch

    from genie_gym.utils.io import atomic_write_json

    torch.set_num_threads(1)
    policy = load_policy(args.policy, args.checkpoint, args.world_model)
    levels = list(range(args.start_level, args.start_level + args.num_levels))
    res = evaluate_policy(policy, levels=levels, seeds=list(range(args.seeds)),
                          distribution_mode=args.distribution_mode, max_steps=args.max_steps, desc=args.policy)
    summary = {"policy": args.policy, "checkpoint": args.checkpoint, **res.summary()}
    if args.out:
        atomic_write_json(args.out, summary)
    print(json.dumps(summary))


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
