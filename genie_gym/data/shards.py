"""Shard file format and `manifest.json`: what is on disk, how it is checked, how it is read back.

A dataset directory holds `manifest.json` and `shards/<split>-<index>.ggshard`. A shard holds whole
episodes. Frames are stored episode-contiguous in zstd chunks of `chunk_frames` frames (time-contiguous
frames compress ~14x; chunks keep random clip access cheap). Layout of one shard:

    MAGIC (8 bytes) | header length (uint64 LE) | header JSON | payload

The header gives, per episode, its length, level seed and chunk (offset, nbytes, frames) triples, plus where
the compressed `actions`/`rewards`/`dones` arrays lie; offsets are relative to the payload. The manifest
records the sha256 of every shard, which readers verify before trusting a single byte of it."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zstandard as zstd

from genie_gym.errors import DatasetError
from genie_gym.utils.io import atomic_write_bytes, atomic_write_json, sha256_bytes

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SHARD_DIR = "shards"
SHARD_MAGIC = b"GGSHARD\x00"
SPLITS: tuple[str, ...] = ("train", "validation", "test")
FRAME_SHAPE: tuple[int, int, int] = (64, 64, 3)
ARRAY_DTYPES: dict[str, str] = {"actions": "int8", "rewards": "float32", "dones": "bool"}

_tls = threading.local()


def _compressor(level: int = 1) -> zstd.ZstdCompressor:
    """One compressor per thread: zstd objects are not thread-safe, but they release the GIL while working."""
    c = getattr(_tls, "compressor", None)
    if c is None:
        c = _tls.compressor = zstd.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
    return c


def _decompressor() -> zstd.ZstdDecompressor:
    d = getattr(_tls, "decompressor", None)
    if d is None:
        d = _tls.decompressor = zstd.ZstdDecompressor()
    return d


def compress_frames(frames_LHWC: np.ndarray) -> bytes:
    """Compress a time-contiguous run of uint8 frames (one chunk)."""
    return _compressor().compress(np.ascontiguousarray(frames_LHWC, dtype=np.uint8).tobytes())


def decompress_frames(blob: bytes, num_frames: int, shard: str = "?") -> np.ndarray:
    try:
        raw = _decompressor().decompress(blob)
    except zstd.ZstdError as e:
        raise DatasetError(f"shard {shard} holds a corrupt frame chunk ({e}); {re_record_hint()}") from None
    frames = np.frombuffer(raw, dtype=np.uint8)
    if frames.size != num_frames * int(np.prod(FRAME_SHAPE)):
        raise DatasetError(f"shard {shard} holds a frame chunk of the wrong size; {re_record_hint()}")
    return frames.reshape(num_frames, *FRAME_SHAPE)


def re_record_hint(root: str | os.PathLike | None = None) -> str:
    where = f" --out {root}" if root is not None else ""
    return (
        f"re-record it: rerun `genie-gym data` with the same settings{where} (it resumes, keeps the shards "
        "that "
        "verify and rewrites the missing or corrupt ones)"
    )


def shard_name(split: str, index: int) -> str:
    return f"{SHARD_DIR}/{split}-{index:05d}.ggshard"


@dataclass
class EpisodeRecord:
    """One finished episode on its way into a shard. `chunks` holds compressed bytes (or futures of them)."""

    chunks: list[Any]  # bytes | concurrent.futures.Future[bytes] | np.ndarray (raw, compressed lazily)
    chunk_frames: list[int]
    actions: np.ndarray  # (L,) int8
    rewards: np.ndarray  # (L,) float32
    dones: np.ndarray  # (L,) bool
    level_seed: int
    truncated: bool
    solved: bool

    @property
    def length(self) -> int:
        return int(self.actions.shape[0])


def _resolve(chunk: Any) -> bytes:
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, np.ndarray):
        return compress_frames(chunk)
    return chunk.result()


def encode_shard(episodes: list[EpisodeRecord]) -> bytes:
    """Serialise whole episodes into shard bytes (waits for any pending chunk compression)."""
    payload: list[bytes] = []
    offset = 0
    ep_headers = []
    for ep in episodes:
        chunks = []
        for chunk, n in zip(ep.chunks, ep.chunk_frames, strict=True):
            blob = _resolve(chunk)
            chunks.append([offset, len(blob), int(n)])
            payload.append(blob)
            offset += len(blob)
        if sum(c[2] for c in chunks) != ep.length:
            raise AssertionError("episode frame count does not match its action count")
        ep_headers.append(
            {
                "length": ep.length,
                "level_seed": int(ep.level_seed),
                "truncated": bool(ep.truncated),
                "solved": bool(ep.solved),
                "chunks": chunks,
            }
        )
    arrays = {}
    for key, dtype in ARRAY_DTYPES.items():
        arr = np.concatenate([getattr(ep, key) for ep in episodes]).astype(dtype)
        blob = _compressor().compress(arr.tobytes())
        arrays[key] = [offset, len(blob), dtype]
        payload.append(blob)
        offset += len(blob)
    header = {
        "format_version": FORMAT_VERSION,
        "frame_shape": list(FRAME_SHAPE),
        "episodes": ep_headers,
        "arrays": arrays,
    }
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    return SHARD_MAGIC + struct.pack("<Q", len(header_bytes)) + header_bytes + b"".join(payload)


def write_shard(root: Path, name: str, episodes: list[EpisodeRecord]) -> dict[str, Any]:
    """Encode and atomically write one shard; returns its manifest entry."""
    data = encode_shard(episodes)
    atomic_write_bytes(root / name, data)
    return {
        "file": name,
        "sha256": sha256_bytes(data),
        "bytes": len(data),
        "frames": int(sum(ep.length for ep in episodes)),
        "episode_lengths": [ep.length for ep in episodes],
        "level_seeds": [int(ep.level_seed) for ep in episodes],
        "truncated": [bool(ep.truncated) for ep in episodes],
        "solved": [bool(ep.solved) for ep in episodes],
    }


@dataclass
class ShardHeader:
    episodes: list[dict[str, Any]]
    arrays: dict[str, list[Any]]
    payload_offset: int


def parse_header(data: bytes, name: str) -> ShardHeader:
    """Parse the header of (verified) shard bytes; only the first bytes are needed."""
    if data[:8] != SHARD_MAGIC or len(data) < 16:
        raise DatasetError(f"shard {name} is not a genie-gym shard (bad magic bytes); {re_record_hint()}")
    (hlen,) = struct.unpack("<Q", data[8:16])
    try:
        header = json.loads(data[16 : 16 + hlen])
    except (ValueError, UnicodeDecodeError):
        raise DatasetError(f"shard {name} has an unreadable header; {re_record_hint()}") from None
    if header.get("format_version", 0) > FORMAT_VERSION:
        raise DatasetError(
            f"shard {name} has format version {header['format_version']}, newer than this genie-gym reads "
            f"({FORMAT_VERSION}); upgrade genie-gym (pip install -U genie-gym)"
        )
    return ShardHeader(episodes=header["episodes"], arrays=header["arrays"], payload_offset=16 + hlen)


def read_verified(root: Path, entry: dict[str, Any]) -> bytes:
    """Read a whole shard and check its size and sha256 against the manifest; DatasetError on any mismatch."""
    path = root / entry["file"]
    if not path.exists():
        raise DatasetError(
            f"shard {entry['file']} listed in {root / MANIFEST_NAME} is missing; {re_record_hint(root)}"
        )
    data = path.read_bytes()
    if len(data) != entry["bytes"]:
        raise DatasetError(
            f"shard {entry['file']} is truncated or altered: {len(data)} bytes on disk, "
            f"{entry['bytes']} expected; "
            f"{re_record_hint(root)}"
        )
    if sha256_bytes(data) != entry["sha256"]:
        raise DatasetError(
            f"shard {entry['file']} is corrupt: its sha256 does not match the manifest; "
            f"{re_record_hint(root)}"
        )
    return data


def shard_is_valid(root: Path, entry: dict[str, Any]) -> bool:
    try:
        read_verified(root, entry)
    except DatasetError:
        return False
    return True


def decode_arrays(data: bytes, header: ShardHeader, name: str) -> dict[str, np.ndarray]:
    """The shard's concatenated `actions`/`rewards`/`dones` arrays."""
    out = {}
    for key, (off, nbytes, dtype) in header.arrays.items():
        start = header.payload_offset + off
        try:
            raw = _decompressor().decompress(data[start : start + nbytes])
        except zstd.ZstdError as e:
            raise DatasetError(
                f"shard {name} holds a corrupt '{key}' array ({e}); {re_record_hint()}"
            ) from None
        out[key] = np.frombuffer(raw, dtype=np.dtype(dtype)).copy()
    return out


# ---------------------------------------------------------------- manifest


def content_sha256(manifest: dict[str, Any]) -> str:
    """The recording's identity: sha256 of its shards' sha256s in manifest order. The same `genie-gym data` command
    writes the same shards, so this reproduces where the manifest's own hash does not (it records the wall time)."""
    return hashlib.sha256("".join(e["sha256"] for e in manifest["shards"]).encode()).hexdigest()


def manifest_path(root: str | os.PathLike) -> Path:
    return Path(root) / MANIFEST_NAME


def write_manifest(root: str | os.PathLike, manifest: dict[str, Any]) -> None:
    atomic_write_json(manifest_path(root), manifest)


def load_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """Load and check `manifest.json`: missing, unreadable or newer-format manifests are clear errors."""
    path = manifest_path(root)
    if not Path(root).is_dir():
        raise DatasetError(
            f"dataset directory {root} does not exist; record one with `genie-gym data --out {root}`"
        )
    if not path.exists():
        raise DatasetError(
            f"{root} holds no {MANIFEST_NAME}, so it is not a genie-gym dataset; record one with "
            f"`genie-gym data --out {root}` or point to the directory that holds manifest.json"
        )
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise DatasetError(
            f"{path} is not valid JSON (a damaged file?); delete {root} and re-record with `genie-gym data`"
        ) from None
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise DatasetError(f"{path} has no integer format_version; it was not written by genie-gym")
    if version > FORMAT_VERSION:
        raise DatasetError(
            f"{path} has format version {version}, newer than this genie-gym reads ({FORMAT_VERSION}); "
            "upgrade genie-gym (pip install -U genie-gym) or re-record the dataset with this version"
        )
    return manifest
