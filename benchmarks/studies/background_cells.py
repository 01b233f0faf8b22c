"""Where does the dynamics beat copying the last frame: on the background or on the level itself?

Held-out episodes are replayed in Procgen with the recorded level seed and actions twice: once as recorded (every
frame must come out bit-identical, or the episode is skipped) and once with `use_backgrounds=False`, which draws the
same level and agent on black. The pixels that differ are the background's. Each grid cell of a frame (8 x 8 pixels,
its 4 tokens) is then classed by its background share (background >= 95%, foreground <= 5%, mixed) and by whether
its pixels changed since the previous frame, and the dynamics' next-frame token accuracy (one pass, all of the
frame's tokens masked, the 7 real frames before it as context, its LAM's codes: `genie-gym eval`'s measure) is set
beside copying the last frame's tokens in each class.

    python benchmarks/studies/background_cells.py --data data/coinrun_hard_sticky

Writes benchmarks/results/background_cells.{json,md}.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro


@dataclass
class Args:
    """Token accuracy over copy by cell class (background, mixed, foreground; changed or not) on held-out clips."""

    model: Path | None = None
    """world-model file (default: the shipped one)"""
    data: Path = Path("data/coinrun_hard_sticky")
    """dataset recorded by `genie-gym data` (its test split is replayed)"""
    episodes: int = 16
    """test episodes to replay (the first ones of the split)"""
    max_frames: int = 400
    """frames per episode at most (non-overlapping 8-frame clips; the last frame of each is scored)"""
    threads: int = 2
    """torch threads"""
    out: Path = Path("benchmarks/results/background_cells")
    """writes OUT.json and OUT.md"""


def replay(game: str, mode: str, level: int, actions: np.ndarray, frames: int, backgrounds: bool) -> np.ndarray:
    """The level played with the recorded actions: (frames, H, W, 3) uint8 observations."""
    from genie_gym.envs.procgen_prompt import import_procgen

    env = import_procgen()(num=1, env_name=game, start_level=level, num_levels=1, distribution_mode=mode,
                           rand_seed=0, use_backgrounds=backgrounds)
    out = []
    for t in range(frames):
        out.append(env.observe()[1]["rgb"][0].copy())
        if t < frames - 1:
            env.act(actions[t : t + 1].astype(np.int32))
    return np.stack(out)


def main(args: Args) -> dict:
    from genie_gym.data.dataset import EpisodeStore
    from genie_gym.evaluation.evaluate import infer_actions_windowed
    from genie_gym.models.frames import to_float
    from genie_gym.models.world_model import WorldModel
    from genie_gym.utils.io import atomic_write_json, write_markdown

    torch.set_num_threads(args.threads)
    wm = WorldModel.load(args.model).eval()
    store = EpisodeStore(args.data, "test")
    settings = store.manifest["settings"]
    G, P, T = wm.tokenizer.groups, wm.tokenizer.patch, wm.config.seq_len
    classes = [f"{k}, {c}" for k in ("background", "mixed", "foreground") for c in ("changed", "unchanged")]
    tally = {c: np.zeros(3) for c in classes}  # tokens, dynamics hits, copy hits
    replayed = skipped = 0
    for ep in range(min(args.episodes, len(store))):
        L = min(int(store.episode_lengths[ep]), args.max_frames) // T * T
        if L < T:
            continue
        recorded = store.frames(ep, 0, L)
        actions = store.actions(ep)
        level = int(store.level_seeds[ep])
        if not np.array_equal(replay(settings["game"], settings["mode"], level, actions, L, True), recorded):
            skipped += 1
            continue
        background_LHW = (replay(settings["game"], settings["mode"], level, actions, L, False) != recorded).any(-1)
        replayed += 1
        clips_BTHWC = recorded.reshape(L // T, T, *recorded.shape[1:])
        with torch.no_grad():
            frames_BTHWC = to_float(torch.from_numpy(clips_BTHWC))
            tokens_BTN = wm.tokenizer.encode(frames_BTHWC)
            actions_BT = infer_actions_windowed(wm.lam, frames_BTHWC, T)
            mask_BTN = torch.zeros_like(tokens_BTN, dtype=torch.bool)
            mask_BTN[:, -1] = True
            pred_BN = wm.dynamics(tokens_BTN, actions_BT, mask_BTN)[:, -1].argmax(-1)
        B, g = clips_BTHWC.shape[0], recorded.shape[1] // P
        hit_BC = (pred_BN == tokens_BTN[:, -1]).numpy().reshape(B, g * g, G).sum(-1)  # cell-major tokens
        copy_BC = (tokens_BTN[:, -2] == tokens_BTN[:, -1]).numpy().reshape(B, g * g, G).sum(-1)
        share_BC = background_LHW.reshape(B, T, g, P, g, P)[:, -1].mean((2, 4)).reshape(B, g * g)
        changed_BC = (clips_BTHWC[:, -1] != clips_BTHWC[:, -2]).any(-1).reshape(B, g, P, g, P).any((2, 4))
        changed_BC = changed_BC.reshape(B, g * g)
        for kind, in_kind in (("background", share_BC >= 0.95), ("foreground", share_BC <= 0.05),
                              ("mixed", (share_BC > 0.05) & (share_BC < 0.95))):
            for state, in_state in (("changed", changed_BC), ("unchanged", ~changed_BC)):
                m = in_kind & in_state
                tally[f"{kind}, {state}"] += (G * m.sum(), hit_BC[m].sum(), copy_BC[m].sum())
    total = sum(tally.values())
    rows = {c: {"tokens": int(v[0]), "share": float(v[0] / max(total[0], 1)), "accuracy": float(v[1] / max(v[0], 1)),
                "copy": float(v[2] / max(v[0], 1)), "gain": float((v[1] - v[2]) / max(total[0], 1))}
            for c, v in tally.items()}
    rows["all"] = {"tokens": int(total[0]), "share": 1.0, "accuracy": float(total[1] / max(total[0], 1)),
                   "copy": float(total[2] / max(total[0], 1)), "gain": float((total[1] - total[2]) / max(total[0], 1))}
    command = " ".join(["python", "benchmarks/studies/background_cells.py", *sys.argv[1:]])
    result = {"command": command, "episodes_replayed": replayed, "episodes_skipped": skipped, "rows": rows}
    atomic_write_json(args.out.with_suffix(".json"), result)
    lines = ["# Where the dynamics beats copying: background or level", "",
             f"`{command}`: {replayed} held-out episodes replayed without Procgen's backgrounds ({skipped} skipped: "
             f"not bit-identical on replay), the last frame of every 8-frame clip scored, {rows['all']['tokens']} "
             "tokens. A cell is background when >= 95% of its pixels are the background's, foreground when <= 5%; "
             "changed when any of its pixels differs from the previous frame. The last column is the class's share "
             "of the whole gain over copy (its points of the all-token figure).", "",
             "| cells | share of tokens | dynamics accuracy | copy last frame | points of the gain over copy |",
             "|---|---|---|---|---|"]
    lines += [f"| {c} | {100 * r['share']:.1f}% | {100 * r['accuracy']:.1f}% | {100 * r['copy']:.1f}% | "
              f"{100 * r['gain']:+.2f} |" for c, r in rows.items()]
    write_markdown(args.out.with_suffix(".md"), lines)
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
