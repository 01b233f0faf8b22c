"""PPO inside the dream: stable-baselines3 PPO on Genie-v0 worlds, rewarded and ended by the world model's heads.

    python -m agents.dream_ppo --world-model runs/v1/world_model.pt --total-timesteps 200000 --out runs/dream_ppo

The agent acts in the world model's latent actions (Discrete(8)); every episode starts from the start frame of a
Procgen level drawn from `--prompt-levels` (training levels: the held-out ones stay for the transfer test), or with
`--prompt-data DIR` from a frame of a recorded dataset's train split (`--prompt-data-tail N`: one of the last N
frames of an episode that reached the coin, so that the sparse learned reward is found at all), and ends when the
model's episode-end head fires or after `--max-episode-steps`. Rewards and episode ends come from the heads
(`genie-gym train --phase heads`); a model without them is refused. Checkpoints, TensorBoard logs, progress and
`--resume` are those of `agents.ppo_expert` (same PPO code, another environment). Turning the latent actions into
real CoinRun actions is `agents.dream_transfer`'s job (table D of the latent-BC protocol).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from agents.ppo_expert import PPOSettings, train_ppo


@dataclass
class Args(PPOSettings):
    """PPO on Genie-v0 (the learned reward and episode end), with `agents.ppo_expert`'s PPO settings."""

    world_model: str | None = None
    """world-model file with reward / episode-end heads (default: the shipped model)"""
    total_timesteps: int = 200_000
    """dream frames to train for"""
    num_envs: int = 16
    """Genie worlds stepped together (one batched model call per MaskGIT step)"""
    n_steps: int = 128
    """rollout length per world per update"""
    prompt_levels: tuple[int, int] = (0, 10_000)
    """start frames from Procgen CoinRun levels in range(first, end) (the world model's training levels)"""
    prompt_mode: str = "hard"
    """Procgen distribution mode of the start frames (the world model's data: hard)"""
    prompt_data: str | None = None
    """start frames from this recorded dataset's train split instead (`genie-gym data`; replayed states)"""
    prompt_data_tail: int | None = None
    """with --prompt-data: only the last N frames of episodes that reached the coin (start near the reward)"""
    max_episode_steps: int = 500
    """cut a dream episode after this many steps (a world that never ends its episodes still resets)"""
    maskgit_steps: int | None = None
    """MaskGIT steps per dream frame (default: the model's)"""
    maskgit_schedule: Literal["frame", "cell"] | None = None
    """frame or cell (see Genie-v0's maskgit_schedule; default: the model's)"""
    precision: str = "float32"
    """Genie-v0 generation precision: float32 or bfloat16"""
    out: str = "runs/dream_ppo"
    """output directory: checkpoints/, tb/ (TensorBoard), final.zip, train_info.json, progress.json"""
    checkpoint_every: int = 50_000
    """save a checkpoint every this many dream frames"""


def make_venv(args: Args, seed: int | None = None) -> Any:
    """The dream: `args.num_envs` Genie-v0 worlds with learned rewards and ends, seeded `seed` (default args.seed)."""
    from genie_gym.envs.sb3 import GenieSB3VecEnv

    venv = GenieSB3VecEnv(args.num_envs, checkpoint=args.world_model, learned_rewards=True,
                          prompt_levels=tuple(args.prompt_levels), prompt_mode=args.prompt_mode,
                          prompt_data=args.prompt_data, prompt_data_tail=args.prompt_data_tail,
                          max_episode_steps=args.max_episode_steps, maskgit_steps=args.maskgit_steps,
                          maskgit_schedule=args.maskgit_schedule,
                          precision=args.precision, device=args.device if args.device != "auto" else "cpu")
    venv.seed(args.seed if seed is None else seed)
    return venv


def main(args: Args) -> None:
    train_ppo(args, make_venv(args), export=False)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
