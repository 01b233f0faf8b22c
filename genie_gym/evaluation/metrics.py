"""Image and code metrics: PSNR, SSIM (Gaussian window, Wang et al. 2004), normalised mutual information.

Images are float tensors in [0, 1] with layout (..., H, W, C); the image metrics return one value per image
(the leading dims), so callers can average per step, per clip, or overall.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

PSNR_CAP_DB = 100.0  # identical images have infinite PSNR; capping keeps means and JSON finite


def psnr(
    x: torch.Tensor, y: torch.Tensor, max_val: float = 1.0, cap_db: float | None = PSNR_CAP_DB
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image; (..., H, W, C) -> (...). cap_db=None: inf if equal."""
    if x.shape != y.shape:
        raise ValueError(f"psnr needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    out = 10.0 * torch.log10(max_val**2 / mse(x, y))
    return out if cap_db is None else out.clamp(max=cap_db)


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image; (..., H, W, C) -> (...)."""
    if x.shape != y.shape:
        raise ValueError(f"mse needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    return (x.float() - y.float()).pow(2).flatten(-3).mean(-1)


def psnr_of_mean_mse(mse: torch.Tensor, max_val: float = 1.0) -> float:
    """PSNR of the mean of per-image MSEs: one figure for a set of images in which an image equal to its target
    counts as zero error, not as the per-image cap (the mean of per-image PSNRs rewards such images with 100 dB)."""
    return float(10.0 * torch.log10(max_val**2 / mse.float().mean().clamp(min=1e-10)))


def _gaussian_kernel(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    ax = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(
    x: torch.Tensor, y: torch.Tensor, max_val: float = 1.0, window: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """SSIM per image, mean over channels and valid window positions; (..., H, W, C) -> (...)."""
    if x.shape != y.shape:
        raise ValueError(f"ssim needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    lead, (H, W, C) = x.shape[:-3], x.shape[-3:]
    window = min(window, H, W)
    x_NCHW = x.float().reshape(-1, H, W, C).permute(0, 3, 1, 2)
    y_NCHW = y.float().reshape(-1, H, W, C).permute(0, 3, 1, 2)
    k = _gaussian_kernel(window, sigma, x.device).expand(C, 1, window, window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, k, groups=C)

    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    mu_x, mu_y = blur(x_NCHW), blur(y_NCHW)
    var_x = blur(x_NCHW * x_NCHW) - mu_x**2
    var_y = blur(y_NCHW * y_NCHW) - mu_y**2
    cov = blur(x_NCHW * y_NCHW) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(-1).reshape(lead)


def gradient_energy(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute image gradient per image, (..., H, W, C) -> (...): 0 for a flat colour, high for detail.

    The long-horizon stability metric divides the gradient energy of generated frames by that of real frames: a
    world that dissolves into flat colour goes to 0, one that keeps its platforms and edges stays near 1.
    """
    x = x.float()
    dy = (x[..., 1:, :, :] - x[..., :-1, :, :]).abs().flatten(-3).mean(-1)
    dx = (x[..., :, 1:, :] - x[..., :, :-1, :]).abs().flatten(-3).mean(-1)
    return dx + dy


def still_image_baseline(frames_BTHWC: torch.Tensor) -> torch.Tensor:
    """PSNR per step (B, T-1) of the simplest world model: every future frame = the first frame."""
    first = frames_BTHWC[:, :1].expand_as(frames_BTHWC[:, 1:])
    return psnr(first, frames_BTHWC[:, 1:])


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def nmi(labels_a: np.ndarray | torch.Tensor, labels_b: np.ndarray | torch.Tensor) -> float:
    """Normalised mutual information 2 I(A;B) / (H(A) + H(B)) (sklearn's 'arithmetic'); 1 for a relabelling.

    Two constant labelings count as identical (1.0); one constant and one not share no information (0.0).
    """
    a = np.asarray(labels_a).reshape(-1)
    b = np.asarray(labels_b).reshape(-1)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"nmi needs two non-empty label arrays of equal length, got {a.shape} and {b.shape}")
    _, a_idx = np.unique(a, return_inverse=True)
    _, b_idx = np.unique(b, return_inverse=True)
    joint = np.zeros((a_idx.max() + 1, b_idx.max() + 1))
    np.add.at(joint, (a_idx, b_idx), 1)
    joint /= joint.sum()
    h_a, h_b = _entropy(joint.sum(1)), _entropy(joint.sum(0))
    if h_a == 0 and h_b == 0:
        return 1.0
    mi = h_a + h_b - _entropy(joint.reshape(-1))
    return float(max(0.0, 2 * mi / (h_a + h_b)))


def code_stats(codes: np.ndarray | torch.Tensor, num_codes: int) -> dict[str, float]:
    """Fraction of the codebook used and perplexity exp(H) of the code histogram (max num_codes)."""
    c = np.asarray(codes).reshape(-1)
    counts = np.bincount(c, minlength=num_codes).astype(np.float64)
    p = counts / max(counts.sum(), 1)
    return {
        "usage": float((counts > 0).mean()),
        "perplexity": float(math.exp(_entropy(p))),
        "histogram": counts.astype(int).tolist(),
    }


def best_shift(prev_HWC: np.ndarray, next_HWC: np.ndarray, radius: int = 3,
               crop: int = 8) -> tuple[int, int, float, float]:
    """How far the picture scrolled between two frames: the integer (dx, dy), |dx|, |dy| <= radius, for which
    next[y, x] ~ prev[y + dy, x + dx] on the central crop (the border `crop` wide is left out, so no shift reads
    outside the frame). CoinRun's camera follows the agent, so this is the agent's motion with no model at all.

    Float frames (H, W, C) in [0, 1]. Returns (dx, dy, MSE at that shift, MSE of copying `prev` unshifted).
    """
    if crop < radius:
        raise ValueError(f"crop ({crop}) must be >= radius ({radius}): a shift would read outside the frame")
    S0, S1 = prev_HWC.shape[:2]
    target = next_HWC[crop : S0 - crop, crop : S1 - crop]
    offsets = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
    errs = np.array([((target - prev_HWC[crop + dy : S0 - crop + dy, crop + dx : S1 - crop + dx]) ** 2).mean()
                     for dy, dx in offsets])
    i = int(errs.argmin())
    dy, dx = offsets[i]
    return dx, dy, float(errs[i]), float(errs[len(errs) // 2])


def scrolls(frames_BKHWC: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, K-1) integer scrolls dx, dy (`best_shift`) between consecutive frames of (B, K) float frames in [0, 1]."""
    frames_BKHWC = np.asarray(frames_BKHWC)
    dx, dy = np.zeros((2, frames_BKHWC.shape[0], frames_BKHWC.shape[1] - 1), dtype=np.int64)
    for b, clip in enumerate(frames_BKHWC):
        for k in range(len(clip) - 1):
            dx[b, k], dy[b, k], _, _ = best_shift(clip[k], clip[k + 1])
    return dx, dy
