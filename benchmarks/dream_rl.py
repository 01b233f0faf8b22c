"""Genie-v0 as an RL environment: PPO trained inside the world model, then played in real CoinRun.

    python benchmarks/dream_rl.py --world-model FILE     # the real run (~2 h on 2 cores); FILE has reward heads
    python benchmarks/dream_rl.py --quick --world-model FILE   # smoke run in ~1 min, writes runs/bench_quick/

1. **Dream**: `agents.dream_ppo` trains PPO for `--dream-timesteps` frames in Genie-v0 worlds started from Procgen
   start frames of training levels, or with `--prompt-data DIR` from recorded train frames (`--prompt-data-tail N`:
   the last N frames of episodes that reached the coin), rewarded and ended by the model's heads (`genie-gym train
   --phase heads`). Resumes from `<work>/dream/checkpoints` when it was cut.
2. **Table D**: the PPO expert plays `--expert-episodes` easy levels 100000+ (`agents.collect`); the world model's
   LAM labels them; per evaluation seed, N = `--n-labelled` labelled transitions turn codes into real actions
   (`agents.dream_transfer`, the latent-BC protocol).
3. **Real CoinRun**, held-out levels 200000+, `--seeds` x `--num-levels`: the dream agent through table D, random
   codes through the same table (the control: what dream training adds), random actions, run-right and the PPO
   expert on the same levels: levels solved and mean return with 95% CIs over seeds.
4. **The reality gap**: the dream agent's and random codes' mean return inside Genie-v0 (the heads' rewards,
   `--dream-eval-episodes` episodes, the dream's start frames) beside their returns in the real game.

Writes `<out>/dream_rl.{json,md,png}` (default out: benchmarks/results; --quick: runs/bench_quick).
"""

from __future__ import annotations

import io
import json
import shlex
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import tyro
from PIL import Image, ImageDraw

from agents import dream_ppo
from agents.baselines import RandomPolicy, RunRightPolicy
from agents.collect import make_collect_policy, run_policy_episodes, save_expert_set
from agents.dream_transfer import DreamPolicy, LabelledTransitions, RandomCodesPolicy
from agents.evaluate import EvalResult, SB3Policy, evaluate_policy
from agents.ppo_expert import DEFAULT_EXPERT, load_expert
from genie_gym.data.games import MOVEMENT_NAMES, movement_class
from genie_gym.errors import ConfigError
from genie_gym.models.world_model import WorldModel
from genie_gym.utils.io import atomic_write_bytes, atomic_write_json, sha256_file


@dataclass
class Args:
    world_model: str | None = None
    """world-model file with reward / episode-end heads (`genie-gym train --phase heads`; the shipped model has none)"""
    quick: bool = False
    """smoke run: a few hundred dream frames, run-right as the expert, 3 levels x 2 seeds"""
    dream_timesteps: int = 500_000
    """dream frames of PPO training (resumed when the work directory holds checkpoints)"""
    num_envs: int = 16
    """Genie-v0 worlds stepped together in the dream"""
    prompt_data: str | None = None
    """dream episodes start from frames of this recorded dataset's train split (default: Procgen start frames)"""
    prompt_data_tail: int | None = None
    """with --prompt-data: only the last N frames of episodes that reached the coin (start near the reward)"""
    dream_max_episode_steps: int = 500
    """cut a dream episode after this many steps"""
    precision: Literal["float32", "bfloat16"] = "float32"
    """Genie-v0 generation precision in the dream (bfloat16: 1.4x the frames/s on CPUs with AVX-512 bf16)"""
    dream_minutes: float | None = None
    """stop dream training after about this many minutes (checkpointed; rerun to continue)"""
    expert: str | None = None
    """PPO expert for table D's labelled transitions (default agents/assets/ppo_coinrun_easy.zip)"""
    expert_episodes: int = 20
    """expert episodes recorded for table D (N labelled transitions are drawn from them)"""
    n_labelled: int = 200
    """N: labelled transitions per table D (drawn per evaluation seed)"""
    num_levels: int = 100
    """held-out real levels (200000..)"""
    seeds: int = 5
    """evaluation seeds (each plays every level once)"""
    dream_eval_episodes: int = 64
    """episodes played inside Genie-v0 for the reality gap"""
    max_steps: int = 1000
    """longest real episode"""
    work: str | None = None
    """where the dream agent and the expert data go (default runs/dream_rl, or runs/bench_quick/dream_rl)"""
    out: str | None = None
    """results directory (default benchmarks/results, or runs/bench_quick with --quick)"""
    seed: int = 0
    """seed of PPO, the expert's levels and the dream's start frames"""
    threads: int = 2
    """torch CPU threads"""


def _quick(args: Args) -> Args:
    return Args(**{**asdict(args), "dream_timesteps": 256, "num_envs": 4, "expert_episodes": 3, "n_labelled": 20,
                   "num_levels": 3, "seeds": 2, "dream_eval_episodes": 4, "max_steps": 60,
                   "dream_max_episode_steps": 30})


def dream_returns(policy_fn: Any, dream_args: dream_ppo.Args, episodes: int, seed: int) -> dict[str, float]:
    """Mean return and share of rewarded episodes of `policy_fn(obs_BHWC) -> latent actions` in the dream the agent
    trained in (`dream_ppo.make_venv`), seeded `seed`, over each world's first episodes (`episodes` in all)."""
    num_envs = dream_args.num_envs
    venv = dream_ppo.make_venv(dream_args, seed)
    obs = venv.reset()
    # every world plays the same number of episodes: taking the first to end would favour short (rewarded) ones
    quota = -(-episodes // num_envs)
    returns: list[list[float]] = [[] for _ in range(num_envs)]
    lengths: list[list[int]] = [[] for _ in range(num_envs)]
    running, steps = np.zeros(num_envs), np.zeros(num_envs, dtype=np.int64)
    while min(len(r) for r in returns) < quota:
        obs, rewards, dones, _ = venv.step(policy_fn(obs))
        running += rewards
        steps += 1
        for i in np.flatnonzero(dones):
            returns[i].append(float(running[i]))
            lengths[i].append(int(steps[i]))
            running[i], steps[i] = 0.0, 0
    venv.close()
    r = np.asarray([x for per_world in returns for x in per_world[:quota]])
    return {"mean_return": float(r.mean()), "rewarded_pct": float(100 * (r > 0).mean()), "episodes": len(r),
            "mean_length": float(np.mean([x for per_world in lengths for x in per_world[:quota]]))}


def _plot(real: dict[str, Any], path: Path) -> None:
    """Levels solved per policy, bars with 95% CI whiskers (PIL only)."""
    W, H, L, B, T = 520, 320, 50, 40, 30
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    order = ("dream", "random_codes", "random", "run_right", "expert")  # as the report's table (JSON keys are sorted)
    names = sorted(real, key=lambda n: order.index(n) if n in order else len(order))
    bw = (W - L - 20) / len(names)
    d.text((5, 8), "% of held-out real CoinRun levels solved (95% CI)", fill="black")

    def y(v: float) -> float:
        return T + (1 - v / 100) * (H - T - B)

    for v in range(0, 101, 20):
        d.line([L - 4, y(v), L, y(v)], fill="black")
        d.text((L - 28, y(v) - 6), str(v), fill="black")
    d.line([L, T, L, H - B, W - 10, H - B], fill="black")
    for i, name in enumerate(names):
        x0 = L + 10 + i * bw
        s, ci = real[name]["solved_pct"], real[name]["solved_ci95"]
        d.rectangle([x0, y(s), x0 + bw - 20, H - B], fill=(40, 90, 200) if name == "dream" else (160, 160, 160))
        xc = x0 + (bw - 20) / 2
        d.line([xc, y(min(s + ci, 100)), xc, y(max(s - ci, 0))], fill="black", width=2)
        d.text((x0, H - B + 6), name, fill="black")  # two lines: five names side by side fit
        d.text((x0, H - B + 20), f"{s:.1f}%", fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def main(args: Args) -> dict[str, Any]:
    from stable_baselines3 import PPO

    command = _command(asdict(args))  # as given, before --quick fills in its sizes
    if args.quick:
        args = _quick(args)
    torch.set_num_threads(args.threads)
    work = Path(args.work or ("runs/bench_quick/dream_rl" if args.quick else "runs/dream_rl"))
    out = Path(args.out or ("runs/bench_quick" if args.quick else "benchmarks/results"))
    if args.n_labelled < 1 or args.num_levels < 1 or args.seeds < 1 or args.dream_eval_episodes < 1:
        raise ConfigError("--n-labelled, --num-levels, --seeds and --dream-eval-episodes must be >= 1")
    wm_path = Path(args.world_model) if args.world_model else WorldModel.default_path()
    if WorldModel.load(wm_path).heads is None:
        raise ConfigError(f"{wm_path} has no reward / episode-end heads, so the dream pays nothing; train them with "
                          "`genie-gym train --phase heads --model FILE --data DIR` and pass --world-model")
    inputs = {"world_model_sha256": sha256_file(wm_path), "expert": args.expert,
              "expert_episodes": args.expert_episodes, "seed": args.seed, "prompt_data": args.prompt_data,
              "prompt_data_tail": args.prompt_data_tail, "dream_max_episode_steps": args.dream_max_episode_steps,
              "precision": args.precision, "num_envs": args.num_envs}
    # work directories written before an input was recorded held its default then
    defaults = asdict(_quick(Args()) if args.quick else Args())
    before = {k: defaults[k] for k in inputs if k in defaults}
    if (work / "inputs.json").is_file() and {**before, **json.loads((work / "inputs.json").read_text())} != inputs:
        raise ConfigError(f"{work} holds a dream agent and expert data made from other inputs "
                          f"({(work / 'inputs.json').read_text().strip()}); pass another --work or delete it")
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_json(work / "inputs.json", inputs)
    notes: list[str] = []
    t0 = time.perf_counter()

    # 1. the dream agent
    dream_args = dream_ppo.Args(world_model=args.world_model, total_timesteps=args.dream_timesteps,
                                num_envs=args.num_envs, out=str(work / "dream"), seed=args.seed, threads=args.threads,
                                device="cpu", resume=True, precision=args.precision,
                                prompt_data=args.prompt_data, prompt_data_tail=args.prompt_data_tail,
                                max_episode_steps=args.dream_max_episode_steps,
                                **({"n_steps": 16, "n_minibatches": 2, "n_epochs": 1, "checkpoint_every": 128}
                                   if args.quick else {}))
    if args.dream_minutes is not None:
        dream_args.time_limit_min = args.dream_minutes
    dream_ppo.main(dream_args)
    info = json.loads((work / "dream" / "train_info.json").read_text())
    if info["frames"] < args.dream_timesteps:
        print(f"dream training stopped at {info['frames']} of {args.dream_timesteps} frames (--dream-minutes); "
              "rerun to continue. Scoring the agent as it is.")
    model = PPO.load(work / "dream" / "final.zip", device="cpu")

    # 2. table D's labelled transitions
    expert_dir = work / "expert"
    kind = "expert"
    expert_path = Path(args.expert) if args.expert else DEFAULT_EXPERT
    if args.quick and not expert_path.is_file():
        kind = "run_right"
        notes.append("quick mode: run-right stands in for the missing PPO expert")
    if not (expert_dir / "manifest.json").is_file():
        save_expert_set(run_policy_episodes(make_collect_policy(kind, args.expert), args.expert_episodes,
                                            args.seed, min(16, args.expert_episodes), progress=False), expert_dir)
    labelled = LabelledTransitions(args.world_model, str(expert_dir))

    # 3. real CoinRun, held-out levels
    common = dict(num_levels=args.num_levels, seeds=list(range(args.seeds)), distribution_mode="easy",
                  max_steps=args.max_steps)
    dream_policies: list[DreamPolicy] = []  # one per seed: the codes it picks are counted

    def dream_policy(seed: int) -> DreamPolicy:
        dream_policies.append(DreamPolicy(model, labelled.table(args.n_labelled, seed)))
        return dream_policies[-1]

    policies: dict[str, Any] = {
        "dream": dream_policy,
        "random_codes": lambda s: RandomCodesPolicy(labelled.table(args.n_labelled, s)),
        "random": RandomPolicy(), "run_right": RunRightPolicy(),
    }
    if kind == "expert":
        policies["expert"] = SB3Policy(load_expert(args.expert))
    real: dict[str, Any] = {}
    for name, policy in policies.items():
        res: EvalResult = evaluate_policy(policy, desc=name, **common)
        real[name] = {"solved_pct": res.solved, "solved_ci95": res.solved_ci95, "mean_return": res.mean_return,
                      "return_ci95": res.return_ci95}
        print(f"real {name:>9}: {res.solved:.1f}% solved (+-{res.solved_ci95:.1f}), return {res.mean_return:.2f}")

    # what the dream agent pressed in the real game, and what the expert did with each code (all its transitions)
    picked_K = np.sum([p.code_counts for p in dream_policies], axis=0)
    moves_KM = np.zeros((labelled.num_codes, len(MOVEMENT_NAMES)), dtype=np.int64)
    np.add.at(moves_KM, (labelled.codes, movement_class(labelled.actions)), 1)
    codes = [{"code": k, "dream_share": float(picked_K[k] / max(picked_K.sum(), 1)),
              "expert_transitions": int(moves_KM[k].sum()),
              "expert_right_share": float(moves_KM[k, 4:].sum() / max(moves_KM[k].sum(), 1)),
              "expert_movement": dict(zip(MOVEMENT_NAMES, moves_KM[k].tolist(), strict=True))}
             for k in range(labelled.num_codes)]

    # 4. the same agents inside the dream
    n_codes = int(model.action_space.n)
    rng = np.random.default_rng(args.seed)
    in_dream = {
        "dream": dream_returns(lambda o: model.predict(o, deterministic=False)[0], dream_args,
                               args.dream_eval_episodes, args.seed + 1),
        "random_codes": dream_returns(lambda o: rng.integers(0, n_codes, len(o)), dream_args,
                                      args.dream_eval_episodes, args.seed + 1),
    }
    report = {"command": command, "args": asdict(args), "dream_training": {k: info.get(k) for k in
                                                       ("frames", "wall_s_total", "frames_per_s", "device")},
              "real": real, "codes": codes, "in_dream": in_dream, "notes": notes,
              "seconds": round(time.perf_counter() - t0, 1)}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "dream_rl.json", report)
    _plot(real, out / "dream_rl.png")
    (out / "dream_rl.md").write_text(_markdown(report))
    print(json.dumps({"real": real, "in_dream": in_dream}))
    return report


def _command(a: dict[str, Any]) -> str:
    """The command line that ran: the arguments that differ from their defaults."""
    words = ["python benchmarks/dream_rl.py"]
    for f in fields(Args):
        value = a.get(f.name, f.default)
        if value != f.default:
            flag = "--" + f.name.replace("_", "-")
            words.append(flag if value is True else f"{flag} {shlex.quote(str(value))}")
    return " ".join(words)


def _markdown(r: dict[str, Any]) -> str:
    a, tr = r["args"], r["dream_training"]
    starts = "Procgen start frames of levels 0-9999"
    if a.get("prompt_data"):
        starts = f"frames of {a['prompt_data']}'s train split" + (
            f" among the last {a['prompt_data_tail']} of episodes that reached the coin" if a.get("prompt_data_tail")
            else "")
    lines = [
        "# Dream RL: PPO trained inside Genie-v0, played in real CoinRun", "",
        f"Command: `{r.get('command') or _command(a)}`", "",
        f"Dream training: {tr['frames']} frames in {tr['wall_s_total']} s ({tr['frames_per_s']} frames/s including "
        f"learning, {a['num_envs']} worlds, {a.get('precision', 'float32')}, {tr['device']}); dream episodes start "
        f"from {starts} and last at most {a.get('dream_max_episode_steps', 500)} steps. Table D: N = "
        f"{a['n_labelled']} labelled expert transitions per seed. Real levels: {a['seeds']} seeds x "
        f"{a['num_levels']} held-out easy levels (200000+). Rows: `dream`, the PPO agent's codes through table D; "
        "`random_codes`, uniform codes through the same table (what dream training adds is the difference); "
        "`random`, uniform real actions; `run_right`; `expert`, the PPO expert whose transitions fill table D.", "",
        "| policy | real levels solved % (95% CI) | real mean return | dream mean return | dream episodes rewarded % |",
        "|---|---|---|---|---|",
    ]
    in_dream = dict(r["in_dream"])
    if "random_codes" not in in_dream and "random" in in_dream:  # reports before random_codes: random codes
        in_dream["random_codes"] = in_dream.pop("random")
    for name, v in r["real"].items():
        dream = in_dream.get(name)
        d_ret = f"{dream['mean_return']:.2f}" if dream else "-"
        d_pct = f"{dream['rewarded_pct']:.1f}" if dream else "-"
        lines.append(f"| {name} | {v['solved_pct']:.1f} ± {v['solved_ci95']:.1f} | {v['mean_return']:.2f} ± "
                     f"{v['return_ci95']:.2f} | {d_ret} | {d_pct} |")
    if r.get("codes"):
        lines += ["", "What the dream agent pressed in the real game (share of its codes over every evaluation step) "
                  "and what the expert's transitions labelled with each code did (all of them; table D draws its N "
                  "from these):", "", "| code | dream agent's share | expert transitions | of them moving right |",
                  "|---|---|---|---|"]
        lines += [f"| {c['code']} | {100 * c['dream_share']:.1f}% | {c['expert_transitions']} | "
                  f"{100 * c['expert_right_share']:.1f}% |" for c in r["codes"]]
    lines += ["", *[f"Note: {n}" for n in r["notes"]], f"Total time: {r['seconds']} s.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main(tyro.cli(Args))
