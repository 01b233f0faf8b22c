"""Baselines for CoinRun behaviour cloning: uniform random over the 15 actions, and "run right".

Action indices follow Procgen's CoinRun combos (docs/paper.md section 4): index = 3*(vx+1) + (vy+1) for 0..8
(LEFT/none/RIGHT x DOWN/none/UP); 9..14 are special keys that CoinRun treats as no-ops.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from genie_gym.data.games import NUM_PROCGEN_ACTIONS as NUM_ACTIONS  # 15


def action_index(vx: int, vy: int) -> int:
    """CoinRun action index for a velocity direction (vx, vy in {-1, 0, 1}; vy = 1 is UP/jump)."""
    return 3 * (vx + 1) + (vy + 1)


NOOP = action_index(0, 0)  # 4
RIGHT = action_index(1, 0)  # 7
RIGHT_UP = action_index(1, 1)  # 8


class Policy(Protocol):
    """What the evaluation harness runs: a batch of uint8 frames in, one CoinRun action per frame out."""

    def act(self, obs_BHWC: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


class RandomPolicy:
    """Uniform over the 15 actions: the lower bound (≈28% of easy levels solved, docs/paper.md section 4)."""

    def act(self, obs_BHWC: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, NUM_ACTIONS, size=len(obs_BHWC), dtype=np.int64)


class RunRightPolicy:
    """Uniform over RIGHT and RIGHT+UP: a strong scripted baseline (≈66% of easy levels)."""

    def act(self, obs_BHWC: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.where(rng.random(len(obs_BHWC)) < 0.5, RIGHT, RIGHT_UP).astype(np.int64)


class ConstantPolicy:
    """Always the same action (tests: NOOP never reaches the coin)."""

    def __init__(self, action: int) -> None:
        self.action = int(action)

    def act(self, obs_BHWC: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.full(len(obs_BHWC), self.action, dtype=np.int64)
