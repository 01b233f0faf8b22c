"""The world model shipped inside the package: loads verified, runs as Genie-v0's default, drives `genie-gym demo`."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np

import genie_gym  # noqa: F401  (registers Genie-v0)
from genie_gym.models.world_model import WorldModel
from genie_gym.utils.io import sha256_file

MODEL_CARD = Path(genie_gym.__file__).parent / "assets" / "MODEL_CARD.md"


def test_shipped_model_is_small_verified_and_documented():
    path = WorldModel.default_path()
    assert path.is_file(), "the shipped world model is missing from genie_gym/assets/"
    assert path.stat().st_size <= 25 * 2**20
    wm = WorldModel.load()  # checksum and format version verified on load
    assert wm.config.preset == "small"
    assert wm.num_actions == 8
    for key in ("steps", "data_manifest_sha256"):
        assert key in wm.metadata, f"metadata lacks {key}"
    card = MODEL_CARD.read_text()
    assert sha256_file(path)[:16] in card, "MODEL_CARD.md does not name the shipped file's sha256"


def test_genie_v0_with_no_arguments_runs_the_shipped_model():
    env = gym.make("Genie-v0")
    obs, info = env.reset(seed=3)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    assert info["prompt_source"].startswith("procgen:coinrun")
    frames = [obs]
    for a in (0, 5):
        obs, reward, terminated, truncated, _ = env.step(a)
        frames.append(obs)
        assert env.observation_space.contains(obs) and reward == 0.0 and not terminated and not truncated
    # A trained model moves on from its prompt but stays a picture, not noise: mostly the colours it started with.
    assert np.abs(frames[-1].astype(int) - frames[0].astype(int)).mean() < 60
    env.close()


def test_demo_writes_videos_and_action_strip(tmp_path, capsys):
    from genie_gym.cli import main

    main(["demo", "--steps", "3", "--strip-steps", "1", "--out", str(tmp_path)])
    for name in ("coinrun.mp4", "sketch.mp4", "action_strip.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert "frames/s" in capsys.readouterr().out


def test_shipped_tokenizer_keeps_coinrun_frames():
    """v1.0's hybrid tokenizer on CoinRun start frames of levels it never trained on (split 'test' seeds are
    hashed; levels 200000+ are far outside 0-9999): measured 28.4 dB on these four; v0.2's patch tokenizer 24.8 dB."""
    import torch

    from genie_gym.envs.procgen_prompt import procgen_start_frame
    from genie_gym.evaluation.metrics import psnr
    from genie_gym.models.frames import to_float

    wm = WorldModel.load()
    frames = to_float(np.stack([procgen_start_frame("coinrun", level=200_000 + i, distribution_mode="hard")
                                for i in range(4)]))[:, None]
    with torch.no_grad():
        recon = wm.tokenizer.decode(wm.tokenizer.encode(frames))
    assert float(psnr(recon, frames).mean()) >= 26.0


def test_readme_and_model_card_quote_the_shipped_models_measured_quality():
    """The headline figures in README.md and the model card are those `benchmarks/world_model_quality.py` measured
    on the file that ships (its sha256 is in the results): a new model without a re-run and re-written docs fails."""
    import json

    root = Path(__file__).resolve().parent.parent
    results = json.loads((root / "benchmarks" / "results" / "world_model_quality.json").read_text())
    assert results["model_file_sha256"] == sha256_file(WorldModel.default_path()), (
        "benchmarks/results/world_model_quality.json was measured on another file: run "
        "`python benchmarks/world_model_quality.py --data DIR` on the shipped model")
    cells = json.loads((root / "benchmarks" / "results" / "cell_order" / "cell_order.json").read_text())
    assert cells["model_sha256"] == WorldModel.load().payload_sha256, (
        "benchmarks/results/cell_order/ was measured on another model: run benchmarks/studies/cell_order.py --force")
    cell4 = cells["rows"]["cell4"]
    figures = {
        "cell schedule stability": f"{cell4['stability'][-1]:.2f}",
        "cell schedule rollout PSNR": f"{cell4['rollout_psnr']:.2f} dB",
        "tokenizer PSNR": f"{results['tokenizer_psnr']:.2f} dB",
        "rollout PSNR": f"{results['rollout_psnr_mean']:.2f} dB",
        "token accuracy": f"{results['token_accuracy']:.1%}",
        "copy accuracy": f"{results['copy_token_accuracy']:.1%}",
        "stability": f"{results['gradient_energy_ratio_step200']:.2f}",
        "pooled rollout PSNR": f"{results['rollout_psnr_of_mean_mse']:.2f}",
        "pooled still-image PSNR": f"{results['still_psnr_of_mean_mse']:.2f}",
    }
    for doc in (root / "README.md", MODEL_CARD):
        text = doc.read_text()
        missing = {name: value for name, value in figures.items() if value not in text}
        assert not missing, f"{doc.name} does not quote the measured {missing}"


def test_readme_speed_and_agent_figures_are_the_benchmark_results():
    """README's speed, data and agent figures are the committed benchmark results (`benchmarks/results/*.json`),
    formatted as the README writes them: a re-run benchmark without re-written docs fails here."""
    import json

    root = Path(__file__).resolve().parent.parent
    res = {name: json.loads((root / "benchmarks" / "results" / f"{name}.json").read_text())
           for name in ("env_speed", "ppo_speed", "data_speed", "bc_coinrun")}
    env = res["env_speed"]
    row = {(r["maskgit_steps"], r["precision"], r["compiled"]): r for r in env["rows"]}
    default = row[(1, "float32", False)]
    best_batched = max(max(v for v in r["batched_fps"].values() if v) for r in env["rows"])
    ppo = {r["precision"]: r for r in res["ppo_speed"]["rows"]}
    data, bc = res["data_speed"], res["bc_coinrun"]
    figures = {
        "one env, default settings": f"**{default['single_fps']:.1f} frames/s**",
        "one env, 25 steps": f"25 steps {row[(25, 'float32', False)]['single_fps']:.1f}",
        "batched, best": f"at most {best_batched:.0f} frames/s",
        "default rollout PSNR": f"{default['rollout_psnr']:.2f}",
        "matmul float32": f"{env['matmul_gflops']['float32']:.0f} GFLOP/s",
        "PPO float32": f"{ppo['float32']['ppo_frames_per_s']:.1f} env frames/s",
        "PPO bfloat16": f"{ppo['bfloat16']['ppo_frames_per_s']:.1f}",
        "data end to end": f"{data['frames_per_s']:,.0f} frames/s recorded",
        "data loader": f"loader {data['loader_frames_per_s']:,.0f} frames/s",
        "expert": f"expert {bc['expert']['solved']:.1f}%",
        "oracle BC": f"oracle BC {bc['oracle']['solved']:.1f}%",
        "run-right": f"run-right {bc['run_right']['solved']:.1f}%",
        "random": f"random {bc['random']['solved']:.1f}%",
        "latent BC N=200": f"latent BC {bc['latent_bc']['200']['solved']:.1f}% at N = 200",
    }
    results = root / "benchmarks" / "results"
    painted_bc = json.loads((results / "bc_coinrun_vel" / "bc_coinrun.json").read_text())
    painted_labels = json.loads((results / "latent_bc_labels_vel" / "latent_bc_labels.json").read_text())
    figures |= {
        "painted: latent BC N=200": f"the LAM ignores the bar ({painted_bc['latent_bc']['200']['solved']:.1f}%",
        "painted: IDM accuracy": f"right {100 * painted_labels['idm_probe']['held_out_accuracy']:.1f}% of the time",
        "painted: IDM labels": f"reach only {painted_labels['rows']['idm']['solved']:.1f}%",
    }
    bar_bc = json.loads((results / "bc_coinrun_vel_bar" / "bc_coinrun.json").read_text())
    bar_lam = json.loads((results / "lam_ablation_vel.json").read_text())["variants"]
    bar_lam = bar_lam["warmup_raw_flatten_kernel5_nohist_bar10"]
    figures |= {
        "bar-weighted LAM: expert NMI": f"expert NMI {bar_lam['expert_nmi_movement']:.3f}",
        "bar-weighted LAM: latent BC": f"latent BC still scores {bar_bc['latent_bc']['200']['solved']:.1f}%",
    }
    text = (root / "README.md").read_text()
    missing = {name: value for name, value in figures.items() if value not in text}
    assert not missing, f"README.md does not quote the benchmark results {missing}"
