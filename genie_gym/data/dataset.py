"""Reading recorded video back: whole episodes (`EpisodeStore`) and training clips (`ClipDataset`).

Nothing is trusted before it is checked: the first time a process touches a shard it reads the whole file and
compares its sha256 with the manifest (a corrupt or truncated shard raises, it never yields data). After that,
clips read only the one or two compressed chunks they need, through a small per-process LRU of decompressed
chunks, so memory stays bounded however large the dataset. No open file handles or caches are pickled, so
DataLoader workers each build their own lazily.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from genie_gym.data import shards as S
from genie_gym.errors import DatasetError


class EpisodeStore:
    """The episodes of one split, in recording order; frames decompressed on demand."""

    def __init__(self, root: str | Path, split: str = "train", cache_bytes: int = 256 << 20):
        self.root = Path(root)
        self.split = split
        self.manifest: dict[str, Any] = S.load_manifest(self.root)
        if split not in S.SPLITS:
            raise DatasetError(f"unknown split '{split}'; choose one of {', '.join(S.SPLITS)}")
        if not self.manifest.get("complete", False):
            warnings.warn(
                f"{self.root} is an unfinished recording (manifest says complete=false); reading the shards "
                "written so far. Rerun `genie-gym data` with the same settings to finish it.",
                stacklevel=2,
            )
        self._entries = [e for e in self.manifest["shards"] if e["split"] == split]
        shard_E, local_E, lengths_E, levels_E = [], [], [], []
        self.truncated = np.asarray([t for e in self._entries for t in e["truncated"]], dtype=bool)
        self.solved = np.asarray([t for e in self._entries for t in e["solved"]], dtype=bool)
        for s, e in enumerate(self._entries):
            for k, (length, level) in enumerate(zip(e["episode_lengths"], e["level_seeds"], strict=True)):
                shard_E.append(s)
                local_E.append(k)
                lengths_E.append(length)
                levels_E.append(level)
        self._shard_E = np.asarray(shard_E, dtype=np.int64)
        self._local_E = np.asarray(local_E, dtype=np.int64)
        self.episode_lengths = np.asarray(lengths_E, dtype=np.int64)
        self.level_seeds = np.asarray(levels_E, dtype=np.int64)
        self.cache_bytes = int(cache_bytes)
        self._reset_caches()

    @property
    def paint_vel_info(self) -> bool:
        """Whether the frames carry Procgen's velocity bar (manifest setting; absent in older recordings = no)."""
        return bool(self.manifest.get("settings", {}).get("paint_vel_info", False))

    # Caches are per process: dropped on pickling so each DataLoader worker builds (and verifies) its own.
    def _reset_caches(self) -> None:
        self._headers: dict[int, S.ShardHeader] = {}
        self._chunks: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
        self._chunk_bytes = 0
        self._arrays: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_headers", "_chunks", "_chunk_bytes", "_arrays"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_caches()

    def __len__(self) -> int:
        return int(self.episode_lengths.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.episode_lengths.sum())

    def _check_ep(self, ep: int) -> int:
        if not -len(self) <= ep < len(self):
            raise IndexError(f"episode {ep} out of range: split '{self.split}' has {len(self)} episodes")
        return ep % len(self)

    def _header(self, s: int) -> S.ShardHeader:
        header = self._headers.get(s)
        if header is None:
            entry = self._entries[s]
            data = S.read_verified(self.root, entry)
            header = S.parse_header(data, entry["file"])
            if [h["length"] for h in header.episodes] != entry["episode_lengths"]:
                raise DatasetError(
                    f"shard {entry['file']} does not hold the episodes its manifest entry lists; "
                    f"{S.re_record_hint(self.root)}"
                )
            self._headers[s] = header
        return header

    def _read(self, s: int, offset: int, nbytes: int) -> bytes:
        with open(self.root / self._entries[s]["file"], "rb") as f:
            f.seek(offset)
            data = f.read(nbytes)
        if len(data) != nbytes:
            raise DatasetError(
                f"shard {self._entries[s]['file']} was truncated after it was verified; "
                f"{S.re_record_hint(self.root)}"
            )
        return data

    def _chunk(self, s: int, local: int, c: int) -> np.ndarray:
        key = (s, local, c)
        frames = self._chunks.get(key)
        if frames is not None:
            self._chunks.move_to_end(key)
            return frames
        header = self._header(s)
        off, nbytes, n = header.episodes[local]["chunks"][c]
        blob = self._read(s, header.payload_offset + off, nbytes)
        frames = S.decompress_frames(blob, n, self._entries[s]["file"])
        self._chunks[key] = frames
        self._chunk_bytes += frames.nbytes
        while self._chunk_bytes > self.cache_bytes and len(self._chunks) > 1:
            _, old = self._chunks.popitem(last=False)
            self._chunk_bytes -= old.nbytes
        return frames

    def frames(self, ep: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """uint8 `(L, 64, 64, 3)` frames `start:stop` of episode `ep` (a fresh, writable array)."""
        ep = self._check_ep(ep)
        length = int(self.episode_lengths[ep])
        stop = length if stop is None else stop
        if not 0 <= start <= stop <= length:
            raise IndexError(f"frames {start}:{stop} out of range for episode {ep} of length {length}")
        s, local = int(self._shard_E[ep]), int(self._local_E[ep])
        out_LHWC = np.empty((stop - start, *S.FRAME_SHAPE), dtype=np.uint8)
        pos = 0  # first frame index of the current chunk
        for c, (_, _, n) in enumerate(self._header(s).episodes[local]["chunks"]):
            lo, hi = max(start, pos), min(stop, pos + n)
            if lo < hi:
                out_LHWC[lo - start : hi - start] = self._chunk(s, local, c)[lo - pos : hi - pos]
            pos += n
            if pos >= stop:
                break
        return out_LHWC

    def _episode_arrays(self, ep: int) -> dict[str, np.ndarray]:
        ep = self._check_ep(ep)
        s, local = int(self._shard_E[ep]), int(self._local_E[ep])
        arrays = self._arrays.get(s)
        if arrays is None:
            header = self._header(s)
            end = max(off + n for off, n, _ in header.arrays.values())
            data = self._read(s, 0, header.payload_offset + end)
            arrays = S.decode_arrays(data, header, self._entries[s]["file"])
            self._arrays[s] = arrays
            if len(self._arrays) > 64:
                self._arrays.popitem(last=False)
        begin = int(sum(self._entries[s]["episode_lengths"][:local]))
        length = int(self.episode_lengths[ep])
        return {k: v[begin : begin + length] for k, v in arrays.items()}

    def actions(self, ep: int) -> np.ndarray:
        """int64 `(L,)`: `actions[i]` is the real Procgen action taken after frame i (evaluation/BC only)."""
        return self._episode_arrays(ep)["actions"].astype(np.int64)

    def rewards(self, ep: int) -> np.ndarray:
        return self._episode_arrays(ep)["rewards"].copy()

    def dones(self, ep: int) -> np.ndarray:
        return self._episode_arrays(ep)["dones"].copy()


class ClipDataset(Dataset):
    """Clips of `clip_len` consecutive frames, every `stride` frames, never crossing an episode boundary.

    `ds[i]` is a uint8 tensor `frames_THWC`; real actions come only through `ds.clip_actions(i)`, so
    world-model training cannot read them by accident.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        clip_len: int = 16,
        stride: int = 1,
        cache_bytes: int = 256 << 20,
    ):
        if clip_len < 1 or stride < 1:
            raise DatasetError(f"clip_len ({clip_len}) and stride ({stride}) must both be >= 1")
        self.store = EpisodeStore(root, split, cache_bytes=cache_bytes)
        self.clip_len, self.stride = int(clip_len), int(stride)
        lengths_E = self.store.episode_lengths
        if len(lengths_E) == 0:
            raise DatasetError(
                f"split '{split}' of {root} holds no episodes; record more episodes (--episodes/--frames) "
                "or, for validation/test, a wider --levels range or larger --val-frac/--test-frac"
            )
        clips_E = np.where(lengths_E >= clip_len, (lengths_E - clip_len) // stride + 1, 0)
        if clips_E.sum() == 0:
            raise DatasetError(
                f"clip_len={clip_len} is longer than every episode in split '{split}' of {root} (the longest "
                f"has {int(lengths_E.max())} frames); use clip_len <= {int(lengths_E.max())}, "
                "or record longer episodes (a larger --max-steps, or --policy sticky)"
            )
        self._cum_clips_E = np.cumsum(clips_E)

    def __len__(self) -> int:
        return int(self._cum_clips_E[-1])

    def clip_index(self, i: int) -> tuple[int, int]:
        """(episode, first frame) of clip `i`."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"clip {i} out of range: this dataset has {n} clips")
        i %= n
        ep = int(np.searchsorted(self._cum_clips_E, i, side="right"))
        first = i - (int(self._cum_clips_E[ep - 1]) if ep > 0 else 0)
        return ep, first * self.stride

    def __getitem__(self, i: int) -> torch.Tensor:
        ep, start = self.clip_index(int(i))
        return torch.from_numpy(self.store.frames(ep, start, start + self.clip_len))

    def clip_actions(self, i: int) -> torch.Tensor:
        """int64 `(T-1,)`: `actions[t]` takes frame t of clip i to frame t+1 (evaluation only)."""
        ep, start = self.clip_index(int(i))
        return torch.from_numpy(self.store.actions(ep)[start : start + self.clip_len - 1].copy())
