"""`genie-gym data`: record unlabelled Procgen video (Genie §3.3 / App.: random policy, level seeds 0-10,000).

How it works: one `ProcgenGym3Env` with `num_envs` copies samples levels from `--levels`; the level seed of
every episode is read from `env.get_info()` when it starts, which decides its split (a hash of the seed, so
the same level is in the same split in every dataset). gym3 auto-resets: on the step where `first` is True
the observation is already the next episode's reset frame, so an episode is the frames from one `first` to
the next, and never shares a frame with another. Episodes cut by `--max-steps` are ended there and the env's
frames are skipped until its next reset. Frames are compressed in chunks on background threads (zstd
releases the GIL) while Procgen steps on its own threads.

Episodes are claimed when they start and every claimed episode is recorded to its end (the run "drains" at
the end instead of dropping the unfinished ones, which would bias the data towards short episodes).

Everything is a function of the settings, so a rerun into the same directory replays the same episodes in
the same order: shards already written and verified are skipped (not compressed again), missing or corrupt
ones are rewritten."""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from genie_gym.data import shards as S
from genie_gym.data.games import (
    COINRUN_ACTION_NAMES,
    NUM_PROCGEN_ACTIONS,
    Game,
    Mode,
    check_game,
    check_mode,
    parse_levels,
)
from genie_gym.errors import DatasetError

# Settings that change what is recorded (a resumed run must match them all). `num_threads`,
# `compress_threads` and `progress` only change speed, so they are left out.
_SETTING_KEYS = (
    "game",
    "mode",
    "levels",
    "episodes",
    "frames",
    "max_steps",
    "policy",
    "sticky_k",
    "num_envs",
    "seed",
    "shard_frames",
    "chunk_frames",
    "val_frac",
    "test_frac",
    "split_seed",
    "paint_vel_info",
)
_SETTING_DEFAULTS = {"paint_vel_info": False}  # settings added later: what datasets recorded before them used
_LIST_LEVELS_UP_TO = 100_000  # manifests list every level seed of each split for ranges up to this size


@dataclass
class Args:
    """Record unlabelled Procgen video into compressed shards plus manifest.json."""

    game: Game = "coinrun"
    """Procgen game, any of the 16 (bigfish, bossfight, ..., coinrun, ..., starpilot)."""
    mode: Mode = "hard"
    """Procgen distribution mode: easy, hard (the paper's case study), extreme, memory, exploration."""
    levels: str = "0:10000"
    """Level seeds START:STOP (STOP exclusive); the paper used 0:10000."""
    episodes: int | None = None
    """Number of whole episodes to record (give this or --frames; default: --frames 10000000 as the paper)."""
    frames: int | None = None
    """Record whole episodes until at least this many frames (give this or --episodes)."""
    max_steps: int = 1000
    """Longest episode in frames; longer ones are cut there (Procgen itself ends episodes at 1000 steps)."""
    policy: Literal["random", "sticky"] = "random"
    """random: a fresh uniform action every step, no repeats (the paper); sticky: hold each for --sticky-k."""
    sticky_k: int = 4
    """Steps to hold each action with --policy sticky."""
    num_envs: int = 64
    """Procgen environments stepped together (part of the settings: changing it changes the episodes)."""
    num_threads: int = 2
    """Procgen worker threads; changes speed only, never the data."""
    compress_threads: int = 1
    """Background threads compressing and writing shards; changes speed only."""
    seed: int = 0
    """Seed of Procgen's level sampling and of the policy; same seed, same frames."""
    out: Path | None = None
    """Dataset directory (default data/<game>-<mode>); rerunning into it with the same settings resumes."""
    shard_frames: int = 16384
    """Frames per shard (a shard closes at the first episode end past this many frames)."""
    chunk_frames: int = 64
    """Frames per compressed chunk inside a shard (random clip access decompresses one or two chunks)."""
    val_frac: float = 0.05
    """Fraction of level seeds in the validation split."""
    test_frac: float = 0.05
    """Fraction of level seeds in the test split."""
    split_seed: int = 0
    """Seed of the level-to-split hash (keep it fixed so held-out levels agree across datasets)."""
    paint_vel_info: bool = False
    """Procgen's velocity bar painted into the top-left corner of each frame (the agent's velocity is then visible in
    one frame); recorded in the manifest, and a dataset never mixes painted and plain frames."""
    progress: bool = True
    """Show a progress bar with frames/s."""


# ---------------------------------------------------------------- settings and splits


def resolve_out(args: Args) -> Path:
    return Path(args.out) if args.out is not None else Path("data") / f"{args.game}-{args.mode}"


def check_args(args: Args) -> dict[str, Any]:
    """Validate every flag (clear DatasetErrors) and return the settings dict stored in the manifest."""
    game = check_game(args.game)
    mode = check_mode(args.mode)
    start, stop = parse_levels(args.levels)
    if args.episodes is not None and args.frames is not None:
        raise DatasetError("give either --episodes N or --frames N, not both")
    episodes, frames = args.episodes, args.frames
    if episodes is None and frames is None:
        frames = 10_000_000
    if episodes is not None and episodes <= 0:
        raise DatasetError(f"--episodes {episodes} records nothing; use --episodes N with N >= 1")
    if frames is not None and frames <= 0:
        raise DatasetError(f"--frames {frames} records nothing; use --frames N with N >= 1")
    for name in (
        "max_steps",
        "sticky_k",
        "num_envs",
        "num_threads",
        "compress_threads",
        "shard_frames",
        "chunk_frames",
    ):
        if getattr(args, name) < 1:
            raise DatasetError(f"--{name.replace('_', '-')} {getattr(args, name)} must be >= 1")
    if args.policy not in ("random", "sticky"):
        raise DatasetError(f"unknown --policy '{args.policy}'; choose random or sticky")
    if not (0 <= args.seed < 2**31):
        raise DatasetError(f"--seed {args.seed} is out of range; use 0 <= seed < 2**31")
    if not (0 <= args.val_frac < 1 and 0 <= args.test_frac < 1 and args.val_frac + args.test_frac < 1):
        raise DatasetError(
            f"--val-frac {args.val_frac} and --test-frac {args.test_frac} must each lie in [0, 1) "
            "and sum to < 1"
        )
    return {
        "game": game,
        "mode": mode,
        "levels": [start, stop],
        "episodes": episodes,
        "frames": frames,
        "max_steps": args.max_steps,
        "policy": args.policy,
        "sticky_k": args.sticky_k if args.policy == "sticky" else None,
        "num_envs": min(args.num_envs, episodes) if episodes is not None else args.num_envs,
        "seed": args.seed,
        "shard_frames": args.shard_frames,
        "chunk_frames": args.chunk_frames,
        "val_frac": float(args.val_frac),
        "test_frac": float(args.test_frac),
        "split_seed": args.split_seed,
        "paint_vel_info": bool(args.paint_vel_info),
    }


def level_splits(levels_N: np.ndarray, val_frac: float, test_frac: float, split_seed: int = 0) -> np.ndarray:
    """Split index (0 train, 1 validation, 2 test) of each level seed: a splitmix64 hash, so a level's split
    depends only on (seed, fractions, split_seed), never on the range or on the recording seed."""
    with np.errstate(over="ignore"):
        x = levels_N.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15) * np.uint64(split_seed + 1)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    u_N = (x >> np.uint64(11)).astype(np.float64) / float(2**53)
    return np.where(u_N < test_frac, 2, np.where(u_N < test_frac + val_frac, 1, 0)).astype(np.int8)


def _split_summary(settings: dict[str, Any]) -> dict[str, Any]:
    start, stop = settings["levels"]
    out: dict[str, Any] = {s: {"frames": 0, "episodes": 0, "shards": []} for s in S.SPLITS}
    if stop - start <= _LIST_LEVELS_UP_TO:
        levels = np.arange(start, stop)
        which = level_splits(levels, settings["val_frac"], settings["test_frac"], settings["split_seed"])
        for k, s in enumerate(S.SPLITS):
            out[s]["level_seeds"] = levels[which == k].tolist()
            out[s]["num_levels"] = int((which == k).sum())
        if out["train"]["num_levels"] == 0:
            raise DatasetError(
                f"--levels {start}:{stop} leaves no level for the train split with --val-frac "
                f"{settings['val_frac']} --test-frac {settings['test_frac']}; use a wider level range or "
                "smaller fractions"
            )
    return out


def _check_out_dir(root: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """Return the earlier manifest of a resumable run in `root`, None for a fresh directory, or raise."""
    if root.exists() and not root.is_dir():
        raise DatasetError(f"--out {root} is a file, not a directory; choose another --out")
    if not S.manifest_path(root).exists():
        if root.exists() and any(p for p in root.iterdir() if p.name != S.SHARD_DIR):
            raise DatasetError(
                f"--out {root} is not empty and holds no genie-gym manifest.json; choose a new or empty --out"
            )
        return None
    old = S.load_manifest(root)
    old_settings = {**_SETTING_DEFAULTS, **old.get("settings", {})}
    diffs = [
        f"{k}: {old_settings.get(k)!r} there, {settings[k]!r} now"
        for k in _SETTING_KEYS
        if old_settings.get(k) != settings[k]
    ]
    if diffs:
        raise DatasetError(
            f"--out {root} already holds a dataset recorded with other settings ({'; '.join(diffs)}); "
            f"choose another --out, or delete {root} to start over"
        )
    return old


# ---------------------------------------------------------------- the recording loop


class _SplitShards:
    """Collects finished episodes of one split and seals them into shards of >= shard_frames frames."""

    def __init__(self, split: str, done_entries: list[dict[str, Any]]):
        self.split = split
        self.done_entries = done_entries  # verified shards from an earlier run, in index order
        self.skip_episodes = sum(len(e["episode_lengths"]) for e in done_entries)
        self.finished = 0  # episodes of this split finished so far (their ordinal in the split)
        self.episodes: list[S.EpisodeRecord] = []
        self.frames = 0
        self.next_index = 0


class _Recorder:
    def __init__(
        self,
        args: Args,
        settings: dict[str, Any],
        root: Path,
        manifest: dict[str, Any],
        done: dict[str, list[dict[str, Any]]],
        stop_after_shards: int | None,
    ):
        self.args, self.settings, self.root, self.manifest = args, settings, root, manifest
        self.splits = {s: _SplitShards(s, done[s]) for s in S.SPLITS}
        self.pool = ThreadPoolExecutor(max_workers=args.compress_threads, thread_name_prefix="genie-compress")
        self.chunk_futures: deque[Future] = deque()
        self.shard_futures: deque[tuple[str, Future]] = deque()
        self.max_inflight_chunks = 4 * args.num_envs + 16
        self.stop_after_shards = stop_after_shards
        self.new_shards = 0
        self.interrupted = False
        self.env_frames = 0  # frames Procgen rendered, recorded or not (drain and max-steps skips cost these)

    # -- storage side

    def _add_chunk(self, chunks: list[Any], frames_LHWC: np.ndarray, split: _SplitShards) -> None:
        if split.finished >= split.skip_episodes:
            fut = self.pool.submit(S.compress_frames, frames_LHWC)
            chunks.append(fut)
            self.chunk_futures.append(fut)
            while len(self.chunk_futures) > self.max_inflight_chunks:  # back-pressure keeps memory bounded
                self.chunk_futures.popleft().result()
            while self.chunk_futures and self.chunk_futures[0].done():
                self.chunk_futures.popleft()
        else:  # may belong to a shard already on disk: keep raw, compress only if it turns out to be new
            chunks.append(frames_LHWC)

    def _finish_episode(self, split: _SplitShards, ep: S.EpisodeRecord) -> None:
        split.finished += 1
        split.episodes.append(ep)
        split.frames += ep.length
        if split.frames >= self.settings["shard_frames"]:
            self._seal(split)

    def _seal(self, split: _SplitShards) -> None:
        if not split.episodes:
            return
        index = split.next_index
        split.next_index += 1
        episodes, split.episodes, split.frames = split.episodes, [], 0
        if index < len(split.done_entries):  # written and verified by an earlier run: skip it
            old = split.done_entries[index]
            if old["episode_lengths"] != [ep.length for ep in episodes]:
                raise DatasetError(
                    f"resuming into {self.root} did not reproduce shard {old['file']} (different episodes); "
                    "the recording is not deterministic here (another procgen version?); "
                    f"delete {self.root} and re-record"
                )
            return
        name = S.shard_name(split.split, index)
        self.shard_futures.append((split.split, self.pool.submit(S.write_shard, self.root, name, episodes)))
        self._collect_shards(block=len(self.shard_futures) > 2)

    def _collect_shards(self, block: bool = False) -> None:
        """Record finished shard writes in the manifest, in the order they were sealed."""
        while self.shard_futures and (block or self.shard_futures[0][1].done()):
            split, fut = self.shard_futures.popleft()
            entry = fut.result()
            entry["split"] = split
            self.manifest["shards"].append(entry)
            _refresh_totals(self.manifest)
            S.write_manifest(self.root, self.manifest)
            self.new_shards += 1
            block = False
            if self.stop_after_shards is not None and self.new_shards >= self.stop_after_shards:
                self.interrupted = True
                return

    # -- stepping side

    def run(self) -> None:
        from genie_gym.envs.procgen_prompt import import_procgen

        ProcgenGym3Env = import_procgen()

        a, st = self.args, self.settings
        start, stop = st["levels"]
        E, max_steps, chunk = st["num_envs"], st["max_steps"], st["chunk_frames"]
        env = ProcgenGym3Env(
            num=E,
            env_name=st["game"],
            distribution_mode=st["mode"],
            start_level=start,
            num_levels=stop - start,
            rand_seed=st["seed"],
            num_threads=a.num_threads,
            paint_vel_info=bool(st.get("paint_vel_info", False)),
        )
        num_actions = int(env.ac_space.eltype.n)
        rng = np.random.default_rng(st["seed"])
        split_names = list(S.SPLITS)

        recording_E = np.zeros(E, dtype=bool)
        ep_len_E = np.zeros(E, dtype=np.int64)
        level_E = np.zeros(E, dtype=np.int64)
        split_E = np.zeros(E, dtype=np.int8)
        fill_E = np.zeros(E, dtype=np.int64)
        frames_ECHWC = np.empty((E, chunk, *S.FRAME_SHAPE), dtype=np.uint8)
        actions_EM = np.zeros((E, max_steps), dtype=np.int8)
        rewards_EM = np.zeros((E, max_steps), dtype=np.float32)
        chunks_E: list[list[Any]] = [[] for _ in range(E)]
        chunk_n_E: list[list[int]] = [[] for _ in range(E)]
        sticky_left_E = np.zeros(E, dtype=np.int64)
        action_E = np.zeros(E, dtype=np.int32)

        target_eps, target_frames = st["episodes"], st["frames"]
        claimed = 0
        finished_frames = 0

        def can_claim() -> bool:
            if target_eps is not None:
                return claimed < target_eps
            return finished_frames + int(ep_len_E[recording_E].sum()) < target_frames

        def flush_chunk(i: int) -> None:
            n = int(fill_E[i])
            if n:
                self._add_chunk(chunks_E[i], frames_ECHWC[i, :n].copy(), self.splits[split_names[split_E[i]]])
                chunk_n_E[i].append(n)
                fill_E[i] = 0

        bar = tqdm(
            total=target_frames,
            unit="frame",
            unit_scale=True,
            disable=not a.progress,
            desc=f"{st['game']} {st['mode']}",
            smoothing=0.1,
        )
        try:
            while not self.interrupted:
                rew_E, obs, first_E = env.observe()
                rgb_EHWC = obs["rgb"]  # a fresh array each step (gym3 copies), so it outlives the next act()
                infos = env.get_info() if first_E.any() else None
                # The policy draws for every env every step: the action stream depends on the seed alone.
                draw_E = rng.integers(0, num_actions, size=E, dtype=np.int32)
                if st["policy"] == "random":
                    action_E = draw_E
                else:  # hold each action sticky_k steps; every episode starts with a fresh one
                    renew_E = (sticky_left_E <= 0) | first_E
                    action_E = np.where(renew_E, draw_E, action_E).astype(np.int32)
                    sticky_left_E = np.where(renew_E, st["sticky_k"], sticky_left_E) - 1
                # Procgen steps on its own threads from here; the bookkeeping below overlaps with it.
                env.act(action_E)
                self.env_frames += E

                rec = np.flatnonzero(recording_E)
                rewards_EM[rec, ep_len_E[rec] - 1] = rew_E[rec]
                ended = recording_E & (first_E | (ep_len_E >= max_steps))
                for i in np.flatnonzero(ended):
                    flush_chunk(i)
                    L = int(ep_len_E[i])
                    dones = np.zeros(L, dtype=bool)
                    dones[-1] = True
                    natural = bool(first_E[i])
                    ep = S.EpisodeRecord(
                        chunks=chunks_E[i],
                        chunk_frames=chunk_n_E[i],
                        actions=actions_EM[i, :L].copy(),
                        rewards=rewards_EM[i, :L].copy(),
                        dones=dones,
                        level_seed=int(level_E[i]),
                        truncated=not natural,
                        solved=natural and bool(infos[i]["prev_level_complete"]),
                    )
                    chunks_E[i], chunk_n_E[i] = [], []
                    recording_E[i] = False
                    finished_frames += L
                    self._finish_episode(self.splits[split_names[split_E[i]]], ep)
                    if self.interrupted:
                        break
                if self.interrupted:
                    break
                if infos is not None:
                    for i in np.flatnonzero(first_E & ~recording_E):
                        if not can_claim():
                            break
                        claimed += 1
                        recording_E[i] = True
                        ep_len_E[i] = 0
                        fill_E[i] = 0
                        level_E[i] = infos[i]["level_seed"]
                        split_E[i] = level_splits(
                            level_E[i : i + 1], st["val_frac"], st["test_frac"], st["split_seed"]
                        )[0]
                if not recording_E.any() and not can_claim():
                    break
                rec = np.flatnonzero(recording_E)
                frames_ECHWC[rec, fill_E[rec]] = rgb_EHWC[rec]
                fill_E[rec] += 1
                for i in rec[fill_E[rec] >= chunk]:
                    flush_chunk(i)
                actions_EM[rec, ep_len_E[rec]] = action_E[rec]
                ep_len_E[rec] += 1
                bar.update(len(rec))
                self._collect_shards()
            if not self.interrupted:
                for split in self.splits.values():
                    self._seal(split)
                self._collect_shards(block=True)
                while self.shard_futures and not self.interrupted:
                    self._collect_shards(block=True)
        finally:
            bar.close()
            self.pool.shutdown(wait=True, cancel_futures=True)


def _refresh_totals(manifest: dict[str, Any]) -> None:
    manifest["shards"].sort(key=lambda e: (S.SPLITS.index(e["split"]), e["file"]))
    for s in S.SPLITS:
        entries = [e for e in manifest["shards"] if e["split"] == s]
        manifest["splits"][s]["frames"] = sum(e["frames"] for e in entries)
        manifest["splits"][s]["episodes"] = sum(len(e["episode_lengths"]) for e in entries)
        manifest["splits"][s]["shards"] = [e["file"] for e in entries]
    manifest["frames"] = sum(e["frames"] for e in manifest["shards"])
    manifest["episodes"] = sum(len(e["episode_lengths"]) for e in manifest["shards"])


def _verified_prefix(root: Path, old: dict[str, Any] | None) -> dict[str, list[dict[str, Any]]]:
    """Per split, the shards of an earlier run that are on disk, verify, and have no gap before them."""
    done: dict[str, list[dict[str, Any]]] = {s: [] for s in S.SPLITS}
    if old is None:
        return done
    for s in S.SPLITS:
        entries = sorted((e for e in old["shards"] if e["split"] == s), key=lambda e: e["file"])
        for k, e in enumerate(entries):
            if e["file"] != S.shard_name(s, k) or not S.shard_is_valid(root, e):
                break
            done[s].append(e)
    return done


def record(args: Args, stop_after_shards: int | None = None) -> Path:
    """Record (or resume recording) a dataset and return its directory.

    `stop_after_shards` stops after writing that many new shards, leaving an incomplete manifest, as a kill
    would (used by the resume tests).
    """
    settings = check_args(args)
    root = resolve_out(args)
    old = _check_out_dir(root, settings)
    done = _verified_prefix(root, old)
    n_old = len(old["shards"]) if old else 0
    if old is not None and old.get("complete") and sum(len(v) for v in done.values()) == n_old:
        if args.progress:
            print(f"{root}: dataset already complete ({old['frames']} frames, all {n_old} shards verified)")
        return root
    manifest: dict[str, Any] = {
        "format_version": S.FORMAT_VERSION,
        "kind": "genie-gym procgen video",
        "complete": False,
        "settings": settings,
        "game": settings["game"],
        "mode": settings["mode"],
        "levels": f"{settings['levels'][0]}:{settings['levels'][1]}",
        "policy": settings["policy"],
        "seed": settings["seed"],
        "paint_vel_info": settings["paint_vel_info"],
        "frames": 0,
        "episodes": 0,
        "frame_shape": list(S.FRAME_SHAPE),
        "num_actions": NUM_PROCGEN_ACTIONS,
        "action_names": list(COINRUN_ACTION_NAMES),
        "arrays": {
            "actions": "actions[i] is taken after frame i and leads to frame i+1",
            "rewards": "reward of transition i",
            "dones": "episode ended on transition i",
        },
        "split_rule": "splitmix64(level_seed + 0x9E3779B97F4A7C15*(split_seed+1)) -> u in [0,1): test if "
        "u < test_frac, validation if u < test_frac + val_frac, else train",
        "splits": _split_summary(settings),
        "shards": [e | {"split": s} for s in S.SPLITS for e in done[s]],
        "genie_gym_version": _version(),
    }
    root.mkdir(parents=True, exist_ok=True)
    _refresh_totals(manifest)
    S.write_manifest(root, manifest)
    t0 = time.perf_counter()
    rec = _Recorder(args, settings, root, manifest, done, stop_after_shards)
    rec.run()
    if rec.interrupted:
        return root
    manifest["complete"] = True
    manifest["last_session"] = {
        "seconds": round(time.perf_counter() - t0, 3),
        "env_frames": rec.env_frames,
        "resumed": old is not None,
    }
    _refresh_totals(manifest)
    S.write_manifest(root, manifest)
    return root


def _version() -> str:
    from genie_gym import __version__

    return __version__


def main(args: Args) -> None:
    t0 = time.perf_counter()
    root = record(args)
    m = S.load_manifest(root)
    dt = max(time.perf_counter() - t0, 1e-9)
    size = sum(e["bytes"] for e in m["shards"])
    per = {s: f"{m['splits'][s]['episodes']} ep / {m['splits'][s]['frames']} fr" for s in S.SPLITS}
    print(
        f"{root}: {m['frames']} frames, {m['episodes']} episodes ({per}), "
        f"{size / max(m['frames'], 1):.0f} B/frame, {len(m['shards'])} shards, content sha256 "
        f"{S.content_sha256(m)[:16]}, {dt:.1f} s"
    )
