"""What each latent action does *inside the world model*: hold one code for a number of steps and watch the camera.

`genie-gym eval --name-actions` names the latent actions from held-out real transitions (what the player's key did
when the LAM gave that code). A player of Genie-v0, or an agent trained in the dream, meets something else: what the
dynamics draws when that code is pressed. CoinRun's camera follows the agent, so the integer scroll between two
frames (`metrics.best_shift`, no model) is the agent's own motion. This study

1. calibrates the scroll on real held-out transitions: the share of transitions whose scroll says "right" (and
   "left", "up") for each true movement class of the player's key (RIGHT, LEFT, NONE, +UP);
2. starts `--prompts` worlds from held-out frames (`--context` real frames each, with their LAM codes), holds each
   latent action for `--steps` steps (the model's sampling unless `--temperature`, `--maskgit-steps`, `--schedule`
   say otherwise), and reports per code the share of generated transitions that scrolled right, left, up, and
   the mean horizontal scroll; beside it, the held-out real transitions' movement shares under that code (the table
   `--name-actions` reads).

    python benchmarks/studies/dream_response.py --data data/coinrun_hard_sticky
    python benchmarks/studies/dream_response.py --data data/coinrun_hard_sticky --context 4 --temperature 1.0 \
        --out benchmarks/results/dream_response_c4_t1

writes <out>/dream_response.{json,md} (default out: benchmarks/results).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tyro
from lam_ablation import direction_shares
from tqdm import tqdm

from genie_gym.data.games import MOVEMENT_NAMES, movement_class
from genie_gym.evaluation.evaluate import open_clips, pick_clips, simulate
from genie_gym.evaluation.metrics import scrolls
from genie_gym.models.frames import to_float
from genie_gym.models.world_model import WorldModel
from genie_gym.utils.io import atomic_write_json, write_markdown


@dataclass
class Args:
    """Hold each latent action in the world model and measure the scroll of the generated frames."""

    data: Path = Path("data/coinrun_hard_sticky")
    """recorded dataset whose held-out split gives the prompts and the calibration transitions"""
    model: Path | None = None
    """world-model file (default: the shipped model)"""
    split: str = "test"
    """held-out split"""
    prompts: int = 32
    """worlds per latent action, each from the first frame of a distinct held-out clip"""
    steps: int = 12
    """frames generated with the code held"""
    context: int = 1
    """real frames each world starts from (more than 1: the past frames' LAM codes go with them, so the model
    sees the agent's velocity)"""
    temperature: float | None = None
    """sampling temperature (default: the model's; 0 = argmax)"""
    maskgit_steps: int | None = None
    """MaskGIT steps (default: the model's)"""
    schedule: str | None = None
    """MaskGIT schedule, frame or cell (default: the model's)"""
    calibration_clips: int = 64
    """held-out clips (the LAM's training length) whose real scrolls are measured against the player's key and
    against the LAM's codes"""
    eval_json: Path = Path("benchmarks/results/world_model_quality/eval.json")
    """`genie-gym eval` report of the same model: its code x movement table of held-out real transitions is shown
    beside (skipped when missing or measured on another model)"""
    seed: int = 0
    """seed of the clip choice and the worlds"""
    threads: int = 2
    """torch threads"""
    out: Path = Path("benchmarks/results")
    """writes OUT/dream_response.{json,md}"""


def shares(dx: np.ndarray, dy: np.ndarray) -> dict[str, Any]:
    """Shares of scrolls right (dx > 0), left (dx < 0) and up (dy < 0), and the mean dx."""
    dx, dy = np.asarray(dx).ravel(), np.asarray(dy).ravel()
    if dx.size == 0:
        return {"right": 0.0, "left": 0.0, "up": 0.0, "mean_dx": 0.0, "pairs": 0}
    return {"right": float((dx > 0).mean()), "left": float((dx < 0).mean()), "up": float((dy < 0).mean()),
            "mean_dx": float(dx.mean()), "pairs": int(dx.size)}


@torch.no_grad()
def calibrate(args: Args, wm: WorldModel) -> tuple[dict[str, Any], dict[str, Any]]:
    """Real held-out transitions (clips of the LAM's training length): scroll shares per true movement class of
    the player's key, and per latent action the LAM gives them."""
    L = wm.config.seq_len
    ds = open_clips(args.data, args.split, L, "a calibration clip")
    idx = pick_clips(len(ds), args.calibration_clips, args.seed + 7)
    frames = to_float(torch.stack([ds[i] for i in idx]))
    moves = movement_class(torch.stack([ds.clip_actions(i) for i in idx]).numpy())
    codes = wm.lam.eval().infer_actions(frames).numpy()
    dx, dy = scrolls(frames.numpy())
    by_key = {MOVEMENT_NAMES[m]: shares(dx[moves == m], dy[moves == m]) for m in np.unique(moves)}
    by_code = {str(a): shares(dx[codes == a], dy[codes == a]) for a in range(wm.num_actions)}
    by_code["all"] = shares(dx, dy)
    return by_key, by_code


def main(args: Args) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    path = args.model or WorldModel.default_path()
    wm = WorldModel.load(path)
    calibration, real_scroll = calibrate(args, wm)
    ds = open_clips(args.data, args.split, args.context, "a prompt")
    idx = pick_clips(len(ds), args.prompts, args.seed)
    prompts = torch.stack([ds[i] for i in idx]).numpy()  # (B, C, H, W, 3)
    prompt_actions = None
    if args.context > 1:
        with torch.no_grad():
            prompt_actions = wm.lam.eval().infer_actions(to_float(torch.as_tensor(prompts))).numpy()
    else:
        prompts = prompts[:, 0]
    A = wm.num_actions
    per_code: dict[str, Any] = {}
    all_dx: list[tuple[np.ndarray, np.ndarray]] = []
    for a in tqdm(range(A), desc="codes"):
        actions = np.full((len(idx), args.steps), a, dtype=np.int64)
        gen = simulate(wm, prompts, actions, [args.seed + i for i in range(len(idx))], args.maskgit_steps,
                       torch.device("cpu"), temperature=args.temperature, prompt_actions=prompt_actions,
                       schedule=args.schedule)
        last_prompt = to_float(torch.as_tensor(prompts.reshape(len(idx), -1, *prompts.shape[-3:])[:, -1]))
        frames = np.concatenate([last_prompt[:, None].numpy(), gen.numpy()], axis=1)
        all_dx.append(scrolls(frames))
        per_code[str(a)] = shares(*all_dx[-1])
    per_code["all"] = shares(np.concatenate([d for d, _ in all_dx]), np.concatenate([u for _, u in all_dx]))
    real = None
    report = json.loads(args.eval_json.read_text()) if args.eval_json.is_file() else {}
    if report.get("model_sha256") == wm.payload_sha256:  # the eval of this very model, not of another
        table = np.array(report["lam_code_by_movement"], dtype=np.int64)
        if table.shape[0] == A:  # shares of the LEFT / RIGHT (with or without UP) and +UP classes
            key_shares = direction_shares(table)["per_code"]
            real = [{"transitions": int(table[a].sum()), **{k: key_shares[k][a] for k in ("left", "right", "up")}}
                    for a in range(A)]
    result = {"command": " ".join(["python", "benchmarks/studies/dream_response.py", *sys.argv[1:]]),
              "model": os.path.relpath(path), "machine": platform.machine(), "prompts": len(idx), "steps": args.steps,
              "action_meanings": wm.metadata.get("action_meanings"), "calibration": calibration,
              "per_code": per_code, "real_keys": real,
              "real_scroll_by_code": real_scroll}
    result["sampling"] = {"temperature": args.temperature, "maskgit_steps": args.maskgit_steps,
                          "schedule": args.schedule, "context": args.context}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "dream_response.json", result)
    sim_cfg, shown = wm.config.sampling, result["model"]
    names = result["action_meanings"] or [f"a{a}" for a in range(A)]
    lines = ["# What each latent action does in the world model", "",
             f"`{result['command']}` (`{shown}`; {len(idx)} held-out prompts of {args.context} real frame(s) x "
             f"{args.steps} generated frames per "
             f"code; MaskGIT {sim_cfg.maskgit_steps if args.maskgit_steps is None else args.maskgit_steps} step(s), "
             f"temperature {sim_cfg.temperature if args.temperature is None else args.temperature}, schedule "
             f"{sim_cfg.schedule if args.schedule is None else args.schedule}). Scroll: the integer shift that best "
             "maps a frame onto the next (`metrics.best_shift`, central crop); CoinRun's camera follows the agent.", "",
             "Calibration on real held-out transitions (the player's key, its movement class):", "",
             "| key's movement | transitions | scroll right | scroll left | scroll up | mean dx |",
             "|---|---|---|---|---|---|"]
    for m, r in calibration.items():
        lines.append(f"| {m} | {r['pairs']} | {r['right']:.2f} | {r['left']:.2f} | {r['up']:.2f} | "
                     f"{r['mean_dx']:+.2f} |")
    lines += ["", "Each code held in the world model:", "",
              "| code | name | real: key right / left / UP | real: transitions | real: scroll right / left / up | "
              "generated: transitions | generated: scroll right / left / up | generated: mean dx |",
              "|---|---|---|---|---|---|---|---|"]
    for a, r in per_code.items():
        rr = real[int(a)] if real and a != "all" else None
        rk = f"{rr['right']:.2f} / {rr['left']:.2f} / {rr['up']:.2f}" if rr else "—"
        rs = real_scroll[a]
        name = names[int(a)] if a != "all" else "every code"
        lines.append(f"| {a} | {name} | {rk} | {rs['pairs']} | {rs['right']:.2f} / {rs['left']:.2f} / "
                     f"{rs['up']:.2f} | {r['pairs']} | {r['right']:.2f} / {r['left']:.2f} / {r['up']:.2f} | "
                     f"{r['mean_dx']:+.2f} |")
    if real:
        lines += ["", f"real: key: the held-out code x movement table of `{args.eval_json}` (the share of a "
                  "code's transitions whose key pressed RIGHT, LEFT, UP), which `genie-gym eval --name-actions` "
                  "turns into the names."]
    lines += ["real: scroll: the calibration clips' real transitions under each code the LAM gives them (what the "
              "code means in the data the dynamics learned from); generated: the code held in the world model."]
    write_markdown(args.out / "dream_response.md", lines)
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
