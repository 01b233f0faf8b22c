"""Finite scalar quantisation (FSQ, Mentzer et al. 2023, arXiv 2309.15505): a fixed grid instead of a learned codebook.

Each of the d = len(levels) channels of a latent is squashed into a bounded range by tanh and rounded to one of
`levels[i]` integers (straight-through gradient). The code of a latent is its tuple of integers, numbered in mixed
radix: index = sum_i level_i * prod_{j<i} levels[j], so there are prod(levels) codes. Nothing is learned here, so
no code can die (no commitment loss, no dead-code resets) and every code is a fixed point of the grid: the decoder
always sees vectors in [-1, 1]^d. The paper recommends levels [8, 5, 5, 5] for ~2^10 codes.

Same interface as `VectorQuantizer`: `forward(z) -> (z_q, indices, loss, stats)` and `lookup(indices)`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from genie_gym.errors import ConfigError


class FSQ(nn.Module):
    def __init__(self, levels: tuple[int, ...] | list[int], eps: float = 1e-3):
        super().__init__()
        levels = tuple(int(n) for n in levels)
        if not levels or min(levels) < 2:
            raise ConfigError(f"FSQ levels must be integers >= 2, got {list(levels)}; e.g. [8, 5, 5, 5]")
        self.levels = levels
        self.code_dim = len(levels)
        self.num_codes = math.prod(levels)
        L = torch.tensor(levels, dtype=torch.float32)
        basis = torch.tensor([math.prod(levels[:i]) for i in range(len(levels))], dtype=torch.long)
        half_l = (L - 1) * (1 + eps) / 2
        offset = torch.where(torch.remainder(L, 2) == 0, 0.5, 0.0)
        # persistent=False: derived from `levels` (in the config), so they are not part of the state dict
        self.register_buffer("half_l", half_l, persistent=False)
        self.register_buffer("offset", offset, persistent=False)
        self.register_buffer("shift", torch.atanh(offset / half_l), persistent=False)
        self.register_buffer("half_width", torch.floor(L / 2), persistent=False)
        self.register_buffer("levels_t", L.long(), persistent=False)
        self.register_buffer("basis", basis, persistent=False)

    def forward(self, z: torch.Tensor):
        """z (..., code_dim) -> (z_q in [-1, 1] straight-through, indices (...) long, loss 0, stats)."""
        if z.shape[-1] != self.code_dim:
            raise ValueError(f"FSQ with levels {list(self.levels)} expects last dim {self.code_dim}, got shape "
                             f"{tuple(z.shape)}")
        with torch.autocast(device_type=z.device.type, enabled=False):
            bounded = torch.tanh(z.float() + self.shift) * self.half_l - self.offset
            q = bounded + (torch.round(bounded) - bounded).detach()
            levels = torch.round(bounded).long() + self.half_width.long()  # 0 .. L-1 per channel
            idx = (levels * self.basis).sum(-1)
            z_q = q / self.half_width
            counts = torch.bincount(idx.flatten(), minlength=self.num_codes)
            p = counts.float() / max(idx.numel(), 1)
            stats = {
                "usage": (counts > 0).float().mean(),
                "perplexity": torch.exp(-(p * torch.log(p.clamp_min(1e-10))).sum()),
            }
        return z_q, idx, z.new_zeros(()).float(), stats

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Integer codes of any shape -> their grid vectors indices.shape + (code_dim,) in [-1, 1]."""
        levels = torch.div(indices[..., None], self.basis, rounding_mode="floor") % self.levels_t
        return (levels.float() - self.half_width) / self.half_width
