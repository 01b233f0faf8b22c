"""A policy trained in the dream, played in real Procgen CoinRun: its latent codes become real actions via table D.

    python -m agents.dream_transfer --dream runs/dream_ppo/final.zip --world-model runs/v1/world_model.pt \
        --expert-data runs/expert_data --n-labelled 200

The dream agent (`agents.dream_ppo`) picks one of the world model's latent actions from a real frame. Table D is the
latent-BC protocol's (`agents.latent_bc`, paper section 3.3): the world model's own LAM labels the expert's
episodes, and `--n-labelled` of those transitions, with their real actions, give each code the real actions seen
with it; acting samples one of them. Scored with the harness of `agents.evaluate` (share of held-out levels solved,
mean return, 95% CI over seeds) beside random codes through the same table, random actions and run-right on the
same levels; writes <out>/transfer.json.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.baselines import RandomPolicy, RunRightPolicy
from agents.evaluate import SB3Policy, evaluate_policy
from agents.latent_bc import CodeActionTable, label_expert_set, load_lam, select_labelled, transitions
from genie_gym.errors import CheckpointError, ConfigError
from genie_gym.utils.io import atomic_write_json


@dataclass
class Args:
    """Score a dream-trained PPO agent in real CoinRun through table D, beside random codes, random and run-right."""

    dream: str = "runs/dream_ppo/final.zip"
    """the dream agent (`agents.dream_ppo`'s final.zip or a checkpoint)"""
    world_model: str | None = None
    """the world model the agent dreamed in (its LAM labels table D; default: the shipped model)"""
    expert_data: str = "runs/expert_data"
    """expert episodes (`python -m agents.collect`) whose LAM codes and real actions build table D"""
    n_labelled: int = 200
    """N: labelled expert transitions in table D (the paper's protocol)"""
    num_levels: int = 100
    """held-out real levels (from agents.evaluate's EVAL_START_LEVEL, never seen by the expert or the dream)"""
    seeds: int = 5
    """evaluation seeds (each plays every level once)"""
    distribution_mode: str = "easy"
    """Procgen mode of the real levels (easy: the expert's and bc_coinrun's)"""
    max_steps: int = 1000
    """longest real episode"""
    seed: int = 0
    """seed of the choice of the N labelled transitions"""
    baselines: bool = True
    """also score random codes through table D, random actions and run-right on the same levels"""
    out: str = "runs/dream_transfer"
    """output directory: transfer.json"""
    threads: int = 2
    """torch CPU threads"""


class DreamPolicy:
    """A latent-action policy (SB3 PPO over the world model's codes) acting in the real game through table D."""

    def __init__(self, model: Any, table: CodeActionTable) -> None:
        n = int(model.action_space.n)
        if n != table.num_codes:
            raise ConfigError(f"the dream agent picks among {n} latent actions but table D maps {table.num_codes} "
                              "codes; build the table with the world model the agent was trained in (--world-model)")
        self.policy, self.table = SB3Policy(model), table
        self.code_counts = np.zeros(n, dtype=np.int64)  # the codes it picked (what the dream taught it to press)

    def act(self, obs_BHWC: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        codes = np.asarray(self.policy.act(obs_BHWC, rng), dtype=np.int64)
        np.add.at(self.code_counts, codes, 1)
        return self.table.sample(codes, obs_BHWC, rng)


class RandomCodesPolicy:
    """Uniformly random latent codes through the same table D: what the dream agent's training adds is measured
    against it (table D alone, built from expert transitions, already leans towards the expert's actions)."""

    def __init__(self, table: CodeActionTable) -> None:
        self.table = table

    def act(self, obs_BHWC: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.table.sample(rng.integers(0, self.table.num_codes, len(obs_BHWC)), obs_BHWC, rng)


class LabelledTransitions:
    """Every expert transition's code (from the world model's LAM) and real action; `table(n, seed)` draws table D
    from N of them. Labelling runs once, so tables for several seeds cost nothing more."""

    def __init__(self, world_model: str | None, expert_data: str) -> None:
        from agents.collect import load_expert_set

        lam, seq_len = load_lam(world_model)
        data = load_expert_set(expert_data)
        _, self.codes, self.actions = transitions(data, label_expert_set(lam, data, seq_len))
        self.num_codes = int(lam.num_actions)

    def table(self, n_labelled: int, seed: int) -> CodeActionTable:
        idx = select_labelled(len(self.codes), n_labelled, seed)
        return CodeActionTable(self.codes[idx], self.actions[idx], self.num_codes)


def main(args: Args) -> dict[str, Any]:
    from stable_baselines3 import PPO

    torch.set_num_threads(args.threads)
    if not Path(args.dream).is_file():
        raise CheckpointError(f"dream agent {args.dream} does not exist; train one with `python -m agents.dream_ppo`")
    t0 = time.perf_counter()
    table = LabelledTransitions(args.world_model, args.expert_data).table(args.n_labelled, args.seed)
    agent = DreamPolicy(PPO.load(args.dream, device="cpu"), table)
    common = dict(num_levels=args.num_levels, seeds=list(range(args.seeds)), distribution_mode=args.distribution_mode,
                  max_steps=args.max_steps)
    policies: dict[str, Any] = {"dream": agent}
    if args.baselines:
        policies |= {"random_codes": RandomCodesPolicy(table), "random": RandomPolicy(), "run_right": RunRightPolicy()}
    results = {}
    for name, policy in policies.items():
        res = evaluate_policy(policy, desc=name, **common)
        results[name] = {"solved_pct": res.solved, "solved_ci95": res.solved_ci95, "mean_return": res.mean_return,
                         "return_ci95": res.return_ci95}
        print(f"{name:>10}: {res.solved:.1f}% of levels solved (95% CI +-{res.solved_ci95:.1f}), mean return "
              f"{res.mean_return:.2f}")
    report = {"args": asdict(args), "table_unseen_codes": table.to_dict()["unseen_codes"], "results": results,
              "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_json(Path(args.out) / "transfer.json", report)
    print(json.dumps(results))
    return report


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
