"""`genie-gym train --phase heads`: reward and episode-end heads on a trained, frozen world model.

    genie-gym train --phase heads --out RUN --data DIR [--model FILE]   # FILE default RUN/world_model.pt

The two unsupervised phases never read rewards or episode ends; this third, small phase does, as DIAMOND, IRIS and
DreamerV3 learn them beside their dynamics. Labels of frame t of an episode of L frames (the data's arrays,
`manifest.json`), with `--heads-horizon` k: `terminal` = the episode ends within the next k transitions (t >= L - k),
by the game, not by the recording's or Procgen's 1000-step time limit; `reward` = one of the next k transitions pays
a non-zero reward (CoinRun: the coin, on the last transition). k = 1 is the strict "the transition out of this frame";
Procgen returns the next level's first frame after the last transition, so the frame that shows the agent on the
coin or the enemy never reaches the data, and k > 1 labels the approach instead. Input: the recorded frames t-K+1..t
(`HeadsConfig.frames`), what Genie-v0 shows of a world (models/heads.py says why pixels and not the dynamics'
features).

1. The sample: every frame labelled with an event (up to `--heads-events`) and `--heads-negatives` times as many
   random frames of the train split, held in RAM (K x 12 KiB a frame at 64x64), or with `--heads-stream` read from
   the shards batch by batch (the same batches, for samples larger than RAM); `--heads-reconstructed` p shows a
   random share p of it as the tokenizer's reconstructions (each sample's K frames encoded and decoded as a clip),
   the frames Genie-v0's heads read being decoded ones.
2. The heads train on it (`--steps` AdamW steps of `--batch-size` frames, cosine decay; bf16 autocast on CUDA, and on
   the CPU with --cpu-bf16). Event frames are over-represented in that sample, so at the end each head's bias is
   shifted by the log-odds ratio between the data's event rate and the sample's (prior correction): its
   probabilities are those of the real frequency.
3. Held-out scores (every frame of up to `--heads-eval-episodes` validation episodes), per event at
   `HeadsConfig.threshold`: precision = the share of firing frames that are within k transitions of that event,
   recall = the share of events with a firing frame among the k frames before them (k = 1: plain per-frame
   precision and recall; the constant "never" predictor has recall 0), and the curve over thresholds. They go into
   the model's metadata; `genie-gym eval` reports the same on the test split, and on generated frames.
4. RUN/world_model.pt is (re)written with the heads (`config.heads.enabled`, the data's mean non-zero reward as
   `reward_value`, `horizon`, and `reward_ends_episode` when 99% of the data's rewards came with their episode's end);
   the tokenizer, LAM and dynamics are untouched.

`--resume` continues from RUN/heads/last.pt (heads, optimiser, schedule, the batch generator; the sample is drawn
again from the same seed), written every `--ckpt-every` steps and when `--time-limit-min` or `--stop-at` stops the
run; a checkpoint of other inputs (model file, data, seed, sample sizes, steps) is refused.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from genie_gym.config import HeadsConfig, apply_overrides
from genie_gym.data.dataset import EpisodeStore
from genie_gym.errors import CheckpointError, ConfigError, DatasetError
from genie_gym.models.frames import to_float, to_uint8
from genie_gym.models.heads import EVENTS, EventHeads, frame_windows
from genie_gym.models.world_model import WorldModel
from genie_gym.training.checkpoint import load_checkpoint, save_checkpoint
from genie_gym.utils.device import available_memory_bytes, resolve_device
from genie_gym.utils.io import sha256_file
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


def event_windows(labels_E: list[np.ndarray], T: int) -> list[tuple[int, int]]:
    """(episode, first frame) of the T-frame window ending on each event frame (`frame_labels` per episode)."""
    return [(ep, t - T + 1) for ep, labels in enumerate(labels_E) for t in np.flatnonzero(labels.any(1)) if t >= T - 1]


def heads_input(store: EpisodeStore, ep: int, t: int, frames: int) -> np.ndarray:
    """(K, H, W, C) uint8: frames t-K+1..t of episode `ep` (its first frame repeated before it starts)."""
    lo = max(0, t - frames + 1)
    return frame_windows(store.frames(ep, lo, t + 1), frames)[-1]


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
    curve = []
    for th in thresholds:
        pr = precision_recall(probs_E, events_E, th, horizon)
        curve.append({"threshold": th, "precision": pr["precision"], "recall": pr["recall"],
                      "predicted": pr["predicted"]})
    return curve


def score_events(probs_E: list[np.ndarray], events_E: list[np.ndarray], cfg: HeadsConfig) -> dict[str, Any]:
    """Per event (and, for heads whose reward ends the episode, `terminated`: Genie-v0's episode end, either head
    firing): `precision_recall` at the heads' threshold and horizon, with the curve over thresholds. Per episode or
    clip: probabilities (L, 2) and labels (L, 2) of its scored frames, in order."""
    columns = {e: ([p[:, k] for p in probs_E], [v[:, k] for v in events_E]) for k, e in enumerate(EVENTS)}
    if cfg.reward_ends_episode:  # a coin ends CoinRun's episode
        columns["terminated"] = ([p.max(1) for p in probs_E], columns["terminal"][1])
    return {e: {**precision_recall(p, v, cfg.threshold, cfg.horizon), "curve": pr_curve(p, v, horizon=cfg.horizon)}
            for e, (p, v) in columns.items()}


def train_heads(args: Args) -> Path:
    """Train the event heads of `args.model` (default RUN/world_model.pt) and write RUN/world_model.pt."""
    t0 = time.time()
    run = Path(args.out)
    source = Path(args.model) if args.model is not None else run / "world_model.pt"
    wm = WorldModel.load(source)
    cfg = apply_overrides(wm.config, args.set)  # heads.FIELD=VALUE only (check_heads_args)
    steps = args.steps or 4000
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
    heads_cfg = dataclasses.replace(cfg.heads, enabled=True, reward_value=reward_value, horizon=horizon,
                                    reward_ends_episode=reward_ends_episode)
    K = heads_cfg.frames
    events = [(ep, int(t)) for ep, labels in enumerate(labels_E) for t in np.flatnonzero(labels.any(1))]
    rng.shuffle(events)
    events = events[: args.heads_events]
    if not events:
        raise DatasetError(f"no episode of {args.data} ({args.split}) ends in an event: nothing for the heads to "
                           "learn; record longer episodes")
    lengths = train_store.episode_lengths
    randoms = [(int(ep), int(rng.integers(0, int(lengths[ep]))))
               for ep in rng.integers(0, len(lengths), args.heads_negatives * len(events))]
    sample = events + randoms
    shape = (len(sample), K, *train_store.frames(0, 0, 1).shape[1:])
    need, free = int(np.prod(shape)), available_memory_bytes(torch.device("cpu"))
    if not args.heads_stream and free is not None and need > 0.8 * free:
        raise ConfigError(f"the heads' training sample ({len(events)} event frames x {1 + args.heads_negatives}, "
                          f"{K} frames each) needs {need / 2**30:.1f} GiB of RAM but {free / 2**30:.1f} GiB are "
                          "free; pass --heads-stream to read it from the shards batch by batch, or lower "
                          "--heads-events or --heads-negatives")
    x_u8: np.ndarray | None = None  # --heads-stream: each batch is read from the shards
    if not args.heads_stream:
        x_u8 = np.empty(shape, dtype=np.uint8)  # filled in place (a list then np.stack would need twice the RAM)
        for i, (ep, t) in enumerate(tqdm(sample, desc="heads: frames", mininterval=2)):
            x_u8[i] = heads_input(train_store, ep, t, K)
    device = resolve_device(args.device)
    amp = bool(args.bf16) if device.type == "cuda" else bool(args.cpu_bf16)
    if args.heads_reconstructed > 0:  # a share of the sample as Genie-v0 shows frames: through the tokenizer
        assert x_u8 is not None  # check_heads_args refuses --heads-reconstructed with --heads-stream
        wm.to(device)
        chosen = np.sort(rng.permutation(len(sample))[: round(args.heads_reconstructed * len(sample))])
        for i in tqdm(range(0, len(chosen), 64), desc="heads: reconstructions", mininterval=2):
            rows = chosen[i:i + 64]
            x_u8[rows] = reconstruct(wm, x_u8[rows], amp)
    y = torch.from_numpy(np.stack([labels_E[ep][t] for ep, t in sample]))
    sample_rate = y.mean(0).clamp(1e-6, 1 - 1e-6)  # per event, in the training sample
    true_rate = torch.tensor([terminal_rate, reward_rate]).clamp(1e-6, 1 - 1e-6)

    heads = EventHeads(heads_cfg, cfg.image_size, cfg.channels).to(device)
    opt = torch.optim.AdamW(heads.parameters(), lr=args.lr or 1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    batch = args.batch_size or 128
    gen = torch.Generator().manual_seed(args.seed)
    # what the sample and the schedule depend on: a checkpoint of other inputs is refused, not silently continued
    inputs = {"model_sha256": sha256_file(source), "data": str(Path(args.data).resolve()), "split": args.split,
              "seed": args.seed, "heads_events": args.heads_events, "heads_negatives": args.heads_negatives,
              "heads_reconstructed": args.heads_reconstructed, "heads_horizon": horizon, "set": list(args.set),
              "steps": steps, "batch_size": batch, "lr": args.lr}
    ckpt_dir = run / "heads"
    step, seconds_before, loss = 0, 0.0, torch.tensor(float("nan"))
    if args.resume and (ckpt_dir / "last.pt").is_file():
        ckpt = load_checkpoint(ckpt_dir / "last.pt")
        if ckpt.get("phase") != "heads" or ckpt.get("inputs") != inputs:
            raise CheckpointError(f"{ckpt_dir / 'last.pt'} was written by a heads run with other inputs "
                                  f"({ckpt.get('inputs')}); rerun with the same arguments, or drop --resume / "
                                  "use another --out to start again")
        heads.load_state_dict(ckpt["model"]["heads"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        gen.set_state(ckpt["generator"])
        step, seconds_before, loss = int(ckpt["step"]), float(ckpt["seconds"]), torch.tensor(ckpt["loss"])
        print(f"resumed phase 'heads' from {ckpt_dir / 'last.pt'} at step {step}")
    elif args.resume:
        print(f"--resume: no checkpoint at {ckpt_dir / 'last.pt'}, starting phase 'heads' from step 0")

    def save(at: int) -> None:
        save_checkpoint({"phase": "heads", "config": dataclasses.replace(cfg, heads=heads_cfg).to_dict(),
                         "inputs": inputs, "loss": loss.item(),
                         "model": {"heads": heads.state_dict()}, "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict(), "generator": gen.get_state(), "step": at,
                         "seconds": seconds_before + time.time() - t0}, ckpt_dir, at, keep=args.keep)

    stop = min(steps, args.stop_at or steps)
    bar = tqdm(range(step, stop), desc="train heads", mininterval=2, initial=step, total=steps)
    for step in bar:
        idx = torch.randint(0, len(sample), (batch,), generator=gen)
        x_BKHWC = x_u8[idx.numpy()] if x_u8 is not None else \
            np.stack([heads_input(train_store, *sample[i], K) for i in idx.tolist()])
        frames = to_float(torch.from_numpy(x_BKHWC).to(device))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = heads(frames)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        done = step + 1
        timed_out = bool(args.time_limit_min) and time.time() - t0 > 60 * args.time_limit_min
        if done % args.ckpt_every == 0 or done == stop or timed_out:
            save(done)
        if timed_out and done < stop:
            bar.close()
            print(f"--time-limit-min {args.time_limit_min} reached at step {done}; checkpoint written, continue "
                  "with --resume")
            return ckpt_dir / "last.pt"
    bar.close()
    if stop < steps:
        print(f"--stop-at {stop}: checkpoint written at step {stop} of {steps}, continue with --resume")
        return ckpt_dir / "last.pt"
    with torch.no_grad():  # prior correction: probabilities of the data's event rates, not the sample's
        heads.mlp[-1].bias += (_logit(true_rate) - _logit(sample_rate)).to(device)
    heads.eval()

    wm.config = dataclasses.replace(cfg, heads=heads_cfg)
    wm.heads = heads
    wm.to(device)
    scores = evaluate_heads(wm, val_store, args.heads_eval_episodes, args.seed, amp)
    out = run / "world_model.pt"
    wm.save(out, {**wm.metadata, "heads": {"data": str(args.data), "steps": steps, "train_frames": len(sample),
                                           "reconstructed": args.heads_reconstructed, "event_frames": len(events),
                                           "final_loss": round(loss.item(), 5),
                                           "reward_value": reward_value, "terminal_rate": terminal_rate,
                                           "reward_rate": reward_rate, "validation": scores,
                                           "seconds": round(seconds_before + time.time() - t0, 1)}},
            dtype=getattr(torch, wm.file_dtype))
    summary = ", ".join(f"{e} precision {scores[e]['precision']:.2f} recall {scores[e]['recall']:.2f} "
                        f"({scores[e]['events']} events)" for e in EVENTS if e in scores)
    print(f"heads: {summary or 'no held-out episodes'} -> {out}")
    return out


@torch.no_grad()
def reconstruct(wm: WorldModel, clips_BTHWC: np.ndarray, amp: bool) -> np.ndarray:
    """uint8 clips (B, T, H, W, C) -> the model's tokenizer's reconstructions (encoded, then decoded), uint8."""
    dev = next(wm.tokenizer.parameters()).device
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
        frames = to_float(torch.from_numpy(clips_BTHWC).to(dev))
        return to_uint8(wm.tokenizer.decode(wm.tokenizer.encode(frames)).float()).cpu().numpy()


def heldout_episodes(store: EpisodeStore, max_episodes: int, seed: int) -> list[int]:
    """The up to `max_episodes` random episodes of `store` that the heads are scored on (the same per seed)."""
    eps = np.arange(len(store.episode_lengths))
    np.random.default_rng(seed).shuffle(eps)
    return eps[:max_episodes].tolist()


@torch.no_grad()
def heads_probs(wm: WorldModel, store: EpisodeStore, max_episodes: int, seed: int, amp: bool,
                frames_fn: Callable[[np.ndarray], np.ndarray] | None = None
                ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The heads' probabilities (L, 2) and the labels (L, 2) of every frame of up to `max_episodes` random held-out
    episodes (`heldout_episodes`, in its order). `frames_fn` maps an episode's uint8 frames (L, H, W, C) to those the
    heads read (default: the real frames)."""
    heads, K = wm.heads, wm.config.heads.frames
    dev = next(heads.parameters()).device
    probs_E, events_E = [], []
    for ep in tqdm(heldout_episodes(store, max_episodes, seed), desc="heads: held-out", leave=False):
        frames_LHWC = store.frames(ep, 0, int(store.episode_lengths[ep]))
        x_u8 = frame_windows(frames_fn(frames_LHWC) if frames_fn is not None else frames_LHWC, K)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            logits = torch.cat([heads(to_float(torch.from_numpy(x_u8[i:i + 256]).to(dev))).float()
                                for i in range(0, len(x_u8), 256)])
        probs_E.append(torch.sigmoid(logits).cpu().numpy())
        events_E.append(frame_labels(store, ep))
    return probs_E, events_E


def evaluate_heads(wm: WorldModel, store: EpisodeStore, max_episodes: int, seed: int, amp: bool,
                   frames_fn: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, Any]:
    """Precision / recall of each event one step ahead on every frame of up to `max_episodes` random held-out
    episodes (`heads_probs`; `precision_recall` at the heads' threshold and horizon, and the curve over thresholds;
    for heads whose reward ends the episode, also `terminated`: Genie-v0's episode end, either head firing)."""
    probs_E, events_E = heads_probs(wm, store, max_episodes, seed, amp, frames_fn)
    if not probs_E:
        return {"note": "no held-out episode"}
    return {**score_events(probs_E, events_E, wm.config.heads), "episodes": len(probs_E)}


def check_heads_args(args: Args) -> None:
    if args.heads_horizon < 1:
        raise ConfigError(f"--heads-horizon must be >= 1 (1: only the frame before the event), got "
                          f"{args.heads_horizon}")
    if not 0.0 <= args.heads_reconstructed <= 1.0:
        raise ConfigError(f"--heads-reconstructed is a share of the training sample, in [0, 1], got "
                          f"{args.heads_reconstructed}")
    if args.heads_stream and args.heads_reconstructed > 0:
        raise ConfigError("--heads-reconstructed replaces frames of the sample held in RAM: drop --heads-stream, or "
                          "--heads-reconstructed")
    if args.heads_events < 1 or args.heads_negatives < 0 or args.heads_eval_episodes < 1:
        raise ConfigError(f"--heads-events ({args.heads_events}) and --heads-eval-episodes "
                          f"({args.heads_eval_episodes}) must be >= 1, --heads-negatives ({args.heads_negatives}) "
                          ">= 0")
    if args.model is None and not (Path(args.out) / "world_model.pt").is_file():
        raise ConfigError(f"phase heads needs a trained world model: {Path(args.out) / 'world_model.pt'} does not "
                          "exist; train phase dynamics first or pass --model FILE")
    not_heads = [item for item in args.set if not item.strip().startswith("heads.")]
    if not_heads:
        raise ConfigError(f"phase heads trains only the heads: --set takes heads.FIELD=VALUE (e.g. heads.frames=3), "
                          f"got {not_heads}")
    if not math.isfinite(args.lr or 1e-3):
        raise ConfigError(f"--lr must be finite, got {args.lr}")
