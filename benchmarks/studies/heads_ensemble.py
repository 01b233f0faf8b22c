"""Is the episode-end head's gap variance? Score several heads files one by one and combined.

Each heads file of `--models` is scored on every real frame of the same `--episodes` held-out episodes
(`training.heads.heads_probs`, as `genie-gym eval` scores one step ahead), then their probabilities combined three
ways (`combine`: the mean probability, the mean logit, the minimum), each an ensemble scored at the first file's
threshold and horizon (every file must share the horizon), on the same frames, each at every threshold of
`training.heads.CURVE_THRESHOLDS`; and how the members' episode-end calls overlap (`overlap`, at
`OVERLAP_THRESHOLDS`, horizon 1): the ends found by every member, by some, by none, and the frames without an end
on which every member, or some, fire. Heads trained apart make partly independent errors: if an ensemble is
clearly better than each member, the heads' errors are variance (what regularisation, weight averaging or more
passes can reduce); if it is not and they miss the same ends, they share a bias (what the heads see or their
labels allow).

    python benchmarks/studies/heads_ensemble.py --models genie_gym/assets/world_model.pt \
        runs/s22/heads_s4_w48/world_model.pt runs/s22/heads_s5/world_model.pt \
        --data data/coinrun_hard_sticky_s2 --out benchmarks/results/heads_data/ensemble

writes <out>.json and <out>.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro
from heads_frames import curve_table

from genie_gym.data.dataset import EpisodeStore
from genie_gym.models.world_model import WorldModel
from genie_gym.training.heads import heads_probs, score_events
from genie_gym.utils.io import atomic_write_json, write_markdown

OVERLAP_THRESHOLDS = (0.1, 0.2, 0.5)


def overlap(probs_ME: list[list[np.ndarray]], events_E: list[np.ndarray], threshold: float) -> dict[str, int]:
    """Episode ends (column 0, horizon 1) found by every member, some, none; non-end frames on which every member,
    or some but not all, fire at `threshold`."""
    fired_MF = np.stack([np.concatenate([p[:, 0] >= threshold for p in probs_E]) for probs_E in probs_ME])
    end_F = np.concatenate([e[:, 0] > 0 for e in events_E])
    on_ends, elsewhere = fired_MF[:, end_F], fired_MF[:, ~end_F]
    return {"ends": int(end_F.sum()), "found_by_all": int(on_ends.all(0).sum()),
            "found_by_some": int((on_ends.any(0) & ~on_ends.all(0)).sum()),
            "found_by_none": int((~on_ends.any(0)).sum()),
            "false_alarms_of_all": int(elsewhere.all(0).sum()),
            "false_alarms_of_some": int((elsewhere.any(0) & ~elsewhere.all(0)).sum())}


def combine(probs_ME: list[list[np.ndarray]]) -> dict[str, list[np.ndarray]]:
    """The members' probabilities (per member, per episode (L, 2)) as one, per rule: `mean probability`; `mean
    logit` (the geometric mean of the odds: a member near 0 or 1 weighs more than in the mean probability, a middling
    one less); `minimum` (an event where every member fires at the threshold)."""
    stacked_E = [np.stack(ps) for ps in zip(*probs_ME, strict=True)]
    p_E = [np.clip(s.astype(np.float64), 1e-7, 1 - 1e-7) for s in stacked_E]
    return {"mean probability": [s.mean(0) for s in stacked_E],
            "mean logit": [1 / (1 + np.exp(-np.log(p / (1 - p)).mean(0))) for p in p_E],
            "minimum": [s.min(0) for s in stacked_E]}


@dataclass
class Args:
    """Score heads files one by one and as ensembles (mean probability, mean logit, minimum) on the same frames."""

    models: list[Path]
    """world-model files with heads (`genie-gym train --phase heads`), two or more of the same horizon"""
    data: Path = Path("data/coinrun_hard_sticky_s2")
    """dataset holding the held-out split"""
    split: str = "test"
    """held-out split scored"""
    episodes: int = 200
    """held-out episodes scored (every frame)"""
    seed: int = 0
    """which episodes (the same for every file)"""
    threads: int = 2
    """torch threads"""
    out: Path = Path("runs/heads_ensemble")
    """writes OUT.json and OUT.md"""


def main(args: Args) -> dict:
    t0 = time.time()
    if len(args.models) < 2:
        raise SystemExit("--models takes two or more heads files (an ensemble of one is the file itself)")
    if len({str(m) for m in args.models}) < len(args.models):
        raise SystemExit(f"--models names a file twice ({' '.join(map(str, args.models))}): name each file once")
    torch.set_num_threads(args.threads)
    store = EpisodeStore(args.data, args.split)
    rows: dict[str, dict] = {}
    probs_ME, events_E, cfg = [], None, None
    for path in args.models:
        wm = WorldModel.load(path)
        if wm.heads is None:
            raise SystemExit(f"{path} has no event heads; train them with `genie-gym train --phase heads`")
        if cfg is not None and (wm.config.heads.horizon, wm.config.heads.reward_ends_episode) != \
                (cfg.horizon, cfg.reward_ends_episode):
            raise SystemExit(f"{path}'s heads label events with horizon {wm.config.heads.horizon} (reward ends the "
                             f"episode: {wm.config.heads.reward_ends_episode}), {args.models[0]}'s with horizon "
                             f"{cfg.horizon} ({cfg.reward_ends_episode}): an ensemble takes heads of one horizon")
        cfg = cfg or wm.config.heads
        probs_E, events_E = heads_probs(wm, store, args.episodes, args.seed, amp=False)
        rows[str(path)] = score_events(probs_E, events_E, wm.config.heads)
        probs_ME.append(probs_E)
    for rule, combined_E in combine(probs_ME).items():
        rows[f"ensemble ({rule})"] = score_events(combined_E, events_E, cfg)
    overlaps = {str(th): overlap(probs_ME, events_E, th) for th in OVERLAP_THRESHOLDS}
    result = {"args": {k: [str(m) for m in v] if k == "models" else str(v) if isinstance(v, Path) else v
                       for k, v in vars(args).items()},
              "episodes": len(events_E), "rows": rows, "overlap": overlaps, "seconds": round(time.time() - t0, 1)}
    atomic_write_json(args.out.with_suffix(".json"), result)
    lines = ["# Event heads one by one and as ensembles", "",
             f"`python benchmarks/studies/heads_ensemble.py --models {' '.join(map(str, args.models))} --data "
             f"{args.data} --split {args.split} --episodes {args.episodes} --out {args.out}` "
             f"({result['seconds'] / 60:.1f} min): every real frame of {len(events_E)} {args.split} episodes, "
             "precision / recall at each threshold. The ensembles combine the members' probabilities frame by "
             "frame: the mean probability, the mean logit (the geometric mean of the odds) and the minimum (an "
             f"event where every member fires), each scored at {args.models[0]}'s threshold and horizon.", "",
             *curve_table("heads", rows)]
    lines += ["", f"How the {len(probs_ME)} members' episode-end calls overlap (horizon 1): of the "
              f"{overlaps[str(OVERLAP_THRESHOLDS[0])]['ends']} ends, those every member finds, some, none; and the "
              "frames without an end on which every member fires, or some but not all:", "",
              "| threshold | found by all | by some | by none | false alarms of all | of some |",
              "|---|---|---|---|---|---|"]
    for th, o in overlaps.items():
        lines.append(f"| {th} | {o['found_by_all']} | {o['found_by_some']} | {o['found_by_none']} | "
                     f"{o['false_alarms_of_all']} | {o['false_alarms_of_some']} |")
    write_markdown(args.out.with_suffix(".md"), lines)
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
