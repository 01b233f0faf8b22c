"""MaskGIT dynamics model (Genie, section 2.1): predicts the tokens of frame t+1 from tokens <= t and action
a_t.

Input embedding of frame t = token embedding (V codes + 1 MASK entry) + spatial pos emb + action embedding.
Action alignment (docs/architecture.md): `actions_BT[:, t]` takes frame t to frame t+1, so its embedding is
ADDED to every token of frame t+1; frame 0 gets the learned "no action" embedding (index A). With the causal
ST transformer, changing a_t changes logits of frames >= t+1 and nothing earlier.

Training (`loss`): per clip a mask rate r ~ U(mask_rate_min, mask_rate_max); tokens of frames 1..T-1 are
masked with probability r (frame 0 never); cross-entropy on masked tokens only.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from genie_gym.config import DynamicsConfig
from genie_gym.models.st_transformer import STTransformer, TemporalKVCache, init_weights


class DynamicsModel(nn.Module):
    def __init__(self, cfg: DynamicsConfig, num_tokens_V: int, tokens_per_frame_N: int, num_actions_A: int,
                 max_frames: int = 16):
        super().__init__()
        self.cfg = cfg
        self.num_tokens = num_tokens_V
        self.tokens_per_frame = tokens_per_frame_N
        self.num_actions = num_actions_A
        self.mask_token_id = num_tokens_V
        self.no_action_id = num_actions_A
        D = cfg.d_model
        self.tok_emb = nn.Embedding(num_tokens_V + 1, D)
        self.pos_emb = nn.Parameter(torch.zeros(tokens_per_frame_N, D))
        self.act_emb = nn.Embedding(num_actions_A + 1, D)
        self.transformer = STTransformer(D, cfg.num_layers, cfg.num_heads, cfg.qk_norm, max_frames)
        self.head = nn.Linear(D, num_tokens_V)
        for m in (self.tok_emb, self.act_emb, self.head):
            init_weights(m)
        nn.init.normal_(self.pos_emb, std=0.02)

    def _embed(self, tokens: torch.Tensor, mask: torch.Tensor | None, actions: torch.Tensor) -> torch.Tensor:
        """tokens (..., N), mask (..., N) bool, actions (...) in 0..A -> embeddings (..., N, D)."""
        if mask is not None:
            tokens = torch.where(mask, torch.full_like(tokens, self.mask_token_id), tokens)
        return self.tok_emb(tokens) + self.pos_emb + self.act_emb(actions)[..., None, :]

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
        none_B1 = torch.full((B, 1), self.no_action_id, dtype=torch.long, device=tokens_BTN.device)
        act_BT = torch.cat([none_B1, actions_BT.long()], dim=1)  # act_BT[:, t+1] = a_t conditions frame t+1
        return self.head(self.transformer(self._embed(tokens_BTN, mask_BTN, act_BT)))

    def loss(self, tokens_BTN: torch.Tensor, actions_BT: torch.Tensor,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """Masked-token cross-entropy -> (loss, stats: 'accuracy' on masked tokens, 'mask_fraction')."""
        B, T, N = tokens_BTN.shape
        dev = generator.device if generator is not None else tokens_BTN.device
        lo, hi = self.cfg.mask_rate_min, self.cfg.mask_rate_max
        rate_B = (lo + (hi - lo) * torch.rand(B, generator=generator, device=dev)).to(tokens_BTN.device)
        u_BTN = torch.rand(B, T, N, generator=generator, device=dev).to(tokens_BTN.device)
        mask_BTN = u_BTN < rate_B[:, None, None]
        mask_BTN[:, 0] = False
        logits_BTNV = self.forward(tokens_BTN, actions_BT, mask_BTN)
        logits_MV, target_M = logits_BTNV[mask_BTN].float(), tokens_BTN[mask_BTN]
        if target_M.numel() == 0:
            raise ValueError("no token was masked: clips need at least 2 frames (frame 0 is never masked)")
        loss = F.cross_entropy(logits_MV, target_M)
        stats = {
            "accuracy": (logits_MV.argmax(-1) == target_M).float().mean().detach(),
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
        return self.head(self.transformer.forward_step(x_BND, cache, commit))
