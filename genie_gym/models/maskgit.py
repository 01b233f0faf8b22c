"""MaskGIT iterative decoding of one frame's N tokens (Chang et al. 2022; Genie uses 25 steps, cosine
schedule).

Start with every token masked. At step s: get logits, sample a token for every masked position (temperature; 0
= argmax), score each sample by its probability (optionally plus annealed Gumbel noise, MaskGIT's "choice
temperature"), keep the samples with the highest scores and re-mask the rest so that floor(N * cos(pi/2 *
(s+1)/steps)) positions stay masked; the last step fills everything.

Randomness: each batch element draws its own uniforms from its own generator (one call per element per frame),
so element i produces the same frame whether it runs alone or inside a batch (given the same logits). Argmax
decoding (temperature 0, no choice noise) draws nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def mask_schedule(num_tokens_N: int, steps: int) -> list[int]:
    """How many tokens remain masked after each step (strictly decreasing, ends at 0)."""
    out, prev = [], num_tokens_N
    for s in range(steps):
        n = 0 if s == steps - 1 else math.floor(num_tokens_N * math.cos(math.pi / 2 * (s + 1) / steps))
        n = max(0, min(n, prev - 1))
        out.append(n)
        prev = n
    return out


def _uniforms(generators: list[torch.Generator] | None, batch_size: int, shape: tuple[int, ...],
              device: torch.device) -> torch.Tensor:
    """(B, *shape) uniforms in [0, 1); row i comes from generators[i] alone."""
    if generators is None:
        return torch.rand((batch_size, *shape), device=device)
    if len(generators) != batch_size:
        raise ValueError(f"got {len(generators)} generators for batch size {batch_size}; "
                         "pass one per batch element")
    return torch.stack([torch.rand(shape, generator=g, device=g.device) for g in generators]).to(device)


def draw_tokens(logits_BNV: torch.Tensor, temperature: float, u_BN: torch.Tensor | None) -> torch.Tensor:
    """One token per row: argmax at temperature 0, else the inverse CDF of softmax(logits / temperature) at the
    uniforms `u_BN` (the same draw wherever it is made: MaskGIT here, a cell's earlier tokens in models/dynamics)."""
    if temperature <= 0 or u_BN is None:
        return logits_BNV.argmax(-1)
    cdf_BNV = torch.softmax(logits_BNV.float() / temperature, dim=-1).cumsum(-1)
    sampled_BN = torch.searchsorted(cdf_BNV, u_BN[..., None].contiguous().to(cdf_BNV.dtype), right=True)[..., 0]
    return sampled_BN.clamp_(max=logits_BNV.shape[-1] - 1)


@torch.no_grad()
def maskgit_sample(logits_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor],
                   batch_size: int, num_tokens_N: int, steps: int = 25, temperature: float = 1.0,
                   generators: list[torch.Generator] | None = None, mask_token_id: int = 0,
                   device: torch.device | str = "cpu", choice_temperature: float = 0.0) -> torch.Tensor:
    """Decode one frame -> tokens (B, N); calls `logits_fn(tokens_BN, mask_BN, u_BN) -> logits_BNV` `steps` times.

    Masked positions in the `tokens_BN` passed to `logits_fn` hold `mask_token_id`. `u_BN` (None for argmax) are the
    uniforms this step draws its tokens with: a model that conditions some tokens on others drawn in the same pass
    (a within-cell autoregressive head) draws those with `draw_tokens(logits, temperature, u_BN)`, so they are the
    tokens sampled here.
    """
    if steps < 1:
        raise ValueError(f"maskgit steps must be >= 1, got {steps}")
    device = torch.device(device)
    B, N = batch_size, num_tokens_N
    # Argmax without choice noise draws nothing (and needs no per-world generator calls: the hot path of Genie-v0).
    draws = temperature > 0 or choice_temperature > 0
    u_BS2N = _uniforms(generators, B, (steps, 2, N), device) if draws else None
    tokens_BN = torch.full((B, N), mask_token_id, dtype=torch.long, device=device)
    mask_BN = torch.ones(B, N, dtype=torch.bool, device=device)
    for s, n_keep_masked in enumerate(mask_schedule(N, steps)):
        u_BN = u_BS2N[:, s, 0] if temperature > 0 else None
        logits_BNV = logits_fn(tokens_BN, mask_BN, u_BN).float()
        sampled_BN = draw_tokens(logits_BNV, temperature, u_BN)
        probs_BNV = torch.softmax(logits_BNV / temperature if temperature > 0 else logits_BNV, dim=-1)
        score_BN = probs_BNV.gather(-1, sampled_BN[..., None])[..., 0].clamp_min(1e-30).log()
        if choice_temperature > 0:
            gumbel_BN = -torch.log(-torch.log(u_BS2N[:, s, 1].clamp(1e-20, 1 - 1e-7)))
            score_BN = score_BN + choice_temperature * (1 - (s + 1) / steps) * gumbel_BN
        tokens_BN = torch.where(mask_BN, sampled_BN, tokens_BN)
        score_BN = score_BN.masked_fill(~mask_BN, float("inf"))  # already decided tokens stay
        order_BN = torch.sort(score_BN, dim=1, stable=True).indices
        new_mask_BN = torch.zeros_like(mask_BN)
        new_mask_BN.scatter_(1, order_BN[:, :n_keep_masked], True)
        mask_BN = new_mask_BN
        tokens_BN = tokens_BN.masked_fill(mask_BN, mask_token_id)
    return tokens_BN
