"""The 16 Procgen games and their shared 15-action keyboard combos (Procgen paper, `procgen/env.py`)."""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

from genie_gym.errors import DatasetError

Game = Literal["bigfish", "bossfight", "caveflyer", "chaser", "climber", "coinrun", "dodgeball", "fruitbot", "heist",
               "jumper", "leaper", "maze", "miner", "ninja", "plunder", "starpilot"]
Mode = Literal["easy", "hard", "extreme", "memory", "exploration"]
PROCGEN_GAMES: tuple[str, ...] = get_args(Game)
DISTRIBUTION_MODES: tuple[str, ...] = get_args(Mode)

# Every Procgen game shares this action set; index = 3*(vx+1) + (vy+1) for 0..8, 9..14 are special keys
# (CoinRun treats them as no-ops).
PROCGEN_ACTION_COMBOS: tuple[tuple[str, ...], ...] = (
    ("LEFT", "DOWN"),
    ("LEFT",),
    ("LEFT", "UP"),
    ("DOWN",),
    (),
    ("UP",),
    ("RIGHT", "DOWN"),
    ("RIGHT",),
    ("RIGHT", "UP"),
    ("D",),
    ("A",),
    ("W",),
    ("S",),
    ("Q",),
    ("E",),
)
NUM_PROCGEN_ACTIONS = len(PROCGEN_ACTION_COMBOS)
COINRUN_ACTION_NAMES: tuple[str, ...] = tuple("+".join(c) if c else "NOOP" for c in PROCGEN_ACTION_COMBOS)

# Most of the 15 actions are synonyms in CoinRun (DOWN and the letter keys do nothing): what an action does there
# is one of 6 movement classes, 2 * (horizontal: left 0, none 1, right 2) + (UP pressed).
MOVEMENT_NAMES: tuple[str, ...] = tuple(f"{h}{'+UP' if up else ''}" for h in ("LEFT", "NONE", "RIGHT") for up in (0, 1))
MOVEMENT_OF_ACTION = np.array(
    [2 * (0 if "LEFT" in c else 2 if "RIGHT" in c else 1) + ("UP" in c) for c in PROCGEN_ACTION_COMBOS]
)


def movement_class(actions: np.ndarray) -> np.ndarray:
    """Movement class (an index into MOVEMENT_NAMES) of each Procgen action index."""
    return MOVEMENT_OF_ACTION[np.asarray(actions, dtype=np.int64)]


def movement_counts(code_by_action_AK: np.ndarray) -> np.ndarray:
    """(codes, 15 Procgen actions) transition counts -> (codes, 6 movement classes) counts."""
    table_AK = np.asarray(code_by_action_AK, dtype=np.int64)
    counts_AM = np.zeros((table_AK.shape[0], len(MOVEMENT_NAMES)), dtype=np.int64)
    for k in range(table_AK.shape[1]):
        counts_AM[:, MOVEMENT_OF_ACTION[k]] += table_AK[:, k]
    return counts_AM


def name_actions(counts_AM: np.ndarray, move_share: float = 0.6, jump_share: float = 0.8) -> list[str]:
    """A name per latent action from what its transitions did (`movement_counts` of held-out data): "left" /
    "right" / "still" when at least `move_share` of them moved that way horizontally, "+jump" (or "jump") when at
    least `jump_share` pressed UP; "a<i>" when neither, "unused" without transitions. Genie-v0's arrow keys go to
    the actions named left, right and jump."""
    counts_AM = np.asarray(counts_AM, dtype=np.float64)
    names = []
    for a, row in enumerate(counts_AM):
        n = row.sum()
        if n == 0:
            names.append("unused")
            continue
        horizontal = {"left": row[0] + row[1], "still": row[2] + row[3], "right": row[4] + row[5]}
        way = max(horizontal, key=horizontal.get)
        parts = [way] if horizontal[way] >= move_share * n else []
        if row[1::2].sum() >= jump_share * n:
            parts.append("jump")
        names.append("+".join(parts) if parts else f"a{a}")
    return names


def check_game(game: str) -> str:
    """Return the canonical game name or raise a DatasetError listing the valid ones."""
    name = game.strip().lower()
    if name not in PROCGEN_GAMES:
        raise DatasetError(f"unknown Procgen game '{game}'; choose --game from: {', '.join(PROCGEN_GAMES)}")
    return name


def check_mode(mode: str) -> str:
    if mode not in DISTRIBUTION_MODES:
        raise DatasetError(
            f"unknown distribution mode '{mode}'; choose --mode from: {', '.join(DISTRIBUTION_MODES)}"
        )
    return mode


def parse_levels(spec: str) -> tuple[int, int]:
    """Parse `A:B` (level seeds A..B-1) into `(start, stop)`; malformed or empty ranges are errors."""
    parts = str(spec).split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start, stop = int(parts[0]), int(parts[1])
    except ValueError:
        raise DatasetError(
            f"malformed --levels '{spec}'; write it as START:STOP with integers, e.g. --levels 0:10000 "
            "(level seeds START..STOP-1)"
        ) from None
    if start < 0 or stop > 2**31 - 1:
        raise DatasetError(f"--levels '{spec}' is out of range; level seeds must lie in 0..2147483646")
    if stop <= start:
        raise DatasetError(
            f"--levels '{spec}' is an empty range (STOP must be greater than START); "
            f"e.g. --levels {start}:{start + 1000}"
        )
    return start, stop
