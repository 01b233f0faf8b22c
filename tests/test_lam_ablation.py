"""`benchmarks/studies/lam_ablation.py` runs end to end on a small recording and builds its table up run by run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

import lam_ablation  # noqa: E402


def test_movement_classes_follow_the_procgen_action_combos():
    # 0 LEFT+DOWN, 2 LEFT+UP, 4 NOOP, 5 UP, 8 RIGHT+UP, 9 "D" (a no-op in CoinRun)
    assert lam_ablation.movement_class(np.array([0, 2, 4, 5, 8, 9])).tolist() == [0, 1, 2, 3, 5, 2]


@pytest.mark.slow
def test_ablation_runs_and_merges_variants(tmp_path: Path):
    from genie_gym.data import recorder

    data = recorder.record(recorder.Args(frames=600, max_steps=60, num_envs=8, out=tmp_path / "data",
                                         val_frac=0.2, test_frac=0.3, progress=False, policy="sticky"))
    common = dict(data=str(data), steps=2, batch_size=2, test_clips=4, threads=1, out=str(tmp_path / "abl"),
                  expert_episodes=2)
    lam_ablation.main(lam_ablation.Args(variants=["baseline"], **common))
    lam_ablation.main(lam_ablation.Args(variants=["idm_mean", "warmup_raw_flatten_kernel5_nohist"],
                                        save_dir=str(tmp_path / "lams"), **common))
    report = json.loads((tmp_path / "abl.json").read_text())
    assert list(report["variants"]) == ["baseline", "idm_mean", "warmup_raw_flatten_kernel5_nohist"]
    # Only the library's design is kept as a world-model file, and it says which frames its LAM saw.
    assert [p.name for p in (tmp_path / "lams").iterdir()] == ["warmup_raw_flatten_kernel5_nohist.pt"]
    from agents.latent_bc import load_lam

    lam, _ = load_lam(str(tmp_path / "lams" / "warmup_raw_flatten_kernel5_nohist.pt"), paint_vel_info=False)
    assert lam.num_actions == 8
    library = report["variants"]["warmup_raw_flatten_kernel5_nohist"]
    assert len(library["action_names"]) == 8 and set(library["directions"]["best"]) == {"left", "right", "up"}
    with pytest.raises(SystemExit, match="does not have; record data with `genie-gym data --paint-vel-info`"):
        lam_ablation.main(lam_ablation.Args(variants=["warmup_raw_flatten_kernel5_nohist_bar10"], **common))
    base = report["variants"]["baseline"]
    assert 1.0 <= base["perplexity"] <= 8.0 and 0.0 <= base["nmi_movement"] <= 1.0
    assert sum(map(sum, base["code_by_movement"])) == sum(base["histogram"])
    assert 0.0 <= base["expert_nmi_movement"] <= 1.0  # codes of the shipped expert's own episodes
    assert report["variants"]["idm_mean"]["movement_accuracy"] is not None
    assert "| idm_mean (*probe*) |" in (tmp_path / "abl.md").read_text()


def test_vq_usage_entropy_bonus_spreads_a_collapsed_batch_over_the_codebook():
    """Latents that all sit nearest one code: the entropy term alone moves them apart; without it nothing moves."""
    torch.manual_seed(0)
    spread = {}
    for weight in (0.0, 1.0):
        vq = lam_ablation.EntropyVQ(8, 4, commitment_weight=0.0, entropy_weight=weight)
        with torch.no_grad():
            vq.codebook.copy_(torch.eye(8, 4) + torch.eye(8, 4).roll(4, 0) * -1)  # +-axis codes
        z = (torch.tensor([1.0, 0, 0, 0]) + 0.3 * torch.randn(256, 4)).requires_grad_()
        opt = torch.optim.SGD([z], lr=0.5)
        for _ in range(100):
            _, _, loss, stats = vq(z)
            opt.zero_grad()
            loss.backward()
            opt.step()
        spread[weight] = stats["perplexity"].item()
    assert spread[0.0] < 1.5 and spread[1.0] > 2.5, spread


@pytest.mark.parametrize("variant", ["baseline", "flatten_residual_entropy", "warmup_flatten_kernel5",
                                     "warmup_raw_flatten_kernel5_nohist_bar10",
                                     "warmup_raw_flatten_kernel5_nohist_center10",
                                     "warmup_raw_flatten_kernel5_nohist_edge1",
                                     "warmup_raw_flatten_kernel5_nohist_hard",
                                     "warmup_raw_flatten_kernel5_nohist_hard_nores",
                                     "warmup_raw_flatten_kernel5_nohist_hard_global",
                                     "warmup_raw_flatten_kernel5_nohist_a16"])
def test_variant_lams_keep_shapes_and_causality(variant):
    """The ablation's variants (mean pooling, pixel/residual heads, a decoder with history) outside the library:
    shapes, gradients, and frame t+1 never leaks into the prediction of frame t+1 except through a_t."""
    import dataclasses

    from genie_gym.config import get_preset

    cfg = get_preset("tiny")
    lam_cfg = lam_ablation.VariantConfig(**{**dataclasses.asdict(cfg.lam), **lam_ablation.BASE,
                                            **lam_ablation.VARIANTS[variant]})
    torch.manual_seed(0)
    lam = lam_ablation.VariantLAM(lam_cfg, 64, max_frames=4)
    frames = torch.rand(2, 4, 64, 64, 3)
    out = lam(frames)
    assert out["recon_BTHWC"].shape == (2, 3, 64, 64, 3) and out["actions_BT"].shape == (2, 3)
    out["loss"].backward()
    assert lam.enc_patch_embed.weight.grad.abs().sum() > 0
    changed = frames.clone()
    changed[:, 2] = torch.rand(2, 64, 64, 3)
    with torch.no_grad():
        a_q = lam.vq.lookup(torch.zeros(2, 3, dtype=torch.long))
        r0, r1 = lam.decode(frames[:, :-1], a_q), lam.decode(changed[:, :-1], a_q)
    assert torch.equal(r0[:, :2], r1[:, :2])  # predictions of frames 1 and 2 read frames <= 1 only


def test_direction_shares_of_a_hand_built_table():
    """Columns LEFT, LEFT+UP, NONE, NONE+UP, RIGHT, RIGHT+UP; a code labelling under 2% of transitions is left out
    of the best shares (code 3 presses UP every time, but only once)."""
    table = [[80, 0, 20, 0, 0, 0], [0, 0, 0, 0, 10, 90], [0] * 6, [0, 0, 0, 0, 0, 1]]
    shares = lam_ablation.direction_shares(np.array(table))
    assert shares["best"] == pytest.approx({"left": 0.8, "right": 1.0, "up": 0.9})
    assert shares["per_code"]["up"] == [0.0, 0.9, 0.0, 1.0]


def test_region_weighted_loss_adds_the_regions_own_mse():
    """The centre-weighted variant's loss = the plain loss + weight x the MSE of the frame's centre."""
    import dataclasses

    import torch.nn.functional as F

    from genie_gym.config import get_preset

    name = "warmup_raw_flatten_kernel5_nohist_center10"
    cfg = lam_ablation.VariantConfig(**{**dataclasses.asdict(get_preset("tiny").lam), **lam_ablation.BASE,
                                        **lam_ablation.VARIANTS[name]})
    torch.manual_seed(0)
    lam = lam_ablation.VariantLAM(cfg, 64, max_frames=4)
    frames = torch.rand(2, 4, 64, 64, 3)
    with torch.no_grad():
        weighted = lam(frames)
        lam.cfg = dataclasses.replace(cfg, center_loss_weight=0.0)
        plain = lam(frames)
    c = lam_ablation.CENTER
    centre_mse = F.mse_loss(plain["recon_BTHWC"][:, :, c, c], frames[:, 1:, c, c])
    assert torch.allclose(weighted["loss"] - plain["loss"], 10.0 * centre_mse)


def test_hard_kernel_is_one_tap_forward_and_the_softmax_backward():
    import dataclasses

    from genie_gym.config import get_preset

    cfg = lam_ablation.VariantConfig(**{**dataclasses.asdict(get_preset("tiny").lam), **lam_ablation.BASE,
                                        **lam_ablation.VARIANTS["warmup_raw_flatten_kernel5_nohist_hard"]})
    lam = lam_ablation.VariantLAM(cfg, 64, max_frames=4)
    logits = torch.randn(2, 3, 4, 25, requires_grad=True)
    w = lam._kernel_weights(logits)
    one_hot = torch.nn.functional.one_hot(logits.argmax(-1), 25).float()
    torch.testing.assert_close(w.detach(), one_hot, atol=1e-6, rtol=0)  # to float rounding
    (w * torch.randn_like(w)).sum().backward()
    assert logits.grad.abs().sum() > 0


def test_global_kernel_is_one_shift_for_the_whole_frame():
    """`_global`: every patch gets the kernel of the patches' mean logits (a camera scroll), one-hot with `_hard`."""
    import dataclasses

    from genie_gym.config import get_preset

    for name in ("warmup_raw_flatten_kernel5_nohist_global", "warmup_raw_flatten_kernel5_nohist_hard_global"):
        cfg = lam_ablation.VariantConfig(**{**dataclasses.asdict(get_preset("tiny").lam), **lam_ablation.BASE,
                                            **lam_ablation.VARIANTS[name]})
        lam = lam_ablation.VariantLAM(cfg, 64, max_frames=4)
        logits = torch.randn(2, 3, 4, 25)
        w = lam._kernel_weights(logits)
        expected = logits.mean(2, keepdim=True).softmax(-1).expand_as(w)
        if cfg.hard_kernel:
            expected = torch.nn.functional.one_hot(expected.argmax(-1), 25).float()
        torch.testing.assert_close(w, expected, atol=1e-6, rtol=0)
