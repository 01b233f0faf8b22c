"""Vector quantizer with a straight-through estimator, usage statistics and dead-code reset.

Choices (and why):
- l2-normalised codes and inputs, nearest neighbour by cosine similarity (ViT-VQGAN; `normalize=True`, the
  tokenizer's VQ): distances are bounded, so no code drifts far from the encoder outputs and usage stays high.
  The LAM uses raw distances (`normalize=False`): its 8 codes must tell apart small and large changes.
- Codebook loss + commitment loss (VQ-VAE), not EMA: the codebook is an ordinary parameter, so AdamW,
  checkpoints and DDP gradient averaging need nothing special.
- Quantisation runs in float32 with autocast off, so bf16 training picks the same codes as float32 inference.
- `steps_unused` counts training forward calls since each code was last chosen; `reset_dead_codes` re-seeds
  codes unused for `dead_code_threshold` calls from random encoder outputs (call it every K training steps).
  Under DDP call it with the same `z_e` and generator seed on every rank (or broadcast the codebook
  afterwards).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class VectorQuantizer(nn.Module):
    def __init__(
        self,
        num_codes: int,
        code_dim: int,
        commitment_weight: float = 0.25,
        dead_code_threshold: int = 100,
        normalize: bool = True,
    ):
        super().__init__()
        self.num_codes = num_codes
        self.code_dim = code_dim
        self.commitment_weight = commitment_weight
        self.dead_code_threshold = dead_code_threshold
        self.normalize = normalize
        self.codebook = nn.Parameter(torch.randn(num_codes, code_dim))
        self.register_buffer("steps_unused", torch.zeros(num_codes, dtype=torch.long))

    def codes(self) -> torch.Tensor:
        """The effective (normalised) codebook, (num_codes, code_dim), float32."""
        c = self.codebook.float()
        return F.normalize(c, dim=-1) if self.normalize else c

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors for integer indices of any shape -> indices.shape + (code_dim,)."""
        return F.embedding(indices, self.codes())

    def prepare(self, z_e: torch.Tensor) -> torch.Tensor:
        """Latents as the codebook compares them: (S, code_dim) float32, l2-normalised when `normalize`."""
        z = z_e.reshape(-1, self.code_dim).float()
        return F.normalize(z, dim=-1) if self.normalize else z

    def forward(self, z_e: torch.Tensor):
        """z_e (..., code_dim) -> (z_q same shape, straight-through; indices (...) long; loss; stats)."""
        if z_e.shape[-1] != self.code_dim:
            raise ValueError(f"VQ expects last dim code_dim={self.code_dim}, got shape {tuple(z_e.shape)}")
        with torch.autocast(device_type=z_e.device.type, enabled=False):
            z_SD = self.prepare(z_e)
            c_VD = self.codes()
            dist_SV = z_SD.pow(2).sum(1, keepdim=True) - 2 * z_SD @ c_VD.t() + c_VD.pow(2).sum(1)[None]
            idx_S = dist_SV.argmin(1)
            q_SD = c_VD[idx_S]
            loss = F.mse_loss(q_SD, z_SD.detach()) + self.commitment_weight * F.mse_loss(z_SD, q_SD.detach())
            z_q = z_SD + (q_SD - z_SD).detach()
            counts_V = torch.bincount(idx_S, minlength=self.num_codes)
            p_V = counts_V.float() / max(idx_S.numel(), 1)
            stats = {
                "usage": (counts_V > 0).float().mean().detach(),
                "perplexity": torch.exp(-(p_V * torch.log(p_V.clamp_min(1e-10))).sum()).detach(),
            }
        if self.training:
            self.steps_unused.add_(1).masked_fill_(counts_V > 0, 0)
        return z_q.view(z_e.shape), idx_S.view(z_e.shape[:-1]), loss, stats

    @torch.no_grad()
    def init_kmeans(self, z_e_flat: torch.Tensor, iters: int = 30, generator: torch.Generator | None = None) -> None:
        """Seed the codebook with k-means (k-means++ start) on encoder outputs `z_e_flat` (S, code_dim).

        Used when a model first trains with un-quantised latents: the codes start where the latents are.
        """
        z_SD = self.prepare(z_e_flat.detach())
        S = z_SD.shape[0]
        if S < self.num_codes:
            raise ValueError(f"k-means needs at least {self.num_codes} latents, got {S}")
        gen_dev = generator.device if generator is not None else torch.device("cpu")
        first = int(torch.randint(0, S, (1,), generator=generator, device=gen_dev))
        c_VD = z_SD[first : first + 1]
        while c_VD.shape[0] < self.num_codes:  # k-means++: next centre with probability ~ squared distance
            d_S = torch.cdist(z_SD, c_VD).min(1).values.pow(2)
            pick = int(torch.multinomial((d_S + 1e-12).cpu(), 1, generator=generator))
            c_VD = torch.cat([c_VD, z_SD[pick : pick + 1]])
        for _ in range(iters):
            assign_S = torch.cdist(z_SD, c_VD).argmin(1)
            for v in range(self.num_codes):
                members = z_SD[assign_S == v]
                if len(members):
                    c_VD[v] = members.mean(0)
            if self.normalize:
                c_VD = F.normalize(c_VD, dim=-1)
        self.codebook.data.copy_(c_VD.to(self.codebook.dtype))
        self.steps_unused.zero_()

    @torch.no_grad()
    def reset_dead_codes(self, z_e_flat: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Re-seed codes unused for `dead_code_threshold` training steps from random rows of `z_e_flat`.

        Returns how many codes were reset. `z_e_flat` is (S, code_dim) (any leading dims are flattened).
        """
        dead_V = self.steps_unused >= self.dead_code_threshold
        n = int(dead_V.sum())
        if n == 0:
            return 0
        z_SD = self.prepare(z_e_flat.detach())
        gen_dev = generator.device if generator is not None else z_SD.device
        pick = torch.randint(0, z_SD.shape[0], (n,), generator=generator, device=gen_dev).to(z_SD.device)
        noise = torch.randn(n, self.code_dim, generator=generator, device=gen_dev).to(z_SD.device)
        new = z_SD[pick] + 0.01 * noise
        self.codebook.data[dead_V] = new.to(self.codebook.dtype)
        self.steps_unused[dead_V] = 0
        return n
