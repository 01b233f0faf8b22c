"""Shared test settings and fixtures.

Torch runs 2 threads per test (the CI machine's 2 cores; the suite ran 90 s against 96 s with 1 thread, measured
twice each); GENIE_TEST_THREADS=1 when the tests share the machine with a training job. No display, no sound.
"""

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

TEST_THREADS = int(os.environ.get("GENIE_TEST_THREADS", "2"))
torch.set_num_threads(TEST_THREADS)


from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


def record_tiny(root: Path, frames: int = 3000, max_steps: int = 200) -> Path:
    """A few thousand CoinRun frames; recording into the same directory again returns at once."""
    from genie_gym.data import recorder

    return recorder.record(recorder.Args(frames=frames, max_steps=max_steps, num_envs=16, out=root, val_frac=0.15,
                                         test_frac=0.2, progress=False))


@pytest.fixture(autouse=True)
def _torch_threads():
    """Every test starts with the same thread count (a benchmark's main sets its own, which would otherwise leak)."""
    torch.set_num_threads(TEST_THREADS)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3,000 recorded CoinRun frames, recorded once per test session."""
    return record_tiny(tmp_path_factory.getbasetemp() / "tiny_data")


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny world model (seed 0): env, play and eval plumbing do not depend on training quality."""
    from genie_gym.config import get_preset
    from genie_gym.models.world_model import WorldModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("wm") / "tiny.pt"
    WorldModel(get_preset("tiny")).save(path, {"steps": {"tokenizer": 0, "dynamics": 0}})
    return path


def write_episodes(root: Path, episodes: dict, chunk: int = 5) -> Path:
    """A dataset directory from in-memory episodes: {split: [(frames_LHWC uint8, rewards_L, truncated), ...]};
    actions are t % 15, the last transition ends each episode."""
    import numpy as np

    from genie_gym.data import shards as S

    entries, gid = [], 0
    for split, eps in episodes.items():
        records = []
        for frames, rewards, truncated in eps:
            L = len(frames)
            records.append(S.EpisodeRecord(
                chunks=[frames[i:i + chunk].copy() for i in range(0, L, chunk)],
                chunk_frames=[min(chunk, L - i) for i in range(0, L, chunk)],
                actions=(np.arange(L) % 15).astype(np.int8), rewards=np.asarray(rewards, np.float32),
                dones=np.arange(L) == L - 1, level_seed=gid, truncated=bool(truncated),
                solved=not truncated and float(np.sum(rewards)) > 0))  # as the recorder: the level's reward
            gid += 1
        entries.append(S.write_shard(root, S.shard_name(split, 0), records) | {"split": split})
    S.write_manifest(root, {"format_version": S.FORMAT_VERSION, "complete": True, "shards": entries,
                            "game": "coinrun", "mode": "hard", "levels": "0:1", "policy": "random", "seed": 0,
                            "frames": sum(e["frames"] for e in entries), "episodes": gid, "num_actions": 15,
                            "action_names": [str(a) for a in range(15)]})
    return root
