"""MaskGIT iterative decoding of one frame's N tokens (Chang et al. 2022; Genie uses 25 steps, cosine
schedule).

Start with every token masked. At step s: get logits, sample a token for every masked position (temperature; 0
= argmax), score each sample by its probability (optionally plus annealed Gumbel noise, MaskGIT's "choice
temperature"), keep the samples with the highest scores and re-mask the rest so that floor(N * cos(pi/2 *
(s+1)/steps)) positions stay masked; the last step fills everything.

With `cell_size` G > 1 (a frame's tokens are cell-major, G per grid cell: the `small` tokenizer's FSQ groups), the
schedule runs over the groups instead, in a fixed order: after step s the first G - floor(G * cos(pi/2 *
(s+1)/steps)) groups of every cell are decided (4 steps: one group a pass). Every pass then decides a share of every
cell, so a cell's later tokens are predicted knowing its first ones and its neighbours', where the frame-wide ranking
leaves the uncertain cells to one last pass that picks each of their tokens independently: soft edges that compound
over long rollouts (`benchmarks/results/cell_order.md`). steps <= G; no confidence ranking, so no
`choice_temperature`.

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


@torch.no_grad()
def maskgit_sample(logits_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], batch_size: int,
                   num_tokens_N: int, steps: int = 25, temperature: float = 1.0,
                   generators: list[torch.Generator] | None = None, mask_token_id: int = 0,
                   device: torch.device | str = "cpu", choice_temperature: float = 0.0,
                   cell_size: int = 1) -> torch.Tensor:
    """Decode one frame -> tokens (B, N); calls `logits_fn(tokens_BN, mask_BN) -> logits_BNV` `steps` times.

    Masked positions in the `tokens_BN` passed to `logits_fn` hold `mask_token_id`.
    """
    if steps < 1:
        raise ValueError(f"maskgit steps must be >= 1, got {steps}")
    if cell_size > 1 and choice_temperature > 0:
        raise ValueError("choice_temperature ranks tokens by confidence: the per-cell schedule has no ranking")
    if cell_size > 1 and (steps > cell_size or num_tokens_N % cell_size):
        raise ValueError(f"a per-cell schedule decides at least one of a cell's {cell_size} tokens per step: steps "
                         f"must be 1..{cell_size} and the {num_tokens_N} tokens whole cells, got steps {steps}")
    device = torch.device(device)
    B, N = batch_size, num_tokens_N
    # Argmax without choice noise draws nothing (and needs no per-world generator calls: the hot path of Genie-v0).
    draws = temperature > 0 or choice_temperature > 0
    u_BS2N = _uniforms(generators, B, (steps, 2, N), device) if draws else None
    tokens_BN = torch.full((B, N), mask_token_id, dtype=torch.long, device=device)
    mask_BN = torch.ones(B, N, dtype=torch.bool, device=device)
    G = cell_size if cell_size > 1 else N  # the unit the schedule runs in: a cell's groups, or the frame's tokens
    for s, n_keep_masked in enumerate(mask_schedule(G, steps)):
        logits_BNV = logits_fn(tokens_BN, mask_BN)
        if temperature > 0 or (n_keep_masked > 0 and cell_size == 1):  # probabilities needed: in float32
            logits_BNV = logits_BNV.float()
        probs_BNV = None  # (argmax alone reads the logits as they come: a bf16 -> float32 copy changes no maximum)
        if temperature > 0:
            probs_BNV = torch.softmax(logits_BNV / temperature, dim=-1)
            cdf_BNV = probs_BNV.cumsum(-1)
            u_BN1 = u_BS2N[:, s, 0, :, None].contiguous()
            sampled_BN = torch.searchsorted(cdf_BNV, u_BN1, right=True)[..., 0]
            sampled_BN = sampled_BN.clamp_(max=logits_BNV.shape[-1] - 1)
        else:
            sampled_BN = logits_BNV.max(-1).indices  # argmax's first maximum; 3x faster than argmax on bf16 (CPU)
        tokens_BN = torch.where(mask_BN, sampled_BN, tokens_BN)
        if n_keep_masked == 0:  # the last pass decides everything: no ranking (1-step decoding is all last pass)
            mask_BN = torch.zeros_like(mask_BN)
        elif cell_size > 1:  # the last n_keep_masked groups of every cell stay masked
            mask_BN = (torch.arange(N, device=device) % G >= G - n_keep_masked).expand(B, N).contiguous()
        else:  # the n_keep_masked least confident tokens of the frame stay masked
            if probs_BNV is None:
                probs_BNV = torch.softmax(logits_BNV, dim=-1)
            score_BN = probs_BNV.gather(-1, sampled_BN[..., None])[..., 0].clamp_min(1e-30).log()
            if choice_temperature > 0:
                gumbel_BN = -torch.log(-torch.log(u_BS2N[:, s, 1].clamp(1e-20, 1 - 1e-7)))
                score_BN = score_BN + choice_temperature * (1 - (s + 1) / steps) * gumbel_BN
            score_BN = score_BN.masked_fill(~mask_BN, float("inf"))  # already decided tokens stay
            order_BN = torch.sort(score_BN, dim=1, stable=True).indices
            mask_BN = torch.zeros_like(mask_BN).scatter_(1, order_BN[:, :n_keep_masked], True)
        tokens_BN = tokens_BN.masked_fill(mask_BN, mask_token_id)
    return tokens_BN
