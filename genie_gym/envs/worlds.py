"""What the single env, the gymnasium vector env and the SB3 adapter share: settings, model loading, prompts,
per-world bookkeeping (episode length, reward) around one batched `Simulator`.

Seeding is per world and follows Gymnasium exactly: a world reset with seed s uses `gymnasium.utils.seeding.np_random
(s)`; from that generator it draws, in this order, the seed of the world's MaskGIT `torch.Generator` and (when no
prompt is given) the Procgen level of its start frame, or with `prompt_data` the recorded frame. So
`GenieEnv.reset(seed=s)` and world i of a vector env reset with seed s produce the same frames for the same actions.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from genie_gym.envs.procgen_prompt import check_procgen_args, procgen_source, procgen_start_frame
from genie_gym.envs.prompts import PromptError, ReplayPrompts, load_prompt
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


@dataclass
class WorldSettings:
    """Make-time settings of Genie worlds, shared by `GenieEnv`, `GenieVectorEnv` and `GenieSB3VecEnv` (each takes
    them as keyword arguments: `gym.make("Genie-v0", maskgit_steps=8)`)."""

    checkpoint: str | os.PathLike | WorldModel | None = None
    """world-model file (default: the model shipped in `genie_gym/assets/`) or a loaded `WorldModel`"""
    maskgit_steps: int | None = None
    """MaskGIT passes per frame (default: the model's `SamplingConfig`; Genie: 25)"""
    temperature: float | None = None
    """sampling temperature, 0 = argmax (default: the model's; Genie: 1.0)"""
    context_frames: int | None = None
    """frames the model sees, the new one included (default: the model's; Genie: 16)"""
    maskgit_schedule: str | None = None
    """"frame" (MaskGIT over the whole frame, the paper) or "cell" (every pass decides a share of each grid cell's
    tokens: sharper long rollouts, needs maskgit_steps <= tokens per cell; default: the model's)"""
    device: str = "cpu"
    """"cpu", "cuda" or "auto" (the device the model runs on)"""
    reward_fn: RewardFn | None = None
    """`reward_fn(obs, action, next_obs) -> float`; default: reward 0.0"""
    max_episode_steps: int | None = 1000
    """truncate after this many steps (None: never)"""
    prompt_game: str = "coinrun"
    """default prompts: the start frame of this Procgen game..."""
    prompt_levels: tuple[int, int] = (0, 10_000)
    """...at a level drawn uniformly from range(first, end) by the reset seed..."""
    prompt_mode: str = "hard"
    """...in this distribution mode ("hard", as the paper's CoinRun data)"""
    prompt_data: str | os.PathLike | None = None
    """default prompts from a recorded dataset instead (`genie-gym data`): a frame of its train split drawn by the
    reset seed (imagination from replayed states, as IRIS and DreamerV3 start it)"""
    prompt_data_tail: int | None = None
    """with prompt_data: only the last N frames of its episodes that ended on the reward (start near the goal)"""
    use_cache: bool = True
    """keep past frames' keys/values (False: recompute the context window every MaskGIT pass)"""
    precision: str = "float32"
    """precision: "float32" or "bfloat16" (autocast: faster matmuls, frames differ slightly)"""
    compile: bool = False
    """torch.compile the per-frame model calls (same frames; warns and runs eager where it cannot compile)"""
    learned_rewards: bool | None = None
    """reward and `terminated` from the model's event heads (None: when the model has them; True: required, an
    error without them; False: off). A `reward_fn` replaces the learned reward, never the learned episode end."""

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> WorldSettings:
        """Settings from make-time keyword arguments; an unknown name is a `ConfigError` listing the known ones."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(kwargs) - set(known))
        if unknown:
            raise ConfigError(f"unknown make-time argument(s) {unknown} for Genie-v0; it takes {known} (and "
                              "render_mode, render_scale, num_envs where they apply)")
        return cls(**kwargs)


_WARNED_NO_HEADS = False


def _warn_no_heads_once() -> None:
    global _WARNED_NO_HEADS
    if not _WARNED_NO_HEADS:
        _WARNED_NO_HEADS = True
        warnings.warn("this world model has no reward / episode-end heads (`genie-gym train --phase heads` trains "
                      "them): reward is 0.0 and terminated is False unless you pass reward_fn", stacklevel=4)


class WorldBatch:
    """B worlds: a `Simulator` plus episode bookkeeping. Validates every argument before touching any state, so
    that an error raised by a bad argument leaves the worlds exactly as they were."""

    def __init__(self, num_worlds: int, settings: WorldSettings):
        max_episode_steps, reward_fn = settings.max_episode_steps, settings.reward_fn
        prompt_game, prompt_levels, prompt_mode = settings.prompt_game, settings.prompt_levels, settings.prompt_mode
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
        if settings.prompt_data_tail is not None and settings.prompt_data is None:
            raise ConfigError("prompt_data_tail selects frames of prompt_data: pass prompt_data=DATASET_DIR too")
        if settings.learned_rewards not in (None, True, False):
            raise ConfigError(f"learned_rewards must be None, True or False, got {settings.learned_rewards!r}")
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.world_model = load_world_model(settings.checkpoint, self.device)
        has_heads = self.world_model.heads is not None
        if settings.learned_rewards and not has_heads:
            raise ConfigError("learned_rewards=True, but this world model has no reward / episode-end heads; train "
                              "them with `genie-gym train --phase heads --model FILE --data DIR`, or pass "
                              "learned_rewards=None")
        self.learned = has_heads and settings.learned_rewards is not False
        if settings.learned_rewards is None and not has_heads and reward_fn is None:
            _warn_no_heads_once()
        self.sim = Simulator(self.world_model, int(num_worlds), settings.maskgit_steps, settings.temperature,
                             settings.context_frames, self.device, use_cache=settings.use_cache,
                             precision=settings.precision, compile=settings.compile,
                             maskgit_schedule=settings.maskgit_schedule)
        self.num_worlds = int(num_worlds)
        self.num_actions = self.world_model.num_actions
        self.frame_shape = (self.world_model.image_size, self.world_model.image_size, 3)
        self.reward_fn = reward_fn
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        self.prompt_game, self.prompt_levels, self.prompt_mode = prompt_game, (lo, hi), prompt_mode
        self.replay = None if settings.prompt_data is None else ReplayPrompts(
            settings.prompt_data, settings.prompt_data_tail, self.world_model.image_size,
            bool(self.world_model.metadata.get("paint_vel_info", False)))
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
            if prompt is None and self.replay is not None:
                frame, source = self.replay.draw(rng)
            elif prompt is None or isinstance(prompt, int):
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

    def step(self, actions_B: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Advance every world: (next_obs_BHWC, rewards_B float64, terminated_B, truncated_B, event_probs_B2 or
        None). With learned rewards, an event happens when its probability reaches `heads.threshold`: the same
        frames give the same rewards and episode ends. Actions already checked."""
        prev_BHWC = self.obs_BHWC.copy() if self.reward_fn is not None else None
        self.obs_BHWC[:] = self.sim.step(actions_B)
        self.elapsed_B += 1
        rewards_B = np.zeros(self.num_worlds, dtype=np.float64)
        terminated_B = np.zeros(self.num_worlds, dtype=bool)
        probs_B2 = self.sim.event_probs() if self.learned else None
        if probs_B2 is not None:
            heads = self.world_model.config.heads
            rewarded_B = probs_B2[:, 1] >= heads.threshold
            terminated_B = (probs_B2[:, 0] >= heads.threshold) | (rewarded_B & heads.reward_ends_episode)
            rewards_B = np.where(rewarded_B, heads.reward_value, 0.0)
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
            truncated_B = (self.elapsed_B >= self.max_episode_steps) & ~terminated_B
        return self.obs_BHWC.copy(), rewards_B, terminated_B, truncated_B, probs_B2

    @staticmethod
    def event_info(probs_B2: np.ndarray | None, i: int) -> dict[str, float]:
        """World i's `info` entries from the event heads (empty without them)."""
        if probs_B2 is None:
            return {}
        return {"terminal_prob": float(probs_B2[i, 0]), "reward_prob": float(probs_B2[i, 1])}

    # --- keyboard -----------------------------------------------------------------------------------------------
    def action_meanings(self) -> list[str]:
        """Names of the latent actions: from the model's metadata when its trainer recorded them, else 'a0'.."""
        names = self.world_model.metadata.get("action_meanings")
        if isinstance(names, (list, tuple)) and len(names) == self.num_actions:
            return [str(n) for n in names]
        return [f"a{i}" for i in range(self.num_actions)]


class WorldsView:
    """What every env class (single, vector, SB3) exposes of the `WorldBatch` it holds as `self.worlds`."""

    worlds: WorldBatch

    @property
    def world_model(self) -> WorldModel:
        return self.worlds.world_model

    @property
    def simulator(self) -> Simulator:
        return self.worlds.sim
