"""Metric definitions: PSNR, SSIM, NMI and code statistics behave as their formulas say."""

import math

import numpy as np
import torch

from genie_gym.evaluation.metrics import PSNR_CAP_DB, best_shift, code_stats, nmi, psnr, ssim


def test_psnr_identical_is_capped_and_inf_without_cap():
    x = torch.rand(2, 3, 16, 16, 3, generator=torch.Generator().manual_seed(0))
    assert torch.all(psnr(x, x) == PSNR_CAP_DB)
    assert torch.isinf(psnr(x, x, cap_db=None)).all()
    assert psnr(x, x).shape == (2, 3)


def test_psnr_of_mean_mse_counts_an_exact_frame_as_zero_error():
    """Two frames, one exact and one at MSE 0.01: the mean of per-frame PSNRs is (100 + 20) / 2 = 60 dB, the PSNR of
    the mean MSE 10 log10(1 / 0.005) = 23.0 dB."""
    from genie_gym.evaluation.metrics import psnr_of_mean_mse

    x = torch.zeros(2, 8, 8, 3)
    y = torch.stack([torch.zeros(8, 8, 3), torch.full((8, 8, 3), 0.1)])
    assert math.isclose(float(psnr(x, y).mean()), 60.0, abs_tol=1e-3)
    mse = (x - y).pow(2).flatten(-3).mean(-1)
    assert math.isclose(psnr_of_mean_mse(mse), 10 * math.log10(1 / 0.005), abs_tol=1e-4)


def test_psnr_known_value():
    x = torch.zeros(8, 8, 3)
    y = torch.full((8, 8, 3), 0.1)  # mse = 0.01 -> 20 dB
    assert math.isclose(float(psnr(x, y)), 20.0, abs_tol=1e-4)


def _reference_ssim(x, y, window: int = 11, sigma: float = 1.5) -> float:
    """Wang et al. (2004), written out: at every valid window position and channel, Gaussian-weighted means,
    variances and covariance, the SSIM formula (K1 = 0.01, K2 = 0.03, L = 1), then the mean; float64 loops."""
    import numpy as np

    ax = np.arange(window) - (window - 1) / 2
    g = np.exp(-(ax**2) / (2 * sigma**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    H, W, C = x.shape
    vals = []
    for c in range(C):
        for i in range(H - window + 1):
            for j in range(W - window + 1):
                a, b = x[i:i + window, j:j + window, c], y[i:i + window, j:j + window, c]
                ma, mb = (w * a).sum(), (w * b).sum()
                va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
                cov = (w * (a - ma) * (b - mb)).sum()
                vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_matches_the_written_out_reference_on_fixed_images():
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((20, 18, 3))
    y = np.clip(x + 0.2 * rng.standard_normal(x.shape), 0, 1)
    gradient = np.broadcast_to(np.linspace(0, 1, 18)[None, :, None], (20, 18, 3))
    for a, b in ((x, y), (x, gradient), (gradient, gradient[::-1])):
        ours = float(ssim(torch.tensor(a.copy()), torch.tensor(b.copy())))
        assert abs(ours - _reference_ssim(a, b)) < 1e-5, (ours, _reference_ssim(a, b))


def test_ssim_identical_is_one_and_noise_is_lower():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 32, 32, 3, generator=g)
    assert torch.allclose(ssim(x, x), torch.ones(4), atol=1e-5)
    noisy = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    s = ssim(x, noisy)
    assert s.shape == (4,) and torch.all(s < 0.9) and torch.all(s > -1)
    # more noise, less similarity
    assert torch.all(ssim(x, (x + 0.5 * torch.randn(x.shape, generator=g)).clamp(0, 1)) < s)


def test_nmi_permuted_labels_is_one_and_independent_near_zero():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 8, size=5000)
    perm = rng.permutation(8)
    assert math.isclose(nmi(a, perm[a]), 1.0, abs_tol=1e-9)
    b = rng.integers(0, 15, size=5000)
    assert nmi(a, b) < 0.02
    assert nmi(np.zeros(10), np.zeros(10)) == 1.0
    assert nmi(np.zeros(10), np.arange(10)) == 0.0


def test_code_stats_usage_and_perplexity():
    s = code_stats(np.array([0, 1, 2, 3] * 10), num_codes=8)
    assert s["usage"] == 0.5
    assert math.isclose(s["perplexity"], 4.0, rel_tol=1e-9)
    assert s["histogram"] == [10, 10, 10, 10, 0, 0, 0, 0]


def test_best_shift_finds_a_known_scroll():
    rng = np.random.default_rng(0)
    big = rng.random((80, 80, 3)).astype(np.float32)
    prev = big[8:72, 8:72]
    nxt = big[8 - 1 : 72 - 1, 8 + 2 : 72 + 2]  # the view moved right by 2 and up by 1: next[y, x] = prev[y-1, x+2]
    dx, dy, err, copy = best_shift(prev, nxt)
    assert (dx, dy) == (2, -1) and err == 0.0 and copy > 0.01
    assert best_shift(prev, prev)[:3] == (0, 0, 0.0)


def test_gradient_energy_and_still_image_baseline_on_hand_built_clips():
    from genie_gym.evaluation.metrics import gradient_energy, still_image_baseline

    g = torch.Generator().manual_seed(0)
    stripes = torch.zeros(64, 64, 3)
    stripes[::4] = 1.0  # a detailed frame: horizontal stripes
    flat = torch.full((64, 64, 3), 0.5)
    assert float(gradient_energy(flat)) == 0.0 and float(gradient_energy(stripes)) > 0.4
    # a clip that dissolves into flat colour: the ratio to the real clip's energy goes from 1 to 0
    fade = torch.stack([stripes * (1 - a) + flat * a for a in torch.linspace(0, 1, 5)])
    ratio = gradient_energy(fade) / gradient_energy(stripes)
    assert float(ratio[0]) == 1.0 and float(ratio[-1]) < 1e-6 and bool((ratio[1:] < ratio[:-1]).all())
    # the still image: perfect (capped) on a clip that never changes, worse the more the clip moves
    noise = torch.rand(64, 64, 3, generator=g)
    still = torch.stack([noise] * 4)[None]
    moving = torch.stack([torch.roll(noise, k, dims=1) for k in range(4)])[None]
    assert torch.all(still_image_baseline(still) == 100.0)
    p = still_image_baseline(moving)
    assert p.shape == (1, 3) and float(p.max()) < 20.0


def test_latent_actions_are_named_by_what_their_transitions_did():
    """Hand-built (codes, 15 Procgen actions) counts: Procgen 7 = RIGHT, 8 = RIGHT+UP, 1 = LEFT, 5 = UP, 4 = NOOP."""
    import numpy as np

    from genie_gym.data.games import movement_counts, name_actions

    table = np.zeros((6, 15), dtype=int)
    table[0, 7], table[0, 1] = 70, 30  # 70% right: "right"
    table[1, 1], table[1, 2] = 50, 50  # LEFT and LEFT+UP: all left, half jumping: "left"
    table[2, 8], table[2, 5] = 60, 30  # RIGHT+UP and UP: 100% jump, 67% right: "right+jump"
    table[3, 4], table[3, 7] = 50, 50  # no direction wins: "a3"
    table[4, 5] = 10  # UP alone: still and jumping: "still+jump"
    counts = movement_counts(table)
    assert counts.shape == (6, 6) and counts.sum() == table.sum()
    assert name_actions(counts) == ["right", "left", "right+jump", "a3", "still+jump", "unused"]


def test_dream_response_scroll_shares_count_a_camera_moving_right_and_up():
    from dream_response import shares

    from genie_gym.evaluation.metrics import scrolls

    big = np.random.default_rng(1).random((90, 90, 3)).astype(np.float32)
    right = np.stack([big[10:74, 10 + 2 * k : 74 + 2 * k] for k in range(4)])  # the view moves right 2 px a frame
    up = np.stack([big[10 - k : 74 - k, 10:74] for k in range(4)])  # ... up 1 px a frame
    r = shares(*scrolls(np.stack([right, up])))
    assert r["pairs"] == 6 and r["right"] == 0.5 and r["left"] == 0.0 and r["up"] == 0.5 and r["mean_dx"] == 1.0
