"""`genie-gym eval`: score a world model on a held-out split and draw what it generates.

Writes OUT/eval.json and OUT/{grid.png, action_strip.png}:
- tokenizer PSNR / SSIM of reconstructed clips (clips of the model's training length);
- rollout PSNR per step: 1 real context frame, `rollout_steps` generated frames driven by the actions the LAM
  infers from the real clip (through the Simulator, i.e. MaskGIT as the env runs it);
- delta-PSNR at t=4: PSNR with LAM actions minus PSNR with uniformly random actions (controllability);
- LAM code usage, perplexity and NMI against the true actions (the only place true actions are read).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from genie_gym.data.games import NUM_PROCGEN_ACTIONS
from genie_gym.errors import DatasetError
from genie_gym.evaluation.metrics import code_stats, nmi, psnr, ssim
from genie_gym.evaluation.rollout import clip_strip
from genie_gym.models.frames import to_float
from genie_gym.utils.device import resolve_device
from genie_gym.utils.io import atomic_write_bytes, atomic_write_json


@dataclass
class Args:
    model: Path = Path("runs/tiny/world_model.pt")
    """world-model file to evaluate (written by `genie-gym train --phase dynamics`)"""
    data: Path = Path("data/coinrun")
    """dataset directory written by `genie-gym data`"""
    split: str = "test"
    """held-out split to evaluate on"""
    out: Path = Path("runs/tiny/eval")
    """output directory for eval.json and the pictures"""
    num_clips: int = 32
    """number of held-out clips (drawn with --seed)"""
    seed: int = 0
    """seed for clip choice, MaskGIT sampling and the random actions"""
    device: str = "auto"
    """auto | cpu | cuda"""
    rollout_steps: int = 10
    """frames generated after the single real context frame"""
    delta_t: int = 4
    """generated step at which delta-PSNR (LAM actions vs random actions) is reported"""
    strip_steps: int = 6
    """steps per action in the action strip picture"""
    maskgit_steps: int | None = None
    """MaskGIT steps per frame (default: the model's sampling config)"""
    temperature: float | None = None
    """MaskGIT sampling temperature (default: the model's sampling config; 0 = greedy)"""
    batch_size: int = 16
    """clips per batched model call"""


def _png(path: Path, image_HWC: np.ndarray) -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image_HWC).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def _labelled(
    image_HWC: np.ndarray, labels: list[str], row_h: int, pad: int = 2, margin: int = 34
) -> np.ndarray:
    """Add a white left margin with one text label per row."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (image_HWC.shape[1] + margin, image_HWC.shape[0]), "white")
    img.paste(Image.fromarray(image_HWC), (margin, 0))
    draw = ImageDraw.Draw(img)
    for i, text in enumerate(labels):
        draw.text((2, pad + i * (row_h + pad) + row_h // 2 - 5), text, fill=(0, 0, 0))
    return np.asarray(img)


@torch.no_grad()
def infer_actions_windowed(lam: torch.nn.Module, frames_BTHWC: torch.Tensor, window: int) -> torch.Tensor:
    """LAM actions (B, T-1) for clips longer than its training length: a_t from frames t+2-window .. t+1."""
    T = frames_BTHWC.shape[1]
    if T <= window:
        return lam.infer_actions(frames_BTHWC)
    acts = [lam.infer_actions(frames_BTHWC[:, max(0, t + 2 - window) : t + 2])[:, -1] for t in range(T - 1)]
    return torch.stack(acts, dim=1)


def _open(data: Path, split: str, clip_len: int, what: str):
    from genie_gym.data.dataset import ClipDataset

    if not Path(data).exists():
        raise DatasetError(
            f"--data {data} does not exist; record data first with `genie-gym data --out {data}`"
        )
    ds = ClipDataset(data, split=split, clip_len=clip_len, stride=1)
    if len(ds) == 0:
        raise DatasetError(
            f"no clip of {clip_len} frames ({what}) fits in any episode of {data} split '{split}': "
            "the episodes are shorter than the evaluation needs; record longer episodes or lower "
            "--rollout-steps"
        )
    return ds


def _pick(n_items: int, n: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n_items, generator=g)[: min(n, n_items)].tolist())


def _batches(idx: list[int], size: int) -> list[list[int]]:
    return [idx[i : i + size] for i in range(0, len(idx), size)]


def _simulate(
    wm,
    prompts_BHWC_u8: np.ndarray,
    actions_BK: np.ndarray,
    seeds: list[int],
    maskgit_steps: int | None,
    device: torch.device,
    temperature: float | None = None,
) -> torch.Tensor:
    """Generated frames (B, K, H, W, C) float in [0, 1], through the env's Simulator."""
    from genie_gym.models.simulator import Simulator

    sim = Simulator(wm, num_worlds=len(seeds), maskgit_steps=maskgit_steps, temperature=temperature, device=device)
    sim.reset(None, prompts_BHWC_u8, seeds)
    frames = [sim.step(actions_BK[:, k]) for k in range(actions_BK.shape[1])]
    return to_float(np.stack(frames, axis=1))


@torch.no_grad()
def evaluate(args: Args) -> dict:
    from genie_gym.models.world_model import WorldModel

    t0 = time.time()
    if args.rollout_steps < 1 or not 1 <= args.delta_t <= args.rollout_steps:
        raise ValueError(
            f"need rollout_steps >= 1 and 1 <= delta_t <= rollout_steps, got {args.rollout_steps} "
            f"and {args.delta_t}"
        )
    device = resolve_device(args.device)
    wm = WorldModel.load(args.model, map_location=device)
    cfg = wm.config
    A, K, T = cfg.lam.num_actions, args.rollout_steps, cfg.seq_len
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    # 1. tokenizer reconstructions on clips of the training length
    ds_tok = _open(args.data, args.split, T, f"the model's context of {T} frames")
    psnrs, ssims = [], []
    for batch in tqdm(
        _batches(_pick(len(ds_tok), args.num_clips, args.seed), args.batch_size), desc="tokenizer"
    ):
        frames = to_float(torch.stack([ds_tok[i] for i in batch])).to(device)
        recon = wm.tokenizer.decode(wm.tokenizer.encode(frames)).float().clamp(0, 1)
        psnrs.append(psnr(recon, frames).flatten().cpu())
        ssims.append(ssim(recon, frames).flatten().cpu())

    # 2. rollouts from 1 real frame with LAM actions and with random actions; LAM codes vs true actions
    ds_roll = _open(args.data, args.split, K + 1, f"1 context frame + {K} generated")
    roll_idx = _pick(len(ds_roll), args.num_clips, args.seed + 1)
    g_rand = torch.Generator().manual_seed(args.seed + 2)
    psnr_lam, psnr_rand, ssim_lam, codes, true_actions = [], [], [], [], []
    grid_rows: list[torch.Tensor] = []
    for batch in tqdm(_batches(roll_idx, args.batch_size), desc="rollouts"):
        u8 = torch.stack([ds_roll[i] for i in batch])
        real = to_float(u8).to(device)
        acts_lam = infer_actions_windowed(wm.lam, real, T).cpu()
        acts_rand = torch.randint(0, A, acts_lam.shape, generator=g_rand)
        seeds = [args.seed * 100_003 + i for i in batch]
        prompts = u8[:, 0].numpy()
        gen_lam = _simulate(wm, prompts, acts_lam.numpy(), seeds, args.maskgit_steps, device, args.temperature)
        gen_rand = _simulate(wm, prompts, acts_rand.numpy(), seeds, args.maskgit_steps, device, args.temperature)
        target = real[:, 1:].cpu()
        psnr_lam.append(psnr(gen_lam, target))
        psnr_rand.append(psnr(gen_rand, target))
        ssim_lam.append(ssim(gen_lam, target))
        codes.append(acts_lam.flatten())
        true_actions.append(torch.cat([torch.as_tensor(ds_roll.clip_actions(i)).long() for i in batch]))
        for b in range(min(len(batch), 4 - len(grid_rows) // 2)):
            grid_rows += [real[b].cpu(), torch.cat([real[b, :1].cpu(), gen_lam[b]])]
    p_lam, p_rand = torch.cat(psnr_lam), torch.cat(psnr_rand)  # (clips, K)
    codes_all, true_all = torch.cat(codes).numpy(), torch.cat(true_actions).numpy()
    lam_stats = code_stats(codes_all, A)
    code_by_action = np.zeros((A, NUM_PROCGEN_ACTIONS), dtype=np.int64)
    np.add.at(code_by_action, (codes_all, true_all), 1)

    # 3. pictures: real vs generated, and the action strip (one prompt x each action x strip_steps)
    H = cfg.image_size
    grid = clip_strip(grid_rows)
    _png(out_dir / "grid.png", _labelled(grid, ["real", "gen"] * (len(grid_rows) // 2), H))
    prompt = ds_roll[roll_idx[0]][0].numpy()
    strip_acts = np.repeat(np.arange(A)[:, None], args.strip_steps, axis=1)
    strip = _simulate(
        wm, np.repeat(prompt[None], A, axis=0), strip_acts, [args.seed] * A, args.maskgit_steps, device,
        args.temperature,
    )
    prompt_f = to_float(torch.as_tensor(prompt))[None]
    strip_img = clip_strip([torch.cat([prompt_f, strip[a]]) for a in range(A)])
    _png(out_dir / "action_strip.png", _labelled(strip_img, [f"a={a}" for a in range(A)], H))

    t = args.delta_t - 1  # generated frame t (1-indexed) sits at column t-1
    result = {
        "model": str(args.model),
        "model_sha256": wm.payload_sha256,
        "model_metadata": wm.metadata,
        "data": str(args.data),
        "split": args.split,
        "num_clips": len(roll_idx),
        "seed": args.seed,
        "maskgit_steps": args.maskgit_steps or cfg.sampling.maskgit_steps,
        "temperature": cfg.sampling.temperature if args.temperature is None else args.temperature,
        "context_frames": cfg.sampling.context_frames,
        "tokenizer_psnr": float(torch.cat(psnrs).mean()),
        "tokenizer_ssim": float(torch.cat(ssims).mean()),
        "rollout_psnr": p_lam.mean(0).tolist(),
        "rollout_psnr_mean": float(p_lam.mean()),
        "rollout_ssim_mean": float(torch.cat(ssim_lam).mean()),
        "rollout_psnr_random_actions": p_rand.mean(0).tolist(),
        "delta_t": args.delta_t,
        "delta_psnr_t4": float(p_lam[:, t].mean() - p_rand[:, t].mean()),
        "lam_usage": lam_stats["usage"],
        "lam_perplexity": lam_stats["perplexity"],
        "lam_code_histogram": lam_stats["histogram"],
        "lam_nmi": nmi(codes_all, true_all),
        "lam_code_by_action": code_by_action.tolist(),  # (codes, 15 Procgen actions) transition counts
        "images": {"grid": "grid.png", "action_strip": "action_strip.png"},
        "seconds": time.time() - t0,
    }
    atomic_write_json(out_dir / "eval.json", result)
    return result


def main(args: Args) -> None:
    r = evaluate(args)
    print(
        f"tokenizer PSNR {r['tokenizer_psnr']:.2f} dB, SSIM {r['tokenizer_ssim']:.3f}; rollout PSNR mean "
        f"{r['rollout_psnr_mean']:.2f} dB; delta-PSNR@t={r['delta_t']} {r['delta_psnr_t4']:+.2f} dB; LAM "
        f"perplexity {r['lam_perplexity']:.2f}, NMI {r['lam_nmi']:.3f} -> {Path(args.out) / 'eval.json'}"
    )


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
