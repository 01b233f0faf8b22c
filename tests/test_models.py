"""World-model components (issue 3, items 1-2): shapes, temporal causality, action alignment, VQ behaviour,
KV-cache exactness, MaskGIT sampling, and that tiny models really learn. Tiny configs, one thread."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from genie_gym.config import TokenizerConfig, get_preset
from genie_gym.errors import ConfigError
from genie_gym.models.dynamics import DynamicsModel
from genie_gym.models.frames import patchify, to_float, to_uint8, unpatchify
from genie_gym.models.fsq import FSQ
from genie_gym.models.lam import LatentActionModel
from genie_gym.models.maskgit import mask_schedule, maskgit_sample
from genie_gym.models.st_transformer import STTransformer
from genie_gym.models.tokenizer import VideoTokenizer
from genie_gym.models.vq import VectorQuantizer

T = 4  # tiny preset clip length


@pytest.fixture(scope="module")
def cfg():
    return get_preset("tiny")


def _models(cfg, seed: int = 0):
    torch.manual_seed(seed)
    tok = VideoTokenizer(cfg.tokenizer, cfg.image_size, max_frames=T)
    lam = LatentActionModel(cfg.lam, cfg.image_size, max_frames=T)
    dyn = DynamicsModel(cfg.dynamics, tok.codebook_size, tok.tokens_per_frame, cfg.lam.num_actions,
                        max_frames=T, groups=tok.groups)
    return tok, lam, dyn


def squares_clips(B: int, steps: int, g: torch.Generator, size: int = 64, sq: int = 16, move: int = 8):
    """Two coloured squares on a dark background; each moves by `move` px per frame in a per-clip direction.

    Squares are patch-aligned for the tiny tokenizer (patch 8); the motion is what a latent action must carry.
    Returns frames (B, steps, size, size, 3) in [0, 1].
    """
    f = torch.zeros(B, steps, size, size, 3)
    f[..., 2] = 0.2
    span = size - sq + 1
    for b in range(B):
        for _ in range(2):
            y, x = (torch.randint(0, (size - sq) // move + 1, (2,), generator=g) * move).tolist()
            vy, vx = (torch.randint(-1, 2, (2,), generator=g) * move).tolist()
            col = torch.rand(3, generator=g) * 0.6 + 0.4
            for t in range(steps):
                yy, xx = (y + vy * t) % span, (x + vx * t) % span
                f[b, t, yy:yy + sq, xx:xx + sq] = col
    return f


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10 * math.log10(((a - b) ** 2).mean().item())


# --- frames -------------------------------------------------------------------------------------------------
def test_frames_roundtrip_and_patchify():
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (2, 3, 64, 64, 3), dtype=np.uint8)
    f = to_float(u8)
    assert f.dtype == torch.float32 and f.min() >= 0 and f.max() <= 1
    assert torch.equal(to_uint8(f), torch.from_numpy(u8))
    assert to_uint8(torch.tensor([-0.5, 0.5, 2.0])).tolist() == [0, 128, 255]
    p = patchify(f, 8)
    assert p.shape == (2, 3, 64, 8 * 8 * 3)
    assert torch.equal(p[0, 0, 1], f[0, 0, 0:8, 8:16].reshape(-1))  # row-major token order
    assert torch.equal(unpatchify(p, 8, 64, 64), f)
    with pytest.raises(TypeError, match="uint8"):
        to_float(np.zeros((4, 4, 3), dtype=np.int32))


# --- ST transformer and its KV cache ------------------------------------------------------------------------
@pytest.mark.parametrize("num_frames", [4, 9])  # within the window, and sliding past it
def test_st_forward_step_equals_forward(num_frames):
    torch.manual_seed(0)
    st = STTransformer(32, 2, 2, qk_norm=True, max_frames=4).eval()
    x_BTND = torch.randn(3, num_frames, 5, 32)
    with torch.no_grad():
        full_BTND = st(x_BTND)
        cache = st.new_cache(3)
        for t in range(num_frames):
            probe = st.forward_step(torch.randn(3, 5, 32), cache, commit=False)  # MaskGIT-style probe
            step = st.forward_step(x_BTND[:, t], cache, commit=True)
            torch.testing.assert_close(step, full_BTND[:, t], atol=1e-5, rtol=0)
            assert not torch.allclose(probe, step)
    assert cache.lengths.tolist() == [3, 3, 3]  # ring of max_frames - 1 past frames


def test_attention_in_chunks_equals_one_launch(monkeypatch: pytest.MonkeyPatch):
    """Above MAX_ATTENTION_BATCH sequences (1,024 worlds x 64 positions on CUDA) attention runs in chunks, unchanged:
    full forward (causal and windowed masks) and cached steps (a per-sequence mask)."""
    import genie_gym.models.st_transformer as st_mod

    torch.manual_seed(0)
    st = STTransformer(32, 2, 2, qk_norm=True, max_frames=4).eval()
    x_BTND = torch.randn(3, 6, 5, 32)

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            cache = st.new_cache(3)
            steps = torch.stack([st.forward_step(x_BTND[:, t], cache, commit=True) for t in range(6)], 1)
            return st(x_BTND), steps

    one_launch = run()
    monkeypatch.setattr(st_mod, "MAX_ATTENTION_BATCH", 4)  # 15 temporal sequences -> chunks of 4
    chunked = run()
    for a, b in zip(one_launch, chunked, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_math_attention_computes_what_sdpa_does(monkeypatch: pytest.MonkeyPatch):
    """The CPU bf16 path (two matmuls) follows F.scaled_dot_product_attention's mask conventions exactly (float64),
    and the ST transformer in bf16 gives the fused path's outputs within bf16 rounding, forward and cached steps."""
    import torch.nn.functional as F

    import genie_gym.models.st_transformer as st_mod

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(5, 2, L, 8, generator=g, dtype=torch.float64) for L in (3, 6, 6))
    bool_mask = torch.rand(5, 1, 3, 6, generator=g) < 0.7
    bool_mask[..., 0] = True  # every query sees one key at least
    for kwargs in ({}, {"is_causal": True}, {"attn_mask": bool_mask}, {"attn_mask": torch.randn(3, 6, dtype=q.dtype)}):
        torch.testing.assert_close(st_mod.math_attention(q, k, v, **kwargs),
                                   F.scaled_dot_product_attention(q, k, v, **kwargs), atol=1e-12, rtol=0)
    scores = (4 * torch.randn(64, 6, 3, 8, generator=g)).bfloat16()  # math_attention's softmax stays in bf16
    assert torch.equal(scores.softmax(-1), scores.float().softmax(-1).bfloat16())  # because it normalises in fp32
    torch.manual_seed(0)
    st = STTransformer(32, 2, 2, qk_norm=True, max_frames=4).eval()
    x_BTND = torch.randn(3, 6, 5, 32)

    def run() -> list[torch.Tensor]:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            cache = st.new_cache(3, dtype=torch.bfloat16)
            steps = torch.stack([st.forward_step(x_BTND[:, t], cache, commit=True) for t in range(6)], 1)
            return [st(x_BTND).float(), steps.float()]

    math = run()
    monkeypatch.setattr(st_mod, "MATH_ATTENTION_ON_CPU_BF16", False)
    for a, b in zip(math, run(), strict=True):
        torch.testing.assert_close(a, b, atol=0.1, rtol=0)  # bf16 rounding of unit-scale activations
        assert (a - b).abs().mean() < 0.01


def test_st_cache_per_element_reset_and_history():
    """Elements with different history lengths in one batch equal each element run alone."""
    torch.manual_seed(0)
    st = STTransformer(32, 2, 2, qk_norm=True, max_frames=4).eval()
    a_TND, b_TND = torch.randn(6, 5, 32), torch.randn(2, 5, 32)
    with torch.no_grad():
        cache = st.new_cache(2)
        for t in range(4):  # element 1 runs junk for 4 frames, then is reset and runs b
            st.forward_step(torch.stack([a_TND[t], torch.randn(5, 32)]), cache, commit=True)
        cache.reset([1])
        assert cache.lengths.tolist() == [3, 0]
        outs = [st.forward_step(torch.stack([a_TND[4 + t], b_TND[t]]), cache, commit=True) for t in range(2)]
        torch.testing.assert_close(outs[1][0], st(a_TND[None])[0, 5], atol=1e-5, rtol=0)
        torch.testing.assert_close(outs[1][1], st(b_TND[None])[0, 1], atol=1e-5, rtol=0)


# --- VQ -----------------------------------------------------------------------------------------------------
def test_vq_straight_through_and_stats():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 8)
    z_e = torch.randn(4, 10, 8, requires_grad=True)
    z_q, idx, loss, stats = vq(z_e)
    assert z_q.shape == z_e.shape and idx.shape == (4, 10) and idx.dtype == torch.long
    torch.testing.assert_close(z_q, vq.lookup(idx))  # forward value is the code itself
    ((z_q * torch.randn_like(z_q)).sum() + loss).backward()
    assert z_e.grad is not None and z_e.grad.abs().sum() > 0  # straight-through reaches the encoder side
    assert 0 < stats["usage"] <= 1 and 1 <= stats["perplexity"] <= 16
    assert vq.codebook.grad.abs().sum() > 0  # codebook loss trains the codes


def test_vq_dead_code_reset_revives_codes():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 8, dead_code_threshold=3)
    centers = torch.randn(2, 8)
    z_e = centers[torch.arange(200) % 2] + 0.1 * torch.randn(200, 8)  # data that uses few codes
    used_before = vq(z_e)[3]["usage"].item()
    assert used_before <= 0.25
    vq(z_e)
    assert vq.reset_dead_codes(z_e[:5]) == 0  # nothing is dead before the threshold (3 training calls)
    vq(z_e)
    n = vq.reset_dead_codes(z_e, generator=torch.Generator().manual_seed(0))
    assert n >= 16 - round(used_before * 16) and (vq.steps_unused == 0).all()
    assert vq(z_e)[3]["usage"].item() > used_before


def test_vq_kmeans_init_puts_one_code_on_each_cluster():
    """Eight well separated clusters of latents: k-means seeds one code per cluster, all codes in use."""
    g = torch.Generator().manual_seed(0)
    for normalize in (True, False):
        centres = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1) * 3
        z = (centres[:, None] + 0.05 * torch.randn(8, 50, 16, generator=g)).reshape(-1, 16)
        vq = VectorQuantizer(8, 16, normalize=normalize)
        vq.init_kmeans(z, generator=torch.Generator().manual_seed(1))
        _, idx, _, stats = vq(z)
        assert stats["perplexity"].item() > 7.9, normalize
        assert all(len(set(idx[i * 50 : (i + 1) * 50].tolist())) == 1 for i in range(8))
    with pytest.raises(ValueError, match="at least 8"):
        vq.init_kmeans(z[:5])


def test_lam_continuous_warmup_feeds_the_decoder_the_unquantised_latent(cfg):
    """quantize=False: the decoder reads the (normalised) latent itself, so two latents with the same code still
    decode differently, and the VQ loss is zero."""
    torch.manual_seed(0)
    lam = LatentActionModel(dataclasses.replace(cfg.lam, continuous_warmup_steps=5), 64, T)
    frames = torch.rand(2, T, 64, 64, 3)
    assert lam.quantize  # a freshly built (or loaded) LAM always quantises; only the trainer turns it off
    lam.quantize = False
    out = lam(frames)
    assert out["vq_loss"].item() == 0.0
    assert torch.allclose(lam.decode(frames[:, :-1], lam.vq.prepare(out["z_e"]).view(out["z_e"].shape)),
                          out["recon_BTHWC"])
    out["loss"].backward()
    assert lam.enc_patch_embed.weight.grad.abs().sum() > 0


# --- tokenizer ----------------------------------------------------------------------------------------------
PATCH_VQ = {"stem": "patch", "quantizer": "vq", "groups": 1, "code_dim": 16, "l1_weight": 0.0}  # v0.2, `coinrun`


@pytest.mark.parametrize("design", ["conv_fsq_groups2", "patch_vq"])
def test_tokenizer_shapes_and_gradients(cfg, design):
    tcfg = cfg.tokenizer if design == "conv_fsq_groups2" else dataclasses.replace(cfg.tokenizer, **PATCH_VQ)
    tok = VideoTokenizer(tcfg, 64, 16)
    frames = torch.rand(2, T, 64, 64, 3)
    out = tok(frames)
    N = tok.tokens_per_frame
    assert N == 64 * tcfg.groups and out["tokens_BTN"].shape == (2, T, N) and out["recon_BTHWC"].shape == frames.shape
    assert out["recon_BTHWC"].min() >= 0 and out["recon_BTHWC"].max() <= 1
    assert int(out["tokens_BTN"].max()) < tok.codebook_size
    assert {"usage", "perplexity"} <= set(out["stats"])
    out["loss"].backward()
    first = tok.patch_embed if design == "patch_vq" else tok.conv_enc.net[0]
    assert first.weight.grad.abs().sum() > 0  # recon loss reaches the encoder through the quantiser
    assert tok.encode(frames).shape == (2, T, N) and tok.decode(out["tokens_BTN"]).shape == frames.shape


def test_fsq_round_trip_and_code_count():
    fsq = FSQ((8, 5, 5, 5))
    assert fsq.num_codes == 1000 and fsq.code_dim == 4
    z = torch.randn(4096, 4) * 3
    z_q, idx, loss, stats = fsq(z)
    assert idx.min() >= 0 and idx.max() < 1000 and float(loss) == 0.0
    assert torch.equal(fsq.lookup(idx), z_q)  # index -> grid vector is exact
    every = torch.arange(1000)
    assert fsq.lookup(every).unique(dim=0).shape[0] == 1000  # 1000 distinct grid points, all in [-1, 1]
    assert fsq.lookup(every).abs().max() <= 1.0
    assert len(set(idx.tolist())) > 500  # wide inputs reach most of the grid
    z.requires_grad_(True)
    fsq(z)[0].sum().backward()
    assert z.grad.abs().sum() > 0  # straight-through


def test_tokenizer_config_errors():
    from genie_gym.models.tokenizer import check_tokenizer_config

    base = TokenizerConfig(stem="conv", patch_size=8, conv_channels=(64, 128), quantizer="fsq", code_dim=4,
                           codebook_size=1000, d_model=128)
    check_tokenizer_config(base, 64)
    with pytest.raises(ConfigError, match="set code_dim=4"):
        check_tokenizer_config(dataclasses.replace(base, code_dim=32), 64)
    with pytest.raises(ConfigError, match="set codebook_size=1000"):
        check_tokenizer_config(dataclasses.replace(base, codebook_size=1024), 64)
    with pytest.raises(ConfigError, match="one conv width per halving"):
        check_tokenizer_config(dataclasses.replace(base, patch_size=4), 64)
    with pytest.raises(ConfigError, match="'vq' or 'fsq'"):
        check_tokenizer_config(dataclasses.replace(base, quantizer="rvq"), 64)


def test_tokenizer_encoder_is_causal(cfg):
    tok, _, _ = _models(cfg)
    frames = torch.rand(1, T, 64, 64, 3)
    changed = frames.clone()
    changed[:, 2:] = torch.rand(1, T - 2, 64, 64, 3)
    with torch.no_grad():
        z0, z1 = tok.encode_latents(frames), tok.encode_latents(changed)
        d0, d1 = tok.decode(tok.encode(frames)), tok.decode(tok.encode(changed))
    assert torch.equal(z0[:, :2], z1[:, :2]) and not torch.allclose(z0[:, 2], z1[:, 2])
    assert torch.equal(d0[:, :2], d1[:, :2])


def test_tokenizer_cached_steps_equal_full(cfg):
    tok, _, _ = _models(cfg)
    tok.eval()
    frames = torch.rand(2, T, 64, 64, 3)
    with torch.no_grad():
        tokens = tok.encode(frames)
        full = tok.decode(tokens)
        dec, enc = tok.new_decoder_cache(2), tok.new_encoder_cache(2)
        for t in range(T):
            torch.testing.assert_close(tok.decode_step(tokens[:, t], dec), full[:, t], atol=1e-5, rtol=0)
            assert torch.equal(tok.encode_step(frames[:, t], enc), tokens[:, t])


def test_tokenizer_overfits_one_clip(cfg):
    """Measured: ~27-28 dB after 150 steps (mean-frame baseline ~15 dB); threshold 22 dB."""
    tok, _, _ = _models(cfg)
    clip = squares_clips(1, T, torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(tok.parameters(), lr=3e-3, betas=(0.9, 0.9))
    for _ in range(150):  # FSQ has no codebook to re-seed
        out = tok(clip)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    with torch.no_grad():
        value = psnr(tok.decode(tok.encode(clip)), clip)
    assert value >= 22.0, f"tokenizer PSNR {value:.1f} dB after 150 steps"


# --- latent action model ------------------------------------------------------------------------------------
def test_lam_shapes_and_causality(cfg):
    _, lam, _ = _models(cfg)
    frames = torch.rand(2, T, 64, 64, 3)
    out = lam(frames)
    assert out["actions_BT"].shape == (2, T - 1) and out["recon_BTHWC"].shape == (2, T - 1, 64, 64, 3)
    assert int(out["actions_BT"].max()) < cfg.lam.num_actions
    assert torch.equal(lam.infer_actions(frames), out["actions_BT"])
    out["loss"].backward()
    assert lam.enc_patch_embed.weight.grad.abs().sum() > 0  # decoder loss reaches the encoder through a_t
    changed = frames.clone()
    changed[:, 2] = torch.rand(2, 64, 64, 3)  # frame 2 enters transitions 1 (1->2) and 2 (2->3)
    with torch.no_grad():
        z0, z1 = lam.encode_latents(frames), lam.encode_latents(changed)
        r0, r1 = lam(frames)["recon_BTHWC"], lam(changed)["recon_BTHWC"]
    assert torch.equal(z0[:, :1], z1[:, :1]) and not torch.allclose(z0[:, 1], z1[:, 1])
    assert torch.equal(r0[:, :1], r1[:, :1])  # prediction of frame 1 uses frame 0 and a_0 only
    with pytest.raises(ValueError, match="at least two frames"):
        lam(frames[:, :1])


def test_lam_kernel_decoder_expresses_copy_and_shift_exactly(cfg):
    import dataclasses

    lam_cfg = dataclasses.replace(cfg.lam, decoder_kernel=5)
    lam = LatentActionModel(lam_cfg, cfg.image_size, max_frames=T)
    frames = torch.rand(1, 2, 64, 64, 3)
    P, N = lam.patch ** 2 * 3, (64 // lam.patch) ** 2
    for centre_offset, expect in ((0, frames[:, :1]), (1, frames[:, :1].roll(-1, dims=3))):
        head = torch.zeros(1, 1, N, P + 25)
        head[..., P + 12 + centre_offset] = 60.0  # one-hot kernel: copy, or take the right-hand neighbour
        out = lam._kernel_decode(frames[:, :1], head)
        torch.testing.assert_close(out[..., :-1, :], expect[..., :-1, :], atol=1e-6, rtol=0)


def test_lam_decoder_sees_future_only_through_action(cfg):
    _, lam, _ = _models(cfg)
    frames = torch.rand(1, T, 64, 64, 3)
    a_q = lam.vq.lookup(torch.tensor([[0, 1, 2]]))
    with torch.no_grad():
        r0 = lam.decode(frames[:, :-1], a_q)
        r1 = lam.decode(frames[:, :-1], lam.vq.lookup(torch.tensor([[0, 5, 2]])))
    assert torch.equal(r0[:, 0], r1[:, 0]) and not torch.allclose(r0[:, 1], r1[:, 1])


# --- dynamics -----------------------------------------------------------------------------------------------
def test_dynamics_shapes_loss_and_mask(cfg):
    tok, _, dyn = _models(cfg)
    V, N = tok.codebook_size, tok.tokens_per_frame
    tokens = torch.randint(0, V, (3, T, N))
    actions = torch.randint(0, 8, (3, T - 1))
    assert dyn(tokens, actions).shape == (3, T, N, V)
    loss, stats = dyn.loss(tokens, actions, generator=torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(math.log(V), rel=0.2)
    assert 0.45 <= stats["mask_fraction"] <= 1.0 and 0 <= stats["accuracy"] <= 1
    loss2, _ = dyn.loss(tokens, actions, generator=torch.Generator().manual_seed(0))
    assert loss2.item() == loss.item()  # the mask comes from the generator
    with pytest.raises(ValueError, match="T-1"):
        dyn(tokens, torch.randint(0, 8, (3, T)))


def test_dynamics_causality_and_action_alignment(cfg):
    tok, _, dyn = _models(cfg)
    V, N = tok.codebook_size, tok.tokens_per_frame
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, V, (1, T, N), generator=g)
    mask = torch.rand(1, T, N, generator=g) < 0.5
    mask[:, 0] = False
    actions = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        base = dyn(tokens, actions, mask)
        changed_tokens = tokens.clone()
        changed_tokens[:, 2] = (tokens[:, 2] + 1) % V
        c = dyn(changed_tokens, actions, torch.zeros_like(mask))
        base_unmasked = dyn(tokens, actions, torch.zeros_like(mask))
        assert torch.equal(c[:, :2], base_unmasked[:, :2])
        assert not torch.allclose(c[:, 2], base_unmasked[:, 2])
        for t in range(T - 1):  # a_t leads to frame t+1: changes frames >= t+1, nothing earlier
            alt = actions.clone()
            alt[:, t] = 7
            out = dyn(tokens, alt, mask)
            assert torch.equal(out[:, : t + 1], base[:, : t + 1]), f"a_{t} leaked into frames <= {t}"
            assert not torch.allclose(out[:, t + 1], base[:, t + 1]), f"a_{t} ignored by frame {t + 1}"


def test_dynamics_cached_steps_equal_full(cfg):
    tok, _, dyn = _models(cfg)
    dyn.eval()
    V, N, A = tok.codebook_size, tok.tokens_per_frame, cfg.lam.num_actions
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, V, (2, T, N), generator=g)
    mask = torch.rand(2, T, N, generator=g) < 0.5
    actions = torch.randint(0, A, (2, T - 1), generator=g)
    actions_with_none = torch.cat([torch.full((2, 1), A), actions], dim=1)
    with torch.no_grad():
        full = dyn(tokens, actions, mask)
        cache = dyn.new_cache(2)
        for t in range(T):
            all_masked = torch.ones_like(mask[:, t])
            masked_probe = dyn.forward_step(tokens[:, t], actions_with_none[:, t], all_masked, cache)
            step = dyn.forward_step(tokens[:, t], actions_with_none[:, t], mask[:, t], cache, commit=True)
            assert masked_probe.shape == (2, N, V)
            torch.testing.assert_close(step, full[:, t], atol=1e-5, rtol=0)



def test_commit_without_features_writes_the_same_cache(cfg):
    """commit_step stops the last layer at its keys and values (no temporal read, no MLP): the same keys, values
    and history as a commit that computes the frame's features, so the next frame's logits are the same."""
    tok, _, dyn = _models(cfg)
    dyn.eval()
    V, N, A = tok.codebook_size, tok.tokens_per_frame, cfg.lam.num_actions
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, V, (2, 3, N), generator=g)
    actions = torch.randint(0, A, (2, 3), generator=g)
    caches = [dyn.new_cache(2), dyn.new_cache(2)]
    with torch.no_grad():
        for t in range(2):
            x = dyn._embed(tokens[:, t], None, actions[:, t])
            feats = dyn.transformer.forward_step(x, caches[0], commit=True, output=True)
            assert feats is not None and feats.shape[:2] == (2, N // cfg.tokenizer.groups)
            assert dyn.commit_step(tokens[:, t], actions[:, t], caches[1]) is None
        for k_a, k_b, v_a, v_b in zip(caches[0].k, caches[1].k, caches[0].v, caches[1].v, strict=True):
            assert torch.equal(k_a, k_b) and torch.equal(v_a, v_b)
        assert torch.equal(caches[0].valid_BM, caches[1].valid_BM) and torch.equal(caches[0].t_B, caches[1].t_B)
        mask = torch.ones(2, N, dtype=torch.bool)
        torch.testing.assert_close(dyn.forward_step(tokens[:, 2], actions[:, 2], mask, caches[0]),
                                   dyn.forward_step(tokens[:, 2], actions[:, 2], mask, caches[1]), atol=0, rtol=0)


@pytest.mark.parametrize("bias", [True, False])
def test_upsample2x_conv_equals_nearest_upsample_then_conv(bias: bool):
    """The decoder's fused x2 + 3x3 conv gives what nn.Upsample + the conv give, values and gradients, on a
    non-square channels-last input."""
    from genie_gym.models.tokenizer import upsample2x_conv

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 5, 3, padding=1, bias=bias)
    x = torch.randn(2, 3, 4, 6).permute(0, 3, 1, 2).requires_grad_()  # (2, 6, 3, 4), channels-last strides
    ref = conv(torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))
    (g_ref_x,) = torch.autograd.grad(ref.square().sum(), x)
    g_ref_w = torch.autograd.grad(conv(torch.nn.functional.interpolate(x, scale_factor=2)).square().sum(),
                                  conv.weight)[0]
    got = upsample2x_conv(x, conv)
    assert got.shape == ref.shape == (2, 5, 6, 8) and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    g_x, g_w = torch.autograd.grad(got.square().sum(), (x, conv.weight))
    torch.testing.assert_close(g_x, g_ref_x, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(g_w, g_ref_w, atol=1e-4, rtol=1e-4)
    with torch.no_grad():  # inference keeps the phase kernels between calls, until the weights change
        upsample2x_conv(x, conv)
        conv.weight.mul_(2.0)
        torch.testing.assert_close(upsample2x_conv(x, conv), conv(torch.nn.functional.interpolate(x, scale_factor=2)),
                                   atol=1e-5, rtol=1e-5)


# --- MaskGIT ------------------------------------------------------------------------------------------------
def test_mask_schedule_is_cosine_and_ends_at_zero():
    assert mask_schedule(64, 4) == [59, 45, 24, 0]
    s = mask_schedule(16, 25)
    assert s[-1] == 0 and all(a > b for a, b in zip([16] + s, s, strict=False) if a > 0)


def _toy_logits_fn(V: int):
    """Deterministic per-element logits that depend on which tokens are already fixed (like a real model)."""
    W = torch.randn(V + 1, V, generator=torch.Generator().manual_seed(3))

    def fn(tokens_BN: torch.Tensor, mask_BN: torch.Tensor) -> torch.Tensor:
        ctx_BV = W[tokens_BN].mean(1, keepdim=True)
        return 2.0 * W[tokens_BN] + ctx_BV
    return fn


def test_maskgit_fills_all_deterministic_and_batch_consistent():
    V, N, B = 16, 20, 3
    fn = _toy_logits_fn(V)

    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]
    batch = maskgit_sample(fn, B, N, steps=6, temperature=1.0, generators=gens([10, 11, 12]), mask_token_id=V)
    assert batch.shape == (B, N) and batch.dtype == torch.long
    assert (batch < V).all() and (batch >= 0).all()  # no mask token left
    again = maskgit_sample(fn, B, N, steps=6, temperature=1.0, generators=gens([10, 11, 12]), mask_token_id=V)
    assert torch.equal(batch, again)
    for i, s in enumerate([10, 11, 12]):
        single = maskgit_sample(fn, 1, N, steps=6, temperature=1.0, generators=gens([s]), mask_token_id=V)
        assert torch.equal(single[0], batch[i])
    other = maskgit_sample(fn, B, N, steps=6, temperature=1.0, generators=gens([20, 21, 22]), mask_token_id=V)
    assert not torch.equal(other, batch)
    noisy = maskgit_sample(fn, B, N, steps=6, temperature=1.0, generators=gens([10, 11, 12]), mask_token_id=V,
                           choice_temperature=4.5)
    assert (noisy < V).all()


def test_maskgit_greedy_and_call_count():
    V, N = 8, 12
    target = torch.randint(0, V, (N,), generator=torch.Generator().manual_seed(0))
    calls = []

    def fn(tokens_BN, mask_BN):
        calls.append(int(mask_BN.sum()))
        return torch.nn.functional.one_hot(target, V).float().expand(2, N, V) * 5.0
    out = maskgit_sample(fn, 2, N, steps=5, temperature=0.0, mask_token_id=V)
    assert torch.equal(out, target.expand(2, N))
    assert calls == [2 * N] + [2 * n for n in mask_schedule(N, 5)[:-1]]


def test_maskgit_per_cell_schedule_decides_a_share_of_every_cell_each_step():
    V, N, G = 8, 24, 4
    seen = []

    def fn(tokens_BN, mask_BN):
        seen.append(mask_BN.clone())
        g = torch.Generator().manual_seed(int(mask_BN.sum()))
        return torch.randn(1, N, V, generator=g) * 3.0

    out = maskgit_sample(fn, 1, N, steps=4, temperature=0.0, mask_token_id=V, cell_size=G)
    assert (out < V).all()
    for k, m in enumerate(seen):  # before pass k, groups 0..k-1 of every cell are decided, the rest masked
        assert torch.equal(m.view(N // G, G), (torch.arange(G) >= k).expand(N // G, G)), k
    seen.clear()
    frame = maskgit_sample(fn, 1, N, steps=4, temperature=0.0, mask_token_id=V)  # frame-wide: cells left uneven
    assert len({int(c) for c in seen[1].view(N // G, G).sum(-1)}) > 1 and (frame < V).all()
    assert torch.equal(maskgit_sample(fn, 1, N, steps=1, temperature=0.0, mask_token_id=V, cell_size=G),
                       maskgit_sample(fn, 1, N, steps=1, temperature=0.0, mask_token_id=V))  # one pass: the same
    with pytest.raises(ValueError, match="steps must be 1..4"):
        maskgit_sample(fn, 1, N, steps=5, temperature=0.0, mask_token_id=V, cell_size=G)


# --- tiny models learn: LAM + dynamics co-training ----------------------------------------------------------
def test_lam_and_dynamics_losses_fall(cfg):
    """Co-train the LAM (pixels) and the dynamics (patch-colour tokens, LAM actions with stop-gradient), the LAM as
    the trainer does: un-quantised warm-up, k-means codes, then quantised. The LAM's squares move 2 px a frame
    (its shift kernel reaches 2 px), the dynamics' 8 px (whole tokens)."""
    torch.manual_seed(0)
    _, lam, _ = _models(cfg)
    g = torch.Generator().manual_seed(0)
    data = squares_clips(16, T, g)
    near = squares_clips(16, T, g, move=2)
    copy_mse = torch.nn.functional.mse_loss(near[:, :-1], near[:, 1:]).item()
    # Tokens: one per 8x8 patch, the index of its colour in a small palette; structured and cheap.
    patches = patchify(data, 8).mean(-1)  # (B, T, 64)
    palette = torch.unique(patches)
    tokens = torch.bucketize(patches, palette).clamp_max(63)
    dyn = DynamicsModel(cfg.dynamics, 64, 64, cfg.lam.num_actions, max_frames=T)
    opt = torch.optim.AdamW(list(lam.parameters()) + list(dyn.parameters()), lr=3e-3, betas=(0.9, 0.9))
    lam_hist, dyn_hist = [], []
    lam.quantize = False
    for step in range(100):
        if step == 30:
            with torch.no_grad():
                lam.vq.init_kmeans(lam.encode_latents(near).reshape(-1, cfg.lam.code_dim), generator=g)
            lam.quantize = True
        idx = torch.randint(0, 16, (4,), generator=g)
        out = lam(near[idx])
        dyn_loss, _ = dyn.loss(tokens[idx], lam.infer_actions(data[idx]), generator=g)
        opt.zero_grad()
        (out["loss"] + dyn_loss).backward()
        opt.step()
        lam_hist.append(out["recon_loss"].item())
        dyn_hist.append(dyn_loss.item())
    assert np.mean(lam_hist[-20:]) < min(0.8 * copy_mse, 0.9 * np.mean(lam_hist[:5])), (copy_mse, lam_hist)
    assert np.mean(dyn_hist[-10:]) < 0.6 * np.mean(dyn_hist[:5]), (dyn_hist[:5], dyn_hist[-10:])


def test_dynamics_context_noise_keeps_frame0_clean_and_rates_are_per_frame(cfg):
    _, _, dyn = _models(cfg)
    dyn.cfg = dataclasses.replace(dyn.cfg, context_noise=0.5, per_frame_mask=True, mask_rate_min=0.0)
    seen = {}
    forward = dyn.forward

    def spy(tokens_BTN, actions_BT, mask_BTN=None):
        seen["tokens"], seen["mask"] = tokens_BTN.clone(), mask_BTN.clone()
        return forward(tokens_BTN, actions_BT, mask_BTN)

    dyn.forward = spy
    tokens = torch.randint(0, dyn.num_tokens, (16, T, dyn.tokens_per_frame))
    loss, stats = dyn.loss(tokens, torch.randint(0, 8, (16, T - 1)), generator=torch.Generator().manual_seed(0))
    inputs, mask = seen["tokens"], seen["mask"]
    assert torch.equal(inputs[:, 0], tokens[:, 0]) and not mask[:, 0].any()  # the prompt frame stays real
    corrupted = (inputs != tokens) & ~mask
    assert corrupted[:, 1:].any() and not corrupted[:, 0].any()
    share = mask[:, 1:].float().mean(-1)  # (clips, frames): one rate per frame, so frames of a clip differ
    assert float((share.max(1).values - share.min(1).values).mean()) > 0.2
    assert torch.isfinite(loss) and 0 <= float(stats["copy_accuracy"]) <= 1
