"""Event heads on the frames Genie-v0 shows them: real, redrawn by the tokenizer, dreamed.

`genie-gym train --phase heads` trains the reward / episode-end heads on recorded frames, and `genie-gym eval`
scores them one step ahead on real held-out episodes and on 10-step rollouts from one real frame. Inside Genie-v0
they read decoded frames. This study scores one heads file three ways on the same held-out data, each at every
threshold of `training.heads.CURVE_THRESHOLDS` (precision / recall as `precision_recall` counts them, at the heads'
horizon):
1. `real`: every frame of `--episodes` held-out episodes (what `genie-gym eval` reports as `one_step`);
2. `reconstructed`: the same frames encoded and decoded by the model's tokenizer (seq_len-frame windows from each
   episode's start): what the heads see when every token is right;
3. `rollout_C`: clips of 11 real frames ending on an event (`evaluate.event_rollout_windows`, beside as many random
   clips), the first C real and the rest generated with the LAM's actions of the real clip, the heads scored on
   every generated frame, per C in `--contexts` (1: ten dreamed steps; 10: only the event frame dreamed).
On the real frames it also says where the false alarms fall: the share of the frames that fire without an event of
their kind that lie 1, 2, 3-5 or 6-10 frames before one (near misses: the agent already at the enemy or the coin), or
farther; and which episode ends the end head finds: those that take the coin, and deaths (while falling or not).

    python benchmarks/studies/heads_frames.py --model runs/s18/heads_s2/world_model.pt \
        --data data/coinrun_hard_sticky_s2 --out benchmarks/results/heads_data/frames_s2

writes <out>.json and <out>.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from genie_gym.data.dataset import EpisodeStore
from genie_gym.evaluation.evaluate import event_rollout_windows, rollout_event_probs
from genie_gym.evaluation.metrics import best_shift
from genie_gym.models.heads import EVENTS
from genie_gym.models.world_model import WorldModel
from genie_gym.training.heads import (
    CURVE_THRESHOLDS,
    evaluate_heads,
    frame_labels,
    heads_probs,
    heldout_episodes,
    reconstruct,
    score_events,
)
from genie_gym.utils.io import atomic_write_json, write_markdown

K = 10  # generated steps of a rollout from one real frame (genie-gym eval's rollout_steps)
GAPS = ((1, 1), (2, 2), (3, 5), (6, 10))  # frames before the next event of the kind, false_alarms' columns


@dataclass
class Args:
    """Score a world model's event heads on real, reconstructed and generated held-out frames."""

    model: Path = Path("runs/heads/world_model.pt")
    """world-model file with heads (`genie-gym train --phase heads`)"""
    data: Path = Path("data/coinrun_hard_sticky_s2")
    """dataset holding the held-out split"""
    split: str = "test"
    """held-out split scored"""
    episodes: int = 200
    """held-out episodes scored on real and reconstructed frames (every frame)"""
    rollout_clips: int = 64
    """clips ending on an event (and as many random ones) for the rollouts"""
    contexts: tuple[int, ...] = (1, 10)
    """real frames before the generated ones, one score each (1..10; none: no rollouts)"""
    reconstructed: bool = True
    """also score the tokenizer's reconstructions of the real frames"""
    batch_size: int = 16
    """rollouts generated together"""
    seed: int = 0
    """seed for the episodes, the clips and the rollouts"""
    threads: int = 2
    """torch threads"""
    out: Path = Path("benchmarks/results/heads_data/frames")
    """writes OUT.json and OUT.md"""


def reconstruct_fn(wm: WorldModel):
    """uint8 frames (L, H, W, C) -> the tokenizer's reconstructions, seq_len-frame windows from the first frame."""
    T = wm.config.seq_len

    def fn(frames_LHWC: np.ndarray) -> np.ndarray:
        return np.concatenate([reconstruct(wm, frames_LHWC[None, s:s + T], amp=True)[0]
                               for s in range(0, len(frames_LHWC), T)])

    return fn


def rollout_scores(wm: WorldModel, store: EpisodeStore, args: Args, C: int) -> dict:
    """The heads on the generated frames of rollouts from C real frames (the LAM's actions of the real clip)."""
    if not 1 <= C <= K:
        raise ValueError(f"--contexts takes 1..{K} real frames, got {C}")
    labels_E = [frame_labels(store, e) for e in range(len(store.episode_lengths))]
    windows, n_events = event_rollout_windows(store, labels_E, K, args.rollout_clips, args.seed)
    probs_W, labels_W = rollout_event_probs(wm, store, labels_E, windows, K, C, args.seed, args.batch_size,
                                            torch.device("cpu"))
    return {**score_events(probs_W, labels_W, wm.config.heads), "event_clips": n_events,
            "random_clips": len(windows) - n_events, "generated_steps": K + 1 - C}


def curve_table(first: str, rows: dict[str, dict]) -> list[str]:
    """Markdown table: a line per row name and event, its precision / recall at each of `CURVE_THRESHOLDS`
    (`score_events`' curves); `first` heads the name column."""
    lines = [f"| {first} | event | events | " + " | ".join(str(t) for t in CURVE_THRESHOLDS) + " |",
             "|---|---|---|" + "---|" * len(CURVE_THRESHOLDS)]
    for name, row in rows.items():
        for e in EVENTS:
            lines.append(f"| {name} | {e} | {row[e]['events']} | " + " | ".join(
                f"{c['precision']:.2f} / {c['recall']:.2f}" for c in row[e]["curve"]) + " |")
    return lines


def false_alarms(probs_E: list[np.ndarray], events_E: list[np.ndarray], threshold: float) -> dict:
    """Per event kind: the frames firing at `threshold` on no event of their kind, and the share of them that lie
    within each of `GAPS` frames before the next event of that kind in their episode (the rest: farther or none)."""
    out = {}
    for k, e in enumerate(EVENTS):
        gaps = []
        for probs_L, events_L in zip(probs_E, events_E, strict=True):
            at = np.flatnonzero(events_L[:, k] > 0)
            for t in np.flatnonzero((probs_L[:, k] >= threshold) & (events_L[:, k] == 0)):
                later = at[at > t]
                gaps.append(int(later[0] - t) if later.size else 10**9)
        gaps_F = np.asarray(gaps)
        out[e] = {"false_alarms": len(gaps), **{f"{lo}-{hi}": float(((gaps_F >= lo) & (gaps_F <= hi)).mean())
                                                if gaps else 0.0 for lo, hi in GAPS}}
    return out


def falling_at_end(store: EpisodeStore, episodes: list[int]) -> list[bool]:
    """Per episode: did the picture scroll up between its last two frames (`metrics.best_shift` dy > 0: CoinRun's
    camera follows the agent, so the agent was falling when the episode ended)? False for a one-frame episode."""
    out = []
    for ep in episodes:
        L = int(store.episode_lengths[ep])
        if L < 2:
            out.append(False)
            continue
        prev_HWC, last_HWC = store.frames(ep, L - 2, L).astype(np.float32) / 255
        out.append(best_shift(prev_HWC, last_HWC)[1] > 0)
    return out


def ends_by_kind(probs_E: list[np.ndarray], events_E: list[np.ndarray], threshold: float,
                 falling_E: list[bool]) -> dict:
    """The episode-end head's recall (horizon 1) on each kind of end: `coin` (the end's transition pays, CoinRun's
    coin), `death` (it does not: an enemy, a saw, lava), and the deaths split by whether the agent was falling
    (`falling_at_end`, per episode): `death, falling` and `death, not falling`; with how many ends of each kind."""
    kinds = ("coin", "death", "death, falling", "death, not falling")
    found, ends = dict.fromkeys(kinds, 0), dict.fromkeys(kinds, 0)
    for probs_L, events_L, falling in zip(probs_E, events_E, falling_E, strict=True):
        for t in np.flatnonzero(events_L[:, 0] > 0):
            hit = int(probs_L[t, 0] >= threshold)
            for kind in ["coin"] if events_L[t, 1] > 0 else \
                    ["death", "death, falling" if falling else "death, not falling"]:
                ends[kind] += 1
                found[kind] += hit
    return {k: {"ends": ends[k], "recall": found[k] / max(ends[k], 1)} for k in kinds}


def main(args: Args) -> dict:
    t0 = time.time()
    torch.set_num_threads(args.threads)
    wm = WorldModel.load(args.model)
    if wm.heads is None:
        raise SystemExit(f"{args.model} has no event heads; train them with `genie-gym train --phase heads`")
    store = EpisodeStore(args.data, args.split)
    probs_E, events_E = heads_probs(wm, store, args.episodes, args.seed, amp=False)
    falling_E = falling_at_end(store, heldout_episodes(store, args.episodes, args.seed))
    result: dict = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                    "real": {**score_events(probs_E, events_E, wm.config.heads), "episodes": len(probs_E)},
                    "false_alarms": {str(th): false_alarms(probs_E, events_E, th) for th in CURVE_THRESHOLDS},
                    "ends_by_kind": {str(th): ends_by_kind(probs_E, events_E, th, falling_E)
                                     for th in CURVE_THRESHOLDS}}
    if args.reconstructed:
        result["reconstructed"] = evaluate_heads(wm, store, args.episodes, args.seed, amp=False,
                                                 frames_fn=reconstruct_fn(wm))
    for C in args.contexts:
        result[f"rollout_{C}"] = rollout_scores(wm, store, args, C)
    result["seconds"] = round(time.time() - t0, 1)
    atomic_write_json(args.out.with_suffix(".json"), result)
    no_recon = "" if args.reconstructed else " --no-reconstructed"
    contexts = "".join(f" {C}" for C in args.contexts)
    scored = "`real` and `reconstructed`" if args.reconstructed else "`real`"
    frame_kinds = ["real", *(["reconstructed"] if args.reconstructed else []), *(f"rollout_{C}" for C in args.contexts)]
    lines = ["# Event heads on real, reconstructed and generated frames", "",
             f"`python benchmarks/studies/heads_frames.py --model {args.model} --data {args.data} --split {args.split} "
             f"--episodes {args.episodes} --rollout-clips {args.rollout_clips} --contexts"
             f"{contexts}{no_recon} --out {args.out}` ({result['seconds'] / 60:.1f} min; "
             f"heads threshold {wm.config.heads.threshold}, horizon {wm.config.heads.horizon}). Precision / recall at "
             "each threshold:", "",
             *curve_table("frames", {kind: result[kind] for kind in frame_kinds})]
    rollouts = ", ".join(f"C = {C}: {result[f'rollout_{C}']['event_clips']} clips ending on an event and "
                         f"{result[f'rollout_{C}']['random_clips']} random, "
                         f"{result[f'rollout_{C}']['generated_steps']} generated frames each" for C in args.contexts)
    lines += ["", f"{scored}: every frame of {result['real']['episodes']} {args.split} episodes."
              + (f" `rollout_C`: {rollouts}." if args.contexts else ""),
              "", "Where the false alarms on the real frames fall: frames that fire without an event of their kind, "
              "and the share of them 1, 2, 3-5, 6-10 frames before the next event of that kind in their episode "
              "(the rest: farther, or none follows):", "",
              "| event | threshold | false alarms | " + " | ".join(f"{lo}-{hi}" if lo < hi else str(lo)
                                                         for lo, hi in GAPS) + " |",
              "|---|---|---|" + "---|" * len(GAPS)]
    for e in EVENTS:
        for th in CURVE_THRESHOLDS:
            f = result["false_alarms"][str(th)][e]
            lines.append(f"| {e} | {th} | {f['false_alarms']} | " + " | ".join(
                f"{f[f'{lo}-{hi}']:.2f}" for lo, hi in GAPS) + " |")
    kinds = result["ends_by_kind"][str(CURVE_THRESHOLDS[0])]
    lines += ["", "The episode-end head's recall on the real frames per kind of end (horizon 1; a coin: the end's "
              f"transition pays, {kinds['coin']['ends']} ends; a death: it does not, {kinds['death']['ends']} "
              f"ends, of which {kinds['death, falling']['ends']} with the agent falling: the picture scrolled up "
              "between the episode's last two frames):", "",
              "| kind | " + " | ".join(str(t) for t in CURVE_THRESHOLDS) + " |",
              "|---|" + "---|" * len(CURVE_THRESHOLDS)]
    for kind in kinds:
        lines.append(f"| {kind} | " + " | ".join(f"{result['ends_by_kind'][str(th)][kind]['recall']:.2f}"
                                                for th in CURVE_THRESHOLDS) + " |")
    write_markdown(args.out.with_suffix(".md"), lines)
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
