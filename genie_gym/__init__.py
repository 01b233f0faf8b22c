"""genie-gym: Genie (Bruce et al., 2024) in PyTorch, as a Gymnasium environment.

Importing the package registers `Genie-v0` (gymnasium 1.x loads no plugins, so registration happens here).
"""

from __future__ import annotations

__version__ = "0.1.0"


def _register() -> None:
    import gymnasium as gym

    if "Genie-v0" not in gym.registry:
        gym.register(
            id="Genie-v0",
            entry_point="genie_gym.envs.genie_env:GenieEnv",
            vector_entry_point="genie_gym.envs.vector_env:GenieVectorEnv",
            # gymnasium's TimeLimit semantics: `gym.make` wraps the env in TimeLimit(1000) (override with
            # `gym.make(..., max_episode_steps=N)`); `gym.make_vec` passes the same limit to GenieVectorEnv.
            max_episode_steps=1000,
            disable_env_checker=False,
        )


_register()
