"""Latent-action behaviour cloning on CoinRun (Genie section 3.3): levels solved vs. N labelled transitions.

    .venv/bin/python benchmarks/bc_coinrun.py            # real run: needs the PPO expert and the shipped model
    .venv/bin/python benchmarks/bc_coinrun.py --quick    # smoke test in ~1-2 minutes: scripted expert, tiny LAM

Pipeline: the expert plays levels 100000+ (never seen by the world model, trained on 0..9999) -> the oracle learns
the real actions -> the LAM labels every transition, a policy of the same architecture learns the codes -> for each
N, table D from N labelled transitions (drawn per evaluation seed) -> every policy plays held-out levels 200000+,
each level once per seed. Reports % of levels solved and mean return with 95% CIs over seeds, the LAM's NMI with
the real actions and a code x action confusion matrix. Writes `<out>/bc_coinrun.{json,md,png}` and
`<out>/bc_coinrun_confusion.png`. --quick writes to runs/bench_quick/ so it never overwrites the real results.
"""

from __future__ import annotations

import io
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tyro
from PIL import Image, ImageDraw

from agents.baselines import NUM_ACTIONS, RandomPolicy, RunRightPolicy
from agents.bc import train_classifier
from agents.collect import make_collect_policy, run_policy_episodes
from agents.evaluate import CategoricalTorchPolicy, EvalResult, evaluate_policy
from agents.latent_bc import (
    CodeActionTable,
    LatentBCPolicy,
    LearnedMapping,
    label_expert_set,
    load_lam,
    select_labelled,
    transitions,
)
from genie_gym.data.games import COINRUN_ACTION_NAMES
from genie_gym.errors import ConfigError
from genie_gym.evaluation.metrics import nmi
from genie_gym.utils.io import atomic_write_bytes, atomic_write_json, write_markdown

# LAPO's published offline-decoding returns on CoinRun (labelled frames, mean return), cited beside ours.
LAPO_OFFLINE = ((128, "5.7"), (256, "6.4"), ("512 and more", "6.7-6.8"))


@dataclass
class Args:
    quick: bool = False
    """tiny smoke run: run-right stand-in for a missing expert, random-init tiny LAM for a missing world model"""
    expert: str | None = None
    """PPO expert checkpoint (default agents/assets/ppo_coinrun_easy.zip)"""
    world_model: str | None = None
    """world model whose LAM labels the expert videos (default: the shipped model)"""
    distribution_mode: str = "easy"
    """Procgen difficulty (easy required; hard a plus)"""
    paint_vel_info: bool = False
    """ablation: Procgen's velocity bar in the expert's recorded frames and in the games of the policies that learn
    from them (oracle, latent BC); the expert still acts on plain frames, random and run-right never look; the LAM
    must have been trained on painted frames (`lam_ablation.py --data <painted> --save-dir`)"""
    expert_episodes: int = 300
    """expert episodes recorded for the oracle and latent BC"""
    n_values: tuple[int, ...] = (20, 50, 100, 200, 500, 1000)
    """numbers N of labelled transitions for table D"""
    greedy_n_values: tuple[int, ...] = (200,)
    """N for the greedy ablation (most likely code, then its most frequent action in D; ~4 min per N; empty = skip)"""
    learned_mapping_n: int = 200
    """N for the ablation with a learned (code, frame) -> action mapping (0 = skip)"""
    num_levels: int = 100
    """held-out evaluation levels (200000..)"""
    seeds: int = 5
    """evaluation seeds (each plays every level once)"""
    bc_steps: int = 1500
    """optimiser steps for the oracle and the latent policy"""
    max_steps: int = 1000
    """per-episode step limit in evaluation (CoinRun's own limit is 1000)"""
    out: str | None = None
    """output directory (default benchmarks/results, or runs/bench_quick with --quick)"""
    seed: int = 0
    """seed for data collection and training"""
    threads: int = 1
    """torch CPU threads (2 when the machine's cores are free)"""
    report_only: bool = False
    """rebuild <out>/bc_coinrun.md from <out>/bc_coinrun.json without running anything"""


def _quick(args: Args) -> Args:
    return Args(quick=True, expert=args.expert, world_model=args.world_model,
                distribution_mode=args.distribution_mode, paint_vel_info=args.paint_vel_info, expert_episodes=6,
                n_values=(5, 10, 20),
                greedy_n_values=(10,), learned_mapping_n=10, num_levels=4, seeds=2, bc_steps=2, max_steps=60,
                out=args.out, seed=args.seed,
                threads=args.threads)


def _resolve_inputs(args: Args, notes: list[str]) -> tuple[str, str | None]:
    """Which expert policy kind and world-model path to use; --quick substitutes stand-ins and says so."""
    from agents.ppo_expert import DEFAULT_EXPERT
    from genie_gym.models.world_model import WorldModel

    kind, wm = "expert", args.world_model
    expert_path = Path(args.expert) if args.expert else DEFAULT_EXPERT
    if args.quick and not expert_path.is_file():
        kind = "run_right"
        notes.append(f"expert {expert_path} missing: run-right stands in for the expert (quick mode)")
    wm_path = Path(wm) if wm else WorldModel.default_path()
    if args.quick and not wm_path.is_file():
        from genie_gym.config import get_preset

        tmp = Path(args.out or "runs/bench_quick") / "tiny_random_wm.pt"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(args.seed)
        WorldModel(get_preset("tiny")).save(tmp, {"paint_vel_info": args.paint_vel_info})
        wm = str(tmp)
        notes.append(f"world model {wm_path} missing: a random-init tiny LAM labels the data (quick mode)")
    return kind, wm


def _row(name: str, r: dict[str, Any]) -> str:
    """A table row from an `EvalResult.summary()`."""
    return (f"| {name} | {r['solved']:.1f} ± {r['solved_ci95']:.1f} | {r['mean_return']:.2f} ± "
            f"{r['return_ci95']:.2f} | {len(r['seeds'])} × {r['num_levels']} |")


def write_report(results: dict[str, Any], path: Path) -> None:
    """`bc_coinrun.md` from the results dict (`--report-only` rebuilds it from bc_coinrun.json)."""
    a, data = results["settings"], results["expert_data"]
    lines = [
        "# Latent-action behaviour cloning on CoinRun",
        "",
        f"Command: `{results['command']}`. "
        f"{a['distribution_mode']} mode, {a['num_levels']} held-out levels (200000..) × {a['seeds']} seeds; "
        f"expert data: {data['episodes']} episodes / {data['frames']} frames on levels 100000.. ({data['policy']}). "
        + ("Velocity-painted frames (Procgen's `paint_vel_info`) for the LAM, the expert's recordings, the oracle "
           "and latent BC; the expert acts on plain frames, random and run-right never look. "
           if a.get("paint_vel_info") else "")
        + f"Total {results['timings_s']['total_s']:.0f} s.",
        "",
        "| policy | % levels solved (95% CI) | mean return (95% CI) | seeds × levels |",
        "|---|---|---|---|",
    ]
    lines += [_row(k, results[k]) for k in ("random", "run_right", "expert", "oracle")]
    for key, label in (("latent_bc", "table D"), ("latent_bc_greedy", "table D greedy (ablation)"),
                       ("latent_bc_learned_mapping", "learned map")):
        by_n = sorted(results[key].items(), key=lambda kv: int(kv[0]))  # JSON keys are strings
        lines += [_row(f"latent BC, {label}, N={n}", r) for n, r in by_n]
    lines += ["", "Published reference, not re-run here (other expert, other levels, other network; read it as a "
              "scale): LAPO (Schmidt & Jiang, ICLR 2024), offline decoding of its latent policy with labelled "
              "expert frames on CoinRun easy, mean return " + ", ".join(f"≈{r} at {n}" for n, r in LAPO_OFFLINE)
              + " labelled frames (return 10 = solved; its latent is 2 codebooks x 4 latents x 64 entries, "
              "read from o_{t-1}, o_t, o_{t+1})."]
    lam = results["lam"]
    lines += ["", f"LAM codes vs real actions on the expert data: NMI = {lam['nmi_codes_vs_actions']:.3f} "
              f"({lam['transitions']} transitions, {lam['num_codes']} codes). Confusion matrix: "
              "`bc_coinrun_confusion.png`; levels solved vs N: `bc_coinrun.png`.", ""]
    lines += [f"Note: {n}" for n in results["notes"]]
    write_markdown(path, lines)


def _plot(results: dict[str, Any], path: Path) -> None:
    """Levels solved vs. N (log x), latent BC with 95% CI bars, baselines as horizontal lines (PIL only)."""
    W, H, L, R, T, B = 640, 420, 60, 150, 30, 50
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    ns = sorted(int(n) for n in results["latent_bc"])
    lo, hi = math.log10(min(ns)) - 0.1, math.log10(max(ns)) + 0.1

    def xy(n: float, y: float) -> tuple[float, float]:
        return (L + (math.log10(n) - lo) / (hi - lo) * (W - L - R), T + (1 - y / 100) * (H - T - B))

    d.rectangle([L, T, W - R, H - B], outline="black")
    for y in range(0, 101, 20):
        _, py = xy(ns[0], y)
        d.line([L - 4, py, L, py], fill="black")
        d.text((L - 30, py - 6), f"{y}", fill="black")
    for n in ns:
        px, _ = xy(n, 0)
        d.line([px, H - B, px, H - B + 4], fill="black")
        d.text((px - 10, H - B + 8), str(n), fill="black")
    d.text((L + 80, H - 20), "N labelled transitions (log scale)", fill="black")
    d.text((5, 8), "% held-out levels solved (95% CI)", fill="black")
    colours = {"oracle": (0, 120, 0), "expert": (120, 0, 160), "run_right": (200, 120, 0), "random": (200, 0, 0)}
    labels = []
    for k, col in colours.items():
        if k in results:
            _, py = xy(ns[0], results[k]["solved"])
            d.line([L, py, W - R, py], fill=col, width=2)
            labels.append([py - 6, f"{k} {results[k]['solved']:.0f}%", col])
    labels.sort(key=lambda x: x[0])
    for i in range(1, len(labels)):  # push coinciding labels apart
        labels[i][0] = max(labels[i][0], labels[i - 1][0] + 13)
    for ly, text, col in labels:
        d.text((W - R + 6, ly), text, fill=col)
    pts = [xy(n, results["latent_bc"][str(n)]["solved"]) for n in ns]
    d.line(pts, fill=(0, 0, 200), width=2)
    for n, (px, py) in zip(ns, pts, strict=True):
        ci = results["latent_bc"][str(n)]["solved_ci95"]
        _, y0 = xy(n, max(results["latent_bc"][str(n)]["solved"] - ci, 0.0))
        _, y1 = xy(n, min(results["latent_bc"][str(n)]["solved"] + ci, 100.0))
        d.line([px, y0, px, y1], fill=(0, 0, 200))
        d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=(0, 0, 200))
    d.text((L + 6, T + 6), "latent BC (table D), dots with 95% CI", fill=(0, 0, 200))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def _confusion_png(conf: np.ndarray, path: Path) -> None:
    """Rows: LAM codes; columns: real actions; cell shade = P(action | code)."""
    A, U = conf.shape
    cell, L, T = 28, 60, 90
    img = Image.new("RGB", (L + U * cell + 10, T + A * cell + 10), "white")
    d = ImageDraw.Draw(img)
    p = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    for a in range(A):
        d.text((5, T + a * cell + 8), f"code {a}", fill="black")
        for u in range(U):
            v = int(255 * (1 - p[a, u]))
            d.rectangle([L + u * cell, T + a * cell, L + (u + 1) * cell - 1, T + (a + 1) * cell - 1], fill=(v, v, 255))
    for u in range(U):
        name = COINRUN_ACTION_NAMES[u] if u < len(COINRUN_ACTION_NAMES) else str(u)
        txt = Image.new("RGB", (80, 12), "white")
        ImageDraw.Draw(txt).text((0, 0), name, fill="black")
        img.paste(txt.rotate(90, expand=True), (L + u * cell + 8, 5))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    if args.quick:
        args = _quick(args)
    out = Path(args.out or ("runs/bench_quick" if args.quick else "benchmarks/results"))
    if args.report_only:
        write_report(json.loads((out / "bc_coinrun.json").read_text()), out / "bc_coinrun.md")
        return
    notes: list[str] = []
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    kind, wm = _resolve_inputs(args, notes)
    expert = make_collect_policy(kind, args.expert)  # missing checkpoint -> CheckpointError naming the fix

    t = time.perf_counter()
    lam, seq_len = load_lam(wm, paint_vel_info=args.paint_vel_info)  # a LAM of the other kind: error before work
    data = run_policy_episodes(expert, args.expert_episodes, args.seed, distribution_mode=args.distribution_mode,
                               paint_vel_info=args.paint_vel_info)
    timings["collect_s"] = time.perf_counter() - t
    A = int(lam.num_actions)
    t = time.perf_counter()
    codes = label_expert_set(lam, data, seq_len)
    frames, c, u = transitions(data, codes)
    timings["label_s"] = time.perf_counter() - t
    if max(args.n_values) > len(c):
        raise ConfigError(f"N = {max(args.n_values)} exceeds the {len(c)} labelled expert transitions; raise "
                          "--expert-episodes or drop the largest --n-values")

    t = time.perf_counter()
    oracle, oracle_stats = train_classifier(*data.frames_actions(), NUM_ACTIONS, args.bc_steps, seed=args.seed,
                                            desc="oracle")
    latent, latent_stats = train_classifier(frames, c, A, args.bc_steps, seed=args.seed, desc="latent policy")
    timings["train_s"] = time.perf_counter() - t

    ev = dict(num_levels=args.num_levels, seeds=list(range(args.seeds)), distribution_mode=args.distribution_mode,
              max_steps=args.max_steps)
    t = time.perf_counter()
    res: dict[str, EvalResult] = {
        "random": evaluate_policy(RandomPolicy(), desc="random", **ev),
        "run_right": evaluate_policy(RunRightPolicy(), desc="run_right", **ev),
        "expert": evaluate_policy(expert, desc="expert", **ev),
    }
    ev["paint_vel_info"] = args.paint_vel_info  # the policies below learnt from the recorded frames
    res["oracle"] = evaluate_policy(CategoricalTorchPolicy(oracle), desc="oracle", **ev)
    latent_res = {}
    for n in args.n_values:
        def table_for_seed(s: int, n: int = n) -> LatentBCPolicy:
            idx = select_labelled(len(c), n, seed=1000 + s)
            return LatentBCPolicy(latent, CodeActionTable(c[idx], u[idx], A))

        latent_res[str(n)] = evaluate_policy(table_for_seed, desc=f"latent N={n}", **ev)
    greedy_res = {}
    for n in args.greedy_n_values:
        def greedy_for_seed(s: int, n: int = n) -> LatentBCPolicy:
            idx = select_labelled(len(c), n, seed=1000 + s)
            return LatentBCPolicy(latent, CodeActionTable(c[idx], u[idx], A), greedy=True)

        greedy_res[str(n)] = evaluate_policy(greedy_for_seed, desc=f"greedy N={n}", **ev)
    learned_res = {}
    if args.learned_mapping_n:
        n = args.learned_mapping_n

        def learned_for_seed(s: int) -> LatentBCPolicy:
            idx = select_labelled(len(c), n, seed=1000 + s)
            return LatentBCPolicy(latent, LearnedMapping.fit(c[idx], u[idx], frames[idx], A, seed=s))

        learned_res[str(n)] = evaluate_policy(learned_for_seed, desc=f"learned map N={n}", **ev)
    timings["evaluate_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_all

    conf = np.zeros((A, NUM_ACTIONS), dtype=np.int64)
    np.add.at(conf, (c, u), 1)
    results: dict[str, Any] = {k: v.summary() for k, v in res.items()}
    results["latent_bc"] = {k: v.summary() for k, v in latent_res.items()}
    results["latent_bc_greedy"] = {k: v.summary() for k, v in greedy_res.items()}
    results["latent_bc_learned_mapping"] = {k: v.summary() for k, v in learned_res.items()}
    results["lam"] = {"nmi_codes_vs_actions": nmi(c, u), "num_codes": A, "transitions": int(len(c)),
                      "code_histogram": np.bincount(c, minlength=A).tolist(), "confusion_codes_x_actions":
                      conf.tolist(), "world_model": wm or "shipped"}
    results["expert_data"] = {"episodes": len(data), "frames": data.num_frames, "policy": kind,
                              "mean_return": float(np.mean([ep.rewards.sum() for ep in data.episodes])),
                              "levels": "100000..109999"}
    results["training"] = {"oracle": oracle_stats, "latent_policy": latent_stats}
    results["settings"] = asdict(args)
    results["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    results["notes"] = notes
    results["command"] = " ".join([".venv/bin/python", "benchmarks/bc_coinrun.py", *sys.argv[1:]])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "bc_coinrun.json", results)
    _plot(results, out / "bc_coinrun.png")
    _confusion_png(conf, out / "bc_coinrun_confusion.png")
    write_report(results, out / "bc_coinrun.md")
    print(json.dumps({"out": str(out), "timings_s": results["timings_s"]}))


if __name__ == "__main__":
    main(tyro.cli(Args))
