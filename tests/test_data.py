"""Data pipeline: recording (two games), manifest, splits, determinism, resume, loader, inspect, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_episodes

from genie_gym.data import shards as S
from genie_gym.data.dataset import ClipDataset, EpisodeStore
from genie_gym.data.recorder import Args, level_splits, record
from genie_gym.errors import DatasetError

TINY = dict(
    game="coinrun",
    episodes=6,
    max_steps=30,
    num_envs=4,
    levels="0:40",
    shard_frames=50,
    chunk_frames=16,
    val_frac=0.2,
    test_frac=0.2,
    progress=False,
)


def tiny_args(out: Path, **kw) -> Args:
    return Args(**{**TINY, "out": out, **kw})


@pytest.fixture(scope="module")
def coinrun(tmp_path_factory) -> Path:
    return record(tiny_args(tmp_path_factory.mktemp("coinrun") / "ds"))


def shard_hashes(root: Path) -> dict[str, str]:
    return {e["file"]: e["sha256"] for e in S.load_manifest(root)["shards"]}


# ---------------------------------------------------------------- recording


def test_manifest_contents(coinrun: Path):
    m = S.load_manifest(coinrun)
    assert m["format_version"] == S.FORMAT_VERSION and m["complete"] is True
    assert (m["game"], m["mode"], m["levels"], m["policy"], m["seed"]) == (
        "coinrun",
        "hard",
        "0:40",
        "random",
        0,
    )
    assert m["episodes"] == 6
    assert (
        m["frames"] == sum(e["frames"] for e in m["shards"]) == 6 * 30
    )  # random coinrun never ends in 30 steps
    assert m["frame_shape"] == [64, 64, 3] and m["num_actions"] == 15
    for e in m["shards"]:
        assert S.read_verified(coinrun, e)  # the recorded sha256 and size match the file
        assert e["frames"] == sum(e["episode_lengths"]) and all(e["truncated"])
    assert sum(m["splits"][s]["episodes"] for s in S.SPLITS) == 6
    assert not list(coinrun.rglob("*.tmp"))


def replay_all(root: Path, game: str) -> tuple[int, int]:
    """Replay the stored actions of every episode in a fresh env of its stored level and compare every frame;
    returns (episodes checked, episodes that ended naturally)."""
    from procgen import ProcgenGym3Env

    checked = natural = 0
    for split in S.SPLITS:
        store = EpisodeStore(root, split)
        for ep in range(len(store)):
            frames, actions = store.frames(ep), store.actions(ep)
            assert (
                frames.dtype == np.uint8
                and frames.shape[1:] == (64, 64, 3)
                and actions.shape == frames.shape[:1]
            )
            assert store.dones(ep)[-1] and not store.dones(ep)[:-1].any()
            env = ProcgenGym3Env(
                num=1,
                env_name=game,
                distribution_mode="hard",
                start_level=int(store.level_seeds[ep]),
                num_levels=1,
                rand_seed=99,
            )
            for t in range(len(frames)):
                _, obs, first = env.observe()
                assert not (t > 0 and first[0]), f"{split} episode {ep} holds frames after its end (t={t})"
                assert np.array_equal(obs["rgb"][0], frames[t]), f"{split} episode {ep} frame {t}"
                env.act(np.array([actions[t]], dtype=np.int32))
            _, _, first = env.observe()
            assert bool(first[0]) == (not store.truncated[ep]), f"{split} episode {ep}: end flag disagrees"
            checked += 1
            natural += int(not store.truncated[ep])
    return checked, natural


def test_recorded_episodes_replay_exactly(coinrun: Path):
    """Replaying the stored actions in a fresh env of the stored level gives back every stored frame: the
    first frame is the reset frame, no frame belongs to another episode, actions[i] leads frame i to i+1."""
    assert replay_all(coinrun, "coinrun") == (6, 0)


def test_splits_disjoint_and_by_level(coinrun: Path):
    m = S.load_manifest(coinrun)
    sets = {s: set(m["splits"][s]["level_seeds"]) for s in S.SPLITS}
    assert not (sets["train"] & sets["validation"]) and not (sets["train"] & sets["test"])
    assert not (sets["validation"] & sets["test"])
    assert set().union(*sets.values()) == set(range(40))
    for s in S.SPLITS:
        assert set(EpisodeStore(coinrun, s).level_seeds.tolist()) <= sets[s]
    # A level's split depends on the level only, not on the range it was recorded from.
    a = level_splits(np.arange(0, 1000), 0.1, 0.1)
    b = level_splits(np.arange(500, 700), 0.1, 0.1)
    assert np.array_equal(a[500:700], b) and 50 < (a == 2).sum() < 150


def test_second_game_sticky_policy_natural_ends(tmp_path: Path):
    root = record(
        tiny_args(
            tmp_path / "bossfight",
            game="bossfight",
            episodes=5,
            max_steps=60,
            num_envs=2,
            policy="sticky",
            sticky_k=3,
        )
    )
    assert S.load_manifest(root)["game"] == "bossfight"
    checked, natural = replay_all(root, "bossfight")
    assert checked == 5 and natural >= 1  # random bossfight episodes often end before 60 steps
    store = next(EpisodeStore(root, s) for s in S.SPLITS if len(EpisodeStore(root, s)))
    actions = store.actions(0)
    assert (actions[0:3] == actions[0]).all() and (actions[3:6] == actions[3]).all()  # held for k=3 steps


def test_same_seed_same_frames_and_resume(coinrun: Path, tmp_path: Path):
    full = shard_hashes(coinrun)
    # Interrupted after one shard, then rerun with the same settings: the shards of an uninterrupted run.
    part = record(tiny_args(tmp_path / "a"), stop_after_shards=1)
    m = S.load_manifest(part)
    assert m["complete"] is False and len(m["shards"]) == 1
    assert record(tiny_args(tmp_path / "a")) == tmp_path / "a"
    assert shard_hashes(tmp_path / "a") == full and S.load_manifest(tmp_path / "a")["complete"]
    # A deleted and a corrupted shard are rewritten identically; the others are kept.
    files = sorted(full)
    (tmp_path / "a" / files[0]).unlink()
    (tmp_path / "a" / files[-1]).write_bytes(b"garbage")
    record(tiny_args(tmp_path / "a"))
    assert shard_hashes(tmp_path / "a") == full
    for f in files:
        assert S.sha256_bytes((tmp_path / "a" / f).read_bytes()) == full[f]
    # Another seed gives other frames.
    other = record(tiny_args(tmp_path / "b", seed=1))
    assert set(shard_hashes(other).values()).isdisjoint(full.values())


# ---------------------------------------------------------------- loader on a synthetic dataset


def write_synthetic(root: Path, lengths: dict[str, list[int]], chunk: int = 5) -> None:
    """Episodes whose pixels encode (episode id, frame index): the test knows exactly what each clip holds."""
    episodes, gid = {}, 0
    for split, lens in lengths.items():
        episodes[split] = []
        for L in lens:
            frames = np.zeros((L, 64, 64, 3), dtype=np.uint8)
            frames[:, :, :, 0] = gid
            frames[:, :, :, 1] = np.arange(L)[:, None, None]
            episodes[split].append((frames, np.zeros(L, np.float32), False))
            gid += 1
    write_episodes(root, episodes, chunk)


@pytest.fixture()
def synthetic(tmp_path: Path) -> Path:
    write_synthetic(tmp_path / "syn", {"train": [3, 10, 7, 4, 1, 12], "test": [6]})
    return tmp_path / "syn"


def test_clips_never_cross_episode_boundary(synthetic: Path):
    ds = ClipDataset(synthetic, "train", clip_len=4, stride=3)
    # clips per episode: floor((L - 4) / 3) + 1 for L >= 4 -> 0, 3, 2, 1, 0, 3
    assert len(ds) == 9
    seen = set()
    for i in range(len(ds)):
        clip = ds[i].numpy()
        assert clip.shape == (4, 64, 64, 3) and clip.dtype == np.uint8
        ep_ids, ts = clip[:, 0, 0, 0], clip[:, 0, 0, 1]
        assert (ep_ids == ep_ids[0]).all(), f"clip {i} mixes episodes {ep_ids}"
        assert np.array_equal(ts, ts[0] + np.arange(4)) and ts[0] % 3 == 0
        assert np.array_equal(ds.clip_actions(i).numpy(), (ts[:3] % 15).astype(np.int64))
        seen.add((int(ep_ids[0]), int(ts[0])))
    assert seen == {(1, 0), (1, 3), (1, 6), (2, 0), (2, 3), (3, 0), (5, 0), (5, 3), (5, 6)}
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_dataloader_workers_and_bounded_cache(synthetic: Path):
    ds = ClipDataset(synthetic, "train", clip_len=2, stride=1, cache_bytes=64 * 64 * 3 * 5)
    direct = torch.stack([ds[i] for i in range(len(ds))])
    assert ds.store._chunk_bytes <= 64 * 64 * 3 * 5  # at most one 5-frame chunk cached
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    batches = torch.cat(list(loader))
    assert batches.shape == (len(ds), 2, 64, 64, 3) and torch.equal(batches, direct)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"game": "mario"}, "unknown Procgen game 'mario'.*coinrun.*starpilot"),
        ({"levels": "abc"}, "malformed --levels 'abc'.*START:STOP"),
        ({"levels": "5"}, "malformed --levels"),
        ({"levels": "10:10"}, "empty range"),
        ({"episodes": 0}, "--episodes 0 records nothing"),
        ({"episodes": 2, "frames": 10}, "not both"),
        ({"levels": "0:1", "val_frac": 0.5, "test_frac": 0.49}, "no level for the train split"),
    ],
)
def test_bad_recording_flags(tmp_path: Path, kw: dict, match: str):
    with pytest.raises(DatasetError, match=match):
        record(tiny_args(tmp_path / "x", **kw))
    assert not (tmp_path / "x").exists()


def test_out_dir_with_other_settings(coinrun: Path):
    before = shard_hashes(coinrun)
    with pytest.raises(DatasetError, match=r"other settings \(seed: 0 there, 5 now\).*choose another --out"):
        record(tiny_args(coinrun, seed=5))
    assert shard_hashes(coinrun) == before  # nothing already written is lost


def test_velocity_painted_recording_round_trips_and_never_mixes(coinrun: Path, tmp_path: Path):
    """paint_vel_info=True: recorded in the manifest, the frames differ from plain ones only by the painted bar in
    the top-left corner, and a plain recording into the same directory is refused (and vice versa)."""
    painted = record(tiny_args(tmp_path / "painted", paint_vel_info=True))
    manifest = S.load_manifest(painted)
    assert manifest["settings"]["paint_vel_info"] is True and manifest["paint_vel_info"] is True
    assert S.load_manifest(coinrun)["settings"]["paint_vel_info"] is False
    a, b = EpisodeStore(painted, "train").frames(0), EpisodeStore(coinrun, "train").frames(0)
    differ_HW = (a[:8] != b[:8]).any(axis=(0, 3))  # same levels, same actions: only the bar differs
    assert differ_HW.any() and not differ_HW[16:, 16:].any()
    assert EpisodeStore(painted, "train").paint_vel_info and not EpisodeStore(coinrun, "train").paint_vel_info
    from genie_gym.training.export import world_model_metadata  # a LAM trained on it says so in its file

    assert world_model_metadata(painted, {}, {}, {}, "tiny", None, 0)["paint_vel_info"] is True
    assert world_model_metadata(coinrun, {}, {}, {}, "tiny", None, 0)["paint_vel_info"] is False
    with pytest.raises(DatasetError, match="paint_vel_info: True there, False now"):
        record(tiny_args(painted))
    old = json.loads(S.manifest_path(coinrun).read_text())  # a manifest from before the setting existed
    del old["settings"]["paint_vel_info"]
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    S.manifest_path(legacy).write_text(json.dumps(old))
    with pytest.raises(DatasetError, match="paint_vel_info: False there, True now"):
        record(tiny_args(legacy, paint_vel_info=True))


def test_missing_truncated_corrupt_shards(synthetic: Path):
    shard = synthetic / S.shard_name("train", 0)
    good = shard.read_bytes()
    for bad, match in [
        (good[:-10], "truncated"),
        (good[:-1] + bytes([good[-1] ^ 1]), "corrupt: its sha256"),
        (None, "missing"),
    ]:
        if bad is None:
            shard.unlink()
        else:
            shard.write_bytes(bad)
        ds = ClipDataset(synthetic, "train", clip_len=2)  # building the index reads only the manifest
        with pytest.raises(DatasetError, match=f"train-00000.ggshard.*{match}.*re-record"):
            ds[0]
    assert ClipDataset(synthetic, "test", clip_len=2)[0].shape == (2, 64, 64, 3)  # other shards still fine


def test_newer_manifest_and_too_long_clips(synthetic: Path):
    with pytest.raises(DatasetError, match="clip_len=13 is longer than every episode.*longest has 12"):
        ClipDataset(synthetic, "train", clip_len=13)
    m = json.loads(S.manifest_path(synthetic).read_text())
    m["format_version"] = S.FORMAT_VERSION + 1
    S.write_manifest(synthetic, m)
    with pytest.raises(DatasetError, match="newer than this genie-gym reads.*upgrade"):
        EpisodeStore(synthetic)
    with pytest.raises(DatasetError, match="no manifest.json"):
        EpisodeStore(synthetic / "shards")


# ---------------------------------------------------------------- CLI and inspection


def test_cli_record_and_inspect(tmp_path: Path, capsys):
    from genie_gym.cli import main

    out = tmp_path / "cli"
    main(
        [
            "data",
            "--game",
            "coinrun",
            "--episodes",
            "2",
            "--max-steps",
            "12",
            "--num-envs",
            "2",
            "--levels",
            "100:120",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert S.load_manifest(out)["episodes"] == 2
    main(["data", "inspect", str(out)])
    text = capsys.readouterr().out
    assert "2 episodes" in text and "B/frame" in text and "RIGHT+UP" in text
    import imageio.v3 as iio

    sheet = iio.imread(out / "inspect" / "contact_sheet.png")
    assert sheet.ndim == 3 and sheet.shape[2] == 3 and sheet.std() > 0
    assert (
        iio.imread(out / "inspect" / "episodes.gif", index=None).shape[0] == 12
    )  # the longest episode shown, under --gif-frames 64
    stats = json.loads((out / "inspect" / "stats.json").read_text())
    assert stats["frames"] == 24 and stats["content_sha256"] == S.content_sha256(S.load_manifest(out))
    assert f"content sha256 {stats['content_sha256'][:16]}" in text

    # the same command again: the same shards, so the same content hash (the manifest also holds the wall time)
    again = tmp_path / "again"
    main(["data", "--game", "coinrun", "--episodes", "2", "--max-steps", "12", "--num-envs", "2", "--levels",
          "100:120", "--out", str(again), "--no-progress"])
    assert S.content_sha256(S.load_manifest(again)) == stats["content_sha256"]
    assert f"content sha256 {stats['content_sha256'][:16]}" in capsys.readouterr().out


def test_cli_prints_genie_errors_without_traceback(tmp_path: Path, capsys):
    from genie_gym.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["data", "inspect", str(tmp_path / "missing")])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("genie-gym data inspect: error:") and "Traceback" not in err
