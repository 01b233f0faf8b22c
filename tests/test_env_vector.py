"""`gym.make_vec("Genie-v0")` (batched, NEXT_STEP autoreset) and the stable-baselines3 VecEnv adapter."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import genie_gym  # noqa: F401  (registers Genie-v0)
from genie_gym.envs.genie_env import GenieEnv
from genie_gym.envs.sb3 import GenieSB3VecEnv
from genie_gym.envs.vector_env import GenieVectorEnv
from genie_gym.errors import ConfigError

LEVELS = (0, 5)
N = 3


@pytest.fixture(scope="module")
def ckpt(tiny_model_file) -> str:
    return str(tiny_model_file)


def _single_env_rollout(ckpt: str, seed: int, actions: np.ndarray, max_steps: int) -> list[np.ndarray]:
    """What one `GenieEnv` shows under NEXT_STEP autoreset semantics (reset without seed after truncation)."""
    env = GenieEnv(checkpoint=ckpt, prompt_levels=LEVELS, max_episode_steps=max_steps)
    obs, _ = env.reset(seed=seed)
    frames, restart = [obs], False
    for a in actions:
        if restart:
            obs, _ = env.reset()
            restart = False
        else:
            obs, _, _, restart, _ = env.step(int(a))
        frames.append(obs)
    return frames


def test_make_vec_is_one_batched_env_with_proper_spaces(ckpt):
    envs = gym.make_vec("Genie-v0", num_envs=N, checkpoint=ckpt, prompt_levels=LEVELS)
    assert isinstance(envs.unwrapped, GenieVectorEnv)
    assert envs.num_envs == N and envs.unwrapped.simulator.num_worlds == N  # one simulator for all worlds
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert envs.single_action_space == gym.spaces.Discrete(8)
    assert envs.action_space == gym.spaces.MultiDiscrete([8] * N)
    assert envs.single_observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert envs.observation_space.shape == (N, 64, 64, 3)
    obs, info = envs.reset(seed=0)
    assert obs.shape == (N, 64, 64, 3) and obs.dtype == np.uint8
    assert info["_prompt_source"].all() and len(info["prompt_source"]) == N
    obs, rew, term, trunc, info = envs.step(envs.action_space.sample())
    assert envs.observation_space.contains(obs)
    assert rew.shape == (N,) and term.dtype == np.bool_ and trunc.dtype == np.bool_ and not term.any()
    envs.close()


def test_vector_env_equals_single_envs_with_same_seeds_through_autoreset(ckpt):
    max_steps, seed = 3, 100
    actions = np.random.default_rng(0).integers(0, 8, (9, N))
    envs = GenieVectorEnv(N, checkpoint=ckpt, prompt_levels=LEVELS, max_episode_steps=max_steps)
    obs, _ = envs.reset(seed=seed)
    vec_frames, truncs, restarted = [obs], [], []
    for a in actions:
        obs, rew, term, trunc, info = envs.step(a)
        vec_frames.append(obs)
        truncs.append(trunc.copy())
        restarted.append(info.get("_prompt_source", np.zeros(N, bool)).copy())
    # NEXT_STEP: truncated on steps 3 and 7, the following step (4 and 8) restarts with a new prompt
    assert [t.all() for t in truncs] == [False, False, True, False, False, False, True, False, False]
    assert [r.all() for r in restarted] == [False, False, False, True, False, False, False, True, False]
    for i in range(N):
        single = _single_env_rollout(ckpt, seed + i, actions[:, i], max_steps)
        for t, frame in enumerate(single):
            # other batch shapes: pixels within 1 of 255 (rounding of the batched conv decoder), rarely off at all
            np.testing.assert_allclose(vec_frames[t][i].astype(np.int16), frame.astype(np.int16), atol=1, rtol=0,
                                       err_msg=f"world {i} frame {t}")
            assert (vec_frames[t][i] != frame).mean() < 1e-3


def test_partial_reset_mask_and_per_world_prompts(ckpt):
    envs = GenieVectorEnv(N, checkpoint=ckpt, prompt_levels=LEVELS)
    prompts = [np.full((64, 64, 3), v, np.uint8) for v in (10, 120, 240)]
    obs, info = envs.reset(seed=1, options={"prompt": prompts})
    np.testing.assert_array_equal(obs, np.stack(prompts))
    assert list(info["prompt_source"]) == ["array"] * N
    stepped, *_ = envs.step(np.array([1, 2, 3]))
    mask = np.array([False, True, False])
    obs, info = envs.reset(options={"reset_mask": mask, "level": 2})
    assert list(info["_prompt_source"]) == [False, True, False]
    np.testing.assert_array_equal(obs[0], stepped[0])
    np.testing.assert_array_equal(obs[2], stepped[2])
    assert info["prompt_source"][1] == "procgen:coinrun:level=2"


def test_vector_bad_input(ckpt):
    for n in (0, -2):
        with pytest.raises(ConfigError, match="num_envs"):
            gym.make_vec("Genie-v0", num_envs=n, checkpoint=ckpt)
    envs = GenieVectorEnv(2, checkpoint=ckpt, prompt_levels=LEVELS)
    with pytest.raises(gym.error.ResetNeeded):
        envs.step(np.array([0, 0]))
    envs.reset(seed=0)
    for bad in (np.array([0.0, 1.0]), np.array([0, 1, 2]), np.array([0, 8]), np.array([[0, 1]]), [0, -1]):
        with pytest.raises(gym.error.InvalidAction):
            envs.step(bad)
    with pytest.raises(ValueError, match="one entry per world"):
        envs.reset(options={"prompt": [np.zeros((8, 8, 3), np.uint8)]})
    assert envs.step(np.array([0, 7]))[0].shape == (2, 64, 64, 3)  # still usable


# --- stable-baselines3 ----------------------------------------------------------------------------------------------
def test_sb3_adapter_semantics(ckpt):
    venv = GenieSB3VecEnv(2, checkpoint=ckpt, prompt_levels=LEVELS, max_episode_steps=2,
                          reward_fn=lambda o, a, n: float(a == 3))
    venv.seed(7)
    obs = venv.reset()
    assert obs.shape == (2, 64, 64, 3) and obs.dtype == np.uint8
    single = GenieEnv(checkpoint=ckpt, prompt_levels=LEVELS)
    np.testing.assert_array_equal(obs[1], single.reset(seed=8)[0])  # seed() gives world i seed + i
    obs, rew, done, infos = venv.step(np.array([3, 0]))
    assert rew.dtype == np.float32 and list(rew) == [1.0, 0.0] and not done.any()
    last = obs.copy()
    obs, rew, done, infos = venv.step(np.array([1, 1]))
    assert done.all()
    for i in range(2):
        assert infos[i]["TimeLimit.truncated"] is True
        assert infos[i]["terminal_observation"].shape == (64, 64, 3)
        assert not np.array_equal(infos[i]["terminal_observation"], last[i])
        assert venv.reset_infos[i]["prompt_source"].startswith("procgen:coinrun:level=")
        assert not np.array_equal(obs[i], infos[i]["terminal_observation"])  # already the next episode's start
    assert venv.get_attr("max_episode_steps") == [2, 2]
    assert venv.get_attr("render_mode", indices=[1]) == [None]
    venv.set_attr("max_episode_steps", 5)
    assert venv.worlds.max_episode_steps == 5
    with pytest.raises(ValueError, match="shared"):
        venv.set_attr("temperature", 0.5, indices=[0])
    with pytest.raises(AttributeError):
        venv.get_attr("no_such_attr")
    assert venv.get_attr("maskgit_schedule") == ["frame", "frame"]  # the tiny model's default
    cell = GenieSB3VecEnv(1, checkpoint=ckpt, prompt_levels=LEVELS, maskgit_schedule="cell", maskgit_steps=2)
    with pytest.raises(ValueError, match=r"maskgit_steps must be 1\.\.2"):  # tiny: 2 tokens per grid cell
        cell.set_attr("maskgit_steps", 3)
    assert venv.env_is_wrapped(gym.Wrapper) == [False, False]
    assert len(venv.env_method("get_action_meanings")[0]) == 8
    with pytest.raises(gym.error.InvalidAction):
        venv.step(np.array([0, 9]))
    venv.step(np.array([0, 1]))  # still usable


def test_sb3_ppo_learns_a_reward_it_can_learn(ckpt):
    """PPO through the adapter on a reward for pressing latent action 3: its probability must rise from ~1/8."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecTransposeImage

    venv = GenieSB3VecEnv(2, checkpoint=ckpt, prompt_levels=LEVELS, max_episode_steps=20,
                          reward_fn=lambda o, a, n: float(a == 3))
    model = PPO("CnnPolicy", venv, n_steps=64, batch_size=64, n_epochs=4, learning_rate=1e-3, seed=0, device="cpu",
                verbose=0)
    assert isinstance(model.get_env(), VecTransposeImage)  # SB3 saw an HWC uint8 image space

    def p_rewarded() -> float:
        obs_t, _ = model.policy.obs_to_tensor(venv.reset())
        with torch.no_grad():
            return float(model.policy.get_distribution(obs_t).distribution.probs[:, 3].mean())

    before = p_rewarded()
    model.learn(total_timesteps=512)
    assert model.num_timesteps >= 512
    assert before < 0.2 and p_rewarded() > 0.4, (before, p_rewarded())  # measured: 0.12 -> 0.68
