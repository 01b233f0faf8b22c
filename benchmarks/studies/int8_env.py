"""Does int8 pay in Genie-v0? The speed issue lists int8 dynamic quantisation of the linear layers as a lever, kept
only if its quality cost is within the bounds the defaults obey (rollout PSNR within 0.3 dB and delta-PSNR within
0.2 dB of the reference). `int8_linears.md` timed single layers; this runs the whole env on the shipped model:

- arms: `float32`; `bfloat16` (autocast, Genie-v0's default precision); `int8 dynamics` (the dynamics' linear
  layers as `torch.ao.quantization.quantize_dynamic` int8 weights, activations quantised per call, everything else
  float32); `int8 all` (every linear layer of the model: the decoder's transformer and the heads too);
- speed: Genie-v0 frames/s, one world and batched (the vector env at N worlds), arms in alternation, medians
  over rounds, so a change of machine load falls on all of them;
- quality: on held-out clips, 10 generated frames from 1 real frame with the LAM's actions (computed once, by the
  float32 model) and with random actions, the same clips, seeds and draws as `genie-gym eval` (its rollout PSNR
  and delta-PSNR at t = 4), plus each arm's frames against float32's (PSNR): how far int8 moves the worlds.

    python benchmarks/studies/int8_env.py --data data/coinrun_hard_sticky

writes benchmarks/results/int8_env.{json,md}.
"""

from __future__ import annotations

import copy
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import tyro
from attention_cpu import frames_per_s
from tqdm import tqdm

from genie_gym.evaluation.evaluate import _batches, infer_actions_windowed, open_clips, pick_clips, simulate
from genie_gym.evaluation.metrics import psnr
from genie_gym.models.frames import to_float
from genie_gym.models.world_model import WorldModel
from genie_gym.utils.io import atomic_write_json, write_markdown

ARMS = ("float32", "bfloat16", "int8 dynamics", "int8 all")


@dataclass
class Args:
    """Genie-v0 with int8 linear layers against float32 and bfloat16: frames/s and rollout quality."""

    model: Path | None = None
    """world-model file (default: the shipped model)"""
    data: Path = Path("data/coinrun_hard_sticky")
    """recorded dataset whose test split gives the held-out clips"""
    num_clips: int = 32
    """held-out clips for the quality columns (env_speed.md uses 32)"""
    worlds: tuple[int, ...] = (1, 16, 64)
    """numbers of worlds timed (1: GenieEnv; more: the vector env)"""
    rounds: int = 3
    """alternations of the arms per number of worlds"""
    seconds: float = 3.0
    """seconds timed per measurement"""
    threads: int = 2
    """torch threads"""
    out: Path = Path("benchmarks/results")
    """writes OUT/int8_env.{json,md}"""


def quantised(wm: WorldModel, scope: str) -> WorldModel:
    """A copy of `wm` whose linear layers (the dynamics' or all) hold int8 weights (dynamic quantisation)."""
    q = copy.deepcopy(wm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        if scope == "dynamics":
            q.dynamics = torch.ao.quantization.quantize_dynamic(q.dynamics, {nn.Linear}, dtype=torch.qint8)
        else:
            q = torch.ao.quantization.quantize_dynamic(q, {nn.Linear}, dtype=torch.qint8)
    return q


def arm_model(wm: WorldModel, arm: str) -> tuple[WorldModel, str]:
    """(model, Genie-v0 precision) of an arm."""
    if arm.startswith("int8"):
        return quantised(wm, arm.split()[1]), "float32"
    return wm, arm


def env_fps(model: WorldModel, precision: str, n: int, seconds: float) -> float:
    from genie_gym.envs.genie_env import GenieEnv
    from genie_gym.envs.vector_env import GenieVectorEnv

    rng = np.random.default_rng(0)
    common = dict(checkpoint=model, precision=precision, prompt_levels=(0, 8))
    if n == 1:
        env = GenieEnv(**common)
        env.reset(seed=0)
        step = lambda: env.step(int(rng.integers(8)))  # noqa: E731
    else:
        env = GenieVectorEnv(n, **common)
        env.reset(seed=0)
        step = lambda: env.step(rng.integers(0, 8, n))  # noqa: E731
    for _ in range(model.config.sampling.context_frames):  # fill the window: the steady-state cost
        step()
    fps = frames_per_s(step, n, seconds)
    env.close()
    return fps


@torch.no_grad()
def quality(models: dict[str, tuple[WorldModel, str]], args: Args) -> dict[str, dict[str, float]]:
    """Per arm: rollout PSNR (mean over 10 steps), delta-PSNR at t = 4 and PSNR against float32's frames, on the
    clips, seeds and random actions `genie-gym eval --context 1` draws (seed 0, batches of 16)."""
    wm = models["float32"][0]
    K, T, A = 10, wm.config.seq_len, wm.config.lam.num_actions
    ds = open_clips(args.data, "test", 1 + K, f"1 context frame + {K} generated")
    g_rand = torch.Generator().manual_seed(2)
    cpu = torch.device("cpu")
    p_lam: dict[str, list] = {a: [] for a in models}
    p_rand: dict[str, list] = {a: [] for a in models}
    p_ref: dict[str, list] = {a: [] for a in models}
    for batch in tqdm(_batches(pick_clips(len(ds), args.num_clips, 1), 16), desc="quality"):
        u8 = torch.stack([ds[i] for i in batch])
        real = to_float(u8)
        acts = infer_actions_windowed(wm.lam, real, T)  # (B, K): acts[:, t] leads t -> t+1
        acts_rand = torch.randint(0, A, (len(batch), K), generator=g_rand)
        seeds = list(batch)  # genie-gym eval's seed * 100_003 + i, at seed 0
        target, ref = real[:, 1:], None
        for arm, (model, precision) in models.items():
            gen = simulate(model, u8[:, :1].numpy(), acts.numpy(), seeds, None, cpu, precision=precision)
            rand = simulate(model, u8[:, :1].numpy(), acts_rand.numpy(), seeds, None, cpu, precision=precision)
            ref = gen if ref is None else ref  # float32 runs first
            p_lam[arm].append(psnr(gen, target))
            p_rand[arm].append(psnr(rand, target))
            p_ref[arm].append(psnr(gen, ref))
    out = {}
    for arm in models:
        lam, rand = torch.cat(p_lam[arm]), torch.cat(p_rand[arm])
        out[arm] = {"rollout_psnr": float(lam.mean()), "delta_psnr_t4": float(lam[:, 3].mean() - rand[:, 3].mean()),
                    "psnr_vs_float32": float(torch.cat(p_ref[arm]).clamp(max=100).mean())}
    return out


def main(args: Args) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    wm = WorldModel.load(args.model or WorldModel.default_path()).eval()
    models = {arm: arm_model(wm, arm) for arm in ARMS}
    t0 = time.time()
    result: dict[str, Any] = {"quality": quality(models, args), "fps": {}}
    print(result["quality"], flush=True)
    for n in args.worlds:
        runs: dict[str, list[float]] = {arm: [] for arm in ARMS}
        for _ in range(args.rounds):
            for arm, (model, precision) in models.items():
                runs[arm].append(env_fps(model, precision, n, args.seconds))
        result["fps"][str(n)] = {arm: float(np.median(v)) for arm, v in runs.items()}
        print(n, result["fps"][str(n)], flush=True)
    result.update(command=" ".join(["python benchmarks/studies/int8_env.py", *sys.argv[1:]]), model=str(args.model),
                  seconds=round(time.time() - t0, 1), threads=args.threads, machine=platform.machine(),
                  torch=torch.__version__, num_clips=args.num_clips)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "int8_env.json", result)
    write_markdown(args.out / "int8_env.md", markdown(result))
    return result


def markdown(r: dict[str, Any]) -> list[str]:
    q, fps = r["quality"], r["fps"]
    ref = q["bfloat16"]
    lines = ["# int8 linear layers in Genie-v0: speed and quality", "",
             f"`{r['command']}` ({r['machine']}, {r['threads']} torch threads, torch {r['torch']}; the "
             f"shipped model, 1 MaskGIT step; {r['num_clips']} held-out test clips; frames/s are medians over rounds "
             "with the arms in alternation).", "",
             "| arm | " + " | ".join(f"{n} world{'s' * (n != '1')} frames/s" for n in fps) +
             " | rollout PSNR | delta-PSNR t=4 | PSNR vs float32's frames |",
             "|---|" + "---:|" * (len(fps) + 3)]
    for arm in q:
        speed = " | ".join(f"{fps[n][arm]:.1f} ({fps[n][arm] / fps[n]['bfloat16']:.2f}x)" for n in fps)
        lines.append(f"| {arm} | {speed} | {q[arm]['rollout_psnr']:.2f} | {q[arm]['delta_psnr_t4']:+.2f} | "
                     f"{q[arm]['psnr_vs_float32']:.1f} |")
    lines += ["", "Speed-ups in brackets are against bfloat16 (`precision=\"bfloat16\"`, the fastest batched "
              "setting; Genie-v0's default is float32) in the same run. "
              f"bfloat16's own rollout PSNR {ref['rollout_psnr']:.2f} dB and delta-PSNR {ref['delta_psnr_t4']:+.2f} "
              "dB; the defaults' rule allows 0.3 dB and 0.2 dB below the 25-step float32 reference "
              "(`env_speed.md`). PSNR vs float32's frames is capped at 100 dB (identical frames). "
              "int8 runs the quantised layers' activations in float32 (`quantize_dynamic` takes no bfloat16)."]
    return lines


if __name__ == "__main__":
    main(tyro.cli(Args))
