"""Video tokenizer: an ST-ViViT (Genie, section 2.1) turning frames into N discrete tokens per frame.

    frames -> stem -> + spatial pos emb -> causal ST encoder -> linear to code_dim x groups -> quantiser
    -> linear up -> + spatial pos emb -> causal ST decoder -> head -> sigmoid pixels

Two stems (`TokenizerConfig.stem`):
- "patch" (the paper's, the `coinrun` preset): pixels of each patch_size^2 patch -> linear; head: linear -> patch.
- "conv" (the hybrid, the `small` preset): a convolutional encoder takes each frame down to the same grid (a strided
  conv, then residual blocks and stride-2 convs, `conv_channels` wide); the decoder mirrors it (nearest upsampling +
  conv) and ends in a pixel-shuffle head. Convolutions see one frame at a time, so time only mixes in the causal ST
  transformer between them. Measured against the patch stem in `benchmarks/studies/tokenizer_bakeoff.py`: the patch
  stem's linear head draws blocks and loses thin platforms and the agent; the conv decoder keeps edges.
Two quantisers (`quantizer`): "vq" (a learned codebook, models/vq.py) or "fsq" (a fixed grid, models/fsq.py).
`groups` G > 1 splits each grid cell's latent into G tokens, quantised separately: a frame then has
grid^2 x G tokens, ordered cell-major (token p*G + g is group g of cell p), so G multiplies the bits per frame
while the dynamics still runs its transformer over grid^2 positions (models/dynamics.py).

Both transformers are causal in time, so the tokens of frame t depend only on frames <= t (what the dynamics
model and the env rely on) and the decoder can run frame by frame with a KV cache (`decode_step`). The sigmoid
output keeps reconstructions in [0, 1] with a gradient everywhere (clamping would stall saturated pixels).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from genie_gym.config import TokenizerConfig
from genie_gym.errors import ConfigError
from genie_gym.models.frames import patchify, unpatchify
from genie_gym.models.fsq import FSQ
from genie_gym.models.st_transformer import STTransformer, TemporalKVCache, init_weights
from genie_gym.models.vq import VectorQuantizer


class ResBlock(nn.Module):
    """x + conv(gelu(norm(conv(gelu(norm(x)))))), 3x3 convolutions, channels unchanged."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(8, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.gelu(self.norm2(self.conv1(F.gelu(self.norm1(x))))))


class ConvEncoder(nn.Module):
    """(M, C, S, S) -> (M, D, S/p, S/p): a stride-2 conv to channels[0], then per stage a residual block and a
    stride-2 conv to the next width (the last to D). p = 2^(len(channels) + 1)."""

    def __init__(self, channels: tuple[int, ...], d_model: int, in_channels: int = 3):
        super().__init__()
        widths = (*channels, d_model)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 4, stride=2, padding=1)]
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [ResBlock(c_in), nn.GELU(), nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# Nearest x2 then a 3x3 convolution, computed on the low-resolution grid: output row 2i reads upsampled rows
# 2i-1, 2i, 2i+1 = low-res rows i-1, i, i, so the kernel's rows (w0, w1, w2) act as (w0, w1 + w2) on rows (i-1, i);
# output row 2i+1 reads rows i, i, i+1: (w0 + w1, w2) on rows (i, i+1). The same for columns. _PHASE_ROWS[a] maps
# the 3 kernel rows to the 2 of output phase a.
_PHASE_ROWS = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])


def _phase_kernels(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The four 2x2 phase kernels (4*O, I, 2, 2) and biases of a 3x3 conv; kept on the module between calls
    without gradients (inference) until its weights change."""
    w, b = conv.weight, conv.bias
    cacheable = not torch.is_grad_enabled() and not torch.compiler.is_compiling()
    key = (w._version, w.data_ptr(), w.dtype, w.device, None if b is None else b._version) if cacheable else None
    cached = conv.__dict__.get("_phase_kernels")
    if cached is not None and cached[0] == key and key is not None:
        return cached[1], cached[2]
    with torch.autocast(w.device.type, enabled=False):  # sum the weights in their own precision
        rows = _PHASE_ROWS.to(w)
        k_4OI22 = torch.einsum("arp,oipq,bcq->aboirc", rows, w, rows).reshape(4 * conv.out_channels, -1, 2, 2)
    bias = b.repeat(4) if b is not None else None
    if cacheable:
        conv.__dict__["_phase_kernels"] = (key, k_4OI22, bias)
    return k_4OI22, bias


def upsample2x_conv(x_MCHW: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """`conv(nearest_upsample_x2(x))` for a 3x3, stride-1, padding-1 `conv`, as four 2x2 convolutions (one per
    output phase) on the low-resolution input: the same result (to float rounding) for 4 x 4 instead of 4 x 9
    multiply-adds per output pixel. Returns a channels-last (M, O, 2H, 2W) tensor."""
    M, _, H, W = x_MCHW.shape
    O = conv.out_channels
    k_4OI22, bias = _phase_kernels(conv)
    y = F.conv2d(x_MCHW, k_4OI22, bias, padding=1)  # (M, 4*O, H+1, W+1); phase (a, b) is y[:, ab, a:a+H, b:b+W]
    y_MHW22O = y.permute(0, 2, 3, 1).reshape(M, H + 1, W + 1, 2, 2, O)  # a view when y is channels-last
    out_MH2W2O = y.new_empty(M, H, 2, W, 2, O)
    for a in (0, 1):
        for b in (0, 1):
            out_MH2W2O[:, :, a, :, b] = y_MHW22O[:, a:a + H, b:b + W, a, b]
    return out_MH2W2O.view(M, 2 * H, 2 * W, O).permute(0, 3, 1, 2)


class ConvDecoder(nn.Module):
    """(M, D, g, g) -> (M, C, g*p, g*p) logits: mirrors ConvEncoder (nearest x2 + 3x3 conv, residual block per
    stage), then a 3x3 conv to C*4 channels and a pixel shuffle for the last x2. Each nearest x2 + conv runs as
    `upsample2x_conv` (2.2x fewer multiply-adds, the same weights)."""

    def __init__(self, channels: tuple[int, ...], d_model: int, out_channels: int = 3):
        super().__init__()
        widths = (*channels, d_model)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[::-1][:-1], widths[::-1][1:], strict=True):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1),
                       ResBlock(c_out)]
        layers += [nn.GroupNorm(8, widths[0]), nn.GELU(), nn.Conv2d(widths[0], out_channels * 4, 3, padding=1),
                   nn.PixelShuffle(2)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers, i = list(self.net), 0
        while i < len(layers):
            if isinstance(layers[i], nn.Upsample):  # always followed by its 3x3 conv
                x, i = upsample2x_conv(x, layers[i + 1]), i + 2
            else:
                x, i = layers[i](x), i + 1
        return x


def edge_l1(recon_BTHWC: torch.Tensor, frames_BTHWC: torch.Tensor) -> torch.Tensor:
    """L1 between the vertical and between the horizontal pixel differences of two (B, T, H, W, C) videos (edges):
    a blurred or a misplaced edge costs here what MSE barely sees."""
    r, x = recon_BTHWC, frames_BTHWC
    dy = F.l1_loss(r[:, :, 1:] - r[:, :, :-1], x[:, :, 1:] - x[:, :, :-1])
    dx = F.l1_loss(r[:, :, :, 1:] - r[:, :, :, :-1], x[:, :, :, 1:] - x[:, :, :, :-1])
    return dx + dy


def check_tokenizer_config(cfg: TokenizerConfig, image_size: int) -> None:
    """Every way a tokenizer config can fail to describe a model, as one clear error naming the fix."""
    if image_size % cfg.patch_size:
        raise ConfigError(f"image_size={image_size} is not divisible by tokenizer patch_size={cfg.patch_size}; "
                          "choose a patch size that divides the image size")
    if cfg.stem not in ("patch", "conv"):
        raise ConfigError(f"tokenizer stem must be 'patch' or 'conv', got {cfg.stem!r}")
    if cfg.stem == "conv":
        if cfg.patch_size != 2 ** (len(cfg.conv_channels) + 1):
            raise ConfigError(f"a conv stem with conv_channels={list(cfg.conv_channels)} halves the frame "
                              f"{len(cfg.conv_channels) + 1} times (patch {2 ** (len(cfg.conv_channels) + 1)}), but "
                              f"patch_size={cfg.patch_size}; give one conv width per halving after the first")
        if any(c % 8 for c in (*cfg.conv_channels, cfg.d_model)):
            raise ConfigError(f"conv widths {list(cfg.conv_channels)} and d_model={cfg.d_model} must be multiples "
                              "of 8 (GroupNorm with 8 groups)")
    if cfg.groups < 1:
        raise ConfigError(f"tokenizer groups must be >= 1, got {cfg.groups}")
    if cfg.quantizer == "fsq":
        if cfg.code_dim != len(cfg.fsq_levels):
            raise ConfigError(f"FSQ code_dim must equal the number of levels: fsq_levels={list(cfg.fsq_levels)} "
                              f"has {len(cfg.fsq_levels)}, code_dim={cfg.code_dim}; set code_dim="
                              f"{len(cfg.fsq_levels)}")
        if cfg.codebook_size != math.prod(cfg.fsq_levels):
            raise ConfigError(f"FSQ levels {list(cfg.fsq_levels)} make {math.prod(cfg.fsq_levels)} codes, but "
                              f"codebook_size={cfg.codebook_size}; set codebook_size={math.prod(cfg.fsq_levels)}")
    elif cfg.quantizer != "vq":
        raise ConfigError(f"tokenizer quantizer must be 'vq' or 'fsq', got {cfg.quantizer!r}")


class VideoTokenizer(nn.Module):
    def __init__(self, cfg: TokenizerConfig, image_size: int = 64, max_frames: int = 16, channels: int = 3):
        super().__init__()
        check_tokenizer_config(cfg, image_size)
        self.cfg = cfg
        self.image_size = image_size
        self.channels = channels
        self.patch = cfg.patch_size
        self.groups = cfg.groups
        self.grid_cells = (image_size // cfg.patch_size) ** 2
        self.tokens_per_frame = self.grid_cells * cfg.groups
        self.codebook_size = cfg.codebook_size
        P, D, N, G = cfg.patch_size ** 2 * channels, cfg.d_model, self.grid_cells, cfg.groups
        if cfg.stem == "patch":
            self.patch_embed = nn.Linear(P, D)
            init_weights(self.patch_embed)
        else:
            self.conv_enc = ConvEncoder(tuple(cfg.conv_channels), D, channels)
        self.enc_pos = nn.Parameter(torch.zeros(N, D))
        self.encoder = STTransformer(D, cfg.num_layers, cfg.num_heads, cfg.qk_norm, max_frames)
        self.pre_quant = nn.Linear(D, cfg.code_dim * G)
        if cfg.quantizer == "fsq":
            self.vq: nn.Module = FSQ(cfg.fsq_levels)
        else:
            self.vq = VectorQuantizer(cfg.codebook_size, cfg.code_dim, cfg.commitment_weight)
        self.post_quant = nn.Linear(cfg.code_dim * G, D)
        self.dec_pos = nn.Parameter(torch.zeros(N, D))
        self.decoder = STTransformer(D, cfg.num_layers, cfg.num_heads, cfg.qk_norm, max_frames)
        if cfg.stem == "patch":
            self.head = nn.Linear(D, P)
            init_weights(self.head)
        else:
            self.conv_dec = ConvDecoder(tuple(cfg.conv_channels), D, channels)
        init_weights(self.pre_quant)
        init_weights(self.post_quant)
        nn.init.normal_(self.enc_pos, std=0.02)
        nn.init.normal_(self.dec_pos, std=0.02)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    ENCODER_SIDE = ("patch_embed", "conv_enc", "enc_pos", "encoder", "pre_quant", "vq")

    def freeze_encoder(self) -> None:
        """Fix everything that decides the tokens (stem, encoder, quantiser): only the decoder side still learns,
        so the tokens of every frame stay what a dynamics model was trained on."""
        for name, param in self.named_parameters():
            if name.split(".")[0] in self.ENCODER_SIDE:
                param.requires_grad_(False)

    def _check(self, frames_BTHWC: torch.Tensor) -> None:
        S, C = self.image_size, self.channels
        if frames_BTHWC.dim() != 5 or tuple(frames_BTHWC.shape[2:]) != (S, S, C):
            raise ValueError(f"expected float frames (B, T, {S}, {S}, {C}) in [0, 1], got "
                             f"{tuple(frames_BTHWC.shape)}; convert uint8 frames with "
                             "genie_gym.models.frames.to_float")

    # --- encoder side ---------------------------------------------------------------------------------------
    def _embed(self, frames_BTHWC: torch.Tensor) -> torch.Tensor:
        """Frames (B, T, H, W, C) -> grid features (B, T, N, D), one frame at a time."""
        if self.cfg.stem == "patch":
            return self.patch_embed(patchify(frames_BTHWC, self.patch))
        B, T, S, _, C = frames_BTHWC.shape
        x_MDgg = self.conv_enc(frames_BTHWC.reshape(B * T, S, S, C).permute(0, 3, 1, 2))
        return x_MDgg.flatten(2).transpose(1, 2).reshape(B, T, self.grid_cells, -1)

    def encode_latents(self, frames_BTHWC: torch.Tensor) -> torch.Tensor:
        """Continuous pre-quantisation latents z_e (B, T, N*G, code_dim) (what `vq.reset_dead_codes` takes)."""
        self._check(frames_BTHWC)
        z_BTNC = self.pre_quant(self.encoder(self._embed(frames_BTHWC) + self.enc_pos))
        B, T, N, _ = z_BTNC.shape
        return z_BTNC.reshape(B, T, N * self.groups, self.cfg.code_dim)

    @torch.no_grad()
    def encode(self, frames_BTHWC: torch.Tensor) -> torch.Tensor:
        """Frames (B, T, H, W, C) in [0, 1] -> tokens (B, T, N*G) long."""
        _, idx, _, _ = self.vq(self.encode_latents(frames_BTHWC))
        return idx

    def new_encoder_cache(self, batch_size: int, device: torch.device | str = "cpu",
                          dtype: torch.dtype = torch.float32) -> TemporalKVCache:
        return self.encoder.new_cache(batch_size, None, device, dtype)

    @torch.no_grad()
    def encode_step(self, frames_BHWC: torch.Tensor, cache: TemporalKVCache,
                    commit: bool = True) -> torch.Tensor:
        """Encode one new frame per element given the cached past (e.g. a prompt frame) -> tokens (B, N*G)."""
        self._check(frames_BHWC[:, None])
        x_BND = self._embed(frames_BHWC[:, None])[:, 0] + self.enc_pos
        z_BNC = self.pre_quant(self.encoder.forward_step(x_BND, cache, commit))
        _, idx, _, _ = self.vq(z_BNC.reshape(z_BNC.shape[0], -1, self.cfg.code_dim))
        return idx

    # --- decoder side ---------------------------------------------------------------------------------------
    def _decode_pixels(self, h_BTND: torch.Tensor) -> torch.Tensor:
        S = self.image_size
        if self.cfg.stem == "patch":
            return torch.sigmoid(unpatchify(self.head(h_BTND), self.patch, S, S))
        B, T, N, D = h_BTND.shape
        g = self.grid
        x_MDgg = h_BTND.reshape(B * T, g, g, D).permute(0, 3, 1, 2)
        out_MCSS = self.conv_dec(x_MDgg)
        return torch.sigmoid(out_MCSS.permute(0, 2, 3, 1).reshape(B, T, S, S, self.channels))

    def _codes_to_grid(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors (..., N*G, code_dim) -> decoder input (..., N, D)."""
        *lead, NG, C = codes.shape
        return self.post_quant(codes.reshape(*lead, NG // self.groups, self.groups * C)) + self.dec_pos

    def decode_latents(self, z_q_BTNC: torch.Tensor) -> torch.Tensor:
        """Quantised code vectors (B, T, N*G, code_dim) -> frames (B, T, H, W, C) in [0, 1]."""
        return self._decode_pixels(self.decoder(self._codes_to_grid(z_q_BTNC)))

    def decode(self, tokens_BTN: torch.Tensor) -> torch.Tensor:
        """Tokens (B, T, N*G) -> frames (B, T, H, W, C) in [0, 1]."""
        return self.decode_latents(self.vq.lookup(tokens_BTN))

    def new_decoder_cache(self, batch_size: int, device: torch.device | str = "cpu",
                          dtype: torch.dtype = torch.float32) -> TemporalKVCache:
        return self.decoder.new_cache(batch_size, None, device, dtype)

    def decode_step(self, tokens_BN: torch.Tensor, cache: TemporalKVCache,
                    commit: bool = True) -> torch.Tensor:
        """Decode one new frame per element given the cached past frames -> frames (B, H, W, C) in [0, 1]."""
        x_BND = self._codes_to_grid(self.vq.lookup(tokens_BN))
        return self._decode_pixels(self.decoder.forward_step(x_BND, cache, commit)[:, None])[:, 0]

    # --- training -------------------------------------------------------------------------------------------
    def recon_loss(self, recon_BTHWC: torch.Tensor, frames_BTHWC: torch.Tensor) -> torch.Tensor:
        """mse * MSE + l1 * L1 + grad * L1 between horizontal and vertical pixel differences (edges)."""
        cfg, r, x = self.cfg, recon_BTHWC.float(), frames_BTHWC.float()
        loss = r.new_zeros(())
        if cfg.mse_weight:
            loss = loss + cfg.mse_weight * F.mse_loss(r, x)
        if cfg.l1_weight:
            loss = loss + cfg.l1_weight * F.l1_loss(r, x)
        if cfg.grad_weight:
            loss = loss + cfg.grad_weight * edge_l1(r, x)
        return loss

    def forward(self, frames_BTHWC: torch.Tensor) -> dict:
        """Reconstruct a clip. loss = reconstruction loss (`recon_loss`) + VQ loss (0 for FSQ)."""
        z_e = self.encode_latents(frames_BTHWC)
        z_q, tokens_BTN, vq_loss, stats = self.vq(z_e)
        recon_BTHWC = self.decode_latents(z_q)
        recon_loss = self.recon_loss(recon_BTHWC, frames_BTHWC)
        return {
            "loss": recon_loss + vq_loss,
            "recon_loss": recon_loss,
            "mse": F.mse_loss(recon_BTHWC.float().detach(), frames_BTHWC.float()),
            "vq_loss": vq_loss,
            "recon_BTHWC": recon_BTHWC,
            "tokens_BTN": tokens_BTN,
            "z_e": z_e,
            "stats": stats,
        }
