"""Frame generation for evaluation and TensorBoard: a prompt frame + latent actions -> generated frames.

Uses the tokenizer, the dynamics model and MaskGIT directly, with a sliding context of
`cfg.sampling.context_frames` frames (the env's window), so it works on training modules before a world-model
file exists. Each batch element has its own generator: a clip generates the same frames alone or inside a
batch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from genie_gym.config import GenieConfig
from genie_gym.models.maskgit import maskgit_sample


@torch.no_grad()
def generate(
    tokenizer: nn.Module,
    dynamics: nn.Module,
    prompt_BHWC: torch.Tensor,
    actions_BK: torch.Tensor,
    cfg: GenieConfig,
    seeds: list[int],
    maskgit_steps: int | None = None,
    temperature: float | None = None,
) -> torch.Tensor:
    """Generate K frames after one prompt frame -> float frames (B, K, H, W, C) in [0, 1].

    `actions_BK[:, k]` leads from frame k to frame k+1 (frame 0 is the prompt), as everywhere in genie-gym.
    """
    B, K = actions_BK.shape
    device = prompt_BHWC.device
    ctx = max(2, cfg.sampling.context_frames)
    steps = maskgit_steps or cfg.sampling.maskgit_steps
    temp = cfg.sampling.temperature if temperature is None else temperature
    if len(seeds) != B:
        raise ValueError(f"generate needs one seed per clip: got {len(seeds)} seeds for {B} clips")
    gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
    tokens_BTN = tokenizer.encode(prompt_BHWC[:, None].float())
    acts_BT = torch.zeros(B, 0, dtype=torch.long, device=device)
    N = tokens_BTN.shape[2]
    frames = []
    for k in range(K):
        acts_BT = torch.cat([acts_BT, actions_BK[:, k : k + 1].long().to(device)], dim=1)
        win_BTN = tokens_BTN[:, -(ctx - 1) :]  # the window's first frame gets the "no action" embedding
        win_acts_BT = acts_BT[:, acts_BT.shape[1] - win_BTN.shape[1] :]

        def logits_fn(tok_BN: torch.Tensor, mask_BN: torch.Tensor, win_BTN=win_BTN, win_acts_BT=win_acts_BT):
            inp_BTN = torch.cat([win_BTN, tok_BN[:, None]], dim=1)
            mask_BTN = torch.cat([torch.zeros_like(win_BTN, dtype=torch.bool), mask_BN[:, None]], dim=1)
            return dynamics(inp_BTN, win_acts_BT, mask_BTN)[:, -1]

        new_BN = maskgit_sample(
            logits_fn,
            B,
            N,
            steps=steps,
            temperature=temp,
            generators=gens,
            mask_token_id=dynamics.mask_token_id,
            device=device,
        )
        tokens_BTN = torch.cat([tokens_BTN, new_BN[:, None]], dim=1)
        frames.append(tokenizer.decode(tokens_BTN[:, -ctx:])[:, -1])
    return torch.stack(frames, dim=1).float().clamp(0, 1)


def to_uint8_np(frames: torch.Tensor) -> np.ndarray:
    return (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def clip_strip(rows: list[torch.Tensor], pad: int = 2) -> np.ndarray:
    """Rows of frames (T, H, W, C) in [0, 1] -> one uint8 image (rows stacked, frames side by side)."""
    T = max(r.shape[0] for r in rows)
    H, W, C = rows[0].shape[1:]
    out = np.full((len(rows) * (H + pad) + pad, T * (W + pad) + pad, C), 255, np.uint8)
    for i, r in enumerate(rows):
        imgs = to_uint8_np(r)
        for t in range(imgs.shape[0]):
            y, x = pad + i * (H + pad), pad + t * (W + pad)
            out[y : y + H, x : x + W] = imgs[t]
    return out
