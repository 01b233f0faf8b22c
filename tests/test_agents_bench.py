"""Benchmarks' --quick modes (latent BC, its label study, the action bound): the whole pipeline at tiny sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bc_benchmark_quick_writes_results(tmp_path: Path) -> None:
    import bc_coinrun

    bc_coinrun.main(bc_coinrun.Args(quick=True, out=str(tmp_path)))
    res = json.loads((tmp_path / "bc_coinrun.json").read_text())
    for key in ("random", "run_right", "oracle", "expert"):
        assert 0.0 <= res[key]["solved"] <= 100.0 and res[key]["solved_ci95"] >= 0.0
        assert res[key]["num_levels"] == 4 and len(res[key]["solved_per_seed"]) == 2
    assert sorted(res["latent_bc"], key=int) == ["5", "10", "20"]
    assert all("solved" in v and "solved_ci95" in v for v in res["latent_bc"].values())
    assert list(res["latent_bc_greedy"]) == ["10"]
    assert 0.0 <= res["lam"]["nmi_codes_vs_actions"] <= 1.0
    conf = res["lam"]["confusion_codes_x_actions"]
    assert len(conf) == res["lam"]["num_codes"] and len(conf[0]) == 15
    assert sum(map(sum, conf)) == res["lam"]["transitions"]
    assert res["run_right"]["solved"] > 0  # run-right solves one of the 4 easy levels within 60 steps (seed 0)
    md = (tmp_path / "bc_coinrun.md").read_text()
    assert "| oracle |" in md and "N=20" in md and "LAPO" in md
    (tmp_path / "bc_coinrun.md").unlink()  # --report-only rebuilds the same report from the JSON
    bc_coinrun.main(bc_coinrun.Args(report_only=True, out=str(tmp_path)))
    assert (tmp_path / "bc_coinrun.md").read_text() == md
    for name in ("bc_coinrun.png", "bc_coinrun_confusion.png"):
        with Image.open(tmp_path / name) as im:
            assert im.size[0] > 100 and im.size[1] > 100


def test_lam_action_lag_pairs_code_of_t_plus_k_with_action_of_t() -> None:
    import numpy as np
    from lam_action_lag import lagged_pairs

    codes = [np.array([10, 11, 12, 13]), np.array([20, 21])]
    actions = [np.array([0, 1, 2, 3]), np.array([4, 5])]
    c, u = lagged_pairs(codes, actions, 1)  # never across an episode boundary
    assert c.tolist() == [11, 12, 13, 21] and u.tolist() == [0, 1, 2, 4]
    c, u = lagged_pairs(codes, actions, -2)
    assert c.tolist() == [10, 11] and u.tolist() == [2, 3]
    c, u = lagged_pairs(codes, actions, 0)
    assert c.tolist() == [10, 11, 12, 13, 20, 21] and u.tolist() == [0, 1, 2, 3, 4, 5]


def test_latent_bc_labels_helpers() -> None:
    import numpy as np
    from latent_bc_labels import context_indices, motion_labels, noisy

    from agents.collect import Episode, ExpertSet

    idx = context_indices(4, 3)  # frames t-1, t, t+1 for transitions 0..2, clamped at the start
    assert idx.tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3]]
    assert context_indices(4, 2, future=2).tolist() == [[0, 1, 2, 3], [1, 2, 3, 3], [2, 3, 3, 3]]  # to the end
    labels = np.arange(1000) % 6
    assert (noisy(labels, 0.0, 6, seed=0) == labels).all()
    changed = (noisy(labels, 0.5, 6, seed=0) != labels).mean()
    assert 0.45 < changed < 0.55  # a changed label always moves to another class
    flipped = noisy(labels, 1.0, 6, seed=0)
    assert (flipped != labels).all() and set(flipped.tolist()) <= set(range(6))
    # The world scrolls left by 2 pixels per frame: the agent moves right, not up -> class 2 * 2 + 0.
    world = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    frames = np.stack([world[:, 2 * t : 2 * t + 64] for t in range(4)])
    data = ExpertSet([Episode(frames, np.zeros(4, np.int64), np.zeros(4, np.float32), 0)])
    assert motion_labels(data).tolist() == [4, 4, 4]


@pytest.mark.slow
def test_latent_bc_labels_quick_writes_results(tmp_path: Path) -> None:
    import latent_bc_labels

    res = latent_bc_labels.main(latent_bc_labels.Args(quick=True, out=tmp_path))
    saved = json.loads((tmp_path / "latent_bc_labels.json").read_text())
    assert saved["rows"].keys() == res["rows"].keys()
    assert set(saved["rows"]) == {"oracle", "movement", "idm", "movement_noisy", "movement_noisy_10",
                                  "movement_noisy_20", "lam", "motion", "pooled"}
    for row in saved["rows"].values():
        assert 0.0 <= row["solved"] <= 100.0 and len(row["solved_per_seed"]) == 2
        assert 0.0 <= row["nmi_movement"] <= 1.0
    assert saved["rows"]["movement"]["nmi_movement"] == 1.0 and saved["rows"]["movement"]["movement_accuracy"] == 1
    assert saved["rows"]["lam"]["movement_accuracy"] is None
    assert 0.0 <= saved["idm_probe"]["held_out_accuracy"] <= 1.0
    md = (tmp_path / "latent_bc_labels.md").read_text()
    assert "| movement |" in md and "| oracle |" in md
    (tmp_path / "latent_bc_labels.md").unlink()
    latent_bc_labels.main(latent_bc_labels.Args(report_only=True, out=tmp_path))
    assert (tmp_path / "latent_bc_labels.md").read_text() == md


def test_latent_bc_labels_rejects_bad_rows(tmp_path: Path) -> None:
    import latent_bc_labels
    import pytest

    from genie_gym.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown"):
        latent_bc_labels.main(latent_bc_labels.Args(quick=True, out=tmp_path, rows=("lam", "oracel")))
    with pytest.raises(ConfigError, match="--noise"):
        latent_bc_labels.main(latent_bc_labels.Args(quick=True, out=tmp_path, rows=("movement_noisy",), noise=()))
    with pytest.raises(ConfigError, match="within 0..1"):
        latent_bc_labels.main(latent_bc_labels.Args(quick=True, out=tmp_path, noise=(1.5,)))


def test_idm_cross_fit_labels_every_transition_out_of_sample() -> None:
    import numpy as np
    from latent_bc_labels import idm_labels

    from agents.collect import Episode, ExpertSet

    rng = np.random.default_rng(0)
    eps = [Episode(rng.integers(0, 255, (n, 64, 64, 3), dtype=np.uint8), rng.integers(0, 15, n),
                   np.zeros(n, np.float32), i) for i, n in enumerate((5, 4, 6, 3))]
    labels, info = idm_labels(ExpertSet(eps), context=3, steps=2, seed=0, cross_fit=True)
    assert labels.shape == (4 + 3 + 5 + 2,) and set(labels.tolist()) <= set(range(6))
    assert 0.0 <= info["cross_fit_accuracy"] <= 1.0 and 0.0 <= info["held_out_accuracy"] <= 1.0
    plain, plain_info = idm_labels(ExpertSet(eps), context=3, steps=2, seed=0)
    assert "cross_fit_accuracy" not in plain_info and plain[7:].tolist() == labels[7:].tolist()  # same 1st probe


@pytest.mark.slow
def test_action_bound_quick_trains_both_arms_and_reports(tiny_data: Path, tiny_model_file: Path, tmp_path: Path):
    """studies/action_bound.py --quick: both arms fine-tune a copy of the dynamics and are scored held out."""
    import action_bound

    out = tmp_path / "action_bound"
    action_bound.main(action_bound.Args(model=tiny_model_file, data=tiny_data, quick=True, out=out,
                                        save_dir=tmp_path / "models"))
    arms = json.loads(out.with_suffix(".json").read_text())["arms"]
    from genie_gym.models.world_model import WorldModel

    saved = WorldModel.load(tmp_path / "models" / "scroll.pt")  # the fine-tuned dynamics, its action source named
    assert saved.metadata["action_source"] == "scroll" and saved.metadata["action_bound"]["steps"] == 3
    assert set(arms) == {"start (no fine-tuning), lam", "lam", "true_movement", "scroll"}
    for row in arms.values():
        assert 0.0 <= row["token_accuracy"] <= 1.0 and 0.0 <= row["copy_token_accuracy"] <= 1.0
        assert row["rollout_psnr_mean"] > 0
    assert arms["lam"]["steps"] == arms["true_movement"]["steps"] == arms["scroll"]["steps"] == 3
    assert "| true_movement | 3 |" in out.with_suffix(".md").read_text()
    with pytest.raises(SystemExit, match="unknown arms"):
        action_bound.main(action_bound.Args(model=tiny_model_file, data=tiny_data, arms=["oracle"], out=out))


def test_action_bound_scroll_classes_follow_the_picture():
    """The `scroll` arm's classes: a picture shifted left by 2 px (the camera went right), up, down, or still."""
    import numpy as np
    import torch
    from action_bound import scroll_classes

    rng = np.random.default_rng(0)
    first = torch.from_numpy(rng.random((64, 64, 3), dtype=np.float32))
    nexts = [torch.roll(first, -2, dims=1), torch.roll(first, 2, dims=1), torch.roll(first, 2, dims=0),
             torch.roll(first, (-2, 2), dims=(0, 1)), first]  # dx > 0; dx < 0; dy < 0; dy > 0 with dx < 0; still
    clips = torch.stack([torch.stack([first, n]) for n in nexts])
    assert scroll_classes(clips)[:, 0].tolist() == [2, 0, 4, 6, 1]


def test_token_stability_scores_stand_ins_for_the_next_frame(tiny_data: Path, tiny_model_file: Path, tmp_path: Path):
    """studies/token_stability.py: token changes per pair kind, and the stand-ins for frame t+1 on the same pairs
    (an untrained tokenizer: the figures only have to be consistent)."""
    import token_stability

    out = tmp_path / "token_stability"
    token_stability.main(token_stability.Args(model=tiny_model_file, data=tiny_data, num_clips=24, out=out))
    result = json.loads(out.with_suffix(".json").read_text())
    stand_ins = result["stand_ins"]
    assert 0 < stand_ins.pop("pairs") <= 24
    assert len(stand_ins) == 4 and all(0.0 <= r["token_accuracy"] <= 1.0 for r in stand_ins.values())
    assert stand_ins["the real frame + noise (sigma 2/255)"]["psnr"] > 40
    assert (stand_ins["the real frame + noise (sigma 2/255)"]["token_accuracy"]
            >= stand_ins["copy frame t"]["token_accuracy"])
    assert stand_ins["copy frame t"]["psnr"] < stand_ins["the real frame + noise (sigma 2/255)"]["psnr"]
    assert "| frame t shifted by the true scroll |" in out.with_suffix(".md").read_text()


def test_attention_cuda_study_runs_its_arms_and_restores_the_library(tiny_model_file: Path, tmp_path: Path):
    """studies/attention_cuda.py (for a GPU session) on the CPU: its one-query paths give the fused kernel's output,
    every arm is timed, and the library's attention is back in place afterwards."""
    import attention_cuda
    import torch
    import torch.nn.functional as F

    from genie_gym.models import st_transformer

    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(10, 2, 1, 8, generator=g), torch.randn(10, 2, 5, 8, generator=g), torch.randn(10, 2, 5, 8)
    mask = (torch.arange(5)[None, :] < torch.randint(1, 6, (10, 1), generator=g)).view(10, 1, 1, 5)
    torch.testing.assert_close(attention_cuda.elementwise_attention(q, k, v, mask),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-5, rtol=1e-5)
    result = attention_cuda.main(attention_cuda.Args(device="cpu", model=tiny_model_file, num_worlds=[2],
                                                     precision="float32", rounds=1, seconds=0.05, out=tmp_path))
    assert st_transformer.attention is attention_cuda.LIBRARY_ATTENTION
    assert set(result["end_to_end"][0]["frames_per_s"]) == set(attention_cuda.ARMS)
    assert all(result["single_call"][a]["max_abs_diff"] < 1e-4 for a in attention_cuda.ARMS)
    assert "| 2 |" in (tmp_path / "attention_cuda.md").read_text()


def test_step_profile_times_every_stage(tiny_model_file: Path, tmp_path: Path):
    """benchmarks/studies/step_profile.py: the three Simulator stages are timed and take most of a step; their work
    is counted (the commit, without the logits head and the last layer's output, less than a decoding pass) and
    the ceiling is the matmul speed over the work per frame."""
    import step_profile

    out = tmp_path / "step_profile"
    step_profile.main(step_profile.Args(model=tiny_model_file, num_worlds=2, steps=2, precisions=["float32"], out=out))
    row = json.loads(out.with_suffix(".json").read_text())["rows"]["float32"]
    assert set(row["share"]) == set(step_profile.STAGES) and all(v > 0 for v in row["share"].values())
    assert 0.5 < sum(row["share"].values()) <= 1.0 and row["frames_per_s"] > 0
    flops = row["mflop_per_frame"]
    assert set(flops) == set(step_profile.STAGES) and 0 < flops["dyn_commit"] < flops["dyn_step"]
    assert row["ceiling_fps"] == pytest.approx(row["matmul_gflop_per_s"] * 1e3 / sum(flops.values()))
    assert "MFLOP at" in out.with_suffix(".md").read_text()


def test_step_profile_counts_the_event_heads(tmp_path: Path):
    """A model with event heads: they are timed and counted as Genie-v0 runs them, after every step."""
    import dataclasses

    import step_profile

    from genie_gym.config import get_preset
    from genie_gym.models.world_model import WorldModel

    cfg = get_preset("tiny")
    cfg = dataclasses.replace(cfg, heads=dataclasses.replace(cfg.heads, enabled=True))
    path = tmp_path / "heads.pt"
    WorldModel(cfg).save(path, {"steps": {"tokenizer": 0, "dynamics": 0}})
    out = tmp_path / "profile"
    step_profile.main(step_profile.Args(model=path, num_worlds=2, steps=2, precisions=["float32"], out=out))
    row = json.loads(out.with_suffix(".json").read_text())["rows"]["float32"]
    assert row["share"][step_profile.HEADS] > 0 and row["mflop_per_frame"][step_profile.HEADS] > 0


def test_step_profile_lists_cpu_operators(tiny_model_file: Path, tmp_path: Path):
    """step_profile.py --kernels K on the CPU: the K operators with the most CPU time, their shares in (0, 1]."""
    import step_profile

    out = tmp_path / "ops"
    step_profile.main(step_profile.Args(model=tiny_model_file, num_worlds=2, steps=2, precisions=["float32"],
                                        kernels=3, out=out))
    ops = json.loads(out.with_suffix(".json").read_text())["rows"]["float32"]["kernels"]
    assert len(ops) == 3 and all(0 < k["share"] <= 1 for k in ops) and ops[0]["share"] >= ops[-1]["share"]
    assert "operators by their own CPU time" in out.with_suffix(".md").read_text()


def test_int8_env_runs_every_arm_and_scores_it_against_float32(tiny_model_file: Path, tiny_data: Path,
                                                                 tmp_path: Path):
    """benchmarks/studies/int8_env.py: every arm is timed and scored; float32 against itself is identical (the
    100-dB cap) and int8 moves the frames (its weights are rounded)."""
    import int8_env

    res = int8_env.main(int8_env.Args(model=tiny_model_file, data=tiny_data, num_clips=2, worlds=(1, 2), rounds=1,
                                      seconds=0.2, threads=1, out=tmp_path))
    assert set(res["quality"]) == set(int8_env.ARMS) and all(v > 0 for n in res["fps"].values() for v in n.values())
    assert res["quality"]["float32"]["psnr_vs_float32"] == 100.0
    assert res["quality"]["int8 all"]["psnr_vs_float32"] < 100.0
    assert "| int8 dynamics |" in (tmp_path / "int8_env.md").read_text()


def test_int8_linears_times_every_shape_in_three_precisions(tmp_path: Path):
    """benchmarks/studies/int8_linears.py: one row per (rows, shape), positive GFLOP/s for each precision."""
    import int8_linears

    res = int8_linears.main(int8_linears.Args(rows=(64,), repeats=1, out=tmp_path))
    assert [r["shape"] for r in res["rows"]] == [list(s) for s in int8_linears.SHAPES]
    assert all(v > 0 for r in res["rows"] for v in r["gflops"].values())
    assert "| 64 (1) | 192 -> 4000 |" in (tmp_path / "int8_linears.md").read_text()



def test_background_cells_replays_episodes_bit_identically_and_classes_every_token(tiny_data: Path,
                                                                                  tiny_model_file: Path,
                                                                                  tmp_path: Path):
    """studies/background_cells.py: a recorded episode replays bit for bit (so its background mask is the
    background's), every scored token falls in one class, and the classes add up to the all-token figures."""
    import background_cells

    res = background_cells.main(background_cells.Args(model=tiny_model_file, data=tiny_data, episodes=2,
                                                      max_frames=32, out=tmp_path / "bg"))
    assert res["episodes_replayed"] >= 1 and res["episodes_skipped"] == 0
    rows = res["rows"]
    overall = rows.pop("all")
    assert overall["tokens"] == sum(r["tokens"] for r in rows.values()) > 0
    assert sum(r["share"] for r in rows.values()) == pytest.approx(1.0)
    assert sum(r["gain"] for r in rows.values()) == pytest.approx(overall["gain"], abs=1e-9)
    assert rows["background, changed"]["tokens"] + rows["background, unchanged"]["tokens"] > 0  # CoinRun's backdrop
    assert "| foreground, changed |" in (tmp_path / "bg.md").read_text()
