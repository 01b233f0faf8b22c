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

from genie_gym.utils.gym_banner import import_gym_quietly

import_gym_quietly()  # before stable-baselines3, which imports gym and would print its banner

from stable_baselines3.common.vec_env import VecEnv  # noqa: E402
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn  # noqa: E402

from genie_gym.envs.genie_env import GenieEnv, keys_to_action  # noqa: E402
from genie_gym.envs.vector_env import GenieVectorEnv  # noqa: E402
from genie_gym.models.simulator import check_sampling  # noqa: E402

# Attributes `get_attr` / `set_attr` understand. They are shared by all worlds, so `set_attr` sets them for all.
_READABLE = ("render_mode", "max_episode_steps", "reward_fn", "observation_space", "action_space", "metadata",
             "spec", "num_actions", "world_model", "maskgit_steps", "maskgit_schedule", "temperature", "context_frames",
             "prompt_game", "prompt_levels", "prompt_mode", "prompt_data", "prompt_data_tail")
_WRITABLE = ("reward_fn", "max_episode_steps", "temperature", "maskgit_steps")


class GenieSB3VecEnv(VecEnv):
    """N Genie worlds with SB3's VecEnv API, built on `GenieVectorEnv` (same worlds, same seeds): a finished world
    is restarted at once, in the same step, as SB3 expects. Make-time arguments are `GenieEnv`'s plus `num_envs`."""

    def __init__(self, num_envs: int = 1, *, render_mode: str | None = None, **settings: Any):
        """`settings`: the fields of `WorldSettings`, as for `GenieEnv` (max_episode_steps defaults to 1000)."""
        if render_mode not in (None, "rgb_array"):
            raise gym.error.UnsupportedMode(f"GenieSB3VecEnv supports render_mode 'rgb_array' or None, got "
                                            f"{render_mode!r}")
        self.venv = GenieVectorEnv(num_envs, **settings)
        self.worlds = self.venv.worlds
        self._render_mode = render_mode
        self._actions: np.ndarray | None = None
        super().__init__(self.venv.num_envs, self.venv.single_observation_space, self.venv.single_action_space)

    def _world_infos(self, info: dict[str, Any], idx: Sequence[int]) -> list[dict[str, Any]]:
        """Gymnasium's vector info (arrays with `_key` masks) -> one dict per world in `idx`."""
        return [{k: info[k][i] for k in info if not k.startswith("_") and info.get(f"_{k}", np.ones(1))[i]}
                for i in idx]

    # --- VecEnv API ---------------------------------------------------------------------------------------------
    def reset(self) -> VecEnvObs:
        """Reset every world with the seeds of `seed()` and the options of `set_options()` (used once)."""
        prompts = [(o or {}).get("prompt") for o in self._options]
        levels = [(o or {}).get("level") for o in self._options]
        for o in self._options:
            self.worlds.check_options(o or None)
        if any(p is not None for p in prompts) and any(lv is not None for lv in levels):
            raise ValueError("set_options: give every world a 'prompt' or every world a 'level', not a mix")
        options = {"prompt": prompts} if any(p is not None for p in prompts) else \
            {"level": levels} if any(lv is not None for lv in levels) else None
        obs, info = self.venv.reset(seed=list(self._seeds), options=options)
        self.reset_infos = self._world_infos(info, range(self.num_envs))
        self._reset_seeds()
        self._reset_options()
        self._actions = None
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = self.worlds.check_actions(actions)  # a bad action batch raises here, nothing changes

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() without step_async(); call venv.step(actions)")
        if not self.worlds.was_reset_B.all():
            raise gym.error.ResetNeeded("call venv.reset() before venv.step(); the worlds have no start frames")
        actions, self._actions = self._actions, None
        obs_BHWC, rewards_B, terminated_B, truncated_B, info = self.venv.step(actions)
        infos = self._world_infos(info, range(self.num_envs))
        done_B = terminated_B | truncated_B
        done = np.flatnonzero(done_B)
        if len(done):
            for i in done:
                infos[i]["terminal_observation"] = obs_BHWC[i].copy()
                infos[i]["TimeLimit.truncated"] = bool(truncated_B[i] and not terminated_B[i])
            obs_BHWC, reset_info = self.venv.reset(options={"reset_mask": done_B})  # same step, SB3 semantics
            for i, world_info in zip(done, self._world_infos(reset_info, done), strict=True):
                self.reset_infos[i] = world_info
        return obs_BHWC, rewards_B.astype(np.float32), done_B, infos

    def close(self) -> None:
        self._actions = None
        self.venv.close()

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
            "maskgit_schedule": lambda: w.sim.maskgit_schedule,
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
        else:  # temperature or maskgit_steps: checked with the other sampling settings as they are
            sim = self.worlds.sim
            new = {"temperature": sim.temperature, "maskgit_steps": sim.maskgit_steps, attr_name: value}
            sim.maskgit_steps, _, sim.temperature = check_sampling(
                self.worlds.world_model, new["maskgit_steps"], sim.maskgit_schedule, new["temperature"],
                sim.precision)

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
