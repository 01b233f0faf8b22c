"""A seeded, checkpointable stream of clip-index batches, sharded across DDP ranks.

Epoch `e` is a permutation drawn from a generator seeded by (seed, e); rank `r` of `W` takes every W-th index
(padded so that every rank gets the same count, as `DistributedSampler` does). The stream crosses epoch
boundaries without a short batch, so its whole state is `(epoch, offset)`: resuming skips exactly the
consumed indices.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class ClipIndexStream:
    def __init__(
        self, num_items: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        if num_items <= 0:
            raise ValueError("ClipIndexStream needs at least one item")
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.offset = 0  # indices of this rank's shard of `epoch` already consumed
        self._cache: tuple[int, list[int]] | None = None

    def _shard(self, epoch: int) -> list[int]:
        """This rank's indices for one epoch (cached: the permutation is the expensive part)."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.num_items, generator=g).tolist()
        per_rank = -(-self.num_items // self.world_size)
        perm = (perm * (1 + per_rank * self.world_size // self.num_items))[: per_rank * self.world_size]
        shard = perm[self.rank :: self.world_size]
        self._cache = (epoch, shard)
        return shard

    def next_batch(self) -> list[int]:
        out: list[int] = []
        while len(out) < self.batch_size:
            shard = self._shard(self.epoch)
            take = shard[self.offset : self.offset + self.batch_size - len(out)]
            out += take
            self.offset += len(take)
            if self.offset >= len(shard):
                self.epoch, self.offset = self.epoch + 1, 0
        return out

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "offset": self.offset,
            "seed": self.seed,
            "num_items": self.num_items,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])

    def copy(self) -> ClipIndexStream:
        other = ClipIndexStream(self.num_items, self.batch_size, self.seed, self.rank, self.world_size)
        other.epoch, other.offset = self.epoch, self.offset
        return other


class StreamBatchSampler:
    """An endless `batch_sampler` for DataLoader that replays a copy of the stream.

    The DataLoader prefetches ahead, so the trainer keeps its own copy and advances it per *consumed* batch;
    that copy is what the checkpoint stores.
    """

    def __init__(self, stream: ClipIndexStream) -> None:
        self.stream = stream.copy()

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            yield self.stream.next_batch()
