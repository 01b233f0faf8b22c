"""`genie-gym eval`: score a world model on a held-out split and draw what it generates.

Writes OUT/eval.json and OUT/{grid.png, action_strip.png}:
- tokenizer PSNR / SSIM of reconstructed clips (clips of the model's training length);
- rollout PSNR / SSIM per step: 1 real context frame (and, for each of `--context`, that many), `rollout_steps`
  generated frames driven by the actions the LAM infers from the real clip (through the Simulator, i.e. MaskGIT as
  the env runs it), beside the still-image baseline (the last real frame repeated) on the same clips, and that
  baseline as the tokenizer draws it (the last real frame's tokens copied, decoded): a frame identical to the last
  real one scores PSNR_CAP_DB (100 dB) for the still image, while any tokenizer's reconstruction scores its own
  PSNR, so `identical_to_last_real_frame` says how much of the still image's mean comes from frames that never moved;
  `rollout_psnr_of_mean_mse` / `still_psnr_of_mean_mse` are the PSNR of the mean MSE over all generated frames,
  where such a frame counts as zero error rather than 100 dB;
- next-frame token accuracy of the dynamics from clean real context (all tokens of the frame masked, argmax)
  beside copying the previous frame's tokens;
- delta-PSNR at t=4: PSNR with LAM actions minus PSNR with uniformly random actions (controllability);
- long-horizon stability: `stability_steps` generated frames with random actions from `stability_prompts`
  held-out prompts; the gradient energy (mean |image gradient|) of generated frames at steps 50/100/200 over that of
  the real frames at the same steps of the same episodes (flat colour: 0), and stability.png (real over generated);
- the reward / episode-end heads (a model with them): precision and recall one step ahead on whole held-out
  episodes and over the generated frames of rollouts ending on an event (`score_heads`);
- LAM code usage, perplexity and NMI against the true actions (the only place true actions are read).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from genie_gym.data.games import NUM_PROCGEN_ACTIONS, movement_counts, name_actions
from genie_gym.errors import ConfigError, DatasetError
from genie_gym.evaluation.metrics import (
    PSNR_CAP_DB,
    code_stats,
    gradient_energy,
    mse,
    nmi,
    psnr,
    psnr_of_mean_mse,
    ssim,
    still_image_baseline,
)
from genie_gym.evaluation.rollout import clip_strip
from genie_gym.models.frames import to_float
from genie_gym.utils.device import resolve_device
from genie_gym.utils.io import atomic_write_bytes, atomic_write_json


@dataclass
class Args:
    model: Path | None = None
    """world-model file to evaluate (written by `genie-gym train --phase dynamics`; default: the shipped model)"""
    data: Path = Path("data/coinrun-hard")
    """dataset directory written by `genie-gym data`"""
    split: str = "test"
    """held-out split to evaluate on"""
    out: Path = Path("runs/eval")
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
    maskgit_schedule: Literal["frame", "cell"] | None = None
    """frame: MaskGIT ranks the whole frame (the paper); cell: every step decides a share of each grid cell's tokens
    (steps <= tokens per cell; default: the model's sampling config)"""
    precision: Literal["float32", "bfloat16"] = "float32"
    """generation precision (bfloat16: autocast, as Genie-v0's precision setting)"""
    batch_size: int = 16
    """clips per batched model call"""
    context: tuple[int, ...] = (1, 4)
    """real context frames before the generated ones; the first is the headline rollout (and delta-PSNR)"""
    stability_steps: int = 200
    """frames generated with random actions for the long-horizon stability figure (0: skip it)"""
    stability_prompts: int = 32
    """held-out prompts (first frames of distinct clips) for the stability rollouts"""
    heads_episodes: int = 200
    """a model with reward / episode-end heads: held-out episodes whose every frame they score one step ahead (0:
    skip the heads' scores)"""
    heads_rollout_clips: int = 64
    """a model with heads: clips ending on an event (and as many random clips) on whose `rollout_steps` generated
    frames they are scored"""
    name_actions: bool = False
    """write the latent actions' names (left / right / jump ..., from what their held-out transitions did) into
    the --model file's metadata, where Genie-v0's keys and `get_action_meanings()` read them"""


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


def open_clips(data: Path, split: str, clip_len: int, what: str):
    """The `clip_len`-frame clips of a dataset split; `what` names their use in the error when none fits."""
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


def pick_clips(n_items: int, n: int, seed: int) -> list[int]:
    """`n` distinct clip indices out of `n_items`, sorted, the same for the same seed."""
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n_items, generator=g)[: min(n, n_items)].tolist())


def _batches(idx: list[int], size: int) -> list[list[int]]:
    return [idx[i : i + size] for i in range(0, len(idx), size)]


def simulate(
    wm,
    prompts_BHWC_u8: np.ndarray,
    actions_BK: np.ndarray,
    seeds: list[int],
    maskgit_steps: int | None,
    device: torch.device,
    temperature: float | None = None,
    prompt_actions: np.ndarray | None = None,
    keep: list[int] | None = None,
    precision: str = "float32",
    schedule: str | None = None,
    event_probs: list[np.ndarray] | None = None,
) -> torch.Tensor:
    """Generated frames (B, K, H, W, C) float in [0, 1], through the env's Simulator.

    `prompts_BHWC_u8` may hold C context frames per world, (B, C, H, W, 3), with `prompt_actions` (B, C-1).
    `keep`: return only these generated steps (1-indexed), for long rollouts. `event_probs`: a list that receives
    the event heads' (B, 2) probabilities of each generated frame (a model with heads)."""
    from genie_gym.models.simulator import Simulator

    C = prompts_BHWC_u8.shape[1] if prompts_BHWC_u8.ndim == 5 else 1
    sim = Simulator(wm, num_worlds=len(seeds), maskgit_steps=maskgit_steps, temperature=temperature, device=device,
                    context_frames=max(wm.config.sampling.context_frames, C + 1), precision=precision,
                    maskgit_schedule=schedule)
    sim.reset(None, prompts_BHWC_u8, seeds, prompt_actions)
    frames = []
    for k in range(actions_BK.shape[1]):
        frame = sim.step(actions_BK[:, k])
        if event_probs is not None:
            event_probs.append(sim.event_probs())
        if keep is None or k + 1 in keep:
            frames.append(frame)
    return to_float(np.stack(frames, axis=1))


@torch.no_grad()
def token_accuracy(wm, tokens_BTN: torch.Tensor, actions_BT: torch.Tensor, first: int) -> tuple[float, float]:
    """Next-frame token accuracy from clean real context, and that of copying the previous frame's tokens.

    For every frame t >= `first`: the real tokens of the last `context_frames - 1` frames before it as context, all
    of frame t's tokens masked, the argmax of the dynamics' logits against frame t's real tokens."""
    dyn, W = wm.dynamics, wm.config.sampling.context_frames
    hits, copies, n = 0.0, 0.0, 0
    for t in range(max(first, 1), tokens_BTN.shape[1]):
        lo = max(0, t - (W - 1))
        win_BTN = tokens_BTN[:, lo : t + 1]
        mask_BTN = torch.zeros_like(win_BTN, dtype=torch.bool)
        mask_BTN[:, -1] = True
        pred_BN = dyn(win_BTN, actions_BT[:, lo:t], mask_BTN)[:, -1].argmax(-1)
        hits += float((pred_BN == tokens_BTN[:, t]).float().sum())
        copies += float((tokens_BTN[:, t - 1] == tokens_BTN[:, t]).float().sum())
        n += tokens_BTN[:, t].numel()
    return hits / n, copies / n


def event_rollout_windows(store, labels_E: list[np.ndarray], K: int, n: int, seed: int) -> tuple[list, int]:
    """(episode, start) of up to `n` held-out windows of K+1 real frames ending on an event frame (`frame_labels`),
    then as many random windows: the rollouts on which event readers are scored. Returns (windows, event count)."""
    from genie_gym.training.heads import event_windows

    rng = np.random.default_rng(seed + 5)
    events = event_windows(labels_E, K + 1)
    rng.shuffle(events)
    events = events[:n]
    long_enough = np.flatnonzero(store.episode_lengths >= K + 1)
    if not events or long_enough.size == 0:
        return [], 0
    randoms = [(int(ep), int(rng.integers(0, int(store.episode_lengths[ep]) - K)))
               for ep in rng.choice(long_enough, len(events))]
    return events + randoms, len(events)


@torch.no_grad()
def score_heads(wm, args: Args, device: torch.device) -> dict:
    """The event heads' precision and recall (`training.heads.precision_recall`, at their threshold and horizon) on
    the held-out split: one step ahead on every frame of up to `heads_episodes` whole episodes (the recorded
    frames), and over `rollout_steps` generated frames (1 real frame, then the LAM's actions from the real clip)
    of clips whose last real frame is an event frame, beside as many random clips. `event_rate` is the share of
    frames within the horizon of an event: the precision of a head that always fires."""
    from genie_gym.data.dataset import EpisodeStore
    from genie_gym.models.heads import EVENTS
    from genie_gym.training.heads import evaluate_heads, frame_labels, score_events, within

    store = EpisodeStore(args.data, args.split)
    K, horizon = args.rollout_steps, wm.config.heads.horizon
    amp = args.precision == "bfloat16"
    labels_E = [frame_labels(store, e) for e in range(len(store.episode_lengths))]
    near_FE = np.concatenate([within(lab > 0, horizon) for lab in labels_E])
    out: dict = {"horizon": horizon, "threshold": wm.config.heads.threshold,
                 "event_rate": dict(zip(EVENTS, near_FE.mean(0).tolist(), strict=True)),
                 "one_step": evaluate_heads(wm, store, args.heads_episodes, args.seed, amp)}
    windows, n_events = event_rollout_windows(store, labels_E, K, args.heads_rollout_clips, args.seed)
    if not windows:
        return {**out, "rollouts": {"note": f"no held-out episode ends on an event after >= {K + 1} frames"}}
    probs_W, labels_W = rollout_event_probs(wm, store, labels_E, windows, K, 1, args.seed, args.batch_size, device,
                                            args.maskgit_steps, args.temperature, args.precision,
                                            args.maskgit_schedule)
    out["rollouts"] = {**score_events(probs_W, labels_W, wm.config.heads), "event_clips": n_events,
                       "random_clips": len(windows) - n_events, "steps": K}
    return out


@torch.no_grad()
def rollout_event_probs(wm, store, labels_E: list[np.ndarray], windows: list[tuple[int, int]], K: int, C: int,
                        seed: int, batch_size: int, device: torch.device, maskgit_steps: int | None = None,
                        temperature: float | None = None, precision: str = "float32",
                        schedule: str | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The event heads on generated frames: for each window of K+1 real frames (`event_rollout_windows`), the first
    C real, the rest generated with the LAM's actions of the real clip (world i seeded `seed * 31 + i`). Returns,
    per window, the heads' probabilities (K+1-C, 2) of the generated frames and those frames' labels."""
    probs_W, labels_W = [], []
    for batch in tqdm(_batches(list(range(len(windows))), batch_size), desc=f"heads: rollouts from {C} real frames"):
        u8 = torch.stack([torch.from_numpy(store.frames(ep, s, s + K + 1)) for ep, s in (windows[i] for i in batch)])
        acts = infer_actions_windowed(wm.lam, to_float(u8).to(device), wm.config.seq_len).cpu().numpy()  # (B, K)
        steps: list[np.ndarray] = []
        simulate(wm, u8[:, :C].numpy() if C > 1 else u8[:, 0].numpy(), acts[:, C - 1:],
                 [seed * 31 + i for i in batch], maskgit_steps, device, temperature,
                 prompt_actions=acts[:, :C - 1] if C > 1 else None, precision=precision, schedule=schedule,
                 event_probs=steps)
        probs_W += list(np.stack(steps, axis=1))  # (B, K+1-C, 2): generated step k is real frame start + C - 1 + k
        labels_W += [labels_E[ep][s + C : s + K + 1] for ep, s in (windows[i] for i in batch)]
    return probs_W, labels_W


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
    if args.name_actions and args.model is None:
        raise ConfigError("--name-actions writes the action names into the --model file; pass --model FILE (the "
                          "shipped model is not rewritten)")
    wm = WorldModel.load(args.model, map_location=device)
    from genie_gym.models.simulator import check_sampling

    check_sampling(wm, args.maskgit_steps, args.maskgit_schedule, args.temperature, args.precision)  # before any work
    cfg = wm.config
    A, K, T = cfg.lam.num_actions, args.rollout_steps, cfg.seq_len
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    # 1. tokenizer reconstructions on clips of the training length
    ds_tok = open_clips(args.data, args.split, T, f"the model's context of {T} frames")
    psnrs, ssims = [], []
    for batch in tqdm(
        _batches(pick_clips(len(ds_tok), args.num_clips, args.seed), args.batch_size), desc="tokenizer"
    ):
        frames = to_float(torch.stack([ds_tok[i] for i in batch])).to(device)
        recon = wm.tokenizer.decode(wm.tokenizer.encode(frames)).float().clamp(0, 1)
        psnrs.append(psnr(recon, frames).flatten().cpu())
        ssims.append(ssim(recon, frames).flatten().cpu())

    # 2. rollouts from C real frames with LAM actions (and random actions for C = 1), on the same target frames
    contexts = list(dict.fromkeys(args.context))
    if not contexts or min(contexts) < 1:
        raise ValueError(f"--context takes numbers of real context frames >= 1, got {list(args.context)}")
    Cmax = max(contexts)
    ds_roll = open_clips(args.data, args.split, Cmax + K, f"{Cmax} context frames + {K} generated")
    roll_idx = pick_clips(len(ds_roll), args.num_clips, args.seed + 1)
    g_rand = torch.Generator().manual_seed(args.seed + 2)
    p_gen: dict[int, list[torch.Tensor]] = {c: [] for c in contexts}
    s_gen: dict[int, list[torch.Tensor]] = {c: [] for c in contexts}
    p_still: dict[int, list[torch.Tensor]] = {c: [] for c in contexts}
    s_still: dict[int, list[torch.Tensor]] = {c: [] for c in contexts}
    p_still_tok: dict[int, list[torch.Tensor]] = {c: [] for c in contexts}
    # per-frame MSE: the PSNR of the mean MSE is not dominated by frames that never moved (the still image's 100 dB)
    m_gen: dict[int, list[torch.Tensor]] = {c: [] for c in contexts}
    m_still: dict[int, list[torch.Tensor]] = {c: [] for c in contexts}
    psnr_rand, codes, true_actions, tok_acc, tok_copy = [], [], [], [], []
    grid_rows: list[torch.Tensor] = []
    for batch in tqdm(_batches(roll_idx, args.batch_size), desc="rollouts"):
        u8 = torch.stack([ds_roll[i] for i in batch])
        real = to_float(u8).to(device)
        acts_all = infer_actions_windowed(wm.lam, real, T).cpu()  # (B, Cmax+K-1): acts_all[:, t] leads t -> t+1
        target = real[:, Cmax:].cpu()
        seeds = [args.seed * 100_003 + i for i in batch]
        # copying the last real frame's tokens, decoded: the still image as this tokenizer draws it
        tokens_BTN = wm.tokenizer.encode(real)  # causal: the tokens of frames < Cmax see no later frame
        recon_last = wm.tokenizer.decode(tokens_BTN[:, :Cmax])[:, -1:].float().clamp(0, 1).cpu()
        for c in contexts:
            first = Cmax - c
            prompts = u8[:, first:Cmax].numpy()
            gen = simulate(wm, prompts, acts_all[:, Cmax - 1 :].numpy(), seeds, args.maskgit_steps, device,
                            args.temperature, prompt_actions=acts_all[:, first : Cmax - 1].numpy(),
                            precision=args.precision, schedule=args.maskgit_schedule)
            still = real[:, Cmax - 1 : Cmax].cpu().expand_as(target)
            p_gen[c].append(psnr(gen, target))
            s_gen[c].append(ssim(gen, target))
            p_still[c].append(still_image_baseline(real[:, Cmax - 1 :].cpu()))
            s_still[c].append(ssim(still, target))
            p_still_tok[c].append(psnr(recon_last.expand_as(target), target))
            m_gen[c].append(mse(gen, target))
            m_still[c].append(mse(still, target))
            if c == contexts[0]:
                acts_rand = torch.randint(0, A, (len(batch), K), generator=g_rand)
                gen_rand = simulate(wm, prompts, acts_rand.numpy(), seeds, args.maskgit_steps, device,
                                     args.temperature, prompt_actions=acts_all[:, first : Cmax - 1].numpy(),
                            precision=args.precision, schedule=args.maskgit_schedule)
                psnr_rand.append(psnr(gen_rand, target))
                for b in range(min(len(batch), 4 - len(grid_rows) // 2)):
                    grid_rows += [real[b, Cmax - 1 :].cpu(), torch.cat([real[b, Cmax - 1 : Cmax].cpu(), gen[b]])]
        acc, copy = token_accuracy(wm, tokens_BTN, acts_all.to(device), Cmax)
        tok_acc.append(acc * len(batch))
        tok_copy.append(copy * len(batch))
        codes.append(acts_all[:, Cmax - 1 :].flatten())
        true_actions.append(torch.cat([torch.as_tensor(ds_roll.clip_actions(i)[Cmax - 1 :]).long() for i in batch]))
    c0 = contexts[0]
    p_lam, p_rand = torch.cat(p_gen[c0]), torch.cat(psnr_rand)  # (clips, K)
    codes_all, true_all = torch.cat(codes).numpy(), torch.cat(true_actions).numpy()
    lam_stats = code_stats(codes_all, A)
    code_by_action = np.zeros((A, NUM_PROCGEN_ACTIONS), dtype=np.int64)
    np.add.at(code_by_action, (codes_all, true_all), 1)
    meanings = name_actions(movement_counts(code_by_action))
    named_sha = None
    if args.name_actions:  # the weights are unchanged: only the metadata gains the names
        named_sha = wm.save(args.model, {**wm.metadata, "action_meanings": meanings,
                             "action_meanings_from": {"data": str(args.data), "split": args.split,
                                                      "transitions": int(code_by_action.sum())}},
                dtype=getattr(torch, wm.file_dtype))
    by_context = {
        str(c): {
            "rollout_psnr": torch.cat(p_gen[c]).mean(0).tolist(),
            "rollout_psnr_mean": float(torch.cat(p_gen[c]).mean()),
            "rollout_ssim": torch.cat(s_gen[c]).mean(0).tolist(),
            "rollout_ssim_mean": float(torch.cat(s_gen[c]).mean()),
            "still_psnr": torch.cat(p_still[c]).mean(0).tolist(),
            "still_psnr_mean": float(torch.cat(p_still[c]).mean()),
            "still_ssim_mean": float(torch.cat(s_still[c]).mean()),
            "still_tokens_psnr": torch.cat(p_still_tok[c]).mean(0).tolist(),
            "still_tokens_psnr_mean": float(torch.cat(p_still_tok[c]).mean()),
            "identical_to_last_real_frame": float(torch.cat(p_still[c]).ge(PSNR_CAP_DB).float().mean()),
            "rollout_psnr_of_mean_mse": psnr_of_mean_mse(torch.cat(m_gen[c])),
            "still_psnr_of_mean_mse": psnr_of_mean_mse(torch.cat(m_still[c])),
            "rollout_psnr_of_mean_mse_per_step": [psnr_of_mean_mse(m) for m in torch.cat(m_gen[c]).T],
            "still_psnr_of_mean_mse_per_step": [psnr_of_mean_mse(m) for m in torch.cat(m_still[c]).T],
        }
        for c in contexts
    }
    n_roll = len(roll_idx)

    # 2b. long-horizon stability: random actions, gradient energy of generated vs real frames at the same steps
    stability: dict = {}
    if args.stability_steps > 0:
        L = args.stability_steps
        ds_long = open_clips(args.data, args.split, L + 1, f"a prompt + {L} stability steps (lower --stability-steps)")
        marks = sorted({s for s in (1, 5, 10, 50, 100, 200, L) if s <= L})
        long_idx = pick_clips(len(ds_long), args.stability_prompts, args.seed + 3)
        g_long = torch.Generator().manual_seed(args.seed + 4)
        ge_gen, ge_real, long_rows = [], [], []
        for batch in tqdm(_batches(long_idx, max(args.batch_size, 32)), desc="stability"):
            u8 = torch.stack([ds_long[i] for i in batch])
            acts = torch.randint(0, A, (len(batch), L), generator=g_long)
            gen = simulate(wm, u8[:, 0].numpy(), acts.numpy(), [args.seed * 7 + i for i in batch],
                            args.maskgit_steps, device, args.temperature, keep=marks, precision=args.precision,
                            schedule=args.maskgit_schedule)
            real_marks = to_float(u8[:, marks])
            ge_gen.append(gradient_energy(gen))
            ge_real.append(gradient_energy(real_marks))
            for b in range(min(len(batch), 3 - len(long_rows) // 2)):
                long_rows += [torch.cat([to_float(u8[b, :1]), real_marks[b]]), torch.cat([to_float(u8[b, :1]), gen[b]])]
        g_gen, g_real = torch.cat(ge_gen).mean(0), torch.cat(ge_real).mean(0)
        stability = {
            "steps": marks,
            "prompts": len(long_idx),
            "gradient_energy_generated": g_gen.tolist(),
            "gradient_energy_real": g_real.tolist(),
            "gradient_energy_ratio": (g_gen / g_real.clamp_min(1e-8)).tolist(),
        }
        _png(out_dir / "stability.png", _labelled(clip_strip(long_rows), ["real", "gen"] * (len(long_rows) // 2),
                                                  cfg.image_size))

    # 2c. the reward / episode-end heads, when the model has them
    heads = score_heads(wm, args, device) if wm.heads is not None and args.heads_episodes > 0 else {}

    # 3. pictures: real vs generated, and the action strip (one prompt x each action x strip_steps)
    H = cfg.image_size
    grid = clip_strip(grid_rows)
    _png(out_dir / "grid.png", _labelled(grid, ["real", "gen"] * (len(grid_rows) // 2), H))
    prompt = ds_roll[roll_idx[0]][0].numpy()
    strip_acts = np.repeat(np.arange(A)[:, None], args.strip_steps, axis=1)
    strip = simulate(
        wm, np.repeat(prompt[None], A, axis=0), strip_acts, [args.seed] * A, args.maskgit_steps, device,
        args.temperature, precision=args.precision, schedule=args.maskgit_schedule,
    )
    prompt_f = to_float(torch.as_tensor(prompt))[None]
    strip_img = clip_strip([torch.cat([prompt_f, strip[a]]) for a in range(A)])
    _png(out_dir / "action_strip.png", _labelled(strip_img, [f"a={a}" for a in range(A)], H))

    t = args.delta_t - 1  # generated frame t (1-indexed) sits at column t-1
    result = {
        "model": str(args.model or WorldModel.default_path()),
        "model_sha256": wm.payload_sha256,
        "model_metadata": wm.metadata,
        "data": str(args.data),
        "split": args.split,
        "num_clips": len(roll_idx),
        "seed": args.seed,
        "maskgit_steps": args.maskgit_steps or cfg.sampling.maskgit_steps,
        "maskgit_schedule": args.maskgit_schedule or cfg.sampling.schedule,
        "temperature": cfg.sampling.temperature if args.temperature is None else args.temperature,
        "context_frames": cfg.sampling.context_frames,
        "tokenizer_psnr": float(torch.cat(psnrs).mean()),
        "tokenizer_ssim": float(torch.cat(ssims).mean()),
        "context": contexts,
        "rollout_psnr": p_lam.mean(0).tolist(),
        "rollout_psnr_mean": float(p_lam.mean()),
        "rollout_ssim_mean": by_context[str(c0)]["rollout_ssim_mean"],
        "still_psnr": by_context[str(c0)]["still_psnr"],
        "still_psnr_mean": by_context[str(c0)]["still_psnr_mean"],
        "still_tokens_psnr": by_context[str(c0)]["still_tokens_psnr"],
        "still_tokens_psnr_mean": by_context[str(c0)]["still_tokens_psnr_mean"],
        "rollout_psnr_of_mean_mse": by_context[str(c0)]["rollout_psnr_of_mean_mse"],
        "still_psnr_of_mean_mse": by_context[str(c0)]["still_psnr_of_mean_mse"],
        "rollout_by_context": by_context,
        "rollout_psnr_random_actions": p_rand.mean(0).tolist(),
        "token_accuracy": sum(tok_acc) / n_roll,
        "copy_token_accuracy": sum(tok_copy) / n_roll,
        "delta_t": args.delta_t,
        "delta_psnr_t4": float(p_lam[:, t].mean() - p_rand[:, t].mean()),
        "stability": stability,
        "heads": heads,
        "lam_usage": lam_stats["usage"],
        "lam_perplexity": lam_stats["perplexity"],
        "lam_code_histogram": lam_stats["histogram"],
        "lam_nmi": nmi(codes_all, true_all),
        "lam_code_by_action": code_by_action.tolist(),  # (codes, 15 Procgen actions) transition counts
        "lam_code_by_movement": movement_counts(code_by_action).tolist(),  # (codes, MOVEMENT_NAMES)
        "lam_action_meanings": meanings,
        "named_model_sha256": named_sha,  # --name-actions: the rewritten file's payload hash
        "images": {"grid": "grid.png", "action_strip": "action_strip.png",
                   **({"stability": "stability.png"} if stability else {})},
        "seconds": time.time() - t0,
    }
    atomic_write_json(out_dir / "eval.json", result)
    return result


def main(args: Args) -> None:
    r = evaluate(args)
    stab, heads = r["stability"], r["heads"]
    ratio = f"; gradient-energy ratio at step {stab['steps'][-1]}: {stab['gradient_energy_ratio'][-1]:.2f}" \
        if stab else ""
    if heads:
        ratio += "; heads one step ahead " + ", ".join(
            f"{e} precision {heads['one_step'][e]['precision']:.2f} recall {heads['one_step'][e]['recall']:.2f}"
            for e in ("terminal", "reward") if e in heads["one_step"])
    print(
        f"tokenizer PSNR {r['tokenizer_psnr']:.2f} dB, SSIM {r['tokenizer_ssim']:.3f}; rollout PSNR mean "
        f"{r['rollout_psnr_mean']:.2f} dB (still image {r['still_psnr_mean']:.2f}); token accuracy "
        f"{r['token_accuracy']:.1%} (copy {r['copy_token_accuracy']:.1%}); delta-PSNR@t={r['delta_t']} "
        f"{r['delta_psnr_t4']:+.2f} dB{ratio}; LAM perplexity {r['lam_perplexity']:.2f}, NMI {r['lam_nmi']:.3f} "
        f"-> {Path(args.out) / 'eval.json'}"
    )


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
