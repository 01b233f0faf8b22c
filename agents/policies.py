"""The IMPALA-style CNN shared by the PPO expert, the oracle BC policy and the latent BC policy.

One architecture for the oracle and latent BC (docs/paper.md section 4: "the same policy architecture"), so the only
difference between them is what they were trained to predict: real actions or LAM codes.
Frames arrive as `uint8` `B x 64 x 64 x 3` (the Procgen/genie-gym convention) and are scaled to [0, 1] here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from genie_gym.errors import CheckpointError, ConfigError
from genie_gym.utils.io import atomic_torch_save

FRAME_SHAPE = (64, 64, 3)
POLICY_FORMAT_VERSION = 1


def check_frames(frames: np.ndarray | torch.Tensor, what: str = "observations") -> None:
    """Reject frames of another size early, with the fix, instead of failing deep inside a conv layer."""
    shape = tuple(frames.shape[-3:])
    if frames.ndim < 4 or shape != FRAME_SHAPE:
        raise ConfigError(
            f"{what} have shape {tuple(frames.shape)}, expected (B, 64, 64, 3) uint8 frames (Procgen's native size);"
            " resize frames to 64x64 RGB (e.g. PIL Image.resize) or record them with procgen's default render size"
        )


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(F.relu(self.conv0(F.relu(x))))


class _ConvSequence(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.res0 = _ResidualBlock(out_channels)
        self.res1 = _ResidualBlock(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv(x), kernel_size=3, stride=2, padding=1)
        return self.res1(self.res0(x))


class ImpalaEncoder(nn.Module):
    """IMPALA CNN (Espeholt et al. 2018, as in the Procgen paper): 3 conv sequences, then a 256-unit ReLU layer.

    Input: float `B x 3 x 64 x 64` in [0, 1]. Output: `B x hidden`.
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32, 32), hidden: int = 256, in_channels: int = 3) -> None:
        super().__init__()
        seqs, c = [], in_channels
        for out in channels:
            seqs.append(_ConvSequence(c, out))
            c = out
        self.seqs = nn.Sequential(*seqs)
        side = 64
        for _ in channels:
            side = (side + 1) // 2
        self.fc = nn.Linear(c * side * side, hidden)
        self.out_dim = hidden

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        x = self.seqs(x_BCHW)
        return F.relu(self.fc(F.relu(x).flatten(1)))


class ImpalaPolicy(nn.Module):
    """Categorical policy over `num_outputs` choices (15 real CoinRun actions, or the LAM's |A| codes)."""

    def __init__(self, num_outputs: int, channels: tuple[int, ...] = (16, 32, 32), hidden: int = 256) -> None:
        super().__init__()
        if num_outputs < 1:
            raise ConfigError(f"num_outputs must be >= 1, got {num_outputs}")
        self.num_outputs = num_outputs
        self.channels = tuple(channels)
        self.hidden = hidden
        self.encoder = ImpalaEncoder(self.channels, hidden)
        self.head = nn.Linear(hidden, num_outputs)

    def forward(self, frames_BHWC: torch.Tensor) -> torch.Tensor:
        """uint8 (or float in [0,1]) `B x 64 x 64 x 3` -> logits `B x num_outputs`."""
        check_frames(frames_BHWC)
        x = frames_BHWC.permute(0, 3, 1, 2)
        x = x.float() / 255.0 if frames_BHWC.dtype == torch.uint8 else x.float()
        return self.head(self.encoder(x))

    @torch.no_grad()
    def probs(self, frames_BHWC: np.ndarray) -> np.ndarray:
        """Action probabilities for a numpy batch of uint8 frames (float64, rows sum to 1)."""
        check_frames(frames_BHWC)
        self.eval()
        logits = self(torch.from_numpy(np.ascontiguousarray(frames_BHWC)))
        return torch.softmax(logits.double(), dim=-1).numpy()

    def save(self, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
        atomic_torch_save(
            {
                "format_version": POLICY_FORMAT_VERSION,
                "num_outputs": self.num_outputs,
                "channels": list(self.channels),
                "hidden": self.hidden,
                "state_dict": self.state_dict(),
                "metadata": dict(metadata or {}),
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path) -> tuple[ImpalaPolicy, dict[str, Any]]:
        """Returns (policy, metadata); a missing or foreign file is a `CheckpointError` naming the fix."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(
                f"policy checkpoint {path} does not exist; train one with `python -m agents.bc` "
                "or `python -m agents.latent_bc` (see agents/README.md)"
            )
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
            policy = cls(int(ckpt["num_outputs"]), tuple(ckpt["channels"]), int(ckpt["hidden"]))
            policy.load_state_dict(ckpt["state_dict"])
        except (KeyError, RuntimeError, EOFError, TypeError) as e:
            raise CheckpointError(
                f"{path} is not a genie-gym agents policy checkpoint ({e}); retrain it with agents/bc.py"
            ) from e
        policy.eval()
        return policy, dict(ckpt.get("metadata", {}))


def sample_categorical(probs_BK: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per row from a numpy generator, so every bit of randomness comes from one seeded place."""
    cdf = np.cumsum(probs_BK, axis=1)
    u = rng.random((probs_BK.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((u > cdf).sum(axis=1), probs_BK.shape[1] - 1).astype(np.int64)
