"""Stable-Baselines3 adapter: N Genie worlds as one SB3 `VecEnv` (SB3 cannot take a gymnasium `VectorEnv`).

    from stable_baselines3 import PPO
    from genie_gym.envs.sb3 import GenieSB3VecEnv
    venv = GenieSB3VecEnv(num_envs=8, reward_fn=my_reward)
    PPO("CnnPolicy", venv).learn(10_000)       # SB3 adds VecTransposeImage for the HWC uint8 frames itself

SB3 semantics: `step_wait` resets a finished world at once (same step) and returns its new start frame; the last
frame of the finished episode is in `infos[i]["terminal_observation"]`; `infos[i]["TimeLimit.truncated"]` is True
when the episode was cut by `max_episode_steps` rather than ended by the model's episode-end head. `seed(s)` seeds
world i with s + i at the next `reset()`, exactly as `GenieEnv.reset(seed=s + i)` would; `set_options({"prompt":
...})` likewise. All N worlds share one `Simulator`: one batched model call per MaskGIT step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from genie_gym.envs.genie_env import GenieEnv, keys_to_action
from genie_gym.envs.worlds import WorldBatch, WorldSettings

# Attributes `get_attr` / `set_attr` understand. They are shared by all worlds, so `set_attr` sets them for all.
_READABLE = ("render_mode", "max_episode_steps", "reward_fn", "observation_space", "action_space", "metadata",
             "spec", "num_actions", "world_model", "maskgit_steps", "temperature", "context_frames",
             "prompt_game", "prompt_levels", "prompt_mode")
_WRITABLE = ("reward_fn", "max_episode_steps", "temperature", "maskgit_steps")


class GenieSB3VecEnv(VecEnv):
    """N Genie worlds with SB3's VecEnv API. Make-time arguments are `GenieEnv`'s plus `num_envs`."""

    def __init__(self, num_envs: int = 1, *, render_mode: str | None = None, **settings: Any):
        """`settings`: the fields of `WorldSettings`, as for `GenieEnv` (max_episode_steps defaults to 1000)."""
        if render_mode not in (None, "rgb_array"):
            raise gym.error.UnsupportedMode(f"GenieSB3VecEnv supports render_mode 'rgb_array' or None, got "
                                            f"{render_mode!r}")
        self.worlds = WorldBatch(num_envs, WorldSettings.from_kwargs(settings))
        self._render_mode = render_mode
        self._rngs: list[np.random.Generator | None] = [None] * self.worlds.num_worlds
        self._actions: np.ndarray | None = None
        super().__init__(self.worlds.num_worlds, self.worlds.single_observation_space(),
                         self.worlds.single_action_space())

    # --- VecEnv API ---------------------------------------------------------------------------------------------
    def reset(self) -> VecEnvObs:
        """Reset every world with the seeds of `seed()` and the options of `set_options()` (used once)."""
        prompts = []
        for i in range(self.num_envs):
            options = self.worlds.check_options(self._options[i] or None)
            prompts.append(self.worlds.prepare_prompt(options.get("prompt"), options.get("level")))
        for i in range(self.num_envs):
            if self._seeds[i] is not None or self._rngs[i] is None:
                self._rngs[i], _ = seeding.np_random(self._seeds[i])
        self.reset_infos = self.worlds.reset_worlds(range(self.num_envs), self._rngs, prompts)
        self._reset_seeds()
        self._reset_options()
        self._actions = None
        return self.worlds.obs_BHWC.copy()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = self.worlds.check_actions(actions)  # a bad action batch raises here, nothing changes

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() without step_async(actions); call venv.step(actions)")
        if not self.worlds.was_reset_B.all():
            raise gym.error.ResetNeeded("call venv.reset() before venv.step(); the worlds have no start frames")
        actions, self._actions = self._actions, None
        obs_BHWC, rewards_B, terminated_B, truncated_B, probs_B2 = self.worlds.step(actions)
        infos: list[dict[str, Any]] = [self.worlds.event_info(probs_B2, i) for i in range(self.num_envs)]
        done = np.flatnonzero(terminated_B | truncated_B)
        if len(done):
            for i in done:
                infos[i]["terminal_observation"] = obs_BHWC[i].copy()
                infos[i]["TimeLimit.truncated"] = bool(truncated_B[i] and not terminated_B[i])
            reset_infos = self.worlds.reset_worlds(done, [self._rngs[i] for i in done], [None] * len(done))
            for i, info in zip(done, reset_infos, strict=True):
                self.reset_infos[i] = info
            obs_BHWC = self.worlds.obs_BHWC.copy()
        return obs_BHWC, rewards_B.astype(np.float32), terminated_B | truncated_B, infos

    def close(self) -> None:
        self._actions = None

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [frame.copy() for frame in self.worlds.obs_BHWC]

    # --- attributes shared by all worlds ------------------------------------------------------------------------
    @property
    def render_mode(self) -> str | None:  # SB3's base class reads this through get_attr("render_mode")
        return self._render_mode

    @render_mode.setter
    def render_mode(self, value: str | None) -> None:
        self._render_mode = value

    def _attr(self, name: str) -> Any:
        w = self.worlds
        values = {
            "render_mode": lambda: self._render_mode,
            "max_episode_steps": lambda: w.max_episode_steps,
            "reward_fn": lambda: w.reward_fn,
            "observation_space": w.single_observation_space,
            "action_space": w.single_action_space,
            "metadata": lambda: dict(GenieEnv.metadata),
            "spec": lambda: None,
            "num_actions": lambda: w.num_actions,
            "world_model": lambda: w.world_model,
            "maskgit_steps": lambda: w.sim.maskgit_steps,
            "temperature": lambda: w.sim.temperature,
            "context_frames": lambda: w.sim.context_frames,
            "prompt_game": lambda: w.prompt_game,
            "prompt_levels": lambda: w.prompt_levels,
            "prompt_mode": lambda: w.prompt_mode,
        }
        if name not in values:
            raise AttributeError(f"Genie worlds have no attribute {name!r}; readable: {list(_READABLE)}")
        return values[name]()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [self._attr(attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        if attr_name not in _WRITABLE:
            raise AttributeError(f"cannot set {attr_name!r} on Genie worlds; settable: {list(_WRITABLE)}")
        if sorted(self._get_indices(indices)) != list(range(self.num_envs)):
            raise ValueError(f"{attr_name!r} is shared by all {self.num_envs} worlds (one batched model); set it "
                             "with indices=None")
        if attr_name == "reward_fn":
            if value is not None and not callable(value):
                raise ValueError("reward_fn must be callable as reward_fn(obs, action, next_obs) -> float, or None")
            self.worlds.reward_fn = value
        elif attr_name == "max_episode_steps":
            if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
                raise ValueError(f"max_episode_steps must be a positive int or None, got {value!r}")
            self.worlds.max_episode_steps = None if value is None else int(value)
        elif attr_name == "temperature":
            if not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise ValueError(f"temperature must be a finite float >= 0, got {value!r}")
            self.worlds.sim.temperature = float(value)
        else:
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"maskgit_steps must be an int >= 1, got {value!r}")
            self.worlds.sim.maskgit_steps = int(value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        """Supported: `get_action_meanings`, `get_keys_to_action`, `render` (per world)."""
        idx = list(self._get_indices(indices))
        if method_name == "get_action_meanings":
            return [self.worlds.action_meanings() for _ in idx]
        if method_name == "get_keys_to_action":
            return [keys_to_action(self.worlds.action_meanings()) for _ in idx]
        if method_name == "render":
            return [self.worlds.obs_BHWC[i].copy() for i in idx]
        raise AttributeError(f"Genie worlds have no method {method_name!r}; supported: get_action_meanings, "
                             "get_keys_to_action, render")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]
