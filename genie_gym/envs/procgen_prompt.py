"""Start frames of Procgen levels, used as Genie-v0's default prompts.

A level's first observation depends only on (game, level seed, distribution mode), so frames are cached in-process:
a cache hit skips creating a Procgen env for the level. Procgen is imported lazily (it is slow to import and prints a
gym deprecation banner).
"""

from __future__ import annotations

import functools

import numpy as np

PROCGEN_GAMES: tuple[str, ...] = (
    "bigfish", "bossfight", "caveflyer", "chaser", "climber", "coinrun", "dodgeball", "fruitbot",
    "heist", "jumper", "leaper", "maze", "miner", "ninja", "plunder", "starpilot",
)
DISTRIBUTION_MODES: tuple[str, ...] = ("easy", "hard", "extreme", "memory", "exploration")


def check_procgen_args(game: str, level: int, distribution_mode: str) -> None:
    """Validate before touching Procgen, so that a typo is a clear error rather than a C++ abort."""
    if game not in PROCGEN_GAMES:
        raise ValueError(f"unknown Procgen game {game!r}; choose one of {list(PROCGEN_GAMES)}")
    if distribution_mode not in DISTRIBUTION_MODES:
        raise ValueError(
            f"unknown Procgen distribution mode {distribution_mode!r}; choose one of {list(DISTRIBUTION_MODES)}"
        )
    if not (isinstance(level, (int, np.integer)) and 0 <= int(level) < 2**31 - 1):
        raise ValueError(f"Procgen level must be an int in [0, 2**31 - 1), got {level!r}")


def import_procgen():
    """`procgen.ProcgenGym3Env`, imported without gym's banner (every Procgen import in the project goes here)."""
    from genie_gym.utils.gym_banner import import_gym_quietly

    import_gym_quietly()  # procgen -> gym3 -> gym prints an "unmaintained" banner
    from procgen import ProcgenGym3Env

    return ProcgenGym3Env


@functools.lru_cache(maxsize=4096)
def _start_frame(game: str, level: int, distribution_mode: str) -> np.ndarray:
    ProcgenGym3Env = import_procgen()
    env = ProcgenGym3Env(
        num=1, env_name=game, start_level=level, num_levels=1, distribution_mode=distribution_mode,
        rand_seed=level,
    )
    _, obs, _ = env.observe()
    frame_HWC = np.array(obs["rgb"][0], dtype=np.uint8, copy=True)
    env.close()
    frame_HWC.setflags(write=False)  # shared by the cache: callers must copy before writing
    return frame_HWC


def procgen_start_frame(game: str = "coinrun", level: int = 0, distribution_mode: str = "hard") -> np.ndarray:
    """The first observation of a Procgen level: uint8 (64, 64, 3), a fresh writable copy."""
    check_procgen_args(game, level, distribution_mode)
    return _start_frame(game, int(level), distribution_mode).copy()


def procgen_source(game: str, level: int, distribution_mode: str = "hard") -> str:
    """The `info["prompt_source"]` string of a Procgen prompt; `load_prompt` accepts it back."""
    suffix = "" if distribution_mode == "hard" else f":mode={distribution_mode}"
    return f"procgen:{game}:level={int(level)}{suffix}"
