"""Copy part of a recorded dataset into a smaller one: whole shards, recompressed harder.

A GPU machine that cannot record Procgen (no `procgen` there) trains on shards carried to it, and only tens of
MiB travel. Recording compresses for speed (zstd level 1, 64-frame chunks); this rewrites the chosen shards with
256-frame chunks at zstd level 19 (about 2.5x smaller, ~300 frames/s per core), keeps every episode of a chosen
shard whole, and writes a manifest whose splits, counts and sha256s describe exactly what was copied. The frames
are bit-identical: readers need nothing new.

    python scripts/pack_dataset.py --src data/coinrun_hard_sticky --out data/coinrun_device --max-mib 30
"""

from __future__ import annotations

import copy
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro
import zstandard as zstd

from genie_gym.data import shards as S
from genie_gym.utils.io import atomic_write_bytes, sha256_bytes

CHUNK_FRAMES = 256


@dataclass
class Args:
    src: Path
    """dataset to copy from (a `genie-gym data` directory)"""
    out: Path
    """new dataset directory (must not exist)"""
    max_mib: float = 30.0
    """stop adding train shards once the packed train shards would pass this many MiB"""
    splits: tuple[str, ...] = ("train",)
    """splits to copy (train is capped by --max-mib; any other split is copied whole)"""
    threads: int = 2
    """compression threads"""
    level: int = 19
    """zstd level, 1-22 (19: the smallest files at a usable speed, ~300 frames/s per core)"""


def repack_shard(src: Path, entry: dict, level: int) -> bytes:
    """The shard's episodes re-encoded with larger chunks at zstd `level`."""
    data = S.read_verified(src, entry)
    header = S.parse_header(data, entry["file"])
    arrays = S.decode_arrays(data, header, entry["file"])
    compressor = zstd.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
    episodes, start = [], 0
    for ep in header.episodes:
        frames = np.concatenate([
            S.decompress_frames(data[header.payload_offset + off: header.payload_offset + off + nbytes], n,
                                entry["file"])
            for off, nbytes, n in ep["chunks"]
        ])
        n = ep["length"]
        chunks = [compressor.compress(frames[i: i + CHUNK_FRAMES].tobytes()) for i in range(0, n, CHUNK_FRAMES)]
        episodes.append(S.EpisodeRecord(
            chunks=chunks, chunk_frames=[len(frames[i: i + CHUNK_FRAMES]) for i in range(0, n, CHUNK_FRAMES)],
            actions=arrays["actions"][start: start + n], rewards=arrays["rewards"][start: start + n],
            dones=arrays["dones"][start: start + n], level_seed=ep["level_seed"], truncated=ep["truncated"],
            solved=ep["solved"]))
        start += n
    return S.encode_shard(episodes)


def main(args: Args) -> None:
    if args.out.exists():
        raise SystemExit(f"--out {args.out} exists; pick a new directory")
    if not 1 <= args.level <= 22:
        raise SystemExit(f"--level {args.level}: zstd levels are 1-22 (19 packs smallest in reasonable time)")
    manifest = S.load_manifest(args.src)
    (args.out / "shards").mkdir(parents=True)
    packed: list[dict] = []
    with ThreadPoolExecutor(args.threads) as pool:
        for split in args.splits:
            entries = [e for e in manifest["shards"] if e["split"] == split]
            total, full = 0, False
            for g in range(0, len(entries), args.threads):  # a group at a time: stop compressing once full
                group = entries[g: g + args.threads]
                repacked = pool.map(lambda e: repack_shard(args.src, e, args.level), group)
                for entry, data in zip(group, repacked, strict=True):
                    if split == "train" and total + len(data) > args.max_mib * 2**20:
                        full = True
                        break
                    total += len(data)
                    atomic_write_bytes(args.out / entry["file"], data)
                    packed.append({**entry, "bytes": len(data), "sha256": sha256_bytes(data)})
                    print(f"{entry['file']}: {entry['bytes'] / 2**20:.1f} -> {len(data) / 2**20:.1f} MiB, "
                          f"{entry['frames']} frames", flush=True)
                if full:
                    break
    out = copy.deepcopy(manifest)
    out["shards"] = packed
    for split, info in out["splits"].items():
        mine = [e for e in packed if e["split"] == split]
        seeds = sorted({s for e in mine for s in e["level_seeds"]})
        info.update(episodes=sum(len(e["episode_lengths"]) for e in mine), frames=sum(e["frames"] for e in mine),
                    level_seeds=seeds, num_levels=len(seeds), shards=[e["file"] for e in mine])
    out["episodes"] = sum(info["episodes"] for info in out["splits"].values())
    out["frames"] = sum(info["frames"] for info in out["splits"].values())
    out["packed_from"] = {"manifest_sha256": sha256_bytes(S.manifest_path(args.src).read_bytes()),
                          "chunk_frames": CHUNK_FRAMES, "zstd_level": args.level}
    S.write_manifest(args.out, out)
    print(json.dumps({s: {"episodes": i["episodes"], "frames": i["frames"]} for s, i in out["splits"].items()}))


if __name__ == "__main__":
    main(tyro.cli(Args))
