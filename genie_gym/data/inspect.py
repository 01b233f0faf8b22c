"""`genie-gym data inspect DIR`: look at a dataset before training on it.

Prints frames, episodes, episode-length distribution, per-split counts, bytes per frame, the share of
episodes cut by --max-steps or solved, and the real-action histogram; writes a contact sheet (rows =
episodes, columns = frames spread over each episode) and a GIF of a few episodes side by side. Random-policy
data that never leaves the start of a level shows at a glance in the contact sheet."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tyro

from genie_gym.data import shards as S
from genie_gym.data.dataset import EpisodeStore
from genie_gym.utils.io import atomic_write_bytes, atomic_write_json


@dataclass
class Args:
    """Print dataset statistics and write a contact sheet PNG and a GIF of sample episodes."""

    root: tyro.conf.Positional[Path]
    """Dataset directory (the one holding manifest.json)."""
    out: Path | None = None
    """Where to write contact_sheet.png, episodes.gif and stats.json (default ROOT/inspect)."""
    split: str = "train"
    """Split whose episodes the pictures show."""
    num_episodes: int = 8
    """Episodes in the contact sheet (one per row); the GIF shows up to 4 of them."""
    frames_per_row: int = 8
    """Frames per contact-sheet row, spread evenly over each episode."""
    gif_frames: int = 64
    """Frames in the GIF (10 per second, as the paper's 10 FPS)."""
    action_shards: int = 32
    """At most this many shards per split are read for the action histogram (each is read whole)."""
    seed: int = 0
    """Seed for choosing the sample episodes."""


def dataset_stats(root: str | Path, action_shards: int = 32) -> dict[str, Any]:
    """Statistics of a dataset as a dict (what `inspect` prints and writes to stats.json)."""
    m = S.load_manifest(root)
    total_bytes = sum(e["bytes"] for e in m["shards"])
    stats: dict[str, Any] = {
        "root": str(root),
        "game": m["game"],
        "mode": m["mode"],
        "levels": m["levels"],
        "policy": m["policy"],
        "seed": m["seed"],
        "complete": m["complete"],
        "frames": m["frames"],
        "episodes": m["episodes"],
        "shards": len(m["shards"]),
        "bytes": total_bytes,
        "bytes_per_frame": total_bytes / max(m["frames"], 1),
        "content_sha256": S.content_sha256(m),
        "splits": {},
    }
    hist = np.zeros(m["num_actions"], dtype=np.int64)
    shards_read = 0
    for split in S.SPLITS:
        store = EpisodeStore(root, split)
        lengths = store.episode_lengths
        entry: dict[str, Any] = {
            "episodes": len(store),
            "frames": store.num_frames,
            "levels_seen": int(np.unique(store.level_seeds).size),
        }
        if len(store):
            entry["length"] = {
                "min": int(lengths.min()),
                "p10": float(np.percentile(lengths, 10)),
                "median": float(np.median(lengths)),
                "mean": float(lengths.mean()),
                "p90": float(np.percentile(lengths, 90)),
                "max": int(lengths.max()),
            }
            entry["truncated_frac"] = float(store.truncated.mean())
            entry["solved_frac"] = float(store.solved.mean())
        stats["splits"][split] = entry
        seen_shards: set[int] = set()
        for ep in range(len(store)):
            s = int(store._shard_E[ep])
            if s not in seen_shards and len(seen_shards) >= action_shards:
                break
            seen_shards.add(s)
            hist += np.bincount(store.actions(ep), minlength=m["num_actions"])[: m["num_actions"]]
        shards_read += len(seen_shards)
    if hist.sum():
        stats["action_histogram"] = {name: int(n) for name, n in zip(m["action_names"], hist, strict=True)}
        stats["action_histogram_from_shards"] = shards_read
    return stats


def _length_histogram(lengths: np.ndarray, bins: int = 10, width: int = 40) -> list[str]:
    counts, edges = np.histogram(lengths, bins=min(bins, max(1, int(np.ptp(lengths)) + 1)))
    top = max(int(counts.max()), 1)
    return [
        f"    {edges[k]:7.0f}-{edges[k + 1]:<7.0f} {'#' * int(round(width * c / top)):<{width}} {c}"
        for k, c in enumerate(counts)
    ]


def contact_sheet(store: EpisodeStore, episodes: list[int], per_row: int, gap: int = 2) -> np.ndarray:
    """uint8 image: one row per episode, `per_row` frames spread evenly from its first to its last frame."""
    H, W, C = S.FRAME_SHAPE
    sheet = np.full((len(episodes) * (H + gap) + gap, per_row * (W + gap) + gap, C), 255, dtype=np.uint8)
    for r, ep in enumerate(episodes):
        frames = store.frames(ep)
        for c, t in enumerate(np.linspace(0, len(frames) - 1, per_row).round().astype(int)):
            y, x = gap + r * (H + gap), gap + c * (W + gap)
            sheet[y : y + H, x : x + W] = frames[t]
    return sheet


def episodes_gif_frames(store: EpisodeStore, episodes: list[int], num_frames: int) -> np.ndarray:
    """uint8 `(num_frames, H, W*k, 3)`: k episodes side by side; short ones hold their last frame."""
    tiles = []
    for ep in episodes:
        frames = store.frames(ep, 0, min(num_frames, int(store.episode_lengths[ep])))
        pad = np.repeat(frames[-1:], num_frames - len(frames), axis=0)
        tiles.append(np.concatenate([frames, pad], axis=0))
    return np.concatenate(tiles, axis=2)


def main(args: Args) -> None:
    import imageio.v3 as iio

    root = Path(args.root)
    out = Path(args.out) if args.out is not None else root / "inspect"
    stats = dataset_stats(root, action_shards=args.action_shards)
    print(
        f"{root}: {stats['game']} ({stats['mode']}), levels {stats['levels']}, policy {stats['policy']}, "
        f"seed {stats['seed']}{'' if stats['complete'] else '  [INCOMPLETE recording]'}"
    )
    print(
        f"  {stats['frames']} frames, {stats['episodes']} episodes, {stats['shards']} shards, "
        f"{stats['bytes'] / 1e6:.1f} MB, {stats['bytes_per_frame']:.0f} B/frame, content sha256 "
        f"{stats['content_sha256'][:16]}"
    )
    for split, e in stats["splits"].items():
        line = (
            f"  {split:<10} {e['episodes']:>7} episodes {e['frames']:>9} frames {e['levels_seen']:>6} levels"
        )
        if e["episodes"]:
            L = e["length"]
            line += (
                f" | length min {L['min']} median {L['median']:.0f} mean {L['mean']:.0f} max {L['max']}"
                f" | cut by max-steps {e['truncated_frac']:.0%} solved {e['solved_frac']:.0%}"
            )
        print(line)
    store = EpisodeStore(root, args.split)
    if len(store):
        print(f"  episode lengths ({args.split}):")
        print("\n".join(_length_histogram(store.episode_lengths)))
    if "action_histogram" in stats:
        total = sum(stats["action_histogram"].values())
        print(f"  real actions (evaluation only), from {stats['action_histogram_from_shards']} shard(s):")
        for name, n in stats["action_histogram"].items():
            print(f"    {name:<12} {n / total:6.1%}")
    atomic_write_json(out / "stats.json", stats)
    if not len(store):
        print(f"  split '{args.split}' is empty: no pictures written (try --split train)")
        return
    rng = np.random.default_rng(args.seed)
    k = min(args.num_episodes, len(store))
    episodes = sorted(rng.choice(len(store), size=k, replace=False).tolist())
    atomic_write_bytes(
        out / "contact_sheet.png",
        iio.imwrite("<bytes>", contact_sheet(store, episodes, args.frames_per_row), extension=".png"),
    )
    shown = episodes[:4]
    gif = episodes_gif_frames(store, shown, min(args.gif_frames, int(store.episode_lengths[shown].max())))
    atomic_write_bytes(
        out / "episodes.gif", iio.imwrite("<bytes>", gif, extension=".gif", duration=100, loop=0)
    )
    print(f"  wrote {out / 'contact_sheet.png'}, {out / 'episodes.gif'}, {out / 'stats.json'}")
