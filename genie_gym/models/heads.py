"""Reward and episode-end heads (the RL side of Genie-v0; not in the paper, as DIAMOND / IRIS / DreamerV3 do).

Two events per frame t, read from the last `HeadsConfig.frames` frames up to t (pixels, as the world model draws
them; the first frame of an episode is repeated before it):
- `terminal`: the episode ends after this frame (CoinRun: the agent touches the coin or dies on the next step);
- `reward`: the transition out of this frame pays a reward (CoinRun: the coin; `HeadsConfig.reward_value`).
A small CNN down to an (image/8)^2 grid (with `full_res`, after a first 3x3 convolution at full resolution,
for sprites of a few pixels), flattened (where a sprite is matters: the camera keeps the agent near the
centre), then an MLP to two logits. Why pixels and not the dynamics' features, which the first heads read: a
contact of a few pixels between 3-pixel sprites survives in the frames but not in the features (coins found 84%
against 52%, episode ends 73% against 20%, on the same held-out episodes; `benchmarks/results/heads_data/README.md`;
a second branch on the frames' centre at full resolution did not pay, its section there). The heads are trained on
recorded frames after the two unsupervised phases (training/heads.py); the world model's generation never reads them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from genie_gym.config import HeadsConfig

EVENTS = ("terminal", "reward")


class EventHeads(nn.Module):
    def __init__(self, cfg: HeadsConfig, image_size: int, channels: int = 3):
        super().__init__()
        if image_size % 8:
            raise ValueError(f"the event heads need an image size divisible by 8, got {image_size}")
        self.cfg = cfg
        w = cfg.width
        stem: list[nn.Module] = [nn.Conv2d(cfg.frames * channels, w, 3, padding=1), nn.GELU(),
                                 nn.Conv2d(w, w, 4, stride=2, padding=1)] if cfg.full_res else \
            [nn.Conv2d(cfg.frames * channels, w, 4, stride=2, padding=1)]
        self.cnn = nn.Sequential(
            *stem, nn.GELU(),
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.GELU(),
            nn.Conv2d(2 * w, 4 * w, 4, stride=2, padding=1), nn.GELU())
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * (image_size // 8) ** 2, cfg.hidden), nn.GELU(),
                                 nn.Linear(cfg.hidden, len(EVENTS)))

    def forward(self, frames_BKHWC: torch.Tensor) -> torch.Tensor:
        """Frames t-K+1..t, float in [0, 1], (B, K, H, W, C) -> logits (B, 2) of (terminal, reward) for frame t."""
        B, K, H, W, C = frames_BKHWC.shape
        x_BCHW = frames_BKHWC.permute(0, 1, 4, 2, 3).reshape(B, K * C, H, W) * 2 - 1
        return self.mlp(self.cnn(x_BCHW))


def frame_windows(frames_THWC: np.ndarray, frames: int) -> np.ndarray:
    """(T, K, H, W, C): each frame t of a clip with the K-1 before it (the clip's first frame repeated before it
    starts), the heads' input for every frame of the clip."""
    T = len(frames_THWC)
    idx_TK = np.clip(np.arange(T)[:, None] + np.arange(1 - frames, 1)[None, :], 0, None)
    return frames_THWC[idx_TK]
