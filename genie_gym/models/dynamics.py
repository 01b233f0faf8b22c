"""MaskGIT dynamics model (Genie, section 2.1): predicts the tokens of frame t+1 from tokens <= t and action
a_t.

Input embedding of frame t = token embedding (V codes + 1 MASK entry) + spatial pos emb + action embedding.
Action alignment (docs/architecture.md): `actions_BT[:, t]` takes frame t to frame t+1, so its embedding is
ADDED to every token of frame t+1; frame 0 gets the learned "no action" embedding (index A). With the causal
ST transformer, changing a_t changes logits of frames >= t+1 and nothing earlier.

Groups: with a tokenizer of G tokens per grid cell (`TokenizerConfig.groups`), a frame's N*G tokens sit at N
positions. The transformer runs over the N positions: a position's embedding is the sum of its G tokens'
embeddings (one table per group, each with its own MASK entry), and the head predicts G distributions over the V
codes per position. To MaskGIT and to everything outside this file a frame is still a flat row of N*G tokens
(cell-major), each masked and sampled on its own.

Training (`loss`): tokens of frames 1..T-1 are masked with probability r (frame 0 never); r ~ U(mask_rate_min,
mask_rate_max) once per clip (the paper) or, with `per_frame_mask`, once per frame, so that the model also
sees frames whose past is (nearly) clean, as at inference, where the context is real or already generated
tokens. With `context_noise` > 0 a share ~ U(0, context_noise) of each frame's *unmasked* tokens is replaced by
random codes (never in frame 0's targets: unmasked tokens carry no loss), so the model learns to read a context
that holds its own mistakes (what GameNGen and DIAMOND do against drift). Cross-entropy on masked tokens only.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from genie_gym.config import DynamicsConfig
from genie_gym.models.st_transformer import STTransformer, TemporalKVCache, init_weights


class DynamicsModel(nn.Module):
    def __init__(self, cfg: DynamicsConfig, num_tokens_V: int, tokens_per_frame_N: int, num_actions_A: int,
                 max_frames: int = 16, groups: int = 1):
        super().__init__()
        if tokens_per_frame_N % groups:
            raise ValueError(f"{tokens_per_frame_N} tokens per frame do not split into groups of {groups}")
        self.cfg = cfg
        self.num_tokens = num_tokens_V
        self.tokens_per_frame = tokens_per_frame_N
        self.groups = groups
        self.positions = tokens_per_frame_N // groups
        self.num_actions = num_actions_A
        self.mask_token_id = num_tokens_V
        self.no_action_id = num_actions_A
        D = cfg.d_model
        self.tok_emb = nn.Embedding(groups * (num_tokens_V + 1), D)  # group g's code v: row g * (V + 1) + v
        self.pos_emb = nn.Parameter(torch.zeros(self.positions, D))
        self.act_emb = nn.Embedding(num_actions_A + 1, D)
        self.transformer = STTransformer(D, cfg.num_layers, cfg.num_heads, cfg.qk_norm, max_frames)
        self.head = nn.Linear(D, groups * num_tokens_V)
        self.register_buffer("group_offset", torch.arange(groups) * (num_tokens_V + 1), persistent=False)
        for m in (self.tok_emb, self.act_emb, self.head):
            init_weights(m)
        nn.init.normal_(self.pos_emb, std=0.02)

    def _embed(self, tokens: torch.Tensor, mask: torch.Tensor | None, actions: torch.Tensor) -> torch.Tensor:
        """tokens (..., N*G), mask (..., N*G) bool, actions (...) in 0..A -> embeddings (..., N, D)."""
        if mask is not None:
            tokens = torch.where(mask, torch.full_like(tokens, self.mask_token_id), tokens)
        rows = tokens.unflatten(-1, (self.positions, self.groups)) + self.group_offset
        return self.tok_emb(rows).sum(-2) + self.pos_emb + self.act_emb(actions)[..., None, :]

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        """Transformer output (..., N, D) -> logits (..., N*G, V)."""
        return self.head(h).unflatten(-1, (self.groups, self.num_tokens)).flatten(-3, -2)

    def forward(self, tokens_BTN: torch.Tensor, actions_BT: torch.Tensor, mask_BTN: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Logits (B, T, N, V). `actions_BT` is (B, T-1): a_t leads from frame t to frame t+1."""
        B, T, N = tokens_BTN.shape
        if N != self.tokens_per_frame:
            raise ValueError(f"expected {self.tokens_per_frame} tokens per frame, got tokens of shape "
                             f"{tuple(tokens_BTN.shape)}; the tokenizer and dynamics checkpoints do not fit "
                             "together")
        if tuple(actions_BT.shape) != (B, T - 1):
            raise ValueError(f"actions_BT must have shape (B, T-1) = ({B}, {T - 1}) for tokens "
                             f"{tuple(tokens_BTN.shape)}, got {tuple(actions_BT.shape)}; actions[:, t] "
                             "is the action from frame t to t+1")
        return self._logits(self.features(tokens_BTN, actions_BT, mask_BTN))

    def features(self, tokens_BTN: torch.Tensor, actions_BT: torch.Tensor, mask_BTN: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """The transformer's output (B, T, positions, D) before the logits head."""
        B = tokens_BTN.shape[0]
        none_B1 = torch.full((B, 1), self.no_action_id, dtype=torch.long, device=tokens_BTN.device)
        act_BT = torch.cat([none_B1, actions_BT.long()], dim=1)  # act_BT[:, t+1] = a_t conditions frame t+1
        return self.transformer(self._embed(tokens_BTN, mask_BTN, act_BT))

    def loss(self, tokens_BTN: torch.Tensor, actions_BT: torch.Tensor,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """Masked-token cross-entropy -> (loss, stats: 'accuracy' on masked tokens, 'copy_accuracy' of the same
        tokens copied from the previous frame, 'mask_fraction')."""
        B, T, N = tokens_BTN.shape
        dev = generator.device if generator is not None else tokens_BTN.device
        lo, hi = self.cfg.mask_rate_min, self.cfg.mask_rate_max
        rate_BT = torch.rand(B, T if self.cfg.per_frame_mask else 1, generator=generator, device=dev)
        rate_BT = (lo + (hi - lo) * rate_BT).to(tokens_BTN.device)
        u_BTN = torch.rand(B, T, N, generator=generator, device=dev).to(tokens_BTN.device)
        mask_BTN = u_BTN < rate_BT[:, :, None]
        mask_BTN[:, 0] = False
        if self.cfg.context_noise > 0:
            noise_BT = self.cfg.context_noise * torch.rand(B, T, generator=generator, device=dev)
            u2_BTN = torch.rand(B, T, N, generator=generator, device=dev)
            rand_BTN = torch.randint(0, self.num_tokens, (B, T, N), generator=generator, device=dev)
            noisy_BTN = (u2_BTN < noise_BT[:, :, None]).to(tokens_BTN.device) & ~mask_BTN
            noisy_BTN[:, 0] = False  # the first frame is real at inference (the prompt): keep it clean
            inputs_BTN = torch.where(noisy_BTN, rand_BTN.to(tokens_BTN.device), tokens_BTN)
        else:
            inputs_BTN = tokens_BTN
        logits_BTNV = self.forward(inputs_BTN, actions_BT, mask_BTN)
        logits_MV, target_M = logits_BTNV[mask_BTN].float(), tokens_BTN[mask_BTN]
        if target_M.numel() == 0:
            raise ValueError("no token was masked: clips need at least 2 frames (frame 0 is never masked)")
        loss = F.cross_entropy(logits_MV, target_M)
        prev_M = tokens_BTN[:, :-1][mask_BTN[:, 1:]]  # the same token one frame earlier (masks of frame 0: none)
        stats = {
            "accuracy": (logits_MV.argmax(-1) == target_M).float().mean().detach(),
            "copy_accuracy": (prev_M == target_M).float().mean().detach(),
            "mask_fraction": mask_BTN[:, 1:].float().mean().detach(),
        }
        return loss, stats

    def new_cache(self, batch_size: int, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> TemporalKVCache:
        return self.transformer.new_cache(batch_size, None, device, dtype)

    def forward_step(self, tokens_BN: torch.Tensor, actions_B: torch.Tensor, mask_BN: torch.Tensor | None,
                     cache: TemporalKVCache, commit: bool = False) -> torch.Tensor:
        """Logits (B, N, V) for one new frame; `actions_B` led to this frame (A = no action: first frame)."""
        x_BND = self._embed(tokens_BN, mask_BN, actions_B.long())
        return self._logits(self.transformer.forward_step(x_BND, cache, commit))

    def commit_step(self, tokens_BN: torch.Tensor, actions_B: torch.Tensor, cache: TemporalKVCache) -> None:
        """Append a decided frame to the cached history without computing logits (the head is ~30% of a pass):
        the last layer stops at its keys and values."""
        x_BND = self._embed(tokens_BN, None, actions_B.long())
        self.transformer.forward_step(x_BND, cache, commit=True, output=False)
