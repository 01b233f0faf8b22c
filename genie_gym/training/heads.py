"""`genie-gym train --phase heads`: reward and episode-end heads on a trained, frozen world model.

    genie-gym train --phase heads --out RUN --data DIR [--model FILE]   # FILE default RUN/world_model.pt

The two unsupervised phases never read rewards or episode ends; this third, small phase does, as DIAMOND, IRIS and
DreamerV3 learn them beside their dynamics. Labels of frame t of an episode of L frames (the data's arrays,
`manifest.json`), with `--heads-horizon` k: `terminal` = the episode ends within the next k transitions (t >= L - k),
by the game, not by the recording's or Procgen's 1000-step time limit; `reward` = one of the next k transitions pays
a non-zero reward (CoinRun: the coin, on the last transition). k = 1 is the strict "the transition out of this frame";
Procgen returns the next level's first frame after the last transition, so the frame that shows the agent on the
coin or the enemy never reaches the data, and k > 1 labels the approach instead. Features: the frozen dynamics'
output for each frame of a clip of `seq_len` real frames (its tokens, the LAM's actions), the same features
Genie-v0 computes for a generated frame.

1. Features are computed once (no gradient, bf16 on CPU with --cpu-bf16) for every clip ending on an event frame
   (up to `--heads-clips`) and as many random clips, and cached.
2. The heads train on the cached features (`--steps` AdamW steps of `--batch-size` clips). Event clips are
   over-represented in that sample, so at the end each head's bias is shifted by the log-odds ratio between the
   data's event rate and the sample's (prior correction): its probabilities are those of the real frequency.
3. Held-out scores (validation split, whole episodes tiled by windows that end on their last frame), per event at
   `HeadsConfig.threshold`: precision = the share of firing frames that are within k transitions of that event,
   recall = the share of events with a firing frame among the k frames before them (k = 1: plain per-frame
   precision and recall; the constant "never" predictor has recall 0). They go into the model's metadata.
4. RUN/world_model.pt is (re)written with the heads (`config.heads.enabled`, the data's mean non-zero reward as
   `reward_value`, `horizon`, and `reward_ends_episode` when 99% of the data's rewards came with their episode's end).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from genie_gym.data.dataset import EpisodeStore
from genie_gym.errors import ConfigError, DatasetError
from genie_gym.models.heads import EVENTS, EventHeads
from genie_gym.models.world_model import WorldModel
from genie_gym.utils.seeding import seed_everything

if TYPE_CHECKING:
    from genie_gym.training.train import Args


CURVE_THRESHOLDS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)  # evaluate_heads' precision-recall curve
PROCGEN_TIME_LIMIT = 1000  # Procgen ends every episode here by itself: a time limit, not an event


def frame_labels(store: EpisodeStore, ep: int) -> np.ndarray:
    """(L, 2) float labels of an episode's frames: (terminal, reward event), on the frame the event's transition
    leaves (`within` widens them to a horizon). An episode that ran into the recording limit or Procgen's own
    1000-step limit did not end by anything visible: not terminal."""
    L = int(store.episode_lengths[ep])
    limit = min(int(store.manifest.get("settings", {}).get("max_steps", PROCGEN_TIME_LIMIT)), PROCGEN_TIME_LIMIT)
    events = np.zeros((L, 2), dtype=bool)
    events[-1, 0] = not store.truncated[ep] and L < limit
    events[:, 1] = store.rewards(ep)[:L] != 0
    return events.astype(np.float32)


def within(events_LE: np.ndarray, horizon: int) -> np.ndarray:
    """(L, E) bool: frame t is within `horizon` transitions of an event of its column (an event at t' in
    [t, t + horizon - 1]); horizon 1 returns the events themselves."""
    out = events_LE.copy()
    for shift in range(1, horizon):
        out[:-shift] |= events_LE[shift:]
    return out


@torch.no_grad()
def clip_features(wm: WorldModel, frames_BTHWC_u8: torch.Tensor, amp: bool) -> torch.Tensor:
    """Dynamics features (B, T, positions, D) of real clips: their tokens and the LAM's actions, clean context (on
    the model's device; `amp`: bf16 autocast)."""
    from genie_gym.models.frames import to_float

    device = next(wm.dynamics.parameters()).device
    frames = to_float(frames_BTHWC_u8.to(device))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        tokens_BTN = wm.tokenizer.encode(frames)
        actions_BT = wm.lam.infer_actions(frames)
        return wm.dynamics.features(tokens_BTN, actions_BT).to(torch.bfloat16)


def event_windows(labels_E: list[np.ndarray], T: int) -> list[tuple[int, int]]:
    """(episode, first frame) of the T-frame window ending on each event frame (`frame_labels` per episode)."""
    return [(ep, t - T + 1) for ep, labels in enumerate(labels_E) for t in np.flatnonzero(labels.any(1)) if t >= T - 1]


def tiling_windows(store: EpisodeStore, T: int, max_episodes: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(episode, first frame) of T-frame windows tiling up to `max_episodes` random episodes backwards from their
    last frame: each frame scored at most once, the last with full history (the first L mod T frames are not)."""
    eps = np.flatnonzero(store.episode_lengths >= T)
    rng.shuffle(eps)
    return [(int(ep), start) for ep in eps[:max_episodes]
            for start in range(int(store.episode_lengths[ep]) - T, -1, -T)]


def _features_of(wm: WorldModel, store: EpisodeStore, windows: list[tuple[int, int]], T: int, amp: bool,
                 desc: str, labels_E: list[np.ndarray] | dict[int, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    feats, labels = [], []
    for i in tqdm(range(0, len(windows), 16), desc=desc, leave=False):
        chunk = windows[i:i + 16]
        frames = torch.stack([torch.from_numpy(store.frames(ep, s, s + T)) for ep, s in chunk])
        feats.append(clip_features(wm, frames, amp).cpu())
        labels.append(torch.from_numpy(np.stack([labels_E[ep][s:s + T] for ep, s in chunk])))
    return torch.cat(feats), torch.cat(labels)


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p) - torch.log1p(-p)


def precision_recall(probs_E: list[np.ndarray], events_E: list[np.ndarray], threshold: float,
                     horizon: int = 1) -> dict[str, float | int]:
    """Event scores over episodes (per episode: probabilities and bool events of its scored frames, in order):
    precision = firing frames within `horizon` transitions of an event / firing frames; recall = events with a
    firing frame among the `horizon` frames up to them / events. Horizon 1: per-frame precision and recall."""
    fired = near = found = events = frames = 0
    for probs_L, events_L in zip(probs_E, events_E, strict=True):
        pred, true = probs_L >= threshold, events_L.astype(bool)
        fired += int(pred.sum())
        near += int((pred & within(true[:, None], horizon)[:, 0]).sum())
        # an event is found when a frame of its window fires: `within` run backwards in time
        found += int((true & within(pred[::-1, None], horizon)[::-1, 0]).sum())
        events += int(true.sum())
        frames += int(true.size)
    return {"precision": near / max(fired, 1), "recall": found / max(events, 1), "events": events,
            "predicted": fired, "frames": frames, "horizon": horizon}


def pr_curve(probs_E: list[np.ndarray], events_E: list[np.ndarray], thresholds: tuple[float, ...] = CURVE_THRESHOLDS,
             horizon: int = 1) -> list[dict[str, float | int]]:
    """`precision_recall` at each threshold: [{threshold, precision, recall, predicted}, ...]."""
    return [{"threshold": th, **{m: precision_recall(probs_E, events_E, th, horizon)[m]
                                 for m in ("precision", "recall", "predicted")}} for th in thresholds]


def train_heads(args: Args) -> Path:
    """Train the event heads of `args.model` (default RUN/world_model.pt) and write RUN/world_model.pt."""
    t0 = time.time()
    run = Path(args.out)
    source = Path(args.model) if args.model is not None else run / "world_model.pt"
    wm = WorldModel.load(source)
    cfg, T = wm.config, wm.config.seq_len
    steps = args.steps or 1000
    seed_everything(args.seed)
    rng = np.random.default_rng(args.seed)
    train_store = EpisodeStore(args.data, args.split)
    val_store = EpisodeStore(args.data, "validation")
    if len(val_store.episode_lengths) == 0:
        val_store = EpisodeStore(args.data, "test")
    horizon = args.heads_horizon
    exact_E = [frame_labels(train_store, e) for e in range(len(train_store.episode_lengths))]
    labels_E = [within(labels > 0, horizon).astype(np.float32) for labels in exact_E]
    terminal_rate, reward_rate = (float(r) for r in np.concatenate(labels_E).mean(0))
    if terminal_rate == 0 and reward_rate == 0:
        raise DatasetError(f"{args.data} ({args.split}) holds no natural episode end and no reward: nothing for "
                           "the heads to learn; record longer episodes (--max-steps) or another game")
    paid = [train_store.rewards(e)[labels[:, 1] > 0] for e, labels in enumerate(exact_E)]
    reward_value = float(np.concatenate(paid).mean()) if reward_rate > 0 else cfg.heads.reward_value
    # a reward that (nearly) always came with the episode's end (CoinRun's coin) ends a Genie-v0 episode too
    rewarded = np.concatenate([labels[labels[:, 1] > 0, 0] for labels in exact_E])
    reward_ends_episode = bool(rewarded.size > 0 and rewarded.mean() >= 0.99)
    amp = bool(args.cpu_bf16)
    wm.eval()
    events = event_windows(labels_E, T)
    rng.shuffle(events)
    events = events[: args.heads_clips]
    if not events:
        raise DatasetError(f"no episode of {args.data} ({args.split}) is at least seq_len={T} frames long and ends "
                           "in an event; record longer episodes")
    randoms = [(int(ep), int(rng.integers(0, int(train_store.episode_lengths[ep]) - T + 1)))
               for ep in rng.choice(np.flatnonzero(train_store.episode_lengths >= T), len(events))]
    feats, labels = _features_of(wm, train_store, events + randoms, T, amp, "heads: features", labels_E)
    sample_rate = labels.mean(dim=(0, 1)).clamp(1e-6, 1 - 1e-6)  # per event, in the cached sample
    true_rate = torch.tensor([terminal_rate, reward_rate]).clamp(1e-6, 1 - 1e-6)

    heads_cfg = dataclasses.replace(cfg.heads, enabled=True, reward_value=reward_value, horizon=horizon,
                                    reward_ends_episode=reward_ends_episode)
    heads = EventHeads(heads_cfg, cfg.dynamics.d_model)
    opt = torch.optim.AdamW(heads.parameters(), lr=args.lr or 1e-3, weight_decay=1e-4)
    batch = args.batch_size or 64
    gen = torch.Generator().manual_seed(args.seed)
    bar = tqdm(range(steps), desc="train heads", mininterval=2)
    for _ in bar:
        idx = torch.randint(0, len(feats), (batch,), generator=gen)
        logits = heads(feats[idx].float())
        loss = F.binary_cross_entropy_with_logits(logits, labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    with torch.no_grad():  # prior correction: probabilities of the data's event rates, not the sample's
        heads.mlp[-1].bias += _logit(true_rate) - _logit(sample_rate)

    scores = evaluate_heads(wm, heads, val_store, T, amp, args.heads_eval_episodes, args.seed, horizon)
    wm.config = dataclasses.replace(cfg, heads=heads_cfg)
    wm.heads = heads
    out = run / "world_model.pt"
    wm.save(out, {**wm.metadata, "heads": {"data": str(args.data), "steps": steps, "train_clips": len(feats),
                                           "reward_value": reward_value, "terminal_rate": terminal_rate,
                                           "reward_rate": reward_rate, "validation": scores,
                                           "seconds": round(time.time() - t0, 1)}},
            dtype=getattr(torch, wm.file_dtype))
    summary = ", ".join(f"{e} precision {scores[e]['precision']:.2f} recall {scores[e]['recall']:.2f} "
                        f"({scores[e]['events']} events)" for e in EVENTS if e in scores)
    print(f"heads: {summary or 'no held-out episodes'} -> {out}")
    return out


@torch.no_grad()
def evaluate_heads(wm: WorldModel, heads: EventHeads, store: EpisodeStore, T: int, amp: bool, max_episodes: int,
                   seed: int, horizon: int = 1) -> dict[str, Any]:
    """Precision / recall of each event on held-out episodes (`precision_recall`; whole episodes tiled backwards from
    their last frame by T-frame windows), one step ahead (real context), at the heads' threshold."""
    windows = tiling_windows(store, T, max_episodes, np.random.default_rng(seed))
    if not windows:
        return {"note": "no held-out episode of seq_len frames"}
    exact = {ep: frame_labels(store, ep) for ep in {ep for ep, _ in windows}}
    feats, labels = _features_of(wm, store, windows, T, amp, "heads: held-out", exact)
    dev = next(heads.parameters()).device
    probs = torch.sigmoid(torch.cat([heads(feats[i:i + 64].to(dev).float()).cpu()
                                     for i in range(0, len(feats), 64)])).numpy()
    by_episode: dict[int, list[int]] = {}
    for i, (ep, _) in enumerate(windows):
        by_episode.setdefault(ep, []).append(i)
    order = {ep: idx[::-1] for ep, idx in by_episode.items()}  # windows were listed from the episode's end backwards
    probs_E = {ep: probs[idx].reshape(-1, len(EVENTS)) for ep, idx in order.items()}
    events_E = {ep: labels.numpy()[idx].reshape(-1, len(EVENTS)) for ep, idx in order.items()}
    out: dict[str, Any] = {}
    for k, e in enumerate(EVENTS):
        probs_k, events_k = [p[:, k] for p in probs_E.values()], [v[:, k] for v in events_E.values()]
        out[e] = {**precision_recall(probs_k, events_k, heads.cfg.threshold, horizon),
                  "curve": pr_curve(probs_k, events_k, horizon=horizon)}
    out["episodes"] = len(order)
    return out


def check_heads_args(args: Args) -> None:
    if args.heads_horizon < 1:
        raise ConfigError(f"--heads-horizon must be >= 1 (1: only the frame before the event), got "
                          f"{args.heads_horizon}")
    if args.heads_clips < 1 or args.heads_eval_episodes < 1:
        raise ConfigError(f"--heads-clips ({args.heads_clips}) and --heads-eval-episodes "
                          f"({args.heads_eval_episodes}) must be >= 1")
    if args.model is None and not (Path(args.out) / "world_model.pt").is_file():
        raise ConfigError(f"phase heads needs a trained world model: {Path(args.out) / 'world_model.pt'} does not "
                          "exist; train phase dynamics first or pass --model FILE")
    if not math.isfinite(args.lr or 1e-3):
        raise ConfigError(f"--lr must be finite, got {args.lr}")
