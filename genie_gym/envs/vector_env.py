"""`gym.make_vec("Genie-v0", num_envs=N)`: N worlds generated together, one batched model call per MaskGIT step.

Not N envs stepped in turn: one `Simulator` holds all N worlds' KV caches and samples every world's next frame in
the same forward passes. World i behaves exactly like `GenieEnv` reset with the same seed (seed + i for an int
seed, as in Gymnasium) and given the same actions.

Autoreset follows Gymnasium 1.x's `AutoresetMode.NEXT_STEP`: the step on which world i truncates returns its last
frame with `truncated[i] = True`; the *next* `step` ignores `actions[i]`, restarts world i from a new prompt (drawn
from its own seed sequence) and returns that start frame with reward 0, `terminated[i] = truncated[i] = False`, and
the reset's info (`prompt_source`). `reset(options={"reset_mask": mask})` restarts only the masked worlds.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from genie_gym.envs.genie_env import GenieEnv
from genie_gym.envs.prompts import PromptError
from genie_gym.envs.worlds import WorldBatch, WorldSettings, WorldsView


class GenieVectorEnv(WorldsView, VectorEnv):
    """N Genie worlds as one `gymnasium.vector.VectorEnv`. Make-time arguments are `GenieEnv`'s plus `num_envs`."""

    metadata = {
        "render_modes": ["rgb_array"],
        "render_fps": GenieEnv.metadata["render_fps"],
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(self, num_envs: int = 1, *, render_mode: str | None = None, render_scale: int = 1,
                 **settings: Any):
        """`settings`: the fields of `WorldSettings` (max_episode_steps defaults to 1000, as `gym.make_vec` passes)."""
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise gym.error.UnsupportedMode(f"GenieVectorEnv renders {self.metadata['render_modes']} (a tuple of "
                                            f"frames), got render_mode={render_mode!r}")
        if isinstance(render_scale, bool) or not isinstance(render_scale, (int, np.integer)) or render_scale < 1:
            raise ValueError(f"render_scale must be a positive int, got {render_scale!r}")
        self.worlds = WorldBatch(num_envs, WorldSettings.from_kwargs(settings))
        self.num_envs = self.worlds.num_worlds
        self.single_observation_space = self.worlds.single_observation_space()
        self.single_action_space = self.worlds.single_action_space()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)  # MultiDiscrete([A] * N)
        self.render_mode = render_mode
        self.render_scale = int(render_scale)
        self.max_episode_steps = self.worlds.max_episode_steps
        self._rngs: list[np.random.Generator | None] = [None] * self.num_envs
        self._autoreset_B = np.zeros(self.num_envs, dtype=bool)

    # --- reset --------------------------------------------------------------------------------------------------
    def _per_world_prompts(self, options: dict[str, Any], idx: np.ndarray) -> list:
        """Prompts for worlds `idx`: one prompt for all, or a list/tuple with one per world (all N)."""
        prompt, level = options.get("prompt"), options.get("level")
        if isinstance(prompt, (list, tuple)) or isinstance(level, (list, tuple)):
            values = prompt if isinstance(prompt, (list, tuple)) else level
            if len(values) != self.num_envs:
                raise PromptError(f"a list of prompts/levels needs one entry per world ({self.num_envs}), got "
                                  f"{len(values)}")
            if isinstance(prompt, (list, tuple)):
                return [self.worlds.prepare_prompt(prompt[i], None) for i in idx]
            return [self.worlds.prepare_prompt(None, level[i]) for i in idx]
        shared = self.worlds.prepare_prompt(prompt, level)
        return [shared] * len(idx)

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset all worlds (or those in `options["reset_mask"]`). `seed`: None, an int (world i gets seed + i) or
        a list of N ints/None. `options`: as `GenieEnv.reset`, where "prompt"/"level" may also be a list of N."""
        options = self.worlds.check_options(options, vector=True)
        mask = options.get("reset_mask")
        if mask is None:
            mask = np.ones(self.num_envs, dtype=bool)
        elif not (isinstance(mask, np.ndarray) and mask.dtype == np.bool_ and mask.shape == (self.num_envs,)
                  and mask.any()):
            raise ValueError(f"options['reset_mask'] must be a bool np.ndarray of shape ({self.num_envs},) with at "
                             f"least one True, got {mask!r}")
        if seed is None or isinstance(seed, (int, np.integer)):
            seeds = [None if seed is None else int(seed) + i for i in range(self.num_envs)]
        elif isinstance(seed, (list, tuple)) and len(seed) == self.num_envs:
            seeds = list(seed)
        else:
            raise ValueError(f"seed must be None, an int, or a list of {self.num_envs} ints/None, got {seed!r}")
        idx = np.flatnonzero(mask)
        prompts = self._per_world_prompts(options, idx)  # validates before any state changes
        for i in idx:
            if seeds[i] is not None or self._rngs[i] is None:
                self._rngs[i], _ = seeding.np_random(seeds[i])
        if seed is not None and not isinstance(seed, (list, tuple)):
            self._np_random, self._np_random_seed = seeding.np_random(int(seed))
        infos = self.worlds.reset_worlds(idx, [self._rngs[i] for i in idx], prompts)
        self._autoreset_B[idx] = False
        info: dict[str, Any] = {}
        for i, world_info in zip(idx, infos, strict=True):
            info = self._add_info(info, world_info, int(i))
        return self.worlds.obs_BHWC.copy(), info

    # --- step ---------------------------------------------------------------------------------------------------
    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self.worlds.was_reset_B.all():
            raise gym.error.ResetNeeded("call envs.reset() before envs.step(); the worlds have no start frames yet")
        actions_B = self.worlds.check_actions(actions)
        restart = np.flatnonzero(self._autoreset_B)
        probs_B2 = None
        if len(restart) < self.num_envs:  # all worlds restarting: no frame to generate this step
            obs_BHWC, rewards_B, terminated_B, truncated_B, probs_B2 = self.worlds.step(actions_B)
        else:
            obs_BHWC = self.worlds.obs_BHWC
            rewards_B = np.zeros(self.num_envs)
            terminated_B = np.zeros(self.num_envs, dtype=bool)
            truncated_B = np.zeros(self.num_envs, dtype=bool)
        info: dict[str, Any] = {}
        if probs_B2 is not None:
            for i in range(self.num_envs):
                if not self._autoreset_B[i]:
                    info = self._add_info(info, self.worlds.event_info(probs_B2, i), i)
        if len(restart):
            infos = self.worlds.reset_worlds(restart, [self._rngs[i] for i in restart], [None] * len(restart))
            obs_BHWC = self.worlds.obs_BHWC.copy()
            rewards_B[restart] = 0.0
            terminated_B[restart] = False
            truncated_B[restart] = False
            for i, world_info in zip(restart, infos, strict=True):
                info = self._add_info(info, world_info, int(i))
        self._autoreset_B = terminated_B | truncated_B
        return obs_BHWC.copy(), rewards_B, terminated_B.copy(), truncated_B.copy(), info

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; make_vec(..., render_mode='rgb_array')")
            return None
        s = self.render_scale
        return tuple(np.repeat(np.repeat(f, s, axis=0), s, axis=1) for f in self.worlds.obs_BHWC)
