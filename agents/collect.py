"""Record expert episodes (frames, real actions, rewards) on CoinRun levels no other part of the project uses.

    python -m agents.collect --expert agents/assets/ppo_coinrun_easy.zip --episodes 500 --out runs/expert_data

Levels default to 100000..109999: disjoint from the world model's training levels (0..9999) and from the
evaluation levels (200000+, `agents.evaluate.EVAL_START_LEVEL`). Episodes are written in the data engineer's shard
format (`genie_gym.data.shards`, read back with `genie_gym.data.dataset.EpisodeStore`), one split, "train".
As everywhere in genie-gym, `actions[i]` is taken after observing `frames[i]`; gym3 never shows the terminal frame,
so an episode of L actions has L frames and L-1 observable transitions.
Deterministic for a fixed `--seed` (environment seed and the policy's sampling generator).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from agents.baselines import Policy, RandomPolicy, RunRightPolicy
from genie_gym.data import shards as S
from genie_gym.errors import ConfigError, DatasetError

EXPERT_START_LEVEL = 100_000
EXPERT_NUM_LEVELS = 10_000
SHARD_EPISODES = 64
CHUNK_FRAMES = 64


@dataclass
class Episode:
    """One recorded episode: `frames` (L,64,64,3) uint8, `actions` (L,) int64, `rewards` (L,) float32."""

    frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    level_seed: int

    @property
    def length(self) -> int:
        return int(len(self.actions))


@dataclass
class ExpertSet:
    """Expert episodes held in memory (small: 500 episodes of easy CoinRun are ~100 MB of frames)."""

    episodes: list[Episode] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def num_frames(self) -> int:
        return sum(ep.length for ep in self.episodes)

    def frames_actions(self) -> tuple[np.ndarray, np.ndarray]:
        """All (frame, real action) pairs, concatenated over episodes: the oracle's training set."""
        self.check_nonempty()
        return (np.concatenate([ep.frames for ep in self.episodes]),
                np.concatenate([ep.actions for ep in self.episodes]).astype(np.int64))

    def check_nonempty(self) -> None:
        if not self.episodes or self.num_frames == 0:
            raise DatasetError(
                "the expert set is empty (no episodes); record some with `python -m agents.collect "
                "--episodes 500 --out DIR` and pass that directory"
            )


def run_policy_episodes(policy: Policy, num_episodes: int, seed: int = 0, num_envs: int = 16,
                        start_level: int = EXPERT_START_LEVEL, num_levels: int = EXPERT_NUM_LEVELS,
                        distribution_mode: str = "easy", env_name: str = "coinrun",
                        progress: bool = True, paint_vel_info: bool = False) -> ExpertSet:
    """Runs `policy` on a batch of Procgen envs until `num_episodes` episodes have finished (in finishing order).

    `paint_vel_info`: the recorded frames carry Procgen's velocity bar, while the policy still sees plain frames
    (the expert was trained on those): a twin env with the same seeds, stepped with the same actions, paints them.
    Procgen's game does not depend on the painting, so both play the same episodes (checked every step).
    """
    from procgen import ProcgenGym3Env

    if num_episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {num_episodes}")
    rng = np.random.default_rng(seed)
    kw = dict(num=num_envs, env_name=env_name, start_level=start_level, num_levels=num_levels,
              distribution_mode=distribution_mode, rand_seed=seed)
    env = ProcgenGym3Env(**kw)
    painted = ProcgenGym3Env(paint_vel_info=True, **kw) if paint_vel_info else None
    _, obs, _ = env.observe()
    painted_obs = None if painted is None else painted.observe()[1]
    bufs: list[dict[str, list]] = [dict(f=[], a=[], r=[]) for _ in range(num_envs)]
    level = [int(info["level_seed"]) for info in env.get_info()]
    out = ExpertSet()
    bar = tqdm(total=num_episodes, desc="collect", unit="ep", disable=not progress)
    while len(out) < num_episodes:
        actions = policy.act(obs["rgb"], rng)
        frames = obs["rgb"] if painted_obs is None else painted_obs["rgb"]
        env.act(actions.astype(np.int32))
        rew, obs, first = env.observe()
        infos = env.get_info()
        if painted is not None:
            painted.act(actions.astype(np.int32))
            _, painted_obs, painted_first = painted.observe()
            if not np.array_equal(painted_first, first):
                raise RuntimeError("the velocity-painted twin env left the plain env's episodes; this procgen "
                                   "build's game depends on paint_vel_info, so record with the policy on "
                                   "painted frames instead")
        for i in range(num_envs):
            bufs[i]["f"].append(frames[i].copy())
            bufs[i]["a"].append(int(actions[i]))
            bufs[i]["r"].append(float(rew[i]))
            if first[i]:
                if len(out) < num_episodes:
                    b = bufs[i]
                    out.episodes.append(Episode(np.stack(b["f"]), np.asarray(b["a"], np.int64),
                                                np.asarray(b["r"], np.float32), level[i]))
                    bar.update(1)
                bufs[i] = dict(f=[], a=[], r=[])
                level[i] = int(infos[i]["level_seed"])
    bar.close()
    return out


def save_expert_set(data: ExpertSet, root: str | Path, settings: dict[str, Any] | None = None) -> Path:
    """Writes shards + manifest.json in genie-gym's dataset format (split "train")."""
    data.check_nonempty()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for k in range(0, len(data), SHARD_EPISODES):
        recs = []
        for ep in data.episodes[k : k + SHARD_EPISODES]:
            starts = range(0, ep.length, CHUNK_FRAMES)
            recs.append(S.EpisodeRecord(
                chunks=[ep.frames[s : s + CHUNK_FRAMES] for s in starts],
                chunk_frames=[min(CHUNK_FRAMES, ep.length - s) for s in starts],
                actions=ep.actions.astype(np.int8), rewards=ep.rewards.astype(np.float32),
                dones=np.arange(ep.length) == ep.length - 1, level_seed=ep.level_seed, truncated=False,
                solved=bool(ep.rewards.sum() > 0)))
        entry = S.write_shard(root, S.shard_name("train", k // SHARD_EPISODES), recs)
        entry["split"] = "train"
        entries.append(entry)
    frames = sum(e["frames"] for e in entries)
    manifest = {
        "format_version": S.FORMAT_VERSION,
        "kind": "genie-gym expert episodes (agents/collect.py)",
        "complete": True,
        "settings": dict(settings or {}),
        "shards": entries,
        "splits": {s: {"frames": frames if s == "train" else 0, "episodes": len(data) if s == "train" else 0,
                       "shards": [e["file"] for e in entries] if s == "train" else []} for s in S.SPLITS},
        "frames": frames,
        "episodes": len(data),
    }
    S.write_manifest(root, manifest)
    return root


def load_expert_set(root: str | Path, max_episodes: int | None = None) -> ExpertSet:
    """Reads an expert set written by `save_expert_set` (or any genie-gym dataset with actions)."""
    from genie_gym.data.dataset import EpisodeStore

    store = EpisodeStore(root, split="train")
    n = len(store) if max_episodes is None else min(max_episodes, len(store))
    out = ExpertSet([Episode(store.frames(i), store.actions(i).astype(np.int64),
                             store.rewards(i).astype(np.float32), int(store.level_seeds[i])) for i in range(n)])
    out.check_nonempty()
    return out


def make_collect_policy(kind: str, expert: str | None) -> Policy:
    """`expert` (the PPO checkpoint), or a scripted stand-in (`random`, `run_right`) for tests and smoke runs."""
    if kind == "expert":
        from agents.evaluate import SB3Policy
        from agents.ppo_expert import load_expert

        return SB3Policy(load_expert(expert))
    if kind == "random":
        return RandomPolicy()
    if kind == "run_right":
        return RunRightPolicy()
    raise ConfigError(f"--policy {kind!r} is unknown; use expert, random or run_right")


@dataclass
class Args:
    out: str = "runs/expert_data"
    """output dataset directory (shards + manifest.json)"""
    episodes: int = 500
    """number of finished episodes to record"""
    policy: str = "expert"
    """expert (PPO checkpoint), or random / run_right (scripted stand-ins)"""
    expert: str | None = None
    """PPO checkpoint; default: agents/assets/ppo_coinrun_easy.zip"""
    start_level: int = EXPERT_START_LEVEL
    """first level seed (keep disjoint from world-model training 0..9999 and evaluation 200000+)"""
    num_levels: int = EXPERT_NUM_LEVELS
    """number of level seeds to draw from"""
    distribution_mode: str = "easy"
    """Procgen difficulty"""
    paint_vel_info: bool = False
    """record frames with Procgen's velocity bar (the policy still acts on plain frames, see run_policy_episodes)"""
    num_envs: int = 16
    """parallel Procgen envs"""
    seed: int = 0
    """environment and sampling seed"""


def main(args: Args) -> None:
    torch.set_num_threads(1)
    lo, hi = args.start_level, args.start_level + args.num_levels
    if lo < 10_000 or hi > 200_000:
        print(f"warning: levels {lo}..{hi - 1} overlap the world model's training levels (0..9999) or the "
              "evaluation levels (200000+); the benchmark assumes they do not")
    policy = make_collect_policy(args.policy, args.expert)
    t0 = time.perf_counter()
    data = run_policy_episodes(policy, args.episodes, args.seed, args.num_envs, args.start_level, args.num_levels,
                               args.distribution_mode, paint_vel_info=args.paint_vel_info)
    save_expert_set(data, args.out, settings=asdict(args))
    rets = [float(ep.rewards.sum()) for ep in data.episodes]
    print(json.dumps({"episodes": len(data), "frames": data.num_frames, "mean_return": float(np.mean(rets)),
                      "solved": float(np.mean(np.asarray(rets) > 0)), "seconds": round(time.perf_counter() - t0, 1),
                      "out": args.out}))


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
