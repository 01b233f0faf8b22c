"""`Genie-v0`: a generated world as a Gymnasium environment.

    env = gym.make("Genie-v0")                     # the shipped world model, a CoinRun start frame from the seed
    obs, info = env.reset(seed=0)                  # obs: uint8 (64, 64, 3); info["prompt_source"]
    obs, info = env.reset(options={"prompt": "photo.jpg"})   # or an np.ndarray / PIL image of any size
    obs, reward, terminated, truncated, info = env.step(3)   # one of the 8 latent actions

Each step generates the next frame with MaskGIT (`maskgit_steps` passes of the dynamics model over the sliding
context of `context_frames` frames) and decodes it with the tokenizer. `reset` returns the prompt frame itself
(converted to 64x64 RGB, see `genie_gym.envs.prompts`), not its tokenizer reconstruction. The world never ends
by itself unless the model has reward / episode-end heads (`genie-gym train --phase heads`): then `reward` and
`terminated` are the heads' thresholded predictions for the generated frame (deterministic: the same frames give the
same rewards), `info` holds their probabilities (`terminal_prob`, `reward_prob`), and `reward_fn` still replaces the
reward. Heads trained with a horizon k > 1 (`config.heads.horizon`) fire on the k frames before an event, so an
episode may end up to k - 1 frames before the real game's would; where every reward of the training data ended its
episode (CoinRun's coin, `config.heads.reward_ends_episode`), a predicted reward ends the episode too. Without heads
`terminated` is always False. Time limits truncate, as in gymnasium's own environments:
`gym.make("Genie-v0")` wraps the env in `TimeLimit(1000)` (the registered `spec.max_episode_steps`;
`gym.make(..., max_episode_steps=N)` changes it), while a `GenieEnv(...)` built directly truncates only when given
`max_episode_steps`. The reward is `reward_fn(obs, action, next_obs)` (0.0 without one). Same seed and same actions
give the same frames.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from genie_gym.envs.worlds import InvalidActionError, WorldBatch, WorldSettings, WorldsView

# Keyboard layout for `get_keys_to_action` / `genie-gym play`: keys 1..8 always select latent actions 0..7; the
# arrow keys go to the actions the model's metadata names left/right/up(jump)/down, else to actions 0..3; z x c v
# go to actions 4..7. Latent actions have no fixed meaning: the model card / action strip says what each one does.
DIGIT_KEYS = "12345678"
EXTRA_KEYS = "zxcv"


def keys_to_action(action_meanings: list[str]) -> dict[tuple[int, ...], int]:
    """Key-code tuples -> latent action, in `gymnasium.utils.play.play`'s format (pygame key constants)."""
    import pygame

    A = len(action_meanings)
    mapping: dict[tuple[int, ...], int] = {}
    for a, ch in enumerate(DIGIT_KEYS[:A]):
        mapping[(ord(ch),)] = a
    arrows = {"left": pygame.K_LEFT, "right": pygame.K_RIGHT, "up": pygame.K_UP, "down": pygame.K_DOWN}
    lower = [m.lower() for m in action_meanings]
    for i, (word, key) in enumerate(arrows.items()):
        named = [a for a, m in enumerate(lower) if word in m or (word == "up" and "jump" in m)]
        mapping[(key,)] = named[0] if named else min(i, A - 1)
    for i, ch in enumerate(EXTRA_KEYS):
        if 4 + i < A:
            mapping[(ord(ch),)] = 4 + i
    return mapping


def key_legend(action_meanings: list[str]) -> list[str]:
    """One line per latent action: the keys that select it and its name."""
    import pygame

    by_action: dict[int, list[str]] = {a: [] for a in range(len(action_meanings))}
    for keys, a in keys_to_action(action_meanings).items():
        by_action[a].append(pygame.key.name(keys[0]))
    return [f"{'/'.join(by_action[a]):<12} -> action {a} ({name})" for a, name in enumerate(action_meanings)]


class GenieEnv(WorldsView, gym.Env[np.ndarray, np.int64]):
    """One generated world. See the module docstring; make-time arguments below.

    Make-time arguments: `render_mode` (None, "rgb_array": `render()` returns the frame, or "human": a pygame
    window), `render_scale` (integer upscaling of rendered frames, nearest-neighbour; observations stay 64x64), and
    every field of `genie_gym.envs.worlds.WorldSettings` (checkpoint, maskgit_steps, temperature, context_frames,
    maskgit_schedule, device, reward_fn, max_episode_steps, prompt_game, prompt_levels, prompt_mode, prompt_data,
    prompt_data_tail, use_cache,
    precision, compile, learned_rewards). A
    `GenieEnv` built directly never truncates unless given `max_episode_steps`; `gym.make` adds TimeLimit(1000).
    """

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 10}

    def __init__(self, *, render_mode: str | None = None, render_scale: int = 8, **settings: Any):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise gym.error.UnsupportedMode(f"render_mode={render_mode!r} is not supported; use one of "
                                            f"{self.metadata['render_modes']} or None")
        if isinstance(render_scale, bool) or not isinstance(render_scale, (int, np.integer)) or render_scale < 1:
            raise ValueError(f"render_scale must be a positive int, got {render_scale!r}")
        self.worlds = WorldBatch(1, WorldSettings.from_kwargs({"max_episode_steps": None, **settings}))
        self.render_mode = render_mode
        self.render_scale = int(render_scale)
        self.observation_space = self.worlds.single_observation_space()
        self.action_space = self.worlds.single_action_space()
        self.max_episode_steps = self.worlds.max_episode_steps
        self.prompt_source: str | None = None
        self._window = None
        self._clock = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a world. `options`: {"prompt": path | "procgen:GAME:level=N" | np.ndarray | PIL image} or
        {"level": N} (a level of `prompt_game`); without either, a level drawn from the seed."""
        options = self.worlds.check_options(options)
        prompt = self.worlds.prepare_prompt(options.get("prompt"), options.get("level"))  # may raise: no change yet
        super().reset(seed=seed)
        (info,) = self.worlds.reset_worlds([0], [self.np_random], [prompt])
        self.prompt_source = info["prompt_source"]
        if self.render_mode == "human":
            self.render()
        return self.worlds.obs_BHWC[0].copy(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.worlds.was_reset_B[0]:
            raise gym.error.ResetNeeded("call env.reset() before env.step(); the world has no start frame yet")
        if isinstance(action, (bool, np.bool_)):
            raise InvalidActionError(f"action must be an int in [0, {self.action_space.n}), got bool {action!r}")
        arr = np.asarray(action)
        if arr.shape not in ((), (1,)):
            raise InvalidActionError(f"GenieEnv takes one action (an int in [0, {self.action_space.n})), got "
                                     f"shape {arr.shape}; for batches use gym.make_vec('Genie-v0', num_envs=N)")
        actions_B = self.worlds.check_actions(arr.reshape(1))
        obs_BHWC, rewards_B, terminated_B, truncated_B, probs_B2 = self.worlds.step(actions_B)
        if self.render_mode == "human":
            self.render()
        return (obs_BHWC[0], float(rewards_B[0]), bool(terminated_B[0]), bool(truncated_B[0]),
                self.worlds.event_info(probs_B2, 0))

    # --- rendering ----------------------------------------------------------------------------------------------
    def _scaled_frame(self) -> np.ndarray:
        frame = self.worlds.obs_BHWC[0]
        if self.render_scale == 1:
            return frame.copy()
        return np.repeat(np.repeat(frame, self.render_scale, axis=0), self.render_scale, axis=1)

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; make the env with render_mode='rgb_array' or "
                            "'human'")
            return None
        if self.render_mode == "rgb_array":
            return self._scaled_frame()
        self._render_human()
        return None

    def _render_human(self) -> None:
        try:
            import pygame
        except ImportError as e:  # pragma: no cover - pygame is a dependency
            raise gym.error.DependencyNotInstalled("render_mode='human' needs pygame: pip install pygame") from e
        frame = self._scaled_frame()
        if self._window is None:
            pygame.display.init()  # the window only: no audio init
            pygame.display.set_caption("Genie-v0")
            self._window = pygame.display.set_mode((frame.shape[1], frame.shape[0]))
            self._clock = pygame.time.Clock()
        surf = pygame.surfarray.make_surface(frame.swapaxes(0, 1))
        self._window.blit(surf, (0, 0))
        pygame.event.pump()
        pygame.display.flip()
        self._clock.tick(self.metadata["render_fps"])

    def close(self) -> None:
        if self._window is not None:
            import pygame

            pygame.display.quit()
            pygame.quit()
            self._window = None
        super().close()

    # --- keyboard -----------------------------------------------------------------------------------------------
    def get_action_meanings(self) -> list[str]:
        """Names of the 8 latent actions (from the model file's metadata if its trainer named them)."""
        return self.worlds.action_meanings()

    def get_keys_to_action(self) -> dict[tuple[int, ...], int]:
        """For `gymnasium.utils.play.play(env, keys_to_action=env.get_keys_to_action(), noop=0)`: keys 1..8 pick
        latent actions 0..7; arrows pick the actions named left/right/up/down (else 0..3); z x c v pick 4..7."""
        return keys_to_action(self.get_action_meanings())
