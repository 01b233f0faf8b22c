"""Frame dtype conversion: uint8 HWC on disk and in the env, float32 in [0, 1] inside the models."""

from __future__ import annotations

import numpy as np
import torch


def to_float(frames: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 frames (any leading dims, HWC) -> float32 in [0, 1]; a float input must already be in [0, 1]."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if frames.dtype == torch.uint8:
        return frames.to(torch.float32) / 255.0
    if frames.is_floating_point():
        return frames.to(torch.float32)
    raise TypeError(f"frames must be uint8 (0..255) or float in [0, 1], got dtype {frames.dtype}; "
                    "convert with frames.astype(np.uint8) first")


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """float frames in [0, 1] -> uint8, rounded to nearest and clamped (values outside [0, 1] saturate)."""
    return (frames.detach().float() * 255.0).round_().clamp_(0, 255).to(torch.uint8)


def patchify(frames_BTHWC: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, T, H, W, C) -> (B, T, N, patch*patch*C), tokens in row-major order over the (H/p, W/p) grid."""
    B, T, H, W, C = frames_BTHWC.shape
    if H % patch or W % patch:
        raise ValueError(f"frame size {H}x{W} is not divisible by patch size {patch}; resize frames or "
                         "choose a patch size that divides the image size")
    x = frames_BTHWC.reshape(B, T, H // patch, patch, W // patch, patch, C)
    return x.permute(0, 1, 2, 4, 3, 5, 6).reshape(B, T, (H // patch) * (W // patch), patch * patch * C)


def unpatchify(patches_BTNP: torch.Tensor, patch: int, height: int, width: int) -> torch.Tensor:
    """Inverse of `patchify`: (B, T, N, patch*patch*C) -> (B, T, H, W, C)."""
    B, T, N, P = patches_BTNP.shape
    C = P // (patch * patch)
    x = patches_BTNP.reshape(B, T, height // patch, width // patch, patch, patch, C)
    return x.permute(0, 1, 2, 4, 3, 5, 6).reshape(B, T, height, width, C)
