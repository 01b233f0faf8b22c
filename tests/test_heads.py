"""Reward and episode-end heads: trained on data with known events, used by Genie-v0, the vector env and SB3."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_episodes

from genie_gym.config import get_preset
from genie_gym.envs.genie_env import GenieEnv
from genie_gym.envs.sb3 import GenieSB3VecEnv
from genie_gym.envs.vector_env import GenieVectorEnv
from genie_gym.errors import ConfigError, DatasetError
from genie_gym.models.frames import to_float
from genie_gym.models.world_model import WorldModel
from genie_gym.training.heads import CURVE_THRESHOLDS, precision_recall, train_heads, within
from genie_gym.training.train import Args

LEVELS = (0, 3)


def _episode(rng: np.random.Generator, L: int, end: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """Noise frames; a natural end shows a big square in the last frame (white when "died", black with reward 10
    on the last transition when "won"); a time-limit cut ("cut") shows nothing and is not terminal."""
    frames = rng.integers(60, 190, (L, 64, 64, 3), dtype=np.uint8)
    rewards = np.zeros(L, np.float32)
    if end != "cut":
        frames[-1, 8:56, 8:56] = 255 if end == "died" else 0
    if end == "won":
        rewards[-1] = 10.0
    return frames, rewards, end == "cut"


@pytest.fixture(scope="module")
def event_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    ends = ["won", "died", "cut"]

    def split(n: int) -> list:
        return [_episode(rng, int(rng.integers(6, 12)), ends[i % 3]) for i in range(n)]

    return write_episodes(tmp_path_factory.mktemp("events") / "data",
                          {"train": split(180), "validation": split(18), "test": split(3)})


@pytest.fixture(scope="module")
def heads_model(event_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Heads (they read the frames) on an untrained tiny world model."""
    run = tmp_path_factory.mktemp("heads_run")
    torch.manual_seed(0)
    WorldModel(get_preset("tiny")).save(run / "untrained.pt")
    return train_heads(Args(phase="heads", out=run, model=run / "untrained.pt", data=event_data, steps=150,
                            batch_size=32, heads_negatives=4, heads_eval_episodes=18, seed=0))


def test_heads_learn_known_events_and_beat_the_constant_predictor(heads_model: Path):
    wm = WorldModel.load(heads_model)
    assert wm.heads is not None and wm.config.heads.enabled and wm.config.heads.reward_value == 10.0
    val = wm.metadata["heads"]["validation"]
    assert val["terminal"]["events"] == 12 and val["reward"]["events"] == 6  # 2/3 end naturally, 1/3 are won
    for event in ("terminal", "reward"):  # "never" has recall 0; the heads find the events and little else
        assert val[event]["recall"] >= 0.9 and val[event]["precision"] >= 0.8, (event, val[event])
    # Genie-v0's episode end (either head: every reward of this data ended its episode) finds at least as many
    assert val["terminated"]["recall"] >= val["terminal"]["recall"] and val["terminated"]["events"] == 12


def test_eval_scores_the_heads_one_step_ahead_and_on_generated_frames(heads_model: Path, event_data: Path,
                                                                      tmp_path: Path):
    from genie_gym.evaluation.evaluate import Args as EvalArgs
    from genie_gym.evaluation.evaluate import evaluate

    r = evaluate(EvalArgs(model=heads_model, data=event_data, split="validation", out=tmp_path, num_clips=4,
                          rollout_steps=4, delta_t=2, context=(1,), stability_steps=0, device="cpu",
                          heads_episodes=18, heads_rollout_clips=6))
    heads = r["heads"]
    # one step ahead: the same function, episodes and seed as the validation scores train_heads wrote
    assert heads["one_step"] == WorldModel.load(heads_model).metadata["heads"]["validation"]
    assert heads["horizon"] == 1 and 0 < heads["event_rate"]["reward"] < heads["event_rate"]["terminal"] < 1
    roll = heads["rollouts"]
    assert roll["event_clips"] == 6 and roll["random_clips"] == 6 and roll["steps"] == 4
    for event in ("terminal", "reward"):
        assert roll[event]["frames"] == 12 * 4 and 0 <= roll[event]["precision"] <= 1
    # every event clip ends on a terminal frame (a won episode's also pays the reward)
    assert roll["terminal"]["events"] >= 6 and roll["reward"]["events"] <= roll["terminal"]["events"]


def test_precision_recall_on_hand_made_predictions():
    pr = precision_recall([np.array([0.9, 0.2, 0.7, 0.1])], [np.array([1, 1, 0, 0])], 0.5)
    assert pr == {"precision": 0.5, "recall": 0.5, "events": 2, "predicted": 2, "frames": 4, "horizon": 1}
    # horizon 3: a firing frame counts when an event follows within 3 transitions, an event when a frame of the 3
    # up to it fires; episodes are scored apart (no window reaches across them)
    probs = [np.array([0.0, 0.9, 0.0, 0.0, 1.0]), np.array([0.8, 0.0, 0.0, 0.0, 0.0, 0.0])]
    events = [np.array([0, 0, 0, 1, 0]), np.array([0, 0, 0, 0, 0, 1])]
    pr = precision_recall(probs, events, 0.5, horizon=3)
    assert (pr["precision"], pr["recall"], pr["predicted"], pr["events"]) == (1 / 3, 0.5, 3, 2)
    assert precision_recall(probs, events, 0.5, horizon=6)["recall"] == 1.0
    labels = within(np.array([[0, 0], [0, 0], [0, 1], [1, 0]], dtype=bool), 2)
    assert labels.tolist() == [[False, False], [False, True], [True, True], [True, False]]


def wm_ends_on_reward(path: Path) -> bool:
    return WorldModel.load(path).config.heads.reward_ends_episode


def _forced(heads_model: Path, tmp_path: Path, terminal: float, reward: float) -> Path:
    """The trained heads with their output biases forced: every frame terminal / rewarded, or none."""
    wm = WorldModel.load(heads_model)
    with torch.no_grad():
        wm.heads.mlp[-1].weight.zero_()
        wm.heads.mlp[-1].bias.copy_(torch.tensor([terminal, reward]))
    path = tmp_path / f"forced_{terminal}_{reward}.pt"
    wm.save(path)
    return path


def test_genie_env_reports_the_heads_and_reward_fn_overrides_the_reward(heads_model: Path, tmp_path: Path):
    env = GenieEnv(checkpoint=heads_model, prompt_levels=LEVELS)
    env.reset(seed=0)
    runs = []
    for _ in range(2):
        env.reset(seed=3)
        runs.append([env.step(a)[1:] for a in (1, 2, 3)])
    assert runs[0] == runs[1]  # deterministic per seed: rewards, ends and probabilities
    reward, terminated, truncated, info = runs[0][0]
    assert set(info) == {"terminal_prob", "reward_prob"} and 0 <= info["terminal_prob"] <= 1
    # the heads read the last two frames the env returned (the prompt, then the generated frame)
    first, _ = env.reset(seed=3)
    second, *_, info = env.step(1)
    wm = WorldModel.load(heads_model)
    with torch.no_grad():
        probs = torch.sigmoid(wm.heads(to_float(np.stack([first, second])[None]))).numpy()[0]
    assert np.allclose([info["terminal_prob"], info["reward_prob"]], probs, atol=1e-5)
    assert reward == (10.0 if info["reward_prob"] >= 0.5 else 0.0)
    assert wm_ends_on_reward(heads_model)  # every reward of event_data ends its episode
    assert terminated == (info["terminal_prob"] >= 0.5 or info["reward_prob"] >= 0.5)
    always = _forced(heads_model, tmp_path, 20.0, 20.0)
    e = GenieEnv(checkpoint=always, prompt_levels=LEVELS)
    e.reset(seed=0)
    assert e.step(0)[1:3] == (10.0, True)
    e = GenieEnv(checkpoint=always, prompt_levels=LEVELS, reward_fn=lambda o, a, n: -1.0)
    e.reset(seed=0)
    assert e.step(0)[1:3] == (-1.0, True)  # reward_fn replaces the reward, not the learned episode end
    e = GenieEnv(checkpoint=always, prompt_levels=LEVELS, learned_rewards=False)
    e.reset(seed=0)
    assert e.step(0)[1:3] == (0.0, False)
    coin = GenieEnv(checkpoint=_forced(heads_model, tmp_path, -20.0, 20.0), prompt_levels=LEVELS)
    coin.reset(seed=0)
    assert coin.step(0)[1:3] == (10.0, True)  # a reward that ended every episode of the data ends this one


def test_vector_env_and_sb3_honour_terminated(heads_model: Path, tmp_path: Path):
    always = _forced(heads_model, tmp_path, 20.0, -20.0)
    envs = GenieVectorEnv(2, checkpoint=always, prompt_levels=LEVELS)
    envs.reset(seed=0)
    _, rewards, terminated, truncated, info = envs.step(np.array([1, 2]))
    assert terminated.tolist() == [True, True] and not truncated.any() and rewards.tolist() == [0.0, 0.0]
    assert "terminal_prob" in info
    obs, rewards, terminated, truncated, info = envs.step(np.array([1, 2]))  # NEXT_STEP: both restart
    assert not terminated.any() and "prompt_source" in info
    venv = GenieSB3VecEnv(2, checkpoint=always, prompt_levels=LEVELS, max_episode_steps=5)
    venv.seed(0)
    venv.reset()
    venv.step_async(np.array([1, 2]))
    obs, rewards, dones, infos = venv.step_wait()
    assert dones.tolist() == [True, True]
    assert all("terminal_observation" in i and i["TimeLimit.truncated"] is False for i in infos)


def test_bad_heads_input(tiny_model_file: Path, event_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(ConfigError, match="no reward / episode-end heads.*--phase heads"):
        GenieEnv(checkpoint=tiny_model_file, learned_rewards=True)
    with pytest.warns(UserWarning, match="no reward / episode-end heads"):
        import genie_gym.envs.worlds as worlds

        worlds._WARNED_NO_HEADS = False
        GenieEnv(checkpoint=tiny_model_file, prompt_levels=LEVELS)
    never = tmp_path / "never"
    rng = np.random.default_rng(1)
    write_episodes(never, {"train": [_episode(rng, 8, "cut") for _ in range(4)],
                           "validation": [_episode(rng, 8, "cut")]})
    with pytest.raises(DatasetError, match="no natural episode end and no reward"):
        train_heads(Args(phase="heads", out=tmp_path, model=tiny_model_file, data=never, steps=2))
    import genie_gym.training.heads as heads_module

    with monkeypatch.context() as m:  # 1 MiB free: the sample cannot fit
        m.setattr(heads_module, "available_memory_bytes", lambda device: 2**20)
        with pytest.raises(ConfigError, match="needs .* GiB of RAM .* --heads-stream .* lower --heads-events"):
            train_heads(Args(phase="heads", out=tmp_path, model=tiny_model_file, data=event_data, steps=2))
        streamed = train_heads(Args(phase="heads", out=tmp_path / "streamed", model=tiny_model_file,
                                    data=event_data, steps=3, heads_stream=True))  # batches read from the shards
    in_ram = train_heads(Args(phase="heads", out=tmp_path / "in_ram", model=tiny_model_file, data=event_data,
                              steps=3))
    streamed_sd, in_ram_sd = WorldModel.load(streamed).heads.state_dict(), WorldModel.load(in_ram).heads.state_dict()
    assert all(torch.equal(streamed_sd[k], in_ram_sd[k]) for k in in_ram_sd)  # the same batches, the same heads
    from genie_gym.training.heads import check_heads_args

    with pytest.raises(ConfigError, match="--heads-reconstructed replaces frames .* drop --heads-stream"):
        check_heads_args(Args(phase="heads", out=tmp_path, model=tiny_model_file, heads_stream=True,
                              heads_reconstructed=0.5))
    from genie_gym.cli import main as cli_main

    with pytest.raises(SystemExit):  # no world model in the run directory: one line, before any work
        cli_main(["train", "--phase", "heads", "--out", str(tmp_path / "empty"), "--data", str(event_data)])
    cfg = dataclasses.replace(get_preset("tiny"))
    assert not cfg.heads.enabled  # presets build no heads: only `--phase heads` adds them


def test_a_file_with_heads_of_the_earlier_design_loads_without_them(tiny_model_file: Path, tmp_path: Path):
    """Heads that read the dynamics' features (before the pixel heads) cannot run here: the file loads without
    them, with a warning naming `--phase heads`, rather than failing or running garbage."""
    wm = WorldModel.load(tiny_model_file)
    old = torch.nn.Module()
    old.query = torch.nn.Parameter(torch.zeros(wm.config.dynamics.d_model))
    old.mlp = torch.nn.Sequential(torch.nn.Linear(2 * wm.config.dynamics.d_model, 2))
    wm.config = dataclasses.replace(wm.config, heads=dataclasses.replace(wm.config.heads, enabled=True))
    wm.heads = old
    wm.save(tmp_path / "old_heads.pt", {**wm.metadata, "heads": {"validation": {"terminal": {}}}})
    with pytest.warns(UserWarning, match="earlier design.*--phase heads"):
        loaded = WorldModel.load(tmp_path / "old_heads.pt")
    assert loaded.heads is None and not loaded.config.heads.enabled and "heads" not in loaded.metadata
    assert torch.equal(loaded.dynamics.head.weight, wm.dynamics.head.weight)  # the rest is the file's


def test_a_file_with_heads_of_the_centre_branch_experiment_loads_without_them(heads_model: Path, tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch):
    """Files written while `heads.crop` existed (sessions 23-24): crop 0 loads as today's heads (the config test),
    a centre branch loads without its heads, with a warning naming `--phase heads`."""
    from genie_gym.config import GenieConfig

    wm = WorldModel.load(heads_model)
    plain_to_dict = GenieConfig.to_dict
    with monkeypatch.context() as m:  # the config as those files recorded it
        m.setattr(GenieConfig, "to_dict", lambda self: {**plain_to_dict(self),
                                                        "heads": {**plain_to_dict(self)["heads"], "crop": 32}})
        wm.save(tmp_path / "centre.pt")
    with pytest.warns(UserWarning, match=r"centre \(heads.crop\).*--phase heads"):
        loaded = WorldModel.load(tmp_path / "centre.pt")
    assert loaded.heads is None and not loaded.config.heads.enabled and "heads" not in loaded.metadata
    assert torch.equal(loaded.dynamics.head.weight, wm.dynamics.head.weight)


def test_replay_prompts_start_worlds_from_recorded_train_frames(event_data: Path, tiny_model_file: Path,
                                                                tmp_path: Path):
    """prompt_data: a world starts from a frame of the dataset's train split drawn by the reset seed (the same seed,
    the same frame); prompt_data_tail N: only the last N frames of episodes that ended on the reward."""
    from genie_gym.data.dataset import EpisodeStore

    store = EpisodeStore(event_data, "train")
    env = GenieEnv(checkpoint=tiny_model_file, prompt_data=event_data, prompt_data_tail=2)
    sources = set()
    for seed in range(12):
        obs, info = env.reset(seed=seed)
        kind, _, split, ep, t = info["prompt_source"].rsplit(":", 4)
        ep, t = int(ep.split("=")[1]), int(t.split("=")[1])
        assert kind == "data" and split == "train"
        assert store.solved[ep] and store.rewards(ep)[-1] == 10.0 and t >= store.episode_lengths[ep] - 2
        assert np.array_equal(obs, store.frames(ep, t, t + 1)[0])
        assert env.reset(seed=seed)[1]["prompt_source"] == info["prompt_source"]
        sources.add(info["prompt_source"])
    assert len(sources) > 6  # seeds spread over many frames
    offsets = {int(src.rsplit("=", 1)[1]) - int(store.episode_lengths[int(src.split("episode=")[1].split(":")[0])])
               for src in sources}
    assert offsets == {-2, -1}  # both frames of the tail are drawn
    rng = np.random.default_rng(2)
    flat = np.full((6, 64, 64, 3), 7, np.uint8)  # held-out episodes: one constant frame, never a prompt
    mixed = write_episodes(tmp_path / "mixed", {"train": [_episode(rng, 6, "won"), _episode(rng, 5, "won")],
                                                "validation": [(flat, np.r_[np.zeros(5), 10.0], False)],
                                                "test": [(flat, np.r_[np.zeros(5), 10.0], False)]})
    held = GenieEnv(checkpoint=tiny_model_file, prompt_data=mixed)
    assert not any((held.reset(seed=s)[0] == 7).all() for s in range(30))
    anywhere = GenieEnv(checkpoint=tiny_model_file, prompt_data=event_data)
    firsts = {anywhere.reset(seed=s)[1]["prompt_source"].endswith(":frame=0") for s in range(40)}
    assert firsts == {True, False}  # without a tail: any frame, episode starts included
    with pytest.raises(ConfigError, match="pass prompt_data"):
        GenieEnv(checkpoint=tiny_model_file, prompt_data_tail=2)
    with pytest.raises(ConfigError, match="positive int"):
        GenieEnv(checkpoint=tiny_model_file, prompt_data=event_data, prompt_data_tail=0)
    with pytest.raises(ConfigError, match="genie-gym data"):
        GenieEnv(checkpoint=tiny_model_file, prompt_data=tmp_path / "missing")
    rng = np.random.default_rng(1)
    never = write_episodes(tmp_path / "never", {"train": [_episode(rng, 8, "died") for _ in range(3)]})
    with pytest.raises(ConfigError, match="ended on the reward"):
        GenieEnv(checkpoint=tiny_model_file, prompt_data=never, prompt_data_tail=5)


def test_heads_resume_after_a_stop_gives_the_heads_of_one_run(event_data: Path, tiny_model_file: Path,
                                                                 tmp_path: Path):
    """A heads run stopped at step 4 (as a kill after a checkpoint leaves it) and resumed ends with the weights of
    an uninterrupted run; a checkpoint of other inputs is refused."""
    from genie_gym.errors import CheckpointError

    kw = dict(phase="heads", model=tiny_model_file, data=event_data, steps=8, batch_size=16, heads_negatives=2,
              heads_eval_episodes=2, seed=0, ckpt_every=2)
    whole = WorldModel.load(train_heads(Args(out=tmp_path / "whole", **kw)))
    stopped = train_heads(Args(out=tmp_path / "cut", stop_at=4, **kw))
    assert stopped == tmp_path / "cut" / "heads" / "last.pt" and not (tmp_path / "cut" / "world_model.pt").exists()
    resumed = WorldModel.load(train_heads(Args(out=tmp_path / "cut", resume=True, **kw)))
    for name, p in whole.heads.state_dict().items():
        assert torch.equal(p, resumed.heads.state_dict()[name]), name
    assert resumed.metadata["heads"]["final_loss"] == whole.metadata["heads"]["final_loss"]
    with pytest.raises(CheckpointError, match="other inputs"):
        train_heads(Args(out=tmp_path / "cut", resume=True, **{**kw, "seed": 1}))


@pytest.mark.slow
def test_dream_ppo_trains_in_the_world_model_and_resumes(heads_model: Path, tiny_model_file: Path, tmp_path: Path):
    """agents.dream_ppo end to end on the tiny model: PPO frames counted, a resumable final.zip, and --resume
    continues from the newest checkpoint instead of starting over."""
    import json

    from agents import dream_ppo

    common = dict(world_model=str(heads_model), num_envs=2, n_steps=16, n_minibatches=2, n_epochs=1,
                  prompt_levels=LEVELS, max_episode_steps=20, checkpoint_every=32, out=str(tmp_path), threads=1,
                  device="cpu")
    dream_ppo.main(dream_ppo.Args(total_timesteps=64, **common))
    info = json.loads((tmp_path / "train_info.json").read_text())
    assert info["frames"] >= 64 and (tmp_path / "final.zip").is_file()
    dream_ppo.main(dream_ppo.Args(total_timesteps=96, resume=True, **common))
    again = json.loads((tmp_path / "train_info.json").read_text())
    assert again["resumed_from_frames"] >= 32 and again["frames"] >= 96
    with pytest.raises(ConfigError, match="no reward / episode-end heads"):
        dream_ppo.main(dream_ppo.Args(total_timesteps=64, **{**common, "world_model": str(tiny_model_file)}))
    # --time-limit-min: stops early with a checkpoint at the frames reached, and --resume goes on from there
    cut = {**common, "out": str(tmp_path / "cut")}
    dream_ppo.main(dream_ppo.Args(total_timesteps=64, time_limit_min=0.0, **cut))
    stopped = json.loads((tmp_path / "cut" / "train_info.json").read_text())["frames"]
    assert 0 < stopped < 64 and (tmp_path / "cut" / "checkpoints" / f"ppo_{stopped}_steps.zip").is_file()
    dream_ppo.main(dream_ppo.Args(total_timesteps=64, resume=True, **cut))
    assert json.loads((tmp_path / "cut" / "train_info.json").read_text())["resumed_from_frames"] == stopped


@pytest.mark.slow
def test_dream_transfer_plays_the_dream_agent_in_real_coinrun(heads_model: Path, tmp_path: Path):
    """agents.dream_transfer: table D from expert transitions labelled by the dream's LAM, then real levels."""
    from agents import dream_ppo, dream_transfer
    from agents.baselines import RunRightPolicy
    from agents.collect import run_policy_episodes, save_expert_set

    dream_ppo.main(dream_ppo.Args(world_model=str(heads_model), num_envs=2, n_steps=16, n_minibatches=2, n_epochs=1,
                                  prompt_levels=LEVELS, total_timesteps=32, out=str(tmp_path / "dream"), threads=1,
                                  device="cpu"))
    save_expert_set(run_policy_episodes(RunRightPolicy(), num_episodes=4, seed=3, num_envs=4, progress=False),
                    tmp_path / "expert")
    report = dream_transfer.main(dream_transfer.Args(
        dream=str(tmp_path / "dream" / "final.zip"), world_model=str(heads_model), expert_data=str(tmp_path / "expert"),
        n_labelled=20, num_levels=2, seeds=1, max_steps=30, out=str(tmp_path / "transfer"), threads=1))
    assert set(report["results"]) == {"dream", "random_codes", "random", "run_right"}
    assert all(0.0 <= r["solved_pct"] <= 100.0 for r in report["results"].values())
    assert (tmp_path / "transfer" / "transfer.json").is_file()
    with pytest.raises(ConfigError, match="n-labelled"):
        dream_transfer.main(dream_transfer.Args(dream=str(tmp_path / "dream" / "final.zip"),
                                                world_model=str(heads_model), expert_data=str(tmp_path / "expert"),
                                                n_labelled=10**6, out=str(tmp_path / "t2"), threads=1))


def test_heads_horizon_is_recorded_and_checked(event_data: Path, tiny_model_file: Path, tmp_path: Path):
    """--heads-horizon k labels the k frames before each event; the file and its held-out scores record k."""
    out = train_heads(Args(phase="heads", out=tmp_path, model=tiny_model_file, data=event_data, steps=3,
                           heads_eval_episodes=6, heads_horizon=3, seed=0))
    wm = WorldModel.load(out)
    assert wm.config.heads.horizon == 3 and wm.metadata["heads"]["validation"]["terminal"]["horizon"] == 3
    from genie_gym.training.heads import check_heads_args

    with pytest.raises(ConfigError, match="--heads-horizon must be >= 1"):
        check_heads_args(Args(phase="heads", out=tmp_path, model=tiny_model_file, heads_horizon=0))
    with pytest.raises(ConfigError, match="--set takes heads.FIELD=VALUE"):
        check_heads_args(Args(phase="heads", out=tmp_path, model=tiny_model_file, set=("dynamics.num_layers=2",)))
    three = train_heads(Args(phase="heads", out=tmp_path / "f3", model=tiny_model_file, data=event_data, steps=2,
                             heads_eval_episodes=2, set=("heads.frames=3",)))
    assert WorldModel.load(three).heads.cnn[0].in_channels == 9  # frames t-2..t
    with pytest.raises(ConfigError, match="--heads-reconstructed is a share"):
        check_heads_args(Args(phase="heads", out=tmp_path, model=tiny_model_file, heads_reconstructed=1.5))


def test_heads_train_on_reconstructions(event_data: Path, tiny_model_file: Path, tmp_path: Path):
    """--heads-reconstructed 1 shows every training frame through the tokenizer (encoded, then decoded as a clip),
    as Genie-v0 shows its frames; the file records the share."""
    from genie_gym.training.heads import reconstruct

    wm = WorldModel.load(tiny_model_file)
    clips = np.random.default_rng(0).integers(0, 256, (3, 2, 64, 64, 3), dtype=np.uint8)
    recon = reconstruct(wm, clips, amp=False)
    assert recon.shape == clips.shape and recon.dtype == np.uint8 and not np.array_equal(recon, clips)
    out = train_heads(Args(phase="heads", out=tmp_path, model=tiny_model_file, data=event_data, steps=2,
                           heads_negatives=1, heads_eval_episodes=2, heads_reconstructed=1.0))
    assert WorldModel.load(out).metadata["heads"]["reconstructed"] == 1.0


def test_heads_full_res_adds_a_full_resolution_layer(event_data: Path, tiny_model_file: Path, tmp_path: Path):
    """The default heads (v1.6's) start with a 3x3 convolution at the frames' resolution; `--set
    heads.full_res=false` gives v1.5's stride-2 first layer; each file records its choice and loads with the same
    layers, and a file written before the option existed (no `full_res` key) loads as v1.5's."""
    from genie_gym.config import GenieConfig

    out = train_heads(Args(phase="heads", out=tmp_path / "full", model=tiny_model_file, data=event_data, steps=2,
                           heads_negatives=1, heads_eval_episodes=2))
    heads = WorldModel.load(out).heads
    assert heads.cfg.full_res and heads.cnn[0].kernel_size == (3, 3) and heads.cnn[0].stride == (1, 1)
    assert heads(torch.rand(2, 2, 64, 64, 3)).shape == (2, 2)
    out = train_heads(Args(phase="heads", out=tmp_path / "strided", model=tiny_model_file, data=event_data, steps=2,
                           heads_negatives=1, heads_eval_episodes=2, set=("heads.full_res=false",)))
    heads = WorldModel.load(out).heads
    assert not heads.cfg.full_res and heads.cnn[0].kernel_size == (4, 4) and heads.cnn[0].stride == (2, 2)
    shipped = WorldModel.load(WorldModel.default_path()).config
    assert shipped.heads.full_res
    old = shipped.to_dict()
    del old["heads"]["full_res"]
    assert not GenieConfig.from_dict(old).heads.full_res
    # files written while the centre-branch experiment existed record `crop`: 0 (none) loads, a branch is refused
    assert GenieConfig.from_dict({**shipped.to_dict(), "heads": {**shipped.to_dict()["heads"], "crop": 0}}) == shipped
    with pytest.raises(ValueError, match=r"heads.crop.*--phase heads"):
        GenieConfig.from_dict({**shipped.to_dict(), "heads": {**shipped.to_dict()["heads"], "crop": 32}})


@pytest.mark.slow
def test_dream_rl_benchmark_quick(heads_model: Path, event_data: Path, tmp_path: Path):
    """benchmarks/dream_rl.py --quick: dream PPO, table D, real levels beside the baselines, returns in the dream,
    and the three result files, at tiny sizes; a rerun resumes instead of training again."""
    import json

    import dream_rl  # benchmarks/ is on pytest's path

    args = dream_rl.Args(quick=True, world_model=str(heads_model), work=str(tmp_path / "work"),
                         out=str(tmp_path / "out"), threads=1, prompt_data=str(event_data), prompt_data_tail=3)
    report = dream_rl.main(args)
    assert {"dream", "random_codes", "random", "run_right"} <= set(report["real"])
    assert set(report["in_dream"]) == {"dream", "random_codes"}
    assert abs(sum(c["dream_share"] for c in report["codes"]) - 1) < 1e-9  # every code the agent picked, counted
    assert sum(c["expert_transitions"] for c in report["codes"]) > 0
    assert all(0.0 <= r["solved_pct"] <= 100.0 for r in report["real"].values())
    assert report["in_dream"]["dream"]["episodes"] == 4 and report["dream_training"]["frames"] >= 256
    for ext in ("json", "md", "png"):
        assert (tmp_path / "out" / f"dream_rl.{ext}").is_file()
    md = (tmp_path / "out" / "dream_rl.md").read_text()
    assert "| dream |" in md and f"--prompt-data {event_data} --prompt-data-tail 3" in md and "--quick" in md
    frames = json.loads((tmp_path / "work" / "dream" / "train_info.json").read_text())["frames"]
    assert dream_rl.main(args)["dream_training"]["frames"] == frames  # nothing left to train: reused
    newest = max((tmp_path / "work" / "dream" / "checkpoints").glob("ppo_*_steps.zip"),
                 key=lambda p: int(p.stem.split("_")[1]))
    assert newest.name == f"ppo_{frames}_steps.zip"  # the trained final state, not a mid-rollout save
    with pytest.raises(ConfigError, match="made from other inputs"):
        dream_rl.main(dream_rl.Args(**{**dataclasses.asdict(args), "seed": 1}))


@pytest.mark.slow
def test_dream_rl_refuses_a_model_without_heads(tiny_model_file: Path, tmp_path: Path):
    import dream_rl

    with pytest.raises(ConfigError, match="no reward / episode-end heads"):
        dream_rl.main(dream_rl.Args(quick=True, world_model=str(tiny_model_file), work=str(tmp_path)))


@pytest.mark.slow
def test_ppo_speed_benchmark_quick(tiny_model_file: Path, tmp_path: Path):
    """benchmarks/ppo_speed.py --quick: env-alone and PPO frames/s per precision, side by side, and its files."""
    import ppo_speed

    report = ppo_speed.main(ppo_speed.Args(quick=True, world_model=str(tiny_model_file), out=str(tmp_path),
                                           threads=1))
    assert [r["precision"] for r in report["rows"]] == ["float32", "bfloat16"]
    assert all(r["env_frames_per_s"] > 0 and r["ppo_frames_per_s"] > 0 for r in report["rows"])
    assert "| float32 |" in (tmp_path / "ppo_speed.md").read_text()
    with pytest.raises(ConfigError, match="less than one PPO rollout"):
        ppo_speed.main(ppo_speed.Args(world_model=str(tiny_model_file), frames=4, out=str(tmp_path)))


def test_heads_frames_study_scores_real_reconstructed_and_generated_frames(event_data: Path, heads_model: Path,
                                                                        tmp_path: Path):
    """studies/heads_frames.py: the heads file scored on real frames (as genie-gym eval's one_step), on the
    tokenizer's reconstructions of the same frames and on rollouts from 1 and from 10 real frames."""
    import heads_frames

    res = heads_frames.main(heads_frames.Args(model=heads_model, data=event_data, split="validation", episodes=18,
                                              rollout_clips=2, contexts=(1, 10), threads=1, out=tmp_path / "frames"))
    assert res["real"] == WorldModel.load(heads_model).metadata["heads"]["validation"]  # same episodes and seed
    assert res["reconstructed"]["terminal"]["frames"] == res["real"]["terminal"]["frames"]
    one, ten = res["rollout_1"], res["rollout_10"]
    assert one["event_clips"] >= 1 and one["terminal"]["frames"] == 10 * 2 * one["event_clips"]
    assert ten["terminal"]["frames"] == 1 * 2 * ten["event_clips"]  # only the event frame generated
    assert "| rollout_10 | reward |" in (tmp_path / "frames.md").read_text()
    assert set(res["false_alarms"]) == set(res["ends_by_kind"]) == {str(th) for th in CURVE_THRESHOLDS}
    kinds = res["ends_by_kind"]["0.5"]
    assert kinds["coin"]["ends"] + kinds["death"]["ends"] == res["real"]["terminal"]["events"]
    from genie_gym.data.dataset import EpisodeStore
    from genie_gym.training.heads import frame_labels, heldout_episodes

    store = EpisodeStore(event_data, "validation")
    eps = heldout_episodes(store, 18, 0)  # the episodes heads_probs scored, in its order
    assert len(eps) == len(set(eps)) == min(18, len(store.episode_lengths)) and eps == heldout_episodes(store, 18, 0)
    deaths = [ep for ep in eps if frame_labels(store, ep)[-1, 0] and not frame_labels(store, ep)[-1, 1]]
    falls = sum(heads_frames.falling_at_end(store, deaths))
    assert (kinds["death"]["ends"], kinds["death, falling"]["ends"]) == (len(deaths), falls)
    assert "| death |" in (tmp_path / "frames.md").read_text()


def test_ends_by_kind_splits_deaths_by_whether_the_agent_was_falling(tmp_path: Path):
    """heads_frames.falling_at_end: the picture scrolling up between an episode's last two frames (the camera follows
    a falling agent) and nothing else; ends_by_kind: an end whose transition pays is a coin, any other a death, split
    by falling; each end counted once per kind, with its recall."""
    import heads_frames

    from genie_gym.data.dataset import EpisodeStore

    rng = np.random.default_rng(0)
    scene = rng.integers(0, 255, (80, 64, 3), dtype=np.uint8)
    falling = np.stack([scene[0:64], scene[0:64], scene[2:66]])  # the content moves up 2 px: the camera moves down
    level = np.stack([scene[8:72], scene[8:72], scene[8:72]])
    rising = np.stack([scene[8:72], scene[8:72], scene[6:70]])
    root = write_episodes(tmp_path / "d", {"test": [(f, np.zeros(3, np.float32), False)
                                                    for f in (falling, level, rising)]})
    assert heads_frames.falling_at_end(EpisodeStore(root, "test"), [0, 1, 2]) == [True, False, False]
    events = [np.array([[0, 0], [0, 0], [1, 0]], np.float32), np.array([[0, 0], [1, 1]], np.float32),
              np.array([[0, 0], [1, 0]], np.float32)]
    probs = [np.array([[0, 0], [0, 0], [0.9, 0]]), np.array([[0, 0], [0.2, 0.9]]), np.array([[0, 0], [0.3, 0]])]
    kinds = heads_frames.ends_by_kind(probs, events, 0.5, [True, False, False])
    assert {k: (v["ends"], v["recall"]) for k, v in kinds.items()} == {
        "coin": (1, 0.0), "death": (2, 0.5), "death, falling": (1, 1.0), "death, not falling": (1, 0.0)}


def test_heads_ensemble_study_scores_each_file_and_their_combinations(event_data: Path, heads_model: Path,
                                                                     tiny_model_file: Path, tmp_path: Path):
    """studies/heads_ensemble.py: each file as genie-gym eval scores it, then their probabilities combined (the mean,
    the minimum, the mean logit) on the same frames; one file alone, the same file twice and members of other
    horizons are refused."""
    import heads_ensemble

    from genie_gym.data.dataset import EpisodeStore
    from genie_gym.training.heads import heads_probs, score_events

    other = train_heads(Args(phase="heads", out=tmp_path / "other", model=tiny_model_file, data=event_data, steps=3,
                             heads_negatives=1, heads_eval_episodes=2, seed=1))
    res = heads_ensemble.main(heads_ensemble.Args(models=[heads_model, other], data=event_data, split="validation",
                                                  episodes=18, threads=1, out=tmp_path / "ens"))
    member = WorldModel.load(heads_model).metadata["heads"]["validation"]
    assert res["rows"][str(heads_model)] == {k: v for k, v in member.items() if k != "episodes"}
    store = EpisodeStore(event_data, "validation")
    (pa, events), (pb, _) = (heads_probs(WorldModel.load(m), store, 18, 0, amp=False) for m in (heads_model, other))
    mean = score_events([(a + b) / 2 for a, b in zip(pa, pb, strict=True)], events,
                        WorldModel.load(heads_model).config.heads)
    assert res["rows"]["ensemble (mean probability)"] == mean
    lowest = score_events([np.minimum(a, b) for a, b in zip(pa, pb, strict=True)], events,
                          WorldModel.load(heads_model).config.heads)
    assert res["rows"]["ensemble (minimum)"] == lowest
    # the mean logit of two members is the geometric mean of their odds (probabilities held within 1e-7 of 0 and 1)
    pa_c, pb_c = ([np.clip(x.astype(np.float64), 1e-7, 1 - 1e-7) for x in p] for p in (pa, pb))
    odds = [np.sqrt(a / (1 - a) * b / (1 - b)) for a, b in zip(pa_c, pb_c, strict=True)]
    for got, want in zip(heads_ensemble.combine([pa, pb])["mean logit"], odds, strict=True):
        np.testing.assert_allclose(got, want / (1 + want), rtol=1e-5, atol=1e-7)
    assert "| ensemble (mean probability) | terminal |" in (tmp_path / "ens.md").read_text()
    assert res["overlap"]["0.5"] == heads_ensemble.overlap([pa, pb], events, 0.5)
    with pytest.raises(SystemExit, match="two or more"):
        heads_ensemble.main(heads_ensemble.Args(models=[heads_model], data=event_data, out=tmp_path / "one"))
    with pytest.raises(SystemExit, match="twice"):
        heads_ensemble.main(heads_ensemble.Args(models=[heads_model, heads_model], data=event_data,
                                                out=tmp_path / "twice"))
    wider = train_heads(Args(phase="heads", out=tmp_path / "h2", model=tiny_model_file, data=event_data, steps=2,
                             heads_negatives=1, heads_eval_episodes=2, heads_horizon=2))
    with pytest.raises(SystemExit, match="horizon"):
        heads_ensemble.main(heads_ensemble.Args(models=[heads_model, wider], data=event_data, out=tmp_path / "h"))


def test_ensemble_combine_rules_by_hand():
    """heads_ensemble.combine: per frame and event, the mean probability, the mean logit and the minimum."""
    import heads_ensemble

    a, b = np.array([[0.9, 0.2], [0.5, 0.5]]), np.array([[0.1, 0.8], [0.5, 0.2]])
    out = heads_ensemble.combine([[a], [b]])
    np.testing.assert_allclose(out["mean probability"][0], [[0.5, 0.5], [0.5, 0.35]])
    np.testing.assert_allclose(out["minimum"][0], [[0.1, 0.2], [0.5, 0.2]])
    # odds 9 and 1/9 -> 1 (p 0.5); 1/4 and 4 -> 1; 1 and 1 -> 1; 1 and 1/4 -> 1/2 (p 1/3)
    np.testing.assert_allclose(out["mean logit"][0], [[0.5, 0.5], [0.5, 1 / 3]])


def test_ensemble_overlap_counts_the_ends_every_member_finds_and_the_shared_false_alarms():
    """heads_ensemble.overlap: per end, how many members fire on it (all / some / none); per other frame, likewise."""
    import heads_ensemble

    events = np.zeros((6, 2))
    events[[2, 5], 0] = 1  # two ends
    a, b = np.zeros((6, 2)), np.zeros((6, 2))
    a[[0, 1, 2, 5], 0] = b[[0, 2], 0] = 0.9  # end 2 found by both, end 5 by one; frame 0 both, frame 1 one
    out = heads_ensemble.overlap([[a], [b]], [events], 0.5)
    assert out == {"ends": 2, "found_by_all": 1, "found_by_some": 1, "found_by_none": 0, "false_alarms_of_all": 1,
                   "false_alarms_of_some": 1}


def test_events_ceiling_clones_the_game_exactly(tiny_data: Path, tmp_path: Path):
    """benchmarks/studies/events_ceiling.py: every action tried from a clone of Procgen's state; the clone's outcome
    of the action taken is what the game did, so the predictor that knows it scores 1 / 1 on every event it saw."""
    import events_ceiling

    res = events_ceiling.main(events_ceiling.Args(data=tiny_data, episodes=2, out=tmp_path / "ceiling"))
    assert res["cloning_exact"] and res["episodes"] == 2 and res["frames"] > 0
    for event, n in res["events"].items():
        oracle = res["scores"]["state + action"][event]
        assert all((s["precision"], s["recall"]) == ((1.0, 1.0) if n else (0.0, 0.0)) for s in oracle)
    assert 0 <= res["share_of_actions_causing_the_event_at_event_frames"]["terminal"] <= 1
    assert "| state + policy | episode end |" in (tmp_path / "ceiling.md").read_text()
