"""Genie-v0 as a Gymnasium env: checker, spaces, determinism, prompts, rendering, keyboard map, bad input."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from PIL import Image

import genie_gym  # noqa: F401  (registers Genie-v0)
from genie_gym.config import get_preset
from genie_gym.envs.genie_env import GenieEnv
from genie_gym.envs.prompts import PromptError, draw_sketch, load_prompt, sketch_path
from genie_gym.errors import CheckpointError, ConfigError
from genie_gym.models.world_model import WorldModel

LEVELS = (0, 3)  # few distinct default prompts: Procgen start frames are cached per level


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("wm") / "tiny.pt"
    WorldModel(get_preset("tiny")).save(path, {"action_meanings": ["noop", "right", "left", "jump", "a4", "a5",
                                                                    "a6", "a7"]})
    return str(path)


@pytest.fixture()
def env(ckpt):
    e = GenieEnv(checkpoint=ckpt, prompt_levels=LEVELS, render_mode="rgb_array", render_scale=2)
    yield e
    e.close()


def _rollout(env, seed, actions, options=None):
    obs, info = env.reset(seed=seed, options=options)
    frames = [obs]
    for a in actions:
        frames.append(env.step(a)[0])
    return np.stack(frames), info


def test_check_env_passes(ckpt):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    e = gym.make("genie_gym:Genie-v0", checkpoint=ckpt, prompt_levels=LEVELS, render_mode="rgb_array")
    check_env(e.unwrapped, skip_render_check=False)
    sb3_check_env(e.unwrapped, warn=True)
    e.close()


def test_spaces_dtypes_and_step_contract(env):
    assert env.action_space == gym.spaces.Discrete(8)
    assert env.observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert isinstance(env.metadata["render_fps"], int) and set(env.metadata["render_modes"]) == {"human",
                                                                                                 "rgb_array"}
    obs, info = env.reset(seed=1)
    assert obs.dtype == np.uint8 and obs.shape == (64, 64, 3) and env.observation_space.contains(obs)
    assert info["prompt_source"].startswith("procgen:coinrun:level=")
    obs2, reward, terminated, truncated, info = env.step(np.int64(3))
    assert env.observation_space.contains(obs2) and not np.array_equal(obs, obs2)
    assert reward == 0.0 and isinstance(reward, float)
    assert terminated is False and truncated is False and isinstance(info, dict)
    frame = env.render()
    assert frame.shape == (128, 128, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(frame[::2, ::2], obs2)


def test_same_seed_same_frames(env, ckpt):
    actions = [0, 7, 3, 3, 5]
    a, info_a = _rollout(env, 11, actions)
    other = GenieEnv(checkpoint=ckpt, prompt_levels=LEVELS)
    b, info_b = _rollout(other, 11, actions)
    np.testing.assert_array_equal(a, b)
    assert info_a == info_b
    c, _ = _rollout(other, 12, actions)
    assert not np.array_equal(a[1:], c[1:])


def test_prompt_from_procgen_level_matches_procgen(env):
    from procgen import ProcgenGym3Env

    obs, info = env.reset(seed=0, options={"level": 7})
    real = ProcgenGym3Env(num=1, env_name="coinrun", start_level=7, num_levels=1, distribution_mode="hard")
    np.testing.assert_array_equal(obs, real.observe()[1]["rgb"][0])
    assert info["prompt_source"] == "procgen:coinrun:level=7"
    obs2, info2 = env.reset(seed=0, options={"prompt": info["prompt_source"]})  # the source string round-trips
    np.testing.assert_array_equal(obs, obs2)


def test_truncation_and_reward_fn(ckpt):
    calls = []

    def reward_fn(obs, action, next_obs):
        calls.append((obs.shape, action, next_obs.shape))
        return float(action)

    e = GenieEnv(checkpoint=ckpt, prompt_levels=LEVELS, max_episode_steps=3, reward_fn=reward_fn)
    e.reset(seed=0)
    results = [e.step(a) for a in (1, 2, 5)]
    assert [r[1] for r in results] == [1.0, 2.0, 5.0]
    assert [r[3] for r in results] == [False, False, True]
    assert not any(r[2] for r in results)
    assert calls[0] == ((64, 64, 3), 1, (64, 64, 3))
    bad = GenieEnv(checkpoint=ckpt, prompt_levels=LEVELS, reward_fn=lambda o, a, n: None)
    bad.reset(seed=0)
    with pytest.raises(TypeError, match="reward_fn must return a float"):
        bad.step(0)




def test_registered_time_limit_follows_gymnasium_semantics(ckpt):
    """spec.max_episode_steps is the truth: 1000 by default, gym.make(..., max_episode_steps=N) changes where a
    made env truncates, make_vec hands the same limit to the vector env, and a bare GenieEnv never truncates."""
    assert gym.spec("Genie-v0").max_episode_steps == 1000
    e = gym.make("Genie-v0", checkpoint=ckpt, prompt_levels=LEVELS, max_episode_steps=2)
    assert e.spec.max_episode_steps == 2
    e.reset(seed=0)
    assert [e.step(0)[3] for _ in range(2)] == [False, True]
    venv = gym.make_vec("Genie-v0", num_envs=2, checkpoint=ckpt, prompt_levels=LEVELS)
    assert venv.worlds.max_episode_steps == 1000
    bare = GenieEnv(checkpoint=ckpt, prompt_levels=LEVELS)
    assert bare.max_episode_steps is None
# --- prompts --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["rgb", "rgba", "gray", "gray1", "pil_rgba", "pil_palette", "path_jpg", "big"])
def test_prompt_conversions(env, tmp_path, kind):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    if kind == "rgb":
        prompt, source = rgb, "array"
    elif kind == "rgba":
        prompt = np.concatenate([rgb, np.zeros((37, 53, 1), np.uint8)], axis=-1)  # fully transparent
        source = "array"
    elif kind == "gray":
        prompt, source = rgb[..., 0], "array"
    elif kind == "gray1":
        prompt, source = rgb[..., :1], "array"
    elif kind == "pil_rgba":
        prompt, source = Image.fromarray(rgb).convert("RGBA"), "pil"
    elif kind == "pil_palette":
        prompt, source = Image.fromarray(rgb).convert("P"), "pil"
    elif kind == "path_jpg":
        prompt = tmp_path / "photo.jpg"
        Image.fromarray(rgb).save(prompt)
        source = f"file:{prompt}"
    else:
        prompt, source = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8), "array"
    obs, info = env.reset(seed=0, options={"prompt": prompt})
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    assert info["prompt_source"] == source
    if kind == "rgba":
        assert (obs == 255).all()  # transparency is composited on white
    if kind in ("gray", "gray1"):
        assert (obs[..., 0] == obs[..., 1]).all() and (obs[..., 1] == obs[..., 2]).all()
    env.step(0)


def test_exact_size_prompt_passes_through_and_sketch_ships(env):
    frame = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    obs, _ = env.reset(seed=0, options={"prompt": frame})
    np.testing.assert_array_equal(obs, frame)
    sketch, source = load_prompt(sketch_path())
    assert source.startswith("file:") and sketch.shape == (64, 64, 3)
    assert sketch.mean() > 180  # mostly paper-white, with strokes
    np.testing.assert_array_equal(np.asarray(Image.open(sketch_path()).convert("RGB")), np.asarray(draw_sketch()))


@pytest.mark.parametrize("prompt, match", [
    ("missing.png", "does not exist"),
    ("not_an_image.txt", "not an image"),
    ("directory", "directory"),
    (np.zeros((64, 64, 3), np.float32), "uint8"),
    (np.zeros((2, 64, 64, 3), np.uint8), "H x W"),
    (np.zeros((64, 64, 5), np.uint8), "H x W"),
    (np.zeros((0, 64, 3), np.uint8), "empty"),
    ("procgen:nosuchgame:level=1", "unknown Procgen game"),
    (12345, "unsupported prompt type"),
])
def test_bad_prompts_are_clear_errors_and_env_stays_usable(env, tmp_path, prompt, match):
    if isinstance(prompt, str) and prompt == "not_an_image.txt":
        prompt = tmp_path / "not_an_image.txt"
        prompt.write_text("hello")
    elif isinstance(prompt, str) and prompt == "directory":
        prompt = tmp_path
    elif isinstance(prompt, str) and prompt == "missing.png":
        prompt = tmp_path / "missing.png"
    obs, _ = env.reset(seed=4)
    before = env.step(2)[0]
    with pytest.raises(PromptError, match=match):
        env.reset(seed=4, options={"prompt": prompt})
    # The failed reset changed nothing: the episode continues exactly as a fresh replay of it does.
    nxt = env.step(5)[0]
    env.reset(seed=4)
    np.testing.assert_array_equal(env.step(2)[0], before)
    np.testing.assert_array_equal(env.step(5)[0], nxt)


def test_bad_actions_and_order_are_clear_errors(env):
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)
    env.reset(seed=0)
    for bad in (8, -1, 2.0, True, np.array([1, 2]), "3", None):
        with pytest.raises(gym.error.InvalidAction):
            env.step(bad)
    with pytest.raises(ValueError):  # InvalidActionError is also a ValueError
        env.step(8)
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"promt": "x.png"})
    assert env.step(np.array(7))[0].shape == (64, 64, 3)  # still usable


def test_bad_make_arguments(ckpt, tmp_path, monkeypatch):
    import genie_gym.models.world_model as wm_mod

    with pytest.raises(CheckpointError, match="does not exist"):
        gym.make("Genie-v0", checkpoint=tmp_path / "none.pt")
    monkeypatch.setattr(wm_mod, "_default_path", lambda: tmp_path / "assets" / "world_model.pt")
    with pytest.raises(CheckpointError, match="force-reinstall"):  # no arguments: the shipped model, here missing
        gym.make("Genie-v0")
    (tmp_path / "bad.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="corrupt"):
        GenieEnv(checkpoint=tmp_path / "bad.pt")
    for kwargs in ({"prompt_game": "pong"}, {"prompt_levels": (5, 5)}, {"max_episode_steps": 0},
                   {"maskgit_steps": 0}, {"reward_fn": 3}, {"maskgit_schedule": "pixel"}):
        with pytest.raises(ConfigError):
            GenieEnv(checkpoint=ckpt, **kwargs)
    with pytest.raises(ConfigError, match=r"maskgit_steps must be 1\.\.2, got 3"):  # tiny: 2 tokens per grid cell
        GenieEnv(checkpoint=ckpt, maskgit_schedule="cell", maskgit_steps=3)
    with pytest.raises(gym.error.UnsupportedMode):
        GenieEnv(checkpoint=ckpt, render_mode="ansi")
    with pytest.raises(ConfigError, match=r"unknown make-time argument\(s\) \['maskgit_step'\].*'maskgit_steps'"):
        gym.make_vec("Genie-v0", num_envs=2, checkpoint=ckpt, maskgit_step=4)  # a typo names the real fields


def test_keys_to_action_and_gymnasium_play_format(env):
    import pygame

    mapping = env.get_keys_to_action()
    assert set(mapping.values()) == set(range(8))
    assert all(isinstance(k, tuple) and all(isinstance(c, int) for c in k) for k in mapping)
    assert mapping[(ord("1"),)] == 0 and mapping[(ord("8"),)] == 7
    # metadata named action 2 "left", 1 "right", 3 "jump": the arrow keys follow the names
    assert mapping[(pygame.K_LEFT,)] == 2 and mapping[(pygame.K_RIGHT,)] == 1 and mapping[(pygame.K_UP,)] == 3
    assert env.get_action_meanings()[3] == "jump"


def test_human_render_with_dummy_display(ckpt):
    e = GenieEnv(checkpoint=ckpt, prompt_levels=LEVELS, render_mode="human", render_scale=2)
    e.metadata = {**e.metadata, "render_fps": 1000}
    e.reset(seed=0)
    assert e.render() is None
    e.step(1)
    e.close()
