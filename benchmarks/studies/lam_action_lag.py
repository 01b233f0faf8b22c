"""Which expert action does a LAM code describe? NMI(code of transition t+k, real action a_t) for k in -2..2.

A diagnostic for latent BC (issue 6): if the codes lagged the actions (momentum, a frame of delay), labelling
x_t with the code of a later transition would help the policy. The PPO expert plays easy CoinRun levels 100000+
(never seen by the world model), the LAM labels every transition, and the NMI is computed at each lag, with the
15 actions as they are and with their 6 movement classes (`genie_gym.data.games.movement_class`: CoinRun's
synonyms merged).

    python benchmarks/studies/lam_action_lag.py    # ~15 s: needs the PPO expert (agents/assets) and the shipped model
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro


@dataclass
class Args:
    """NMI between LAM codes and the expert's actions at several time offsets."""

    episodes: int = 100
    """expert episodes to record and label"""
    lags: tuple[int, ...] = (-2, -1, 0, 1, 2)
    """offsets k: the code of transition t+k against the action taken at t"""
    world_model: str | None = None
    """world-model file whose LAM labels the frames (default: the shipped one)"""
    expert: str | None = None
    """PPO expert checkpoint (default: the one shipped in agents/assets)"""
    seed: int = 0
    """seed of the expert's episodes"""
    out: Path = Path("benchmarks/results")
    """where lam_action_lag.{json,md} go"""


def lagged_pairs(codes: list[np.ndarray], actions: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(code[t+k], action[t]) over every episode, for the t where t+k is a labelled transition."""
    cs, us = [], []
    for c, a in zip(codes, actions, strict=True):
        n = len(c)
        t = np.arange(max(0, -k), min(n, n - k))
        cs.append(c[t + k])
        us.append(a[t])
    return np.concatenate(cs), np.concatenate(us)


def main(args: Args) -> dict:
    from agents.collect import make_collect_policy, run_policy_episodes
    from agents.latent_bc import label_expert_set, load_lam
    from genie_gym.data.games import movement_class
    from genie_gym.evaluation.metrics import nmi
    from genie_gym.utils.io import atomic_write_bytes, atomic_write_json

    torch.set_num_threads(2)
    t0 = time.time()
    expert = make_collect_policy("expert", args.expert)
    data = run_policy_episodes(expert, args.episodes, args.seed, distribution_mode="easy")
    lam, seq_len = load_lam(args.world_model)
    codes = label_expert_set(lam, data, seq_len, progress=False)
    actions = [ep.actions[: len(c)].astype(np.int64) for ep, c in zip(data.episodes, codes, strict=True)]
    rows = {}
    for k in args.lags:
        c, u = lagged_pairs(codes, actions, k)
        rows[str(k)] = {"nmi": nmi(c, u), "nmi_movement": nmi(c, movement_class(u)), "pairs": int(len(c))}
    result = {
        "lags": rows,
        "best_lag": max(rows, key=lambda k: rows[k]["nmi"]),
        "episodes": args.episodes,
        "transitions": int(sum(len(c) for c in codes)),
        "world_model": args.world_model or "shipped",
        "seconds": round(time.time() - t0, 1),
        "command": " ".join(["python", "benchmarks/studies/lam_action_lag.py", *sys.argv[1:]]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "lam_action_lag.json", result)
    table = "\n".join(f"| {int(k):+d} | {r['nmi']:.4f} | {r['nmi_movement']:.4f} | {r['pairs']} |"
                      for k, r in rows.items())
    md = f"""# LAM codes against the expert's actions, at time offsets

Command: `{result['command']}` ({result['seconds']} s). {args.episodes} PPO-expert episodes on easy CoinRun levels
100000+, LAM of the {result['world_model']} world model. Row k: NMI between the code of transition t+k and the
action taken at t.

| k | NMI, 15 actions | NMI, 6 movement classes | pairs |
|---|---|---|---|
{table}

Highest at k = {int(result['best_lag']):+d}.
"""
    atomic_write_bytes(args.out / "lam_action_lag.md", md.encode())
    print(md)
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
