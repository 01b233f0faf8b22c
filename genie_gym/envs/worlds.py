"""What the single env, the gymnasium vector env and the SB3 adapter share: settings, model loading, prompts,
per-world bookkeeping (episode length, reward) around one batched `Simulator`.

Seeding is per world and follows Gymnasium exactly: a world reset with seed s uses `gymnasium.utils.seeding.np_random
(s)`; from that generator it draws, in this order, the seed of the world's MaskGIT `torch.Generator` and (when no
prompt is given) the Procgen level of its start frame. So `GenieEnv.reset(seed=s)` and world i of a vector env reset
with seed s produce the same frames for the same actions.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from genie_gym.envs.procgen_prompt import check_procgen_args, procgen_source, procgen_start_frame
from genie_gym.envs.prompts import PromptError, load_prompt
from genie_gym.errors import ConfigError
from genie_gym.models.simulator import Simulator
from genie_gym.models.world_model import WorldModel
from genie_gym.utils.device import resolve_device

RewardFn = Callable[[np.ndarray, int, np.ndarray], float]
OPTION_KEYS = ("prompt", "level")


class InvalidActionError(gym.error.InvalidAction, ValueError):
    """An action outside the action space (wrong value, dtype or shape). Catch as either parent type."""


_MODEL_CACHE: dict[tuple[str, int, int, str], WorldModel] = {}
_MODEL_LOCK = threading.Lock()


def load_world_model(checkpoint: str | os.PathLike | WorldModel | None, device: torch.device) -> WorldModel:
    """A verified `WorldModel` (the shipped one when `checkpoint` is None). Files are loaded once per process and
    device and shared between envs: generation only reads the weights (inference mode)."""
    if isinstance(checkpoint, WorldModel):
        return checkpoint.to(device).eval()
    path = Path(checkpoint) if checkpoint is not None else WorldModel.default_path()
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size, str(device))
    except OSError:
        key = None
    with _MODEL_LOCK:
        if key is not None and key in _MODEL_CACHE:
            return _MODEL_CACHE[key]
        model = WorldModel.load(path, map_location=device)  # raises CheckpointError with the fix
        if key is not None:
            _MODEL_CACHE[key] = model
        return model


class WorldBatch:
    """B worlds: a `Simulator` plus episode bookkeeping. Validates every argument before touching any state, so
    that an error raised by a bad argument leaves the worlds exactly as they were."""

    def __init__(self, num_worlds: int, checkpoint: str | os.PathLike | WorldModel | None = None,
                 maskgit_steps: int | None = None, temperature: float | None = None,
                 context_frames: int | None = None, device: str = "cpu", reward_fn: RewardFn | None = None,
                 max_episode_steps: int | None = 1000, prompt_game: str = "coinrun",
                 prompt_levels: tuple[int, int] = (0, 10_000), prompt_mode: str = "hard",
                 use_cache: bool = True,
                 precision: str = "float32"):
        if isinstance(num_worlds, bool) or not isinstance(num_worlds, (int, np.integer)) or num_worlds <= 0:
            raise ConfigError(f"num_envs must be a positive int, got {num_worlds!r}; e.g. "
                              "gym.make_vec('Genie-v0', num_envs=8)")
        if max_episode_steps is not None and (not isinstance(max_episode_steps, (int, np.integer))
                                              or max_episode_steps < 1):
            raise ConfigError(f"max_episode_steps must be a positive int or None (never truncate), got "
                              f"{max_episode_steps!r}")
        if reward_fn is not None and not callable(reward_fn):
            raise ConfigError(f"reward_fn must be callable as reward_fn(obs, action, next_obs) -> float, got "
                              f"{type(reward_fn).__name__}")
        try:
            lo, hi = (int(v) for v in prompt_levels)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"prompt_levels must be a (first, end) pair of ints, got {prompt_levels!r}") from e
        if not 0 <= lo < hi:
            raise ConfigError(f"prompt_levels=(first, end) needs 0 <= first < end (end excluded), got {(lo, hi)}")
        try:
            check_procgen_args(prompt_game, lo, prompt_mode)
        except ValueError as e:
            raise ConfigError(f"{e} (make-time argument prompt_game / prompt_mode)") from e
        self.device = resolve_device(device)
        self.world_model = load_world_model(checkpoint, self.device)
        self.sim = Simulator(self.world_model, int(num_worlds), maskgit_steps, temperature, context_frames,
                             self.device, use_cache=use_cache, precision=precision)
        self.num_worlds = int(num_worlds)
        self.num_actions = self.world_model.num_actions
        self.frame_shape = (self.world_model.image_size, self.world_model.image_size, 3)
        self.reward_fn = reward_fn
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        self.prompt_game, self.prompt_levels, self.prompt_mode = prompt_game, (lo, hi), prompt_mode
        self.obs_BHWC = np.zeros((self.num_worlds, *self.frame_shape), dtype=np.uint8)
        self.elapsed_B = np.zeros(self.num_worlds, dtype=np.int64)
        self.was_reset_B = np.zeros(self.num_worlds, dtype=bool)

    # --- spaces -------------------------------------------------------------------------------------------------
    def single_observation_space(self) -> spaces.Box:
        return spaces.Box(0, 255, self.frame_shape, dtype=np.uint8)

    def single_action_space(self) -> spaces.Discrete:
        return spaces.Discrete(self.num_actions)

    # --- validation ---------------------------------------------------------------------------------------------
    def check_options(self, options: dict[str, Any] | None, vector: bool = False) -> dict[str, Any]:
        if options is None:
            return {}
        if not isinstance(options, dict):
            raise TypeError(f"reset options must be a dict such as {{'prompt': 'image.png'}}, got "
                            f"{type(options).__name__}")
        known = list(OPTION_KEYS) + (["reset_mask"] if vector else [])
        unknown = set(options) - set(known)
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; Genie-v0 understands {known}")
        if "prompt" in options and "level" in options and options["prompt"] is not None:
            raise ValueError("pass either options['prompt'] or options['level'], not both")
        return options

    def prepare_prompt(self, prompt: Any, level: Any) -> tuple[np.ndarray, str] | int | None:
        """Convert a user prompt now (errors before any state changes). Returns a frame, a level, or None."""
        if prompt is not None:
            return load_prompt(prompt, self.frame_shape[0])
        if level is not None:
            if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
                raise PromptError(f"options['level'] must be an int Procgen level, got {level!r}")
            check_procgen_args(self.prompt_game, int(level), self.prompt_mode)
            return int(level)
        return None

    def check_actions(self, actions: Any) -> np.ndarray:
        """Actions (B,) of ints in [0, A): anything else is an `InvalidActionError` naming the fix."""
        B, A = self.num_worlds, self.num_actions
        arr = np.asarray(actions)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer)):
            raise InvalidActionError(
                f"actions must be integers in [0, {A}) (the latent action index), got dtype {arr.dtype} "
                f"({actions!r:.80}); pass e.g. np.array([...], dtype=np.int64)"
            )
        if arr.shape != (B,):
            raise InvalidActionError(f"expected {B} action(s) of shape ({B},), got shape {arr.shape}")
        if arr.min() < 0 or arr.max() >= A:
            raise InvalidActionError(f"actions must be in [0, {A}) (Discrete({A})), got {arr.tolist()}")
        return arr.astype(np.int64)

    # --- reset / step -------------------------------------------------------------------------------------------
    def reset_worlds(self, indices: Sequence[int], rngs: Sequence[np.random.Generator],
                     prompts: Sequence[tuple[np.ndarray, str] | int | None]) -> list[dict[str, Any]]:
        """Restart worlds from prepared prompts, drawing world seeds (and levels) from their generators."""
        frames, seeds, infos = [], [], []
        for rng, prompt in zip(rngs, prompts, strict=True):
            seeds.append(int(rng.integers(0, 2**63 - 1)))
            if prompt is None or isinstance(prompt, int):
                lo, hi = self.prompt_levels
                level = int(rng.integers(lo, hi)) if prompt is None else prompt
                frame = procgen_start_frame(self.prompt_game, level, self.prompt_mode)
                source = procgen_source(self.prompt_game, level, self.prompt_mode)
            else:
                frame, source = prompt
            frames.append(frame)
            infos.append({"prompt_source": source})
        idx = np.asarray(indices, dtype=np.int64)
        self.sim.reset(idx, np.stack(frames), seeds)
        self.obs_BHWC[idx] = np.stack(frames)
        self.elapsed_B[idx] = 0
        self.was_reset_B[idx] = True
        return infos

    def step(self, actions_B: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Advance every world: (next_obs_BHWC, rewards_B float64, truncated_B bool). Actions already checked."""
        prev_BHWC = self.obs_BHWC.copy() if self.reward_fn is not None else None
        self.obs_BHWC[:] = self.sim.step(actions_B)
        self.elapsed_B += 1
        rewards_B = np.zeros(self.num_worlds, dtype=np.float64)
        if self.reward_fn is not None:
            for i in range(self.num_worlds):
                r = self.reward_fn(prev_BHWC[i], int(actions_B[i]), self.obs_BHWC[i].copy())
                try:
                    rewards_B[i] = float(r)
                except (TypeError, ValueError) as e:
                    raise TypeError(f"reward_fn must return a float, got {type(r).__name__} {r!r:.60}") from e
        if self.max_episode_steps is None:
            truncated_B = np.zeros(self.num_worlds, dtype=bool)
        else:
            truncated_B = self.elapsed_B >= self.max_episode_steps
        return self.obs_BHWC.copy(), rewards_B, truncated_B

    # --- keyboard -----------------------------------------------------------------------------------------------
    def action_meanings(self) -> list[str]:
        """Names of the latent actions: from the model's metadata when its trainer recorded them, else 'a0'.."""
        names = self.world_model.metadata.get("action_meanings")
        if isinstance(names, (list, tuple)) and len(names) == self.num_actions:
            return [str(n) for n in names]
        return [f"a{i}" for i in range(self.num_actions)]
