"""How well could any head predict CoinRun's episode ends and coins one step ahead? The game decides.

The event heads (`genie-gym train --phase heads`) label frame t of an episode with the event of the transition out
of it (the episode ends, the coin pays), so they predict a step ahead: the outcome also depends on the action the
recording policy draws next. This study measures how much, in the game itself: it plays `--episodes` episodes on
the test levels of `--data` with the policy that recorded it (uniform random, or each action held `sticky_k` steps),
and at every frame clones Procgen's state and tries all 15 actions from it. Three predictors that read the exact
state (what no frame-reading head has, so their scores bound the heads'):

- `state + action`: the outcome of the action actually taken (1 or 0): a check that cloning is exact (precision
  and recall 1);
- `state + policy`: the probability under the policy given the previous action: held with probability
  (k-1)/k, a fresh uniform draw otherwise (what frames t-1, t can show of the action: the motion it caused);
- `state`: the share of the 15 actions that cause the event (a fresh uniform draw).

Each is scored as `genie-gym train --phase heads` scores the heads (`training.heads.pr_curve`): per event,
precision and recall over every frame, at each threshold. Procgen's 1000-step time limit is not an event (as the
heads' labels).

    python benchmarks/studies/events_ceiling.py --data data/coinrun_hard_sticky --episodes 200

writes benchmarks/results/heads_data/events_ceiling.{json,md}.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tyro
from tqdm import tqdm

from genie_gym.data.shards import load_manifest
from genie_gym.envs.procgen_prompt import import_procgen
from genie_gym.training.heads import PROCGEN_TIME_LIMIT, pr_curve
from genie_gym.utils.io import atomic_write_json, write_markdown

EVENTS = ("terminal", "reward")  # the heads' two columns: the episode ends (by the game), a reward is paid
PREDICTORS = ("state + action", "state + policy", "state")
THRESHOLDS = (0.3, 0.5, 0.7, 0.9)  # the columns of heads_data/README.md's table, and 0.7


@dataclass
class Args:
    """Bayes ceiling of one-step-ahead episode-end and reward prediction in the game, by cloning Procgen's state."""

    data: Path = Path("data/coinrun_hard_sticky")
    """recorded dataset: its game, mode, policy and test levels"""
    episodes: int = 200
    """episodes played, one per test level (its first levels)"""
    max_steps: int = PROCGEN_TIME_LIMIT
    """stop an episode after this many steps (not an event; Procgen's own limit is 1000)"""
    seed: int = 0
    """seed of the policy's draws"""
    out: Path = Path("benchmarks/results/heads_data/events_ceiling")
    """writes OUT.json and OUT.md"""


def play(env: Any, rng: np.random.Generator, policy: str, sticky_k: int, max_steps: int, num_actions: int
         ) -> dict[str, np.ndarray]:
    """One episode from the env's current start: per frame, the outcome of every action (tried from a clone of the
    state) and of the action the policy took, and the previous action (-1 on the first frame)."""
    outcomes, taken, prev = [], [], []
    left, action, last = 0, 0, -1
    for t in range(max_steps):
        draw = int(rng.integers(0, num_actions))
        if policy == "random" or left <= 0 or t == 0:
            action, left = draw, sticky_k
        left -= 1
        state = env.callmethod("get_state")
        tried = np.zeros((num_actions, 2), dtype=bool)  # (terminal, reward) per action
        for a in range(num_actions):
            env.callmethod("set_state", state)
            env.act(np.array([a], dtype=np.int32))
            rew, _, first = env.observe()
            tried[a] = (bool(first[0]) and t + 1 < PROCGEN_TIME_LIMIT, rew[0] != 0)
        env.callmethod("set_state", state)
        env.act(np.array([action], dtype=np.int32))
        rew, _, first = env.observe()
        outcome = (bool(first[0]) and t + 1 < PROCGEN_TIME_LIMIT, rew[0] != 0)
        outcomes.append(tried)
        taken.append((action, *outcome))
        prev.append(last)
        last = action
        if first[0]:
            break
    taken_arr = np.array(taken)
    return {"tried_LA2": np.stack(outcomes), "action_L": taken_arr[:, 0].astype(np.int64),
            "events_L2": taken_arr[:, 1:].astype(bool), "prev_L": np.array(prev, dtype=np.int64)}


def predictions(ep: dict[str, np.ndarray], policy: str, sticky_k: int) -> dict[str, np.ndarray]:
    """(L, 2) probabilities of (terminal, reward) per predictor."""
    tried, L = ep["tried_LA2"].astype(np.float64), len(ep["action_L"])
    fresh = tried.mean(1)  # a uniform draw over the actions
    held = tried[np.arange(L), np.maximum(ep["prev_L"], 0)]  # the previous action again
    p_hold = 0.0 if policy == "random" else (sticky_k - 1) / sticky_k
    with_policy = np.where((ep["prev_L"] >= 0)[:, None], p_hold * held + (1 - p_hold) * fresh, fresh)
    return {"state + action": tried[np.arange(L), ep["action_L"]], "state + policy": with_policy, "state": fresh}


def main(args: Args) -> dict[str, Any]:
    manifest = load_manifest(args.data)
    settings = manifest["settings"]
    policy, sticky_k = settings["policy"], int(settings.get("sticky_k") or 1)
    levels = [int(s) for s in manifest["splits"]["test"]["level_seeds"]][:args.episodes]
    if len(levels) < args.episodes:
        raise SystemExit(f"{args.data} has {len(levels)} test levels; pass --episodes {len(levels)} or fewer")
    ProcgenGym3Env = import_procgen()
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    episodes = []
    for level in tqdm(levels, desc="episodes"):
        env = ProcgenGym3Env(num=1, env_name=manifest["game"], start_level=level, num_levels=1,
                             distribution_mode=manifest["mode"], rand_seed=level,
                             paint_vel_info=bool(manifest.get("paint_vel_info", False)))
        episodes.append(play(env, rng, policy, sticky_k, args.max_steps, int(manifest["num_actions"])))
        env.close()
    probs = [predictions(ep, policy, sticky_k) for ep in episodes]
    scores: dict[str, dict[str, list[dict[str, float]]]] = {}
    for name in PREDICTORS:
        scores[name] = {}
        for e, event in enumerate(EVENTS):
            p_E = [p[name][:, e] for p in probs]
            y_E = [ep["events_L2"][:, e] for ep in episodes]
            scores[name][event] = pr_curve(p_E, y_E, THRESHOLDS)
    frames = sum(len(ep["action_L"]) for ep in episodes)
    exact = all(np.array_equal(ep["tried_LA2"][np.arange(len(ep["action_L"])), ep["action_L"]], ep["events_L2"])
                for ep in episodes)  # the clone's outcome of the taken action is what the game did
    counts = {event: int(sum(ep["events_L2"][:, e].sum() for ep in episodes)) for e, event in enumerate(EVENTS)}
    at_events = {event: float(np.mean(np.concatenate([ep["tried_LA2"][ep["events_L2"][:, e], :, e].mean(1)
                                                      for ep in episodes]))) if counts[event] else None
                 for e, event in enumerate(EVENTS)}
    result = {"command": " ".join(["python benchmarks/studies/events_ceiling.py", *sys.argv[1:]]),
              "data": str(args.data), "game": manifest["game"], "mode": manifest["mode"], "policy": policy,
              "sticky_k": sticky_k, "episodes": len(episodes), "frames": frames, "events": counts,
              "cloning_exact": exact,
              "share_of_actions_causing_the_event_at_event_frames": at_events, "scores": scores,
              "seconds": round(time.time() - t0, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out.with_suffix(".json"), result)
    write_markdown(args.out.with_suffix(".md"), markdown(result))
    return result


def markdown(r: dict[str, Any]) -> list[str]:
    policy = f"each action held {r['sticky_k']} steps" if r["policy"] == "sticky" else "a fresh action every step"
    lines = ["# What the game allows: one-step-ahead events predicted from the exact state", "",
             f"`{r['command']}` ({r['seconds'] / 60:.1f} min): {r['episodes']} episodes of {r['game']} "
             f"({r['mode']}) on the test levels of `{r['data']}`, the recording's policy ({policy}); "
             f"{r['frames']:,} frames, {r['events']['terminal']} episode ends by the game, {r['events']['reward']} "
             "rewards. At every frame Procgen's state is cloned and all 15 actions tried"
             + (" (the clone's outcome of each action taken is what the game did: cloning is exact)." if
                r["cloning_exact"] else " (NOT exact: the clones' outcomes differ from the game's)."), "",
             "Precision / recall of each predictor, per event and threshold (as the heads are scored):", "",
             "| predictor | event | " + " | ".join(f"at {th}" for th in THRESHOLDS) + " |",
             "|---|---|" + "---|" * len(THRESHOLDS)]
    for name, per_event in r["scores"].items():
        for event, rows in per_event.items():
            cells = " | ".join(f"{s['precision']:.2f} / {s['recall']:.2f}" for s in rows)
            lines.append(f"| {name} | {'episode end' if event == 'terminal' else 'reward'} | {cells} |")
    share = r["share_of_actions_causing_the_event_at_event_frames"]
    lines += ["", "At the frames whose transition ended the episode, on average "
              f"{share['terminal']:.0%} of the 15 actions would have ended it too"
              + (f"; at the rewarded frames, {share['reward']:.0%} of them would have paid." if share["reward"]
                 is not None else "."),
              "`state + action` knows the action taken (1.00 / 1.00 wherever there are events: cloning is exact); "
              "`state + policy` knows the previous action and the policy (held with probability (k-1)/k), what two "
              "frames can show; `state` assumes a uniform draw. Baselines: a head that always fires scores the "
              "event rate as precision at recall 1, one that never fires recall 0."]
    return lines


if __name__ == "__main__":
    main(tyro.cli(Args))
