"""Agents on real Procgen and in the dream: PPO expert, BC, latent BC, dream PPO and transfer (see agents/README.md)."""

from genie_gym.utils.gym_banner import import_gym_quietly

import_gym_quietly()  # the agents import stable-baselines3 and procgen, which import gym and its banner
