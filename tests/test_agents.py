"""Agents (issue 6): evaluation harness, mapping table, latent BC end to end with the tiny LAM, bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from agents.baselines import NOOP, RIGHT, RIGHT_UP, ConstantPolicy, RunRightPolicy
from agents.bc import train_classifier
from agents.collect import ExpertSet, load_expert_set, run_policy_episodes, save_expert_set
from agents.evaluate import CategoricalTorchPolicy, evaluate_policy, mean_ci95
from agents.latent_bc import (
    CodeActionTable,
    LatentBCPolicy,
    LearnedMapping,
    label_expert_set,
    load_lam,
    select_labelled,
    transitions,
    window_starts,
)
from agents.policies import ImpalaPolicy
from genie_gym.errors import CheckpointError, ConfigError, DatasetError

LEVELS = list(range(200_000, 200_008))


def _reference_returns(action: int, levels: list[int], max_steps: int = 1000) -> list[float]:
    """Independent sequential loop: one plain Procgen env per level, a constant action, first episode only."""
    from procgen import ProcgenGym3Env

    out = []
    for level in levels:
        env = ProcgenGym3Env(num=1, env_name="coinrun", start_level=level, num_levels=1, distribution_mode="easy")
        total = 0.0
        for _ in range(max_steps):
            env.act(np.array([action], dtype=np.int32))
            rew, _, first = env.observe()
            total += float(rew[0])
            if first[0]:
                break
        out.append(total)
    return out


def test_evaluate_counts_each_level_once_and_matches_reference() -> None:
    res = evaluate_policy(ConstantPolicy(RIGHT_UP), levels=LEVELS, seeds=[0, 1], progress=False)
    ref = _reference_returns(RIGHT_UP, LEVELS)
    for s in range(2):
        assert len(res.level_returns[s]) == len(LEVELS)
        assert res.level_returns[s] == ref  # deterministic policy: same outcome per level, batched or not
    expected = 100.0 * np.mean(np.asarray(ref) > 0)
    assert 0 < expected < 100, "pick levels where jump-right solves some but not all"
    assert res.solved == pytest.approx(expected) and res.solved_ci95 == 0.0
    assert res.mean_return == pytest.approx(np.mean(ref))


def test_noop_never_solves_and_run_right_does() -> None:
    noop = evaluate_policy(ConstantPolicy(NOOP), levels=LEVELS[:4], seeds=[0], max_steps=200, progress=False)
    assert noop.solved == 0.0 and noop.mean_return == 0.0
    assert noop.episode_lengths[0] == [200] * 4  # still running at max_steps: counted, unsolved
    rr = evaluate_policy(RunRightPolicy(), levels=LEVELS, seeds=[0, 1, 2], max_steps=300, progress=False)
    assert rr.solved > 0 and len(rr.solved_per_seed) == 3
    assert all(r in (0.0, 10.0) for row in rr.level_returns for r in row)


def test_mean_ci95() -> None:
    m, h = mean_ci95([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(4.303 / np.sqrt(3))
    assert mean_ci95([5.0]) == (5.0, 0.0)


def test_code_action_table_hand_built() -> None:
    codes = np.array([0, 0, 1, 2, 2, 2])
    actions = np.array([7, 7, 8, 3, 4, 3])
    t = CodeActionTable(codes, actions, num_codes=4)
    assert t.table == [[7, 7], [8], [3, 4, 3], []]
    assert t.choices(3) == [7, 7, 8, 3, 4, 3]  # unseen code -> pooled actions of all N
    rng = np.random.default_rng(0)
    assert (t.sample(np.zeros(50, int), None, rng) == 7).all()
    assert (t.sample(np.ones(50, int), None, rng) == 8).all()
    s2 = t.sample(np.full(6000, 2), None, rng)
    assert set(s2.tolist()) == {3, 4} and abs((s2 == 3).mean() - 2 / 3) < 0.03
    s3 = t.sample(np.full(6000, 3), None, rng)
    assert abs((s3 == 7).mean() - 2 / 6) < 0.03 and set(s3.tolist()) == {3, 4, 7, 8}
    assert t.to_dict()["unseen_codes"] == [3]
    # greedy ablation: each code's most frequent action; the unseen code 3 falls back to the pooled mode (7 and 3
    # are tied twice each: the lower index wins)
    assert t.most_frequent(np.array([0, 1, 2, 3, 2])).tolist() == [7, 8, 3, 3, 3]


def test_window_starts_cover_every_transition_with_causal_windows() -> None:
    for L, w in [(2, 4), (4, 4), (5, 4), (10, 4), (37, 16)]:
        starts = window_starts(L, w)
        covered = {t for s in starts for t in range(s, min(s + w, L) - 1)}
        assert covered == set(range(L - 1))
        assert all(s + min(w, L) <= L for s in starts)


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from genie_gym.config import get_preset
    from genie_gym.models.world_model import WorldModel

    root = tmp_path_factory.mktemp("agents")
    torch.manual_seed(0)
    wm_path = root / "tiny_wm.pt"
    WorldModel(get_preset("tiny")).save(wm_path)
    data = run_policy_episodes(RunRightPolicy(), num_episodes=6, seed=3, num_envs=4, progress=False)
    save_expert_set(data, root / "expert")
    return {"root": root, "wm": wm_path, "data": data}


def test_collect_roundtrip_and_determinism(tiny_setup: dict) -> None:
    data = tiny_setup["data"]
    back = load_expert_set(tiny_setup["root"] / "expert")
    assert len(back) == 6 and back.num_frames == data.num_frames
    for a, b in zip(data.episodes, back.episodes, strict=True):
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.actions, b.actions)
        assert a.level_seed == b.level_seed and 100_000 <= a.level_seed < 110_000
        assert len(a.frames) == len(a.actions) == len(a.rewards)
    again = run_policy_episodes(RunRightPolicy(), num_episodes=6, seed=3, num_envs=4, progress=False)
    assert all(np.array_equal(a.frames, b.frames) and np.array_equal(a.actions, b.actions)
               for a, b in zip(data.episodes, again.episodes, strict=True))
    other = run_policy_episodes(RunRightPolicy(), num_episodes=6, seed=4, num_envs=4, progress=False)
    assert [e.level_seed for e in other.episodes] != [e.level_seed for e in data.episodes]


class SeenFrames(RunRightPolicy):
    """Run-right that keeps every observation it was shown."""

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def act(self, obs_BHWC: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        self.seen.append(obs_BHWC.copy())
        return super().act(obs_BHWC, rng)


def test_painted_collection_and_evaluation(tiny_setup: dict, tmp_path: Path) -> None:
    """paint_vel_info: the expert's recordings carry the velocity bar while the policy is shown exactly the plain
    frames it is shown without it (same episodes, same actions); evaluation shows the policy painted frames."""
    plain_pol, painted_pol = SeenFrames(), SeenFrames()
    plain = run_policy_episodes(plain_pol, num_episodes=6, seed=3, num_envs=4, progress=False)
    painted = run_policy_episodes(painted_pol, num_episodes=6, seed=3, num_envs=4, progress=False,
                                  paint_vel_info=True)
    assert len(plain_pol.seen) == len(painted_pol.seen)
    assert all(np.array_equal(a, b) for a, b in zip(plain_pol.seen, painted_pol.seen, strict=True))
    for a, b in zip(plain.episodes, painted.episodes, strict=True):
        assert np.array_equal(a.actions, b.actions) and a.level_seed == b.level_seed
        differ_HW = (a.frames != b.frames).any(axis=(0, 3))
        assert differ_HW.any() and not differ_HW[16:].any() and not differ_HW[:, 32:].any()  # the bar only
    shown = {}
    for paint in (False, True):
        pol = SeenFrames()
        evaluate_policy(pol, levels=LEVELS[:2], seeds=[0], max_steps=10, progress=False, paint_vel_info=paint)
        shown[paint] = np.stack(pol.seen)
    differ_HW = (shown[False] != shown[True]).any(axis=(0, 1, 4))
    assert differ_HW.any() and not differ_HW[16:].any()
    # A LAM labels only frames of the kind it was trained on (the world-model file's metadata; older files: plain).
    from genie_gym.config import get_preset
    from genie_gym.models.world_model import WorldModel

    WorldModel(get_preset("tiny")).save(tmp_path / "painted_wm.pt", {"paint_vel_info": True})
    assert load_lam(str(tmp_path / "painted_wm.pt"), paint_vel_info=True)[1] == 4
    with pytest.raises(ConfigError, match="trained on velocity-painted frames but is asked to label plain"):
        load_lam(str(tmp_path / "painted_wm.pt"), paint_vel_info=False)
    with pytest.raises(ConfigError, match="trained on plain frames.*drop --paint-vel-info"):
        load_lam(str(tiny_setup["wm"]), paint_vel_info=True)


def test_latent_bc_end_to_end_tiny(tiny_setup: dict, tmp_path: Path) -> None:
    data: ExpertSet = tiny_setup["data"]
    lam, seq_len = load_lam(str(tiny_setup["wm"]))
    assert seq_len == 4
    codes = label_expert_set(lam, data, seq_len, progress=False)
    assert [len(c) for c in codes] == [ep.length - 1 for ep in data.episodes]
    frames, c, u = transitions(data, codes)
    assert c.min() >= 0 and c.max() < lam.num_actions
    # whole-episode labels agree with a single causal pass over the first window
    first = lam.infer_actions(torch.from_numpy(data.episodes[0].frames[None, :seq_len]).float() / 255.0)[0].numpy()
    assert np.array_equal(codes[0][: seq_len - 1], first)

    oracle, st = train_classifier(*data.frames_actions(), 15, steps=3, batch_size=8, progress=False)
    latent, _ = train_classifier(frames, c, lam.num_actions, steps=3, batch_size=8, progress=False)
    latent.save(tmp_path / "p.pt", {"kind": "latent_bc"})
    latent2, meta = ImpalaPolicy.load(tmp_path / "p.pt")
    assert meta["kind"] == "latent_bc"
    idx = select_labelled(len(c), 20, seed=0)
    table = CodeActionTable(c[idx], u[idx], lam.num_actions)
    learned = LearnedMapping.fit(c[idx], u[idx], frames[idx], lam.num_actions, steps=3)
    greedy = LatentBCPolicy(latent, table, greedy=True)
    obs = np.stack([ep.frames[0] for ep in data.episodes[:4]])
    assert np.array_equal(greedy.act(obs, np.random.default_rng(0)),
                          table.most_frequent(latent.probs(obs).argmax(1)))  # no randomness in greedy acting
    with pytest.raises(ConfigError, match="table D"):
        LatentBCPolicy(latent, learned, greedy=True)
    for pol in (CategoricalTorchPolicy(oracle), LatentBCPolicy(latent2, table), LatentBCPolicy(latent, learned),
                greedy):
        res = evaluate_policy(pol, levels=LEVELS[:3], seeds=[0, 1], max_steps=40, progress=False)
        assert len(res.level_returns) == 2 and 0.0 <= res.solved <= 100.0
    # determinism: same seed, same weights and the same evaluation
    again, _ = train_classifier(frames, c, lam.num_actions, steps=3, batch_size=8, progress=False)
    pairs = zip(latent.state_dict().values(), again.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    r1 = evaluate_policy(LatentBCPolicy(latent, table), levels=LEVELS[:3], seeds=[5], max_steps=40, progress=False)
    r2 = evaluate_policy(LatentBCPolicy(again, table), levels=LEVELS[:3], seeds=[5], max_steps=40, progress=False)
    assert r1.level_returns == r2.level_returns and r1.episode_lengths == r2.episode_lengths


def test_bad_inputs(tiny_setup: dict, tmp_path: Path) -> None:
    from agents.ppo_expert import load_expert

    pol = ImpalaPolicy(8)
    with pytest.raises(ConfigError, match="64x64"):
        pol.probs(np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(ConfigError, match="64x64"):
        CategoricalTorchPolicy(pol).act(np.zeros((2, 64, 64, 1), np.uint8), np.random.default_rng(0))
    table = CodeActionTable(np.array([0, 1]), np.array([RIGHT, RIGHT_UP]), num_codes=6)
    with pytest.raises(ConfigError, match="LAM has 6"):
        LatentBCPolicy(pol, table)
    with pytest.raises(ConfigError, match="n-labelled"):
        select_labelled(100, 101, seed=0)
    with pytest.raises(DatasetError, match="agents.collect"):
        ExpertSet().frames_actions()
    with pytest.raises(DatasetError):
        train_classifier(np.zeros((0, 64, 64, 3), np.uint8), np.zeros(0), 15, steps=1)
    with pytest.raises(CheckpointError, match="agents.ppo_expert"):
        load_expert(tmp_path / "nope.zip")
    with pytest.raises(CheckpointError):
        load_lam(str(tmp_path / "missing_world_model.pt"))
    with pytest.raises(CheckpointError, match="agents.bc"):
        ImpalaPolicy.load(tmp_path / "missing.pt")


@pytest.mark.slow
def test_procgen_sb3_vecenv_dones_and_tiny_ppo(tmp_path: Path) -> None:
    from stable_baselines3.common.vec_env import VecMonitor

    from agents.evaluate import SB3Policy
    from agents.ppo_expert import Args, ProcgenSB3VecEnv, export_expert, load_expert, make_model

    venv = ProcgenSB3VecEnv(2, start_level=200_000, num_levels=1, seed=0)
    obs = venv.reset()
    assert obs.shape == (2, 64, 64, 3) and obs.dtype == np.uint8
    ref = _reference_returns(RIGHT_UP, [200_000])[0]
    for _ in range(1000):
        prev = obs
        obs, rew, done, infos = venv.step(np.full(2, RIGHT_UP))
        if done.any():
            break
    assert done.all()  # same level, same actions: both episodes end on the same step
    assert rew[0] == ref  # the reward of the terminal step belongs to the episode that ended
    assert np.array_equal(infos[0]["terminal_observation"], prev[0])  # documented stand-in: last frame acted on
    assert infos[0]["level_complete"] == (ref > 0)
    assert not np.array_equal(obs[0], prev[0])  # the returned obs is already the new episode's first frame

    args = Args(total_timesteps=32, num_envs=2, n_steps=16, n_minibatches=2, cnn="impala", out=str(tmp_path))
    model = make_model(args, VecMonitor(ProcgenSB3VecEnv(2, seed=0)))
    model.learn(total_timesteps=32)
    export_expert(model, tmp_path / "final.zip")
    expert = SB3Policy(load_expert(tmp_path / "final.zip"))
    acts = expert.act(obs, np.random.default_rng(0))
    assert acts.shape == (2,) and ((0 <= acts) & (acts < 15)).all()
    assert (tmp_path / "final.zip").stat().st_size < 10 * 2**20


def test_scripts_save_load_and_code_count_mismatch(tiny_setup: dict, tmp_path: Path) -> None:
    from agents import bc, latent_bc
    from agents.evaluate import load_policy
    from genie_gym.config import get_preset
    from genie_gym.models.world_model import WorldModel

    data_dir, wm = str(tiny_setup["root"] / "expert"), str(tiny_setup["wm"])
    bc.main(bc.Args(data=data_dir, out=str(tmp_path / "oracle.pt"), steps=2, batch_size=4))
    assert load_policy("oracle", str(tmp_path / "oracle.pt")).act(
        tiny_setup["data"].episodes[0].frames[:3], np.random.default_rng(0)).shape == (3,)
    for mapping in ("table", "learned"):
        out = tmp_path / mapping
        latent_bc.main(latent_bc.Args(data=data_dir, world_model=wm, out=str(out), n_labelled=30,
                                      mapping=mapping, steps=2, batch_size=4))
        agent = load_policy("latent", str(out), world_model=wm)
        assert isinstance(agent.mapping, CodeActionTable if mapping == "table" else LearnedMapping)
    with pytest.raises(ConfigError, match="n-labelled"):
        latent_bc.main(latent_bc.Args(data=data_dir, world_model=wm, out=str(tmp_path / "x"), n_labelled=10**6))
    painted = save_expert_set(tiny_setup["data"], tmp_path / "painted", settings={"paint_vel_info": True})
    with pytest.raises(ConfigError, match="trained on plain frames but is asked to label velocity-painted"):
        latent_bc.main(latent_bc.Args(data=str(painted), world_model=wm, out=str(tmp_path / "y")))
    cfg = get_preset("tiny")
    cfg.lam.num_actions = 6
    WorldModel(cfg).save(tmp_path / "wm6.pt")
    with pytest.raises(ConfigError, match="LAM has 6"):
        load_policy("latent", str(tmp_path / "table"), world_model=str(tmp_path / "wm6.pt"))
    torch.manual_seed(123)  # a LAM of the same shape with other weights: its codes mean other things
    WorldModel(get_preset("tiny")).save(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="maps the codes of another LAM"):
        load_policy("latent", str(tmp_path / "table"), world_model=str(tmp_path / "other.pt"))


def test_ppo_expert_main_resumes_from_its_newest_checkpoint(tmp_path: Path) -> None:
    import json

    from agents.ppo_expert import Args, latest_checkpoint, main

    out = tmp_path / "ppo"
    common = dict(num_envs=2, n_steps=16, n_minibatches=2, checkpoint_every=32, out=str(out), threads=1)
    main(Args(total_timesteps=64, **common))
    first = latest_checkpoint(out)
    assert first is not None and first[1] is not None  # weights + reward-normalisation statistics
    assert int(first[0].stem.split("_")[1]) == 64
    (first[0].parent / "ppo_96_steps.zip").write_bytes(b"PK\x03\x04 truncated")  # an interrupted save
    main(Args(total_timesteps=128, resume=True, **common))
    info = json.loads((out / "train_info.json").read_text())
    assert info["resumed_from_frames"] == 64 and info["frames"] == 128 and info["frames_this_run"] == 64
    assert (out / "expert.zip").is_file()


def test_entry_points_print_no_gym_banner_and_dream_ppo_lists_only_its_own_options():
    """stable-baselines3 and procgen import the old gym, which prints an "unmaintained" banner: ours swallow it.
    dream_ppo's --help shows PPO's settings and the dream's, not the Procgen expert's level options."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    commands = [[sys.executable, "-c", code] for code in (
        "import genie_gym.envs.sb3", "import agents.ppo_expert",
        "from genie_gym.envs.procgen_prompt import procgen_start_frame; procgen_start_frame('coinrun', 0)")]
    commands.append([sys.executable, "-m", "agents.dream_ppo", "--help"])
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root)
             for c in commands]  # each in its own process (the first gym import is the one that would print)
    try:
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()  # a no-op for the ones that finished
    for command, proc, (out, err) in zip(commands, procs, outputs, strict=True):
        assert proc.returncode == 0 and "unmaintained" not in out + err, (command, err[-300:])
    help_text = outputs[-1][0]
    assert "--world-model" in help_text and "--learning-rate" in help_text
    assert not any(flag in help_text for flag in ("--num-levels", "--start-level", "--env-name"))
