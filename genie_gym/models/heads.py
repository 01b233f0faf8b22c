"""Reward and episode-end heads (the RL side of Genie-v0; not in the paper, as DIAMOND / IRIS / DreamerV3 do).

Two events per frame, read from the dynamics transformer's output for that frame, h_ND (it has seen the frame's
tokens, every earlier frame and the action that led to it):
- `terminal`: the episode ends after this frame (CoinRun: the agent touched the coin or died here);
- `reward`: the transition out of this frame pays a reward (CoinRun: the coin; `HeadsConfig.reward_value`).
Pooling: attention with one learned query over the N positions (where the agent is matters, so a mean alone loses
it) next to the mean, then an MLP to two logits. The heads are trained on frozen tokenizer, LAM and dynamics
(training/heads.py); the world model's generation never reads them.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from genie_gym.config import HeadsConfig
from genie_gym.models.st_transformer import init_weights

EVENTS = ("terminal", "reward")


class EventHeads(nn.Module):
    def __init__(self, cfg: HeadsConfig, d_model: int):
        super().__init__()
        self.cfg = cfg
        self.query = nn.Parameter(torch.zeros(d_model))
        self.mlp = nn.Sequential(nn.LayerNorm(2 * d_model), nn.Linear(2 * d_model, cfg.hidden), nn.GELU(),
                                 nn.Linear(cfg.hidden, len(EVENTS)))
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                init_weights(m)

    def forward(self, h_ND: torch.Tensor) -> torch.Tensor:
        """Features (..., N, D) -> logits (..., 2) of (terminal, reward)."""
        h = h_ND.float()
        w_N = torch.softmax(h @ self.query / h.shape[-1] ** 0.5, dim=-1)
        pooled = torch.cat([(w_N[..., None] * h).sum(-2), h.mean(-2)], dim=-1)
        return self.mlp(pooled)
