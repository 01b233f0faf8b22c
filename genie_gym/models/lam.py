"""Latent action model (Genie, section 2.1): learns |A| discrete actions from pixels alone.

One design, the one of benchmarks/results/lam_ablation.md whose codes follow the movement (the benchmark keeps
the variants it was measured against):

Encoder: patches (patch 16) of frames 0..T-1, causal ST transformer; h_t = the flattened output tokens of frame t
(it has seen frames <= t; flattening keeps where things are, so "the world moved left" is visible, which a mean
over tokens is nearly blind to). The continuous latent of transition t -> t+1 is a bias-free projection of the
*change* h_{t+1} - h_t ("an action is what changes"; reading h_t itself collapsed the codebook on CoinRun: those
features share a large component across all clips). -> VQ (raw distances, no l2 normalisation) with num_actions
codes -> a_t, t = 0..T-2.

Decoder: sees frame t alone (patch embeddings) and the quantised a_t (projected and ADDED to every token); no
history, so the motion so far cannot be read from earlier frames, only from a_t. Head: per patch, a softmax k x k
kernel applied to frame t's neighbourhood of each pixel (a shift is a one-hot kernel) plus a pixel residual for new
content, = the prediction of frame t+1. Since the future reaches the decoder only through 8 codes, a_t must carry
what changes. Loss = MSE(recon, frames[1:]) + VQ loss. Watch `stats['usage']` for codebook collapse; the trainer
calls `vq.reset_dead_codes(out['z_e'])` every K steps.

Continuous warm-up (`continuous_warmup_steps`): with 8 codes from the first step the decoder learns to predict
from the past and to ignore the code before the encoder has learnt anything worth quantising. With
`quantize = False` the decoder reads the un-quantised latent; the trainer then seeds the codebook by k-means on
latents (`vq.init_kmeans`) and switches quantisation on, so the 8 codes start as the 8 main kinds of change the
encoder found.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from genie_gym.config import LAMConfig
from genie_gym.errors import ConfigError
from genie_gym.models.frames import patchify, unpatchify
from genie_gym.models.st_transformer import STTransformer, init_weights
from genie_gym.models.vq import VectorQuantizer


class LatentActionModel(nn.Module):
    def __init__(self, cfg: LAMConfig, image_size: int = 64, max_frames: int = 16, channels: int = 3):
        super().__init__()
        if image_size % cfg.patch_size:
            raise ConfigError(f"image_size={image_size} is not divisible by LAM patch_size={cfg.patch_size}; "
                              "choose a patch size that divides the image size")
        self.cfg = cfg
        self.image_size = image_size
        self.channels = channels
        self.patch = cfg.patch_size
        self.num_actions = cfg.num_actions
        N = (image_size // cfg.patch_size) ** 2
        P, D = cfg.patch_size ** 2 * channels, cfg.d_model
        self.enc_patch_embed = nn.Linear(P, D)
        self.enc_pos = nn.Parameter(torch.zeros(N, D))
        self.encoder = STTransformer(D, cfg.num_layers, cfg.num_heads, cfg.qk_norm, max_frames)
        self.pre_quant = nn.Linear(N * D, cfg.code_dim, bias=False)  # no bias: "no change" maps to the origin
        # Few codes: a code unused for 20 steps is dead (the tokenizer's 1024 codes use a longer threshold).
        self.vq = VectorQuantizer(cfg.num_actions, cfg.code_dim, cfg.commitment_weight, dead_code_threshold=20,
                                  normalize=False)
        self.action_proj = nn.Linear(cfg.code_dim, D)
        self.dec_patch_embed = nn.Linear(P, D)
        self.dec_pos = nn.Parameter(torch.zeros(N, D))
        self.decoder = STTransformer(D, cfg.num_layers, cfg.num_heads, cfg.qk_norm, max_frames)
        k = cfg.decoder_kernel
        if k < 1 or k % 2 == 0:
            raise ConfigError(f"LAM decoder_kernel must be an odd size >= 1, got {k}")
        # Kernel head: per patch, k*k softmax weights over frame t's neighbourhood of each pixel, plus a pixel
        # residual for what a shift cannot explain (new content at the edges).
        self.head = nn.Linear(D, P + k * k)
        self.quantize = True  # the trainer turns it off for the first cfg.continuous_warmup_steps steps
        for m in (self.enc_patch_embed, self.pre_quant, self.action_proj, self.dec_patch_embed, self.head):
            init_weights(m)
        for p in (self.enc_pos, self.dec_pos):
            nn.init.normal_(p, std=0.02)

    def _check(self, frames_BTHWC: torch.Tensor) -> None:
        S, C = self.image_size, self.channels
        if frames_BTHWC.dim() != 5 or tuple(frames_BTHWC.shape[2:]) != (S, S, C) or frames_BTHWC.shape[1] < 2:
            raise ValueError(f"expected float frames (B, T>=2, {S}, {S}, {C}) in [0, 1], got "
                             f"{tuple(frames_BTHWC.shape)}; the LAM needs at least two frames per clip")

    def frame_features(self, frames_BTHWC: torch.Tensor) -> torch.Tensor:
        """Causal encoder features h_t (B, T, N*D), the frame's tokens flattened: h_t has seen frames <= t only."""
        self._check(frames_BTHWC)
        x_BTND = self.enc_patch_embed(patchify(frames_BTHWC, self.patch)) + self.enc_pos
        return self.encoder(x_BTND).flatten(2)

    def encode_latents(self, frames_BTHWC: torch.Tensor) -> torch.Tensor:
        """Continuous action latents (B, T-1, code_dim); entry t describes frame t -> t+1."""
        h_BTD = self.frame_features(frames_BTHWC)
        return self.pre_quant(h_BTD[:, 1:] - h_BTD[:, :-1])

    @torch.no_grad()
    def infer_actions(self, frames_BTHWC: torch.Tensor) -> torch.Tensor:
        """Frames (B, T, H, W, C) in [0, 1] -> latent actions (B, T-1) long."""
        _, idx, _, _ = self.vq(self.encode_latents(frames_BTHWC))
        return idx

    def decode(self, frames_BTHWC: torch.Tensor, a_q_BTC: torch.Tensor) -> torch.Tensor:
        """Predict frames 1..T from frames 0..T-1 (B, T, H, W, C) and quantised actions (B, T, code_dim); each
        prediction reads its own frame t and a_t only."""
        x_BTND = self.dec_patch_embed(patchify(frames_BTHWC, self.patch)) + self.dec_pos
        x_BTND = x_BTND + self.action_proj(a_q_BTC)[:, :, None]
        B, T, N, D = x_BTND.shape
        h_BTND = self.decoder(x_BTND.reshape(B * T, 1, N, D)).reshape(B, T, N, D)
        return self._kernel_decode(frames_BTHWC, self.head(h_BTND))

    def _kernel_weights(self, logits_BTNK: torch.Tensor) -> torch.Tensor:
        """Each patch's k x k kernel: a softmax over its taps (a blend of shifts)."""
        return logits_BTNK.softmax(-1)

    def _kernel_decode(self, frames_BTHWC: torch.Tensor, head_BTNO: torch.Tensor) -> torch.Tensor:
        """Frame t filtered per patch by a predicted k x k kernel, plus a small pixel residual -> frame t+1."""
        B, T, S, _, C = frames_BTHWC.shape
        k, p, g = self.cfg.decoder_kernel, self.patch, S // self.patch
        P = p * p * C
        resid_BTHWC = unpatchify(head_BTNO[..., :P], p, S, S)
        w_BTNK = self._kernel_weights(head_BTNO[..., P:])
        # Every pixel takes its patch's kernel: (B*T, k*k, g, g) -> (B*T, k*k, S, S).
        w_MKSS = w_BTNK.reshape(B * T, g, g, k * k).permute(0, 3, 1, 2)
        w_MKSS = w_MKSS.repeat_interleave(p, dim=2).repeat_interleave(p, dim=3)
        x_MCSS = frames_BTHWC.reshape(B * T, S, S, C).permute(0, 3, 1, 2)
        nb_MCKL = F.unfold(x_MCSS, k, padding=k // 2).reshape(B * T, C, k * k, S * S)
        out_MCL = (nb_MCKL * w_MKSS.reshape(B * T, 1, k * k, S * S)).sum(2)
        out_BTHWC = out_MCL.reshape(B, T, C, S, S).permute(0, 1, 3, 4, 2)
        return (out_BTHWC + resid_BTHWC).clamp(0, 1)

    def forward(self, frames_BTHWC: torch.Tensor) -> dict:
        z_e = self.encode_latents(frames_BTHWC)
        a_q_BTC, actions_BT, vq_loss, stats = self.vq(z_e)
        if not self.quantize:  # continuous warm-up: the decoder reads the latent itself, no VQ loss
            a_q_BTC, vq_loss = self.vq.prepare(z_e).view(z_e.shape), vq_loss * 0.0
        recon_BTHWC = self.decode(frames_BTHWC[:, :-1], a_q_BTC)
        recon_loss = F.mse_loss(recon_BTHWC.float(), frames_BTHWC[:, 1:].float())
        return {
            "loss": recon_loss + vq_loss,
            "recon_loss": recon_loss,
            "vq_loss": vq_loss,
            "recon_BTHWC": recon_BTHWC,
            "actions_BT": actions_BT,
            "z_e": z_e,
            "stats": stats,
        }


def lam_fingerprint(lam: nn.Module) -> str:
    """sha256 over a LAM's parameters (names, shapes, float32 values): a code -> action table built from its codes
    records it, so a table is never paired with another LAM's codes."""
    h = hashlib.sha256()
    for name, p in sorted(lam.named_parameters()):
        h.update(f"{name}{tuple(p.shape)}".encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
