"""Spatiotemporal (ST) transformer: the backbone of the tokenizer, the latent action model and the dynamics.

Each block is (Genie, section 2.1): x += SpatialAttn(LN(x)); x += CausalTemporalAttn(LN(x)); x += MLP(LN(x)).
Spatial attention is full over the N tokens of one frame; temporal attention runs over the T
frames of one token position with a causal mask. There is one MLP per block (the paper dropped the FFN after
the spatial layer).

Positions: the caller adds spatial position embeddings to its tokens; time is encoded here with RoPE inside
temporal attention, so it is *relative*: keys cached for past frames stay valid as the window slides, and
batch elements may sit at different absolute times.

Window semantics (shared by `forward` and `forward_step`): frame t attends to frames (t - max_frames, t], i.e.
at most `max_frames` frames including itself. For T <= max_frames this is plain causal attention.

Incremental decoding (`forward_step`) runs ONE new frame against a `TemporalKVCache` of past frames' temporal
keys and values; frame-by-frame `forward_step(commit=True)` reproduces `forward` exactly (up to float
rounding).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_ATTENTION_BATCH = 32_768  # CUDA attention kernels launch the batch in a grid dimension capped at 65,535
# On the CPU, PyTorch's fused attention kernel is slow in bfloat16 over our short sequences (8 frames, 64
# positions): two matmuls and a softmax are faster there; float32 stays fused (`benchmarks/results/attention_cpu.md`).
MATH_ATTENTION_ON_CPU_BF16 = True


def math_attention(q_SHLd: torch.Tensor, k_SHMd: torch.Tensor, v_SHMd: torch.Tensor,
                   attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v with plain matmuls: what `F.scaled_dot_product_attention` computes, with
    its mask conventions (a boolean `attn_mask` marks the keys a query may attend to, a float one is added;
    `is_causal`: query i sees keys 0..i)."""
    L, M = q_SHLd.shape[-2], k_SHMd.shape[-2]
    if is_causal and attn_mask is not None:
        raise ValueError("pass either attn_mask or is_causal=True, not both (as F.scaled_dot_product_attention)")
    scores_SHLM = (q_SHLd @ k_SHMd.transpose(-1, -2)) * q_SHLd.shape[-1] ** -0.5
    if is_causal:
        attn_mask = torch.ones(L, M, dtype=torch.bool, device=q_SHLd.device).tril()
    if attn_mask is not None:
        scores_SHLM = scores_SHLM.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool \
            else scores_SHLM + attn_mask
    # The CPU softmax of bf16 scores normalises in float32 and rounds once: bit-equal to a float32 softmax cast to bf16
    return scores_SHLM.softmax(-1).to(v_SHMd.dtype) @ v_SHMd


def attention(q_SHLd: torch.Tensor, k_SHMd: torch.Tensor, v_SHMd: torch.Tensor,
              attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
    """`F.scaled_dot_product_attention` over S sequences, in chunks of at most `MAX_ATTENTION_BATCH` (1,024 worlds x
    64 positions are 65,536 temporal sequences: one launch fails on CUDA with an invalid-argument error); on the
    CPU in bfloat16, `math_attention`."""
    if MATH_ATTENTION_ON_CPU_BF16 and q_SHLd.device.type == "cpu" and q_SHLd.dtype == torch.bfloat16:
        return math_attention(q_SHLd, k_SHMd, v_SHMd, attn_mask, is_causal)
    S = q_SHLd.shape[0]
    if S <= MAX_ATTENTION_BATCH:
        return F.scaled_dot_product_attention(q_SHLd, k_SHMd, v_SHMd, attn_mask=attn_mask, is_causal=is_causal)
    per_seq = attn_mask is not None and attn_mask.dim() == 4 and attn_mask.shape[0] == S
    return torch.cat([
        F.scaled_dot_product_attention(q_SHLd[i: i + MAX_ATTENTION_BATCH], k_SHMd[i: i + MAX_ATTENTION_BATCH],
                                       v_SHMd[i: i + MAX_ATTENTION_BATCH], is_causal=is_causal,
                                       attn_mask=attn_mask[i: i + MAX_ATTENTION_BATCH] if per_seq else attn_mask)
        for i in range(0, S, MAX_ATTENTION_BATCH)
    ])


def init_weights(module: nn.Module) -> None:
    """nanoGPT-style init: N(0, 0.02) for linear and embedding weights, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)


def rope_cos_sin(pos: torch.Tensor, dim: int, dtype: torch.dtype, base: float = 10000.0):
    """cos/sin tables of shape pos.shape + (dim,); angles in float64 so large env step counts stay exact."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, device=pos.device, dtype=torch.float64) / dim))
    ang = pos.to(torch.float64)[..., None] * inv_freq
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class RMSNorm(nn.Module):
    """RMS norm computed in float32 (used for QK-norm, per head)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


class TemporalKVCache:
    """Per-layer temporal keys/values of past frames, a ring buffer of `max_frames` slots per batch element.

    A new frame at time t (per element, `self.t_B`) writes its keys/values into slot t % max_frames, which
    held frame t - max_frames: outside the new frame's window, so nothing is lost. `valid_BM` marks slots
    holding committed frames of the current history, so elements can have different history lengths;
    `reset(idx)` clears some.
    Key/value tensors are allocated on the first `forward_step` (when N is known): per layer (B, N, H, M, hd).
    """

    def __init__(self, num_layers: int, batch_size: int, max_frames: int, device: torch.device | str,
                 dtype: torch.dtype = torch.float32):
        self.num_layers = num_layers
        self.batch_size = batch_size
        self.max_frames = max_frames
        self.device = torch.device(device)
        self.dtype = dtype
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.valid_BM = torch.zeros(batch_size, max_frames, dtype=torch.bool, device=self.device)
        self.t_B = torch.zeros(batch_size, dtype=torch.long, device=self.device)  # time of the next frame

    def allocate(self, num_tokens: int, num_heads: int, head_dim: int) -> None:
        shape = (self.batch_size, num_tokens, num_heads, self.max_frames, head_dim)
        if self.k and tuple(self.k[0].shape) == shape:
            return
        if self.k:
            raise ValueError(f"cache was allocated for key shape {tuple(self.k[0].shape)} but this step "
                             f"needs {shape}; create a new cache with new_cache() for another model or batch")
        self.k = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in range(self.num_layers)]
        self.v = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in range(self.num_layers)]

    def reset(self, indices: torch.Tensor | list[int] | None = None) -> None:
        """Forget the history of the given batch elements (all if None); their next frame gets time 0."""
        if indices is None:
            self.valid_BM.zero_()
            self.t_B.zero_()
            return
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.device)
        self.valid_BM[idx] = False
        self.t_B[idx] = 0

    @property
    def lengths(self) -> torch.Tensor:
        """Number of committed past frames each element's next frame will attend to, shape (B,)."""
        next_slot_B = self.t_B % self.max_frames
        ar = torch.arange(self.batch_size, device=self.device)
        return self.valid_BM.sum(1) - self.valid_BM[ar, next_slot_B].long()


class Attention(nn.Module):
    """Multi-head self-attention over the second-to-last axis; optional QK-norm; RoPE if cos/sin given."""

    def __init__(self, d_model: int, num_heads: int, qk_norm: bool):
        super().__init__()
        if d_model % num_heads != 0 or (d_model // num_heads) % 2 != 0:
            raise ValueError(f"d_model={d_model} must split into num_heads={num_heads} heads of even size "
                             "(RoPE rotates pairs); pick d_model divisible by 2*num_heads")
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model)
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()

    def qkv_heads(self, x_SLD: torch.Tensor):
        """(S, L, D) -> q, k, v each (S, H, L, hd), with QK-norm applied."""
        S, L, D = x_SLD.shape
        q, k, v = self.qkv(x_SLD).view(S, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return self.q_norm(q), self.k_norm(k), v

    def merge(self, y_SHLd: torch.Tensor) -> torch.Tensor:
        S, H, L, hd = y_SHLd.shape
        return self.proj(y_SHLd.transpose(1, 2).reshape(S, L, H * hd))

    def forward(self, x_SLD: torch.Tensor, cos_sin=None, attn_mask=None, is_causal: bool = False):
        q, k, v = self.qkv_heads(x_SLD)
        if cos_sin is not None:
            cos, sin = cos_sin
            cos, sin = cos.to(q.dtype), sin.to(q.dtype)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        return self.merge(y)


class MLP(nn.Module):
    def __init__(self, d_model: int, mult: int = 4):
        super().__init__()
        self.fc = nn.Linear(d_model, mult * d_model)
        self.proj = nn.Linear(mult * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class STBlock(nn.Module):
    """Pre-norm spatial attention, pre-norm causal temporal attention (RoPE in time), one pre-norm MLP."""

    def __init__(self, d_model: int, num_heads: int, qk_norm: bool):
        super().__init__()
        self.norm_s = nn.LayerNorm(d_model)
        self.spatial = Attention(d_model, num_heads, qk_norm)
        self.norm_t = nn.LayerNorm(d_model)
        self.temporal = Attention(d_model, num_heads, qk_norm)
        self.norm_m = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model)

    def forward(self, x_BTND: torch.Tensor, cos_sin, attn_mask, is_causal: bool) -> torch.Tensor:
        B, T, N, D = x_BTND.shape
        x_BTND = x_BTND + self.spatial(self.norm_s(x_BTND).reshape(B * T, N, D)).view(B, T, N, D)
        h_SLD = self.norm_t(x_BTND).transpose(1, 2).reshape(B * N, T, D)
        h_SLD = self.temporal(h_SLD, cos_sin=cos_sin, attn_mask=attn_mask, is_causal=is_causal)
        x_BTND = x_BTND + h_SLD.view(B, N, T, D).transpose(1, 2)
        return x_BTND + self.mlp(self.norm_m(x_BTND))

    def step(self, x_BND: torch.Tensor, cos_sin, k_cache: torch.Tensor, v_cache: torch.Tensor,
             slot_B: torch.Tensor, mask_SM: torch.Tensor, kv_only: bool = False) -> torch.Tensor:
        """One new frame: its keys/values go to `slot_B` of this layer's cache; its query reads the cache.
        `kv_only`: stop once the keys/values are written (the last layer of a commit whose output is not used)."""
        B, N, D = x_BND.shape
        x_BND = x_BND + self.spatial(self.norm_s(x_BND))
        att = self.temporal
        q, k, v = att.qkv_heads(self.norm_t(x_BND).reshape(B * N, 1, D))  # (B*N, H, 1, hd)
        cos, sin = cos_sin  # (B, 1, 1, 1, hd)
        H, hd = att.num_heads, att.head_dim
        q = apply_rope(q.view(B, N, H, 1, hd), cos.to(q.dtype), sin.to(q.dtype)).view(B * N, H, 1, hd)
        k = apply_rope(k.view(B, N, H, 1, hd), cos.to(k.dtype), sin.to(k.dtype))
        ar = torch.arange(B, device=x_BND.device)
        k_cache[ar, :, :, slot_B] = k[:, :, :, 0].to(k_cache.dtype)
        v_cache[ar, :, :, slot_B] = v.view(B, N, H, hd).to(v_cache.dtype)
        if kv_only:
            return x_BND
        M = k_cache.shape[3]
        kc, vc = k_cache.view(B * N, H, M, hd), v_cache.view(B * N, H, M, hd)
        if kc.dtype != q.dtype:
            kc, vc = kc.to(q.dtype), vc.to(q.dtype)
        y = attention(q, kc, vc, attn_mask=mask_SM)
        x_BND = x_BND + att.merge(y).view(B, N, D)
        return x_BND + self.mlp(self.norm_m(x_BND))


class STTransformer(nn.Module):
    """A stack of ST blocks with a final LayerNorm. Input and output (B, T, N, D)."""

    def __init__(self, d_model: int, num_layers: int, num_heads: int, qk_norm: bool = True,
                 max_frames: int = 16):
        super().__init__()
        self.d_model = d_model
        self.num_heads = num_heads
        self.max_frames = max_frames
        self.blocks = nn.ModuleList(STBlock(d_model, num_heads, qk_norm) for _ in range(num_layers))
        self.norm_f = nn.LayerNorm(d_model)
        init_weights(self)
        for b in self.blocks:  # GPT-2 scaled init of the residual projections
            for p in (b.spatial.proj.weight, b.temporal.proj.weight, b.mlp.proj.weight):
                nn.init.normal_(p, std=0.02 / math.sqrt(3 * num_layers))

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def forward(self, x_BTND: torch.Tensor) -> torch.Tensor:
        B, T, N, D = x_BTND.shape
        if D != self.d_model:
            raise ValueError(f"expected last dim d_model={self.d_model}, got input of shape "
                             f"{tuple(x_BTND.shape)}")
        pos_T = torch.arange(T, device=x_BTND.device)
        cos_sin = rope_cos_sin(pos_T, self.head_dim, x_BTND.dtype)
        attn_mask, is_causal = None, True
        if T > self.max_frames:  # sliding window: frame t sees (t - max_frames, t], like the KV cache
            d_TT = pos_T[:, None] - pos_T[None, :]
            attn_mask, is_causal = (d_TT >= 0) & (d_TT < self.max_frames), False
        for blk in self.blocks:
            x_BTND = blk(x_BTND, cos_sin, attn_mask, is_causal)
        return self.norm_f(x_BTND)

    def new_cache(self, batch_size: int, max_frames: int | None = None, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> TemporalKVCache:
        """An empty cache; `max_frames` (default: the model's) is the window incl. the new frame."""
        return TemporalKVCache(len(self.blocks), batch_size, max_frames or self.max_frames, device, dtype)

    def forward_step(self, x_BND: torch.Tensor, cache: TemporalKVCache, commit: bool = True,
                     output: bool = True) -> torch.Tensor | None:
        """Run one new frame per batch element against the cached past; `commit` appends it to the history.
        `output=False` (a commit whose features nobody reads) returns None and skips what only the output needs:
        the last layer's temporal attention and MLP (~1/6 of the pass with 4 layers)."""
        B, N, D = x_BND.shape
        if B != cache.batch_size:
            raise ValueError(f"batch size {B} does not match the cache's {cache.batch_size}; "
                             "create the cache with new_cache(batch_size=B)")
        cache.allocate(N, self.num_heads, self.head_dim)
        M = cache.max_frames
        slot_B = cache.t_B % M
        ar = torch.arange(B, device=x_BND.device)
        cache.valid_BM[ar, slot_B] = False  # that slot held frame t - M: outside the window from now on
        attend_BM = cache.valid_BM.clone()
        attend_BM[ar, slot_B] = True
        mask_SM = attend_BM[:, None, :].expand(B, N, M).reshape(B * N, 1, 1, M)
        cos, sin = rope_cos_sin(cache.t_B, self.head_dim, x_BND.dtype)
        cos_sin = (cos.view(B, 1, 1, 1, -1), sin.view(B, 1, 1, 1, -1))
        last = len(self.blocks) - 1
        for i, (blk, kc, vc) in enumerate(zip(self.blocks, cache.k, cache.v, strict=True)):
            x_BND = blk.step(x_BND, cos_sin, kc, vc, slot_B, mask_SM, kv_only=not output and i == last)
        if commit:
            cache.valid_BM[ar, slot_B] = True
            cache.t_B += 1
        return self.norm_f(x_BND) if output else None
