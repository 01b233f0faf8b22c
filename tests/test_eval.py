"""`genie-gym eval` writes eval.json with every metric and the two pictures, deterministically per seed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genie_gym.errors import CheckpointError, ConfigError, DatasetError
from genie_gym.evaluation.evaluate import Args, evaluate

KEYS = {
    "still_psnr_mean",
    "token_accuracy",
    "copy_token_accuracy",
    "stability",
    "tokenizer_psnr",
    "tokenizer_ssim",
    "rollout_psnr",
    "rollout_psnr_mean",
    "rollout_ssim_mean",
    "rollout_psnr_of_mean_mse",
    "still_psnr_of_mean_mse",
    "rollout_psnr_random_actions",
    "delta_psnr_t4",
    "lam_usage",
    "lam_perplexity",
    "lam_nmi",
    "lam_code_histogram",
    "model_sha256",
    "images",
    "num_clips",
    "split",
}


@pytest.fixture(scope="module")
def model_file(tiny_model_file) -> Path:
    return tiny_model_file


def test_eval_writes_json_and_pictures(tiny_data: Path, model_file: Path, tmp_path: Path):
    args = Args(
        model=model_file,
        data=tiny_data,
        split="test",
        out=tmp_path / "a",
        num_clips=4,
        device="cpu",
        strip_steps=3,
        batch_size=4,
        stability_steps=12,
        stability_prompts=3,
    )
    r = evaluate(args)
    on_disk = json.loads((tmp_path / "a" / "eval.json").read_text())
    assert KEYS <= set(on_disk) and on_disk["split"] == "test"
    assert len(on_disk["rollout_psnr"]) == 10 and on_disk["num_clips"] == 4
    for k in ("tokenizer_psnr", "tokenizer_ssim", "rollout_psnr_mean", "delta_psnr_t4", "lam_nmi"):
        assert math.isfinite(on_disk[k]), k
    assert 1.0 <= on_disk["lam_perplexity"] <= 8.0 and sum(on_disk["lam_code_histogram"]) == 4 * 10
    assert 0.0 <= on_disk["lam_nmi"] <= 1.0
    # baselines beside the figures: the still image on the same clips, copying the last frame's tokens
    assert len(on_disk["still_psnr"]) == 10 and on_disk["still_psnr"][0] > on_disk["still_psnr"][-1] - 30
    assert 0.0 <= on_disk["token_accuracy"] <= 1.0 and 0.0 <= on_disk["copy_token_accuracy"] <= 1.0
    assert set(on_disk["rollout_by_context"]) == {"1", "4"}
    for c in ("1", "4"):  # the same target frames for both contexts, so the still images differ only by context
        assert len(on_disk["rollout_by_context"][c]["rollout_psnr"]) == 10
    stab = on_disk["stability"]
    assert stab["steps"] == [1, 5, 10, 12] and stab["prompts"] == 3
    assert all(math.isfinite(x) and x >= 0 for x in stab["gradient_energy_ratio"])
    assert (tmp_path / "a" / "stability.png").is_file()
    assert on_disk["heads"] == {}  # a model without event heads
    by_action = np.array(on_disk["lam_code_by_action"])  # codes x 15 true actions, the same transitions
    assert by_action.shape[1] == 15 and by_action.sum(1).tolist() == on_disk["lam_code_histogram"]
    strip = np.asarray(Image.open(tmp_path / "a" / "action_strip.png"))
    assert strip.shape[0] == 8 * (64 + 2) + 2 and strip.shape[1] > 4 * (
        64 + 2
    )  # 8 actions x (prompt + 3 steps)
    grid = np.asarray(Image.open(tmp_path / "a" / "grid.png"))
    assert grid.shape[0] == 8 * (64 + 2) + 2 and grid.shape[1] > 11 * (64 + 2)  # 4 clips x (real, generated)
    # the same seed gives the same numbers
    r2 = evaluate(Args(**{**vars(args), "out": tmp_path / "b"}))
    assert {k: r[k] for k in KEYS - {"images"}} == {k: r2[k] for k in KEYS - {"images"}}


def test_eval_bad_inputs(tiny_data: Path, model_file: Path, tmp_path: Path):
    with pytest.raises(DatasetError, match="longer than every episode"):
        evaluate(
            Args(
                model=model_file,
                data=tiny_data,
                out=tmp_path,
                num_clips=2,
                device="cpu",
                rollout_steps=5000,
                delta_t=4,
            )
        )
    with pytest.raises(DatasetError, match="longer than every episode"):  # more real context than any episode has
        evaluate(Args(model=model_file, data=tiny_data, out=tmp_path, num_clips=2, device="cpu", context=(1, 400)))
    with pytest.raises(ValueError, match="--context"):
        evaluate(Args(model=model_file, data=tiny_data, out=tmp_path, num_clips=2, device="cpu", context=(0,)))
    with pytest.raises(CheckpointError, match="does not exist"):
        evaluate(Args(model=tmp_path / "missing.pt", data=tiny_data, out=tmp_path, device="cpu"))
    with pytest.raises(ConfigError, match="maskgit_steps must be 1..2"):  # before any clip is read
        evaluate(Args(model=model_file, data=tmp_path / "no-data", out=tmp_path, device="cpu",
                      maskgit_schedule="cell", maskgit_steps=3))


def test_checkpoint_scores_match_genie_gym_eval(tiny_data: Path, tiny_model_file: Path, tmp_path: Path):
    """The quick study scores a world-model file exactly as `genie-gym eval` does (tokenizer PSNR, token accuracy
    and its copy baseline on the same clips), and a tokenizer checkpoint as the file holding the same weights."""
    from checkpoint_scores import Args as ScoreArgs
    from checkpoint_scores import main as scores

    from genie_gym.evaluation.evaluate import Args as EvalArgs
    from genie_gym.evaluation.evaluate import evaluate

    report = evaluate(EvalArgs(model=tiny_model_file, data=tiny_data, out=tmp_path / "eval", num_clips=4,
                               stability_steps=0, device="cpu"))  # 4 + 10 frames: the study's clips
    got = scores(ScoreArgs(base=tiny_model_file, tokenizers=(tiny_model_file,), models=(tiny_model_file,),
                           data=tiny_data, split="test", num_clips=4, out=tmp_path / "scores.json"))
    assert got["tokenizers"][str(tiny_model_file)]["psnr"] == pytest.approx(report["tokenizer_psnr"], abs=1e-4)
    model = got["models"][str(tiny_model_file)]
    assert model["token_accuracy"] == pytest.approx(report["token_accuracy"], abs=1e-6)
    assert model["copy_token_accuracy"] == pytest.approx(report["copy_token_accuracy"], abs=1e-6)
    short = scores(ScoreArgs(base=tiny_model_file, models=(tiny_model_file,), data=tiny_data, split="test",
                             num_clips=4, context_frames=2, out=tmp_path / "short.json"))
    short = short["models"][str(tiny_model_file)]
    assert short["copy_token_accuracy"] == pytest.approx(model["copy_token_accuracy"], abs=1e-6)  # same frames
    with pytest.raises(SystemExit, match="--context-frames"):
        scores(ScoreArgs(base=tiny_model_file, models=(tiny_model_file,), data=tiny_data, split="test", num_clips=4,
                         context_frames=1, out=tmp_path / "bad.json"))


def test_checkpoint_scores_decode_one_maskgit_pass_is_the_one_pass_accuracy(tiny_data: Path, tiny_model_file: Path,
                                                                            tmp_path: Path):
    """--decode frame:1 is MaskGIT with one argmax pass over the all-masked frame: exactly the one-pass accuracy;
    more passes give their own figure; --copy-bias 0 is the plain argmax and an overwhelming bias copies the last
    frame; a malformed setting is refused."""
    from checkpoint_scores import Args as ScoreArgs
    from checkpoint_scores import main as scores

    got = scores(ScoreArgs(base=tiny_model_file, models=(tiny_model_file,), data=tiny_data, split="test",
                           num_clips=4, decode=("frame:1", "frame:3"), copy_bias=(0.0, 1e6),
                           out=tmp_path / "decode.json"))
    model = got["models"][str(tiny_model_file)]
    assert model["gain_over_copy_frame:1"] == pytest.approx(model["gain_over_copy"], abs=1e-9)
    assert model["gain_over_copy_bias0"] == pytest.approx(model["gain_over_copy"], abs=1e-9)
    assert model["gain_over_copy_bias1e+06"] == pytest.approx(0.0, abs=1e-9)  # an overwhelming bias is a copy
    assert -1.0 <= model["gain_over_copy_frame:3"] <= 1.0
    assert "gain, frame:3" in (tmp_path / "decode.md").read_text()
    with pytest.raises(SystemExit, match="SCHEDULE:STEPS"):
        scores(ScoreArgs(base=tiny_model_file, models=(tiny_model_file,), data=tiny_data, split="test", num_clips=4,
                         decode=("frames:4",), out=tmp_path / "bad.json"))
