"""Video tokenizer: an ST-ViViT VQ-VAE (Genie, section 2.1) turning frames into N discrete tokens per frame.

patches -> linear -> + spatial pos emb -> causal ST encoder -> linear to code_dim -> VQ (codebook_size codes)
-> linear up -> + spatial pos emb -> causal ST decoder -> linear to pixels -> sigmoid.

Both transformers are causal in time, so the tokens of frame t depend only on frames <= t (what the dynamics
model and the env rely on) and the decoder can run frame by frame with a KV cache (`decode_step`). The sigmoid
output keeps reconstructions in [0, 1] with a gradient everywhere (clamping would stall saturated pixels).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from genie_gym.config import TokenizerConfig
from genie_gym.errors import ConfigError
from genie_gym.models.frames import patchify, unpatchify
from genie_gym.models.st_transformer import STTransformer, TemporalKVCache, init_weights
from genie_gym.models.vq import VectorQuantizer


class VideoTokenizer(nn.Module):
    def __init__(self, cfg: TokenizerConfig, image_size: int = 64, max_frames: int = 16, channels: int = 3):
        super().__init__()
        if image_size % cfg.patch_size:
            raise ConfigError(f"image_size={image_size} is not divisible by tokenizer patch_size="
                              f"{cfg.patch_size}; choose a patch size that divides the image size")
        self.cfg = cfg
        self.image_size = image_size
        self.channels = channels
        self.patch = cfg.patch_size
        self.tokens_per_frame = (image_size // cfg.patch_size) ** 2
        self.codebook_size = cfg.codebook_size
        P, D, N = cfg.patch_size ** 2 * channels, cfg.d_model, self.tokens_per_frame
        self.patch_embed = nn.Linear(P, D)
        self.enc_pos = nn.Parameter(torch.zeros(N, D))
        self.encoder = STTransformer(D, cfg.num_layers, cfg.num_heads, cfg.qk_norm, max_frames)
        self.pre_quant = nn.Linear(D, cfg.code_dim)
        self.vq = VectorQuantizer(cfg.codebook_size, cfg.code_dim, cfg.commitment_weight)
        self.post_quant = nn.Linear(cfg.code_dim, D)
        self.dec_pos = nn.Parameter(torch.zeros(N, D))
        self.decoder = STTransformer(D, cfg.num_layers, cfg.num_heads, cfg.qk_norm, max_frames)
        self.head = nn.Linear(D, P)
        init_weights(self.patch_embed)
        init_weights(self.pre_quant)
        init_weights(self.post_quant)
        init_weights(self.head)
        nn.init.normal_(self.enc_pos, std=0.02)
        nn.init.normal_(self.dec_pos, std=0.02)

    def _check(self, frames_BTHWC: torch.Tensor) -> None:
        S, C = self.image_size, self.channels
        if frames_BTHWC.dim() != 5 or tuple(frames_BTHWC.shape[2:]) != (S, S, C):
            raise ValueError(f"expected float frames (B, T, {S}, {S}, {C}) in [0, 1], got "
                             f"{tuple(frames_BTHWC.shape)}; convert uint8 frames with "
                             "genie_gym.models.frames.to_float")

    # --- encoder side ---------------------------------------------------------------------------------------
    def encode_latents(self, frames_BTHWC: torch.Tensor) -> torch.Tensor:
        """Continuous pre-quantisation latents z_e (B, T, N, code_dim) (what `vq.reset_dead_codes` takes)."""
        self._check(frames_BTHWC)
        x_BTND = self.patch_embed(patchify(frames_BTHWC, self.patch)) + self.enc_pos
        return self.pre_quant(self.encoder(x_BTND))

    @torch.no_grad()
    def encode(self, frames_BTHWC: torch.Tensor) -> torch.Tensor:
        """Frames (B, T, H, W, C) in [0, 1] -> tokens (B, T, N) long."""
        _, idx, _, _ = self.vq(self.encode_latents(frames_BTHWC))
        return idx

    def new_encoder_cache(self, batch_size: int, device: torch.device | str = "cpu",
                          dtype: torch.dtype = torch.float32) -> TemporalKVCache:
        return self.encoder.new_cache(batch_size, None, device, dtype)

    @torch.no_grad()
    def encode_step(self, frames_BHWC: torch.Tensor, cache: TemporalKVCache,
                    commit: bool = True) -> torch.Tensor:
        """Encode one new frame per element given the cached past (e.g. a prompt frame) -> tokens (B, N)."""
        self._check(frames_BHWC[:, None])
        x_BND = self.patch_embed(patchify(frames_BHWC[:, None], self.patch)[:, 0]) + self.enc_pos
        _, idx, _, _ = self.vq(self.pre_quant(self.encoder.forward_step(x_BND, cache, commit)))
        return idx

    # --- decoder side ---------------------------------------------------------------------------------------
    def _decode_pixels(self, h_BTND: torch.Tensor) -> torch.Tensor:
        S = self.image_size
        return torch.sigmoid(unpatchify(self.head(h_BTND), self.patch, S, S))

    def decode_latents(self, z_q_BTNC: torch.Tensor) -> torch.Tensor:
        """Quantised code vectors (B, T, N, code_dim) -> frames (B, T, H, W, C) in [0, 1]."""
        return self._decode_pixels(self.decoder(self.post_quant(z_q_BTNC) + self.dec_pos))

    def decode(self, tokens_BTN: torch.Tensor) -> torch.Tensor:
        """Tokens (B, T, N) -> frames (B, T, H, W, C) in [0, 1]."""
        return self.decode_latents(self.vq.lookup(tokens_BTN))

    def new_decoder_cache(self, batch_size: int, device: torch.device | str = "cpu",
                          dtype: torch.dtype = torch.float32) -> TemporalKVCache:
        return self.decoder.new_cache(batch_size, None, device, dtype)

    def decode_step(self, tokens_BN: torch.Tensor, cache: TemporalKVCache,
                    commit: bool = True) -> torch.Tensor:
        """Decode one new frame per element given the cached past frames -> frames (B, H, W, C) in [0, 1]."""
        x_BND = self.post_quant(self.vq.lookup(tokens_BN)) + self.dec_pos
        return self._decode_pixels(self.decoder.forward_step(x_BND, cache, commit)[:, None])[:, 0]

    # --- training -------------------------------------------------------------------------------------------
    def forward(self, frames_BTHWC: torch.Tensor) -> dict:
        """Reconstruct a clip. loss = MSE(recon, frames) + VQ loss."""
        z_e = self.encode_latents(frames_BTHWC)
        z_q, tokens_BTN, vq_loss, stats = self.vq(z_e)
        recon_BTHWC = self.decode_latents(z_q)
        recon_loss = F.mse_loss(recon_BTHWC.float(), frames_BTHWC.float())
        return {
            "loss": recon_loss + vq_loss,
            "recon_loss": recon_loss,
            "vq_loss": vq_loss,
            "recon_BTHWC": recon_BTHWC,
            "tokens_BTN": tokens_BTN,
            "z_e": z_e,
            "stats": stats,
        }
