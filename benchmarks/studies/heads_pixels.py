"""How much do the frames themselves say about a CoinRun event one step ahead? (a ceiling for the event heads)

The event heads read the frozen dynamics' features of a frame; on held-out episodes they find coins but hardly any
episode end (`benchmarks/results/heads_data/README.md`). This probe reads the pixels instead: a small CNN on the
real frames t-k+1..t (no tokenizer, no world model), trained on the same labels (`training.heads.frame_labels`,
horizon 1: the transition out of frame t ends the episode / pays) from every event frame of the train split and
`--negatives` times as many random frames, with the heads' prior correction, and scored like `genie-gym eval`'s
heads: every frame of the same `--eval-episodes` held-out episodes (`tiling_windows`, seed 0), precision / recall
and the curve over thresholds. If a CNN on the real pixels cannot find episode ends, no head on a world model's
features or generated frames will.

    python benchmarks/studies/heads_pixels.py --data data/coinrun_hard_sticky_s1 --negatives 20 --steps 4000 \
        --world-model genie_gym/assets/world_model.pt --rollout-contexts 1 10 \
        --out benchmarks/results/heads_data/pixels_neg20

writes <out>.json and <out>.md (default benchmarks/results/heads_data/pixels).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from tqdm import tqdm

from genie_gym.data.dataset import EpisodeStore
from genie_gym.models.heads import EVENTS
from genie_gym.training.heads import CURVE_THRESHOLDS, frame_labels, pr_curve, precision_recall
from genie_gym.utils.io import atomic_write_json, write_markdown

THRESHOLDS = (*CURVE_THRESHOLDS, 0.95, 0.98, 0.99)  # the heads' curve and its top end (a confident probe)


@dataclass
class Args:
    """Train a pixel CNN on (terminal, reward) one step ahead and score it on held-out episodes."""

    data: Path = Path("data/coinrun_hard_sticky_s1")
    """dataset (train split: training; --split: scoring)"""
    split: str = "test"
    """held-out split scored"""
    frames: int = 2
    """frames t-k+1..t the CNN reads (2: the frame and the one before, i.e. its motion)"""
    negatives: int = 4
    """random frames per event frame in the training sample"""
    hard_negatives: int = 0
    """also the H frames before each event frame (near misses: the agent next to the coin or enemy a step early)"""
    steps: int = 3000
    """AdamW steps"""
    batch_size: int = 128
    """frames per step"""
    eval_episodes: int = 100
    """held-out episodes scored (every frame of their T-frame windows, as `genie-gym eval` scores the heads)"""
    window: int = 8
    """T of those windows (the shipped model's seq_len)"""
    seed: int = 0
    """seed for the sample, the initialisation and the batches"""
    world_model: Path | None = None
    """also score the probe on generated frames: this world model's 10-step rollouts (1 real frame, the LAM's
    actions) of `--rollout-clips` held-out clips ending on an event and as many random ones, as `genie-gym eval`
    scores the heads (None: skip)"""
    rollout_clips: int = 64
    """event clips for --world-model"""
    rollout_contexts: tuple[int, ...] = (1,)
    """--world-model: real frames before the generated ones, each a separate score (1: 10 generated frames; 10: only
    the event frame generated, from 10 real ones)"""
    threads: int = 2
    """torch threads"""
    out: Path = Path("benchmarks/results/heads_data/pixels")
    """writes OUT.json and OUT.md"""


class PixelProbe(nn.Module):
    """(B, k*3, 64, 64) -> (B, 2) logits: four convolutions down to an 8x8 grid, flattened (where a sprite is
    matters: the camera keeps the agent near the centre), an MLP."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 32, 4, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.GELU(),
            nn.Conv2d(64, 128, 4, stride=2, padding=1), nn.GELU(),
            nn.Flatten(), nn.Linear(128 * 8 * 8, 256), nn.GELU(), nn.Linear(256, len(EVENTS)))

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.net(x_BCHW)


def tiling_windows(store: EpisodeStore, T: int, max_episodes: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(episode, first frame) of T-frame windows tiling up to `max_episodes` random episodes backwards from their
    last frame (the frames the first, feature-reading heads were scored on)."""
    eps = np.flatnonzero(store.episode_lengths >= T)
    rng.shuffle(eps)
    return [(int(ep), start) for ep in eps[:max_episodes]
            for start in range(int(store.episode_lengths[ep]) - T, -1, -T)]


def window_of(clip_THWC: np.ndarray, t: int, k: int) -> np.ndarray:
    """(k*3, H, W) uint8: frames t-k+1..t of a clip (its first frame repeated before it starts)."""
    return clip_THWC[np.clip(np.arange(t - k + 1, t + 1), 0, None)].transpose(0, 3, 1, 2).reshape(
        -1, *clip_THWC.shape[1:3])


def stack(store: EpisodeStore, ep: int, t: int, k: int) -> np.ndarray:
    """`window_of` frame t of episode `ep`."""
    lo = max(0, t - k + 1)
    return window_of(store.frames(ep, lo, t + 1), t - lo, k)


def to_input(u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(u8).float().div_(127.5).sub_(1.0)


def score(probs_E: list[np.ndarray], events_E: list[np.ndarray]) -> dict:
    """Per event: precision / recall at 0.5 and the curve over THRESHOLDS (horizon 1)."""
    out: dict = {}
    for k, e in enumerate(EVENTS):
        p_k, v_k = [p[:, k] for p in probs_E], [v[:, k] for v in events_E]
        out[e] = {**precision_recall(p_k, v_k, 0.5), "curve": pr_curve(p_k, v_k, THRESHOLDS)}
    return out


@torch.no_grad()
def rollout_scores(args: Args, probe: PixelProbe, held: EpisodeStore, K: int = 10) -> dict:
    """The probe on generated frames, per C in `rollout_contexts`: `evaluate.score_heads`' clips of K+1 real frames
    (`event_rollout_windows`), the first C real, the rest generated through the Simulator with the LAM's actions;
    the probe reads frames k-1, k of that clip for every generated k (a real frame where k-1 < C)."""
    from genie_gym.evaluation.evaluate import event_rollout_windows, infer_actions_windowed, simulate
    from genie_gym.models.frames import to_float
    from genie_gym.models.world_model import WorldModel

    wm = WorldModel.load(args.world_model)
    labels_E = [frame_labels(held, e) for e in range(len(held.episode_lengths))]
    windows, n_events = event_rollout_windows(held, labels_E, K, args.rollout_clips, args.seed)
    out: dict = {}
    for C in args.rollout_contexts:
        if not 1 <= C <= K:
            raise ValueError(f"--rollout-contexts takes 1..{K} real frames, got {C}")
        probs_W, labels_W = [], []
        for i in tqdm(range(0, len(windows), 16), desc=f"pixels: rollouts from {C} real frames"):
            chunk = windows[i:i + 16]
            u8 = torch.stack([torch.from_numpy(held.frames(ep, s, s + K + 1)) for ep, s in chunk])
            acts = infer_actions_windowed(wm.lam, to_float(u8), wm.config.seq_len).numpy()  # (B, K)
            prompts = u8[:, 0].numpy() if C == 1 else u8[:, :C].numpy()
            gen = simulate(wm, prompts, acts[:, C - 1:], [args.seed * 31 + i + j for j in range(len(chunk))], None,
                           torch.device("cpu"), prompt_actions=acts[:, :C - 1] if C > 1 else None)
            clip_u8 = torch.cat([u8[:, :C], (gen * 255).round().to(torch.uint8)], dim=1).numpy()  # (B, K+1, ...)
            for b, (ep, s) in enumerate(chunk):
                x = np.stack([window_of(clip_u8[b], k, args.frames) for k in range(C, K + 1)])
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    probs_W.append(torch.sigmoid(probe(to_input(x)).float()).numpy())
                labels_W.append(labels_E[ep][s + C:s + K + 1])
        out[str(C)] = {"event_clips": n_events, "random_clips": len(windows) - n_events, "generated_steps": K + 1 - C,
                       **score(probs_W, labels_W)}
    return out


@torch.no_grad()
def recon_scores(args: Args, probe: PixelProbe, held: EpisodeStore, frames_by_ep: dict[int, list[int]]) -> dict:
    """The probe on the world model's tokenizer reconstructions of the same held-out frames (each T-frame window
    encoded and decoded as a clip): what heads reading Genie-v0's decoded frames see when the tokens are right."""
    from genie_gym.models.frames import to_float, to_uint8
    from genie_gym.models.world_model import WorldModel

    wm = WorldModel.load(args.world_model)
    probs_E, events_E = [], []
    for ep, ts in tqdm(frames_by_ep.items(), desc="pixels: reconstructed"):
        ts = sorted(ts)
        clip = torch.from_numpy(held.frames(ep, ts[0], ts[-1] + 1))
        T = args.window
        recon = []
        for s in range(0, len(clip), T):  # the tiling windows, first to last
            with torch.autocast("cpu", dtype=torch.bfloat16):
                r = wm.tokenizer.decode(wm.tokenizer.encode(to_float(clip[None, s:s + T])))
            recon.append(to_uint8(r[0]))
        rec = torch.cat(recon).numpy()
        x = np.stack([window_of(rec, t, args.frames) for t in range(len(rec))])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = torch.cat([probe(to_input(x[i:i + 256])) for i in range(0, len(x), 256)])
        probs_E.append(torch.sigmoid(logits.float()).numpy())
        events_E.append(frame_labels(held, ep)[ts])
    return score(probs_E, events_E)


def main(args: Args) -> dict:
    t0 = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train = EpisodeStore(args.data, "train")
    labels_E = [frame_labels(train, e) for e in range(len(train.episode_lengths))]
    events = [(e, t) for e, lab in enumerate(labels_E) for t in np.flatnonzero(lab.any(1))]
    lengths = train.episode_lengths
    eps = rng.integers(0, len(lengths), args.negatives * len(events))
    randoms = [(int(e), int(rng.integers(0, int(lengths[e])))) for e in eps]
    randoms += [(e, t - h) for e, t in events for h in range(1, args.hard_negatives + 1) if t - h >= 0]
    sample = events + randoms
    x_u8 = np.stack([stack(train, e, t, args.frames) for e, t in tqdm(sample, desc="pixels: sample")])
    y = torch.from_numpy(np.stack([labels_E[e][t] for e, t in sample]))
    true_rate = torch.from_numpy(np.concatenate(labels_E).mean(0)).clamp(1e-6, 1 - 1e-6)
    sample_rate = y.mean(0).clamp(1e-6, 1 - 1e-6)

    probe = PixelProbe(3 * args.frames)
    opt = torch.optim.AdamW(probe.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    gen = torch.Generator().manual_seed(args.seed)
    bar = tqdm(range(args.steps), desc="pixels: train", mininterval=2)
    for _ in bar:
        idx = torch.randint(0, len(sample), (args.batch_size,), generator=gen)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = probe(to_input(x_u8[idx.numpy()]))
        loss = F.binary_cross_entropy_with_logits(logits.float(), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    with torch.no_grad():  # the heads' prior correction: probabilities at the data's event rates
        probe.net[-1].bias += (torch.log(true_rate) - torch.log1p(-true_rate)) - (
            torch.log(sample_rate) - torch.log1p(-sample_rate))
    probe.eval()

    held = EpisodeStore(args.data, args.split)
    windows = tiling_windows(held, args.window, args.eval_episodes, np.random.default_rng(args.seed))
    frames_by_ep: dict[int, list[int]] = {}
    for ep, start in windows:
        frames_by_ep.setdefault(ep, []).extend(range(start, start + args.window))
    probs_E, events_E = [], []
    with torch.no_grad():
        for ep, ts in tqdm(frames_by_ep.items(), desc="pixels: held-out"):
            ts = sorted(ts)
            x = np.stack([stack(held, ep, t, args.frames) for t in ts])
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = torch.cat([probe(to_input(x[i:i + 256])) for i in range(0, len(x), 256)])
            probs_E.append(torch.sigmoid(logits.float()).numpy())
            events_E.append(frame_labels(held, ep)[ts])
    scores = score(probs_E, events_E)
    if args.world_model is not None:
        scores_recon = recon_scores(args, probe, held, frames_by_ep)
    generated = rollout_scores(args, probe, held) if args.world_model is not None else {}
    result = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "train_events": len(events), "train_sample": len(sample), "episodes": len(frames_by_ep),
              "final_loss": float(loss.detach()), "scores": scores,
              "scores_reconstructed": scores_recon if args.world_model is not None else {}, "generated": generated,
              "seconds": round(time.time() - t0, 1)}
    atomic_write_json(args.out.with_suffix(".json"), result)
    lines = [
        "# Event heads' ceiling: a CNN on the real pixels", "",
        f"`python benchmarks/studies/heads_pixels.py --data {args.data} --negatives {args.negatives} --steps "
        f"{args.steps}{f' --hard-negatives {args.hard_negatives}' if args.hard_negatives else ''}"
        f"{f' --frames {args.frames}' if args.frames != 2 else ''}"
        f"{f' --world-model {args.world_model}' if args.world_model else ''}"
        f"{' --rollout-contexts ' + ' '.join(map(str, args.rollout_contexts)) if args.world_model else ''} --out "
        f"{args.out}` "
        f"({result['seconds'] / 60:.1f} min; "
        f"frames t-{args.frames - 1}..t; {len(events)} train event frames + {len(randoms)} random; {args.steps} "
        f"steps). Scored on every frame of {len(frames_by_ep)} {args.split} episodes, horizon 1, precision / recall "
        "at each threshold:", "",
        "| event | events | " + " | ".join(str(th) for th in THRESHOLDS) + " |",
        "|---|---|" + "---|" * len(THRESHOLDS),
    ]
    for e in EVENTS:
        lines.append(f"| {e} | {scores[e]['events']} | " + " | ".join(
            f"{c['precision']:.2f} / {c['recall']:.2f}" for c in scores[e]["curve"]) + " |")
    header = lines[4:6]
    if result["scores_reconstructed"]:
        rec = result["scores_reconstructed"]
        lines += ["", f"On the same frames reconstructed by {args.world_model}'s tokenizer (each 8-frame window "
                  "encoded and decoded):", ""]
        lines += header + [f"| {e} | {rec[e]['events']} | " + " | ".join(
            f"{c['precision']:.2f} / {c['recall']:.2f}" for c in rec[e]["curve"]) + " |" for e in EVENTS]
    for C, g in generated.items():
        lines += ["", f"On generated frames ({args.world_model}: {g['event_clips']} clips ending on an event and "
                  f"{g['random_clips']} random, {C} real frame(s) then {g['generated_steps']} generated):", ""]
        lines += header + [f"| {e} | {g[e]['events']} | " + " | ".join(
            f"{c['precision']:.2f} / {c['recall']:.2f}" for c in g[e]["curve"]) + " |" for e in EVENTS]
    write_markdown(args.out.with_suffix(".md"), lines)
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
