"""What does latent BC need from its labels? The paper's protocol run with labels of known quality, side by side.

A diagnostic for issue 6 (latent BC at N = 200 solves 58% of levels, the target is 90% of the oracle). Every row
runs the same protocol as `agents/latent_bc.py` and `benchmarks/bc_coinrun.py`: a policy of the oracle's
architecture learns the row's labels from single frames, table D maps each label to the real actions of N
labelled transitions, and the agent acts a ~ pi(x), u ~ D[a]. Only the labels differ:

- `movement`: the expert's true movement class (6 classes, CoinRun's synonyms merged): perfect labels;
- `idm`: a supervised inverse-dynamics CNN (frames t-2..t+1 -> movement class) trained on the real actions of
  the first half of the episodes: about the most a model that reads the frames can say about the action;
- `movement_noisy_<percent>`: the same, with that share of them made wrong at random (`--noise`), and
  `movement_noisy` at the IDM's held-out error rate: as accurate as the IDM, but wrong on random transitions;
- `lam`: the LAM's codes (the shipped world model's by default): what latent BC uses;
- `motion`: no model: the camera's scroll from frame t to t+1 (`best_shift`), as left/none/right x up/not;
- `pooled`: no label at all: u drawn from the N labelled actions (table D when every code is the same).

The oracle (real actions, same data) is the reference. The IDM and the noisy labels are probes: they use real
actions beyond the N that latent BC may use, so they bound it; they are not agents we offer.

    python benchmarks/studies/latent_bc_labels.py          # ~45 min on 2 cores; needs the PPO expert, shipped model
    python benchmarks/studies/latent_bc_labels.py --quick  # smoke run, ~1 min, writes to runs/bench_quick
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from tqdm import tqdm

from agents.baselines import NUM_ACTIONS
from agents.bc import train_classifier
from agents.collect import ExpertSet, make_collect_policy, run_policy_episodes
from agents.evaluate import CategoricalTorchPolicy, EvalResult, evaluate_policy
from agents.latent_bc import CodeActionTable, LatentBCPolicy, label_expert_set, load_lam, select_labelled
from agents.policies import ImpalaEncoder, ImpalaPolicy
from genie_gym.data.games import MOVEMENT_NAMES, movement_class
from genie_gym.errors import ConfigError
from genie_gym.evaluation.metrics import best_shift, nmi
from genie_gym.utils.io import atomic_write_bytes, atomic_write_json

NUM_MOVES = len(MOVEMENT_NAMES)  # 6
ROWS = ("oracle", "movement", "idm", "movement_noisy", "lam", "motion", "pooled")


@dataclass
class Args:
    """The latent-BC protocol with labels of known quality: which labels reach the oracle?"""

    quick: bool = False
    """smoke run: 8 episodes, 5 training steps, 2 levels x 2 seeds of at most 30 steps; the expert must exist
    (agents/assets)"""
    expert: str | None = None
    """PPO expert checkpoint (default: agents/assets/ppo_coinrun_easy.zip)"""
    world_model: str | None = None
    """world model whose LAM gives the `lam` labels (default: the shipped one)"""
    expert_episodes: int = 300
    """expert episodes on easy levels 100000.. (the same data as bc_coinrun.py at the same seed)"""
    n_labelled: int = 200
    """N: labelled transitions that build table D (per evaluation seed, as bc_coinrun.py)"""
    policy_steps: int = 1500
    """optimiser steps for every policy (as bc_coinrun.py's --bc-steps)"""
    idm_steps: int = 4000
    """optimiser steps for the inverse-dynamics probe"""
    idm_context: int = 4
    """frames the IDM reads, ending at t+1 (4: t-2, t-1, t, t+1)"""
    idm_future: int = 0
    """frames after t+1 the IDM also reads (an action's effect shows over the following frames, mixed with the next
    actions): does a longer view make labels good enough?"""
    paint_vel_info: bool = False
    """ablation: Procgen's velocity bar in the expert's recorded frames and in every evaluated game (the expert acts
    on plain frames); the `lam` row then needs a LAM trained on painted frames (--world-model)"""
    idm_cross_fit: bool = False
    """label each half of the episodes with an IDM trained on the other half, so no label is a fitted action"""
    noise: tuple[float, ...] = (0.1, 0.2)
    """fractions of true movement labels made wrong, one row `movement_noisy_<percent>` each (with the `idm` row,
    one more, `movement_noisy`, at the IDM's held-out error rate)"""
    rows: tuple[str, ...] = ROWS
    """which rows to run (oracle, movement, idm, movement_noisy, lam, motion, pooled)"""
    num_levels: int = 100
    """held-out evaluation levels (200000..)"""
    max_steps: int = 1000
    """per-episode step limit in evaluation (CoinRun's own limit is 1000; --quick: 30)"""
    seeds: int = 5
    """evaluation seeds (each plays every level once)"""
    seed: int = 0
    """seed of the expert's episodes and of every training run"""
    threads: int = 2
    """torch CPU threads"""
    report_only: bool = False
    """rebuild <out>/latent_bc_labels.md from its JSON without running anything"""
    out: Path | None = None
    """directory for latent_bc_labels.{json,md} (default benchmarks/results, or runs/bench_quick with --quick)"""


# ------------------------------------------------------------------------------------------------ labels
def context_indices(length: int, context: int, future: int = 0) -> np.ndarray:
    """(length-1, context+future) frame indices t-context+2 .. t+1+future for each transition t, clamped to the
    episode."""
    t = np.arange(length - 1)[:, None] + np.arange(2 - context, 2 + future)[None]
    return np.clip(t, 0, length - 1)


class InverseDynamicsProbe(nn.Module):
    """IMPALA CNN over `context` stacked frames (t-context+2 .. t+1+future) -> movement class of the action at t."""

    def __init__(self, context: int) -> None:
        super().__init__()
        self.context = context
        self.encoder = ImpalaEncoder(in_channels=3 * context)
        self.head = nn.Linear(self.encoder.out_dim, NUM_MOVES)

    def forward(self, frames_BKHWC: torch.Tensor) -> torch.Tensor:
        B, K, H, W, C = frames_BKHWC.shape
        x = frames_BKHWC.float().div(255).permute(0, 1, 4, 2, 3).reshape(B, K * C, H, W)
        return self.head(self.encoder(x))


def idm_labels(data: ExpertSet, context: int, steps: int, seed: int, cross_fit: bool = False,
               future: int = 0) -> tuple[np.ndarray, dict[str, float]]:
    """Train the probe on the first half of the episodes' real actions; label every transition with its argmax.
    Also returns its accuracy and NMI on the other half, which it never trained on.

    `cross_fit`: a second probe trains on the second half, and each half is labelled by the probe that never saw
    it, so no label repeats an action the probe fitted (twice the training time)."""
    eps = data.episodes
    half = max(1, len(eps) // 2)
    idx = [context_indices(ep.length, context, future) for ep in eps]
    moves = [movement_class(ep.actions[: ep.length - 1]) for ep in eps]
    pairs = [(e, t) for e in range(len(eps)) for t in range(eps[e].length - 1)]
    first = [p for p in pairs if p[0] < half]
    second = [p for p in pairs if p[0] >= half] or first

    def batch(ps: list[tuple[int, int]]) -> torch.Tensor:
        return torch.from_numpy(np.stack([eps[e].frames[idx[e][t]] for e, t in ps]))

    def train(on: list[tuple[int, int]], desc: str) -> InverseDynamicsProbe:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        net = InverseDynamicsProbe(context + future)
        opt = torch.optim.Adam(net.parameters(), lr=5e-4)
        for _ in tqdm(range(steps), desc=desc, leave=False):
            b = [on[i] for i in rng.integers(0, len(on), 64)]
            loss = F.cross_entropy(net(batch(b)), torch.tensor([moves[e][t] for e, t in b]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return net.eval()

    @torch.no_grad()
    def predict(net: InverseDynamicsProbe, ps: list[tuple[int, int]]) -> np.ndarray:
        return np.concatenate([net(batch(ps[i : i + 256])).argmax(1).numpy() for i in range(0, len(ps), 256)])

    net_a = train(first, "idm probe")
    pred, truth = predict(net_a, second), np.array([moves[e][t] for e, t in second])
    info = {"held_out_accuracy": float((pred == truth).mean()), "held_out_nmi": nmi(pred, truth)}
    if not cross_fit:
        return predict(net_a, pairs), info
    net_b = train(second, "idm probe, 2nd half")
    labels = np.concatenate([predict(net_b, first), pred]) if second is not first else pred
    truth_all = np.concatenate([np.array([moves[e][t] for e, t in first]), truth]) if second is not first else truth
    info |= {"cross_fit_accuracy": float((labels == truth_all).mean()), "cross_fit_nmi": nmi(labels, truth_all)}
    return labels, info


def motion_labels(data: ExpertSet) -> np.ndarray:
    """Camera scroll t -> t+1 as 6 classes: (left, none, right) x (up, not up). The picture moving left means
    the agent moved right."""
    out = []
    for ep in data.episodes:
        f = ep.frames.astype(np.float32) / 255
        for t in range(ep.length - 1):
            dx, dy, _, _ = best_shift(f[t], f[t + 1])
            out.append(2 * (int(np.sign(dx)) + 1) + int(dy < 0))
    return np.asarray(out, dtype=np.int64)


def noisy(labels: np.ndarray, fraction: float, num_classes: int, seed: int) -> np.ndarray:
    """`labels` with a `fraction` of them (in expectation) changed to a uniformly random *other* class, so their
    accuracy is 1 - fraction."""
    rng = np.random.default_rng(seed)
    out = labels.copy()
    hit = rng.random(len(out)) < fraction
    out[hit] = (out[hit] + rng.integers(1, num_classes, int(hit.sum()))) % num_classes
    return out


# ------------------------------------------------------------------------------------------------ protocol
def latent_bc_row(frames: np.ndarray, labels: np.ndarray, num_labels: int, actions: np.ndarray, args: Args,
                  ev: dict[str, Any], name: str) -> tuple[EvalResult, dict[str, float]]:
    """Policy on `labels`, table D from N labelled transitions per evaluation seed, evaluated on held-out levels."""
    net, stats = train_classifier(frames, labels, num_labels, args.policy_steps, seed=args.seed, desc=name)
    n = min(args.n_labelled, len(labels))

    def for_seed(s: int, net: ImpalaPolicy = net) -> LatentBCPolicy:
        idx = select_labelled(len(labels), n, seed=1000 + s)
        return LatentBCPolicy(net, CodeActionTable(labels[idx], actions[idx], num_labels))

    return evaluate_policy(for_seed, desc=name, **ev), stats


class PooledActions:
    """No label: u drawn from the N labelled actions (table D with one code)."""

    def __init__(self, actions: np.ndarray) -> None:
        self.table = CodeActionTable(np.zeros(len(actions), np.int64), actions, 1)

    def act(self, obs_BHWC: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.table.sample(np.zeros(len(obs_BHWC), np.int64), obs_BHWC, rng)


def main(args: Args) -> dict:
    if args.quick:
        args = replace(args, expert_episodes=6, n_labelled=20, policy_steps=2, idm_steps=2, num_levels=2,
                       max_steps=30, seeds=2, out=args.out or Path("runs/bench_quick"))
    out = args.out or Path("benchmarks/results")
    if args.report_only:
        result = json.loads((out / "latent_bc_labels.json").read_text())
        write_report(result, out / "latent_bc_labels.md")
        return result
    unknown = sorted(set(args.rows) - set(ROWS))
    if unknown:
        raise ConfigError(f"--rows {' '.join(unknown)}: unknown; choose from {' '.join(ROWS)}")
    if "movement_noisy" in args.rows and not args.noise and "idm" not in args.rows:
        raise ConfigError("--rows movement_noisy needs --noise values or the idm row (for the IDM's error rate)")
    if any(not 0.0 <= x <= 1.0 for x in args.noise):
        raise ConfigError(f"--noise {args.noise}: each value is a fraction of labels, within 0..1")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    expert = make_collect_policy("expert", args.expert)
    # a LAM trained on the other kind of frames is refused here, before any work
    lam_seq = load_lam(args.world_model, paint_vel_info=args.paint_vel_info) if "lam" in args.rows else None
    data = run_policy_episodes(expert, args.expert_episodes, args.seed, distribution_mode="easy",
                               paint_vel_info=args.paint_vel_info)
    frames = np.concatenate([ep.frames[: ep.length - 1] for ep in data.episodes])
    u = np.concatenate([ep.actions[: ep.length - 1] for ep in data.episodes]).astype(np.int64)
    moves = movement_class(u)
    n = min(args.n_labelled, len(u))
    ev = dict(num_levels=args.num_levels, seeds=list(range(args.seeds)), distribution_mode="easy",
              max_steps=args.max_steps, paint_vel_info=args.paint_vel_info)
    idm_info: dict[str, float] = {}
    rows: dict[str, dict[str, Any]] = {}
    for name in ROWS:  # in this order, so the IDM's error rate is known before the noisy row
        if name not in args.rows:
            continue
        if name == "oracle":
            net, stats = train_classifier(frames, u, NUM_ACTIONS, args.policy_steps, seed=args.seed, desc=name)
            r = evaluate_policy(CategoricalTorchPolicy(net), desc=name, **ev)
            rows[name] = {"what": "real actions (15), every transition", "num_labels": NUM_ACTIONS,
                          "nmi_actions": 1.0, "nmi_movement": nmi(u, moves), **r.summary(), "policy": stats}
            continue
        if name == "pooled":
            r = evaluate_policy(lambda s: PooledActions(u[select_labelled(len(u), n, seed=1000 + s)]), desc=name,
                                **ev)
            rows[name] = {"what": "no label: u from the N labelled actions", "num_labels": 1, "nmi_actions": 0.0,
                          "nmi_movement": 0.0, **r.summary(), "policy": {}}
            continue
        if name == "movement_noisy":
            noises = [(f"movement_noisy_{round(100 * x)}", x) for x in args.noise]
            if idm_info:
                noises.append((name, 1.0 - idm_info.get("cross_fit_accuracy", idm_info["held_out_accuracy"])))
            for row, noise in noises:
                lab = noisy(moves, noise, NUM_MOVES, args.seed)
                r, stats = latent_bc_row(frames, lab, NUM_MOVES, u, args, ev, row)
                rows[row] = {"what": f"true movement class, {100 * noise:.0f}% made wrong at random", "noise": noise,
                             "num_labels": NUM_MOVES, "nmi_actions": nmi(lab, u), "nmi_movement": nmi(lab, moves),
                             "movement_accuracy": float((lab == moves).mean()), **r.summary(), "policy": stats}
            continue
        if name == "movement":
            lab, k, what = moves, NUM_MOVES, "true movement class (perfect labels)"
        elif name == "idm":
            lab, idm_info = idm_labels(data, args.idm_context, args.idm_steps, args.seed, args.idm_cross_fit,
                                       args.idm_future)
            k, what = NUM_MOVES, (f"supervised IDM, frames t-{args.idm_context - 2}..t+{1 + args.idm_future} (probe"
                                  + (", cross-fitted)" if args.idm_cross_fit else ")"))
        elif name == "lam":
            assert lam_seq is not None
            lam, seq_len = lam_seq
            lab = np.concatenate(label_expert_set(lam, data, seq_len, progress=False))
            k, what = int(lam.num_actions), f"LAM codes ({args.world_model or 'shipped world model'})"
        else:  # motion
            lab, k, what = motion_labels(data), NUM_MOVES, "camera scroll t -> t+1, no model"
        r, stats = latent_bc_row(frames, lab, k, u, args, ev, name)
        rows[name] = {"what": what, "num_labels": k, "nmi_actions": nmi(lab, u), "nmi_movement": nmi(lab, moves),
                      # LAM codes have no fixed meaning; the other labels use the movement classes' indices
                      "movement_accuracy": None if name == "lam" else float((lab == moves).mean()),
                      **r.summary(), "policy": stats}
    result = {
        "rows": rows,
        "idm_probe": idm_info,
        "expert_data": {"episodes": len(data), "transitions": int(len(u)), "levels": "100000.. (easy)"},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(args).items()},
        "seconds": round(time.perf_counter() - t0, 1),
        "command": " ".join(["python", "benchmarks/studies/latent_bc_labels.py", *sys.argv[1:]]),
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "latent_bc_labels.json", result)
    write_report(result, out / "latent_bc_labels.md")
    return result


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def write_report(result: dict, path: Path, extra: str = "") -> None:
    """The markdown table of a result dict (`--report-only` rebuilds it from the JSON)."""
    cfg, idm = result["settings"], result["idm_probe"]
    order = {name: i for i, name in enumerate(ROWS)}
    rows = dict(sorted(result["rows"].items(), key=lambda kv: (order[kv[0].rsplit("_", 1)[0]]
                                                                if kv[0] not in order else order[kv[0]], kv[0])))
    oracle = rows.get("oracle", {}).get("solved")
    max_steps = cfg.get("max_steps", 1000)  # results written before the option existed used CoinRun's 1000
    steps_line = "" if max_steps == 1000 else f", at most {max_steps} steps per episode"
    table = "\n".join(
        f"| {name} | {row['what']} | {_pct(row.get('movement_accuracy'))} | {row['nmi_movement']:.3f} | "
        f"{row['solved']:.1f} ± {row['solved_ci95']:.1f} | "
        + (f"{100 * row['solved'] / max(oracle, 1e-9):.0f}% |" if oracle is not None else "— |")
        for name, row in rows.items())
    idm_line = (f" The IDM probe (frames t-{cfg['idm_context'] - 2}..t+{1 + cfg.get('idm_future', 0)}, "
                f"{cfg['idm_steps']} steps on the real"
                f" actions of half the episodes) scores {100 * idm['held_out_accuracy']:.1f}% accuracy and NMI"
                f" {idm['held_out_nmi']:.3f} with the movement class on the other half."
                + (f" Cross-fitted: a second probe trained on the second half labels the first, so every label is"
                   f" out of sample ({100 * idm['cross_fit_accuracy']:.1f}% right)." if "cross_fit_accuracy" in idm
                   else " Its row labels both halves: on the half it trained on it reproduces the real actions it"
                   " fitted, so that row is an optimistic bound.") if idm else "")
    n = min(cfg["n_labelled"], result["expert_data"]["transitions"])
    painted = (" **Velocity-painted frames** (Procgen's `paint_vel_info`: the agent's velocity drawn in the top-left"
               " corner) in the expert's recordings and in every game played; the expert acts on plain frames."
               if cfg.get("paint_vel_info") else "")
    md = f"""# Latent BC with labels of known quality

Command: `{result['command']}` ({result['seconds'] / 60:.0f} min). {result['expert_data']['episodes']} PPO-expert
episodes ({result['expert_data']['transitions']} transitions) on easy CoinRun levels 100000+. Every policy:
{cfg['policy_steps']} steps of the IMPALA CNN on single frames; table D from N = {n} labelled transitions drawn per
seed; {cfg['num_levels']} held-out levels (200000+) x {cfg['seeds']} seeds{steps_line}.{idm_line}{painted}

| labels | what | agrees with movement class | NMI with movement class | % levels solved (95% CI) | of the oracle |
|---|---|---|---|---|---|
{table}
{extra}"""
    atomic_write_bytes(path, md.encode())
    print(md)


if __name__ == "__main__":
    main(tyro.cli(Args))
