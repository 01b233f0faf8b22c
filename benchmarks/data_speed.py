"""Data pipeline speed and size: raw Procgen stepping vs. end-to-end recording, bytes per frame, loader speed.

    .venv/bin/python benchmarks/data_speed.py            # writes benchmarks/results/data_speed.{json,md}

End to end = recorded frames / wall time of `record()` (stepping, compressing, writing shards and manifest,
including the drain at the end, where envs finish their last episodes). The raw Procgen rate is measured in
the same run with the same env settings, before and after the recording (their mean is reported, both are
kept). The loader rate is `ClipDataset` clips (T=16) through a shuffled DataLoader, counted in frames
delivered."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from genie_gym.data import shards as S
from genie_gym.data.dataset import ClipDataset
from genie_gym.data.recorder import Args as RecordArgs
from genie_gym.data.recorder import record
from genie_gym.utils.io import atomic_write_json, write_markdown

RESULTS = Path(__file__).parent / "results"


@dataclass
class Args:
    """Measure the data pipeline and write benchmarks/results/data_speed.{json,md}."""

    frames: int = 400_000
    """Frames to record end to end (the drain at the end costs up to num_envs*max_steps env frames)."""
    raw_frames: int = 200_000
    """Env frames for each raw Procgen measurement."""
    num_envs: int = 64
    """Procgen envs stepped together."""
    num_threads: int = 2
    """Procgen worker threads."""
    compress_threads: int = 2
    """Compression threads of the recorder."""
    loader_batches: int = 200
    """Batches of 32 clips x 16 frames for the loader measurement."""
    loader_workers: int = 2
    """DataLoader workers for the loader measurement."""
    out: Path = RESULTS
    """Where data_speed.json and data_speed.md go."""


def raw_procgen_fps(num_envs: int, num_threads: int, frames: int) -> float:
    from genie_gym.envs.procgen_prompt import import_procgen

    ProcgenGym3Env = import_procgen()

    env = ProcgenGym3Env(
        num=num_envs,
        env_name="coinrun",
        distribution_mode="hard",
        start_level=0,
        num_levels=10_000,
        rand_seed=0,
        num_threads=num_threads,
    )
    rng = np.random.default_rng(0)
    env.observe()
    t0, n = time.perf_counter(), 0
    while n < frames:
        env.act(rng.integers(0, 15, size=num_envs, dtype=np.int32))
        env.observe()
        n += num_envs
    return n / (time.perf_counter() - t0)


def loader_fps(root: Path, batches: int, workers: int) -> float:
    ds = ClipDataset(root, "train", clip_len=16, stride=1)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=32, shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(0)
    )
    t0, n = time.perf_counter(), 0
    for k, clips_BTHWC in enumerate(loader):
        n += clips_BTHWC.shape[0] * clips_BTHWC.shape[1]
        if k + 1 >= batches:
            break
    return n / (time.perf_counter() - t0)


def main(args: Args) -> None:
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="genie-data-speed-"))
    try:
        load_before = os.getloadavg()[0]
        raw_before = raw_procgen_fps(args.num_envs, args.num_threads, args.raw_frames)
        t0 = time.perf_counter()
        root = record(
            RecordArgs(
                frames=args.frames,
                num_envs=args.num_envs,
                num_threads=args.num_threads,
                compress_threads=args.compress_threads,
                out=tmp / "coinrun",
                progress=False,
            )
        )
        wall = time.perf_counter() - t0
        raw_after = raw_procgen_fps(args.num_envs, args.num_threads, args.raw_frames)
        m = S.load_manifest(root)
        size = sum(e["bytes"] for e in m["shards"])
        loader0 = loader_fps(root, args.loader_batches, 0)
        loaderw = loader_fps(root, args.loader_batches, args.loader_workers)
        load_after = os.getloadavg()[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    raw = (raw_before + raw_after) / 2
    fps = m["frames"] / wall
    res = {
        "frames_per_s": round(fps, 1),
        "raw_procgen_frames_per_s": round(raw, 1),
        "raw_procgen_frames_per_s_before_after": [round(raw_before, 1), round(raw_after, 1)],
        "end_to_end_over_raw": round(fps / raw, 3),
        "env_frames_per_s_while_recording": round(m["last_session"]["env_frames"] / wall, 1),
        "recorded_frames": m["frames"],
        "env_frames_stepped": m["last_session"]["env_frames"],
        "bytes_per_frame": round(size / m["frames"], 1),
        "loader_frames_per_s": round(max(loader0, loaderw), 1),
        "loader_frames_per_s_workers_0": round(loader0, 1),
        f"loader_frames_per_s_workers_{args.loader_workers}": round(loaderw, 1),
        "settings": {
            "game": "coinrun",
            "mode": "hard",
            "levels": "0:10000",
            "policy": "random",
            "num_envs": args.num_envs,
            "num_threads": args.num_threads,
            "compress_threads": args.compress_threads,
            "frames": args.frames,
            "loader": "ClipDataset T=16 stride 1, DataLoader batch 32 shuffle",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_1min_before_after": [round(load_before, 2), round(load_after, 2)],
        },
    }
    targets = {
        "end_to_end >= 50% of raw": fps >= 0.5 * raw,
        "end_to_end >= 15000 frames/s": fps >= 15_000,
        "<= 2048 bytes/frame": size / m["frames"] <= 2048,
        "loader >= 5000 frames/s": res["loader_frames_per_s"] >= 5000,
    }
    res["targets_met"] = targets
    res["all_targets_met"] = all(targets.values())
    if load_before > 2.5 or load_after > 2.5:
        res["note"] = (
            f"measured on a shared 2-core machine with a 1-minute load average of {load_before:.1f} "
            f"before / {load_after:.1f} after (other jobs running): absolute rates are depressed; the "
            "end-to-end/raw ratio is the more comparable figure"
        )
    atomic_write_json(args.out / "data_speed.json", res)
    rows = [
        (
            "end to end (frames/s)",
            f"{fps:,.0f}",
            ">= 15,000 and >= 50% of raw",
            "yes"
            if targets["end_to_end >= 15000 frames/s"] and targets["end_to_end >= 50% of raw"]
            else "NO",
        ),
        ("raw Procgen (frames/s)", f"{raw:,.0f}", "", ""),
        (
            "end to end / raw",
            f"{fps / raw:.0%}",
            ">= 50%",
            "yes" if targets["end_to_end >= 50% of raw"] else "NO",
        ),
        (
            "bytes per frame",
            f"{size / m['frames']:,.0f}",
            "<= 2,048",
            "yes" if targets["<= 2048 bytes/frame"] else "NO",
        ),
        (
            "loader (frames/s)",
            f"{res['loader_frames_per_s']:,.0f}",
            ">= 5,000",
            "yes" if targets["loader >= 5000 frames/s"] else "NO",
        ),
    ]
    md = [
        "# Data pipeline speed (CoinRun hard, random policy)",
        "",
        "`.venv/bin/python benchmarks/data_speed.py`",
        "",
        "| metric | measured | target | met |",
        "|---|---|---|---|",
    ]
    md += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    md += [
        "",
        f"{m['frames']:,} frames recorded ({m['last_session']['env_frames']:,} env frames stepped, the rest "
        "is the drain at the end); loader: workers 0 "
        f"{loader0:,.0f}, workers {args.loader_workers} {loaderw:,.0f} frames/s.",
    ]
    if "note" in res:
        md += ["", f"Note: {res['note']}."]
    write_markdown(args.out / "data_speed.md", md, echo=False)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main(tyro.cli(Args))
