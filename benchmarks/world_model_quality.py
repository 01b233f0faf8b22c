"""World-model quality on held-out CoinRun episodes (issue: train and ship the CoinRun world model).

Runs `genie-gym eval` on the test split, then draws the 8 latent actions from three prompts (a CoinRun frame, a
photo-like image, the hand-drawn sketch). Writes:
- `benchmarks/results/world_model_quality.json`: tokenizer_psnr, rollout_psnr_mean, delta_psnr_t4, lam_perplexity,
  lam_nmi, the targets and whether each is met, and the full eval report;
- `benchmarks/results/world_model_quality/`: eval.json, grid.png (real vs generated), action_strip.png, and
  prompts_action_strip.png (3 prompts x 8 actions);
- `benchmarks/world_model_quality.md`: the table and the pictures.

    python benchmarks/world_model_quality.py --data data/coinrun_hard_sticky
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from genie_gym.data.games import MOVEMENT_NAMES, movement_class

TARGETS = {  # key: (target, ">=")
    "tokenizer_psnr": 33.0,
    "rollout_psnr_mean": 22.0,
    "delta_psnr_t4": 1.0,
    "lam_perplexity": 5.0,
}


@dataclass
class Args:
    """Evaluate a world model on held-out CoinRun and write the quality report."""

    model: Path | None = None
    """World-model file; default: the model shipped in genie_gym/assets/."""
    data: Path = Path("data/coinrun_hard_sticky")
    """Dataset recorded by `genie-gym data` (its test split is held out by level seed)."""
    split: str = "test"
    """Held-out split to evaluate on."""
    num_clips: int = 64
    """Held-out clips to evaluate."""
    seed: int = 0
    """Seed of clip choice, sampling and random actions."""
    strip_steps: int = 6
    """Steps per action in the three-prompt action strip."""
    out: Path = Path("benchmarks/results")
    """Where world_model_quality.json and its pictures go."""
    md: Path = Path("benchmarks/world_model_quality.md")
    """The markdown report."""
    quick: bool = False
    """A handful of clips: checks that the script runs; the figures are not meaningful."""


def photo_like_prompt(size: int = 256, seed: int = 3) -> np.ndarray:
    """A photo-like landscape (sky gradient, soft clouds, textured hills), generated: no network, no shipped photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size

    def smooth_noise(octaves: int) -> np.ndarray:
        out = np.zeros((size, size))
        for o in range(octaves):
            n = 4 * 2**o
            grid = rng.standard_normal((n + 1, n + 1))
            gy, gx = y * n, x * n
            i, j = gy.astype(int), gx.astype(int)
            fy, fx = gy - i, gx - j
            fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
            top = grid[i, j] * (1 - fx) + grid[i, j + 1] * fx
            bottom = grid[i + 1, j] * (1 - fx) + grid[i + 1, j + 1] * fx
            out += (top * (1 - fy) + bottom * fy) / 2**o
        return out

    sky = np.stack([0.35 + 0.3 * y, 0.55 + 0.25 * y, 0.95 - 0.1 * y], -1)
    clouds = np.clip(smooth_noise(4) - 0.3, 0, 1)[..., None]
    image = sky * (1 - clouds) + clouds * 0.97
    ridge = 0.55 + 0.08 * smooth_noise(3)[0][None, :] + 0.04 * np.sin(6 * x)
    ground = y > ridge
    texture = smooth_noise(5)[..., None]
    grass = np.stack([0.25 + 0.1 * texture[..., 0], 0.5 + 0.15 * texture[..., 0], 0.2 + 0.05 * texture[..., 0]], -1)
    image = np.where(ground[..., None], grass * (0.7 + 0.5 * (y[..., None] - 0.5)), image)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def main(args: Args) -> None:
    from PIL import Image

    from genie_gym.envs.play import action_strip
    from genie_gym.envs.procgen_prompt import procgen_start_frame
    from genie_gym.envs.prompts import load_prompt, sketch_path
    from genie_gym.evaluation.evaluate import Args as EvalArgs
    from genie_gym.evaluation.evaluate import evaluate
    from genie_gym.models.world_model import WorldModel
    from genie_gym.utils.io import atomic_write_bytes, atomic_write_json, sha256_file

    t0 = time.time()
    model_path = args.model or WorldModel.default_path()
    resolved = Path(model_path).resolve()  # shown relative to the working directory when inside it
    shown_path = os.path.relpath(resolved) if resolved.is_relative_to(Path.cwd().resolve()) else str(model_path)
    pictures = args.out / "world_model_quality"
    report = evaluate(EvalArgs(model=model_path, data=args.data, split=args.split, out=pictures,
                               num_clips=4 if args.quick else args.num_clips, seed=args.seed, device="cpu"))

    world_model = WorldModel.load(model_path)
    prompts = {
        "coinrun frame (test level)": procgen_start_frame("coinrun", level=_test_level(args.data),
                                                          distribution_mode="hard"),
        "photo-like image": load_prompt(photo_like_prompt())[0],
        "hand-drawn sketch": load_prompt(str(sketch_path()))[0],
    }
    Image.fromarray(photo_like_prompt()).save(pictures / "photo_like_prompt.png")
    action_strip(world_model, list(prompts.values()), 2 if args.quick else args.strip_steps,
                 out_png=pictures / "prompts_action_strip.png", seed=args.seed)

    figures = {k: float(report[k]) for k in (*TARGETS, "lam_nmi")}
    met = {k: figures[k] >= v for k, v in TARGETS.items()}
    result = {
        **figures,
        "targets": TARGETS,
        "targets_met": met,
        "all_targets_met": all(met.values()),
        "model": shown_path,
        "model_file_sha256": sha256_file(model_path),
        "model_metadata": world_model.metadata,
        "data": str(args.data),
        "split": args.split,
        "num_clips": report["num_clips"],
        "quick": args.quick,
        "rollout_psnr_per_step": report["rollout_psnr"],
        "rollout_psnr_random_actions_per_step": report["rollout_psnr_random_actions"],
        "tokenizer_ssim": report["tokenizer_ssim"],
        "lam_code_histogram": report["lam_code_histogram"],
        "command": " ".join(["python", "benchmarks/world_model_quality.py", *sys.argv[1:]]),
        "seconds": round(time.time() - t0, 1),
    }
    atomic_write_json(args.out / "world_model_quality.json", result)

    rows = "\n".join(
        f"| {k} | {figures[k]:.2f} | >= {TARGETS[k]} | {'yes' if met[k] else 'no'} |" for k in TARGETS
    )
    rel = Path(os.path.relpath(pictures, args.md.resolve().parent))
    md = f"""# World-model quality (held-out CoinRun, test split by level seed)

Command: `{result['command']}` ({result['seconds']} s). Model: `{shown_path}`
(preset {world_model.config.preset}, {world_model.metadata.get('steps', '?')} dynamics steps).
Clips: {report['num_clips']} from `{args.data}` split `{args.split}`; 1 real context frame, 10 generated frames with
the LAM's actions; Δt-PSNR at t = 4 against uniformly random actions.

| metric | measured | target | met |
|---|---|---|---|
{rows}
| lam_nmi (codes vs true actions) | {figures['lam_nmi']:.3f} | diagnostic | |

Rollout PSNR per generated step (LAM actions): {', '.join(f'{p:.1f}' for p in report['rollout_psnr'])}
Rollout PSNR per generated step (random actions): {', '.join(f'{p:.1f}' for p in report['rollout_psnr_random_actions'])}

What each latent action does on the held-out clips (the true actions of the transitions the LAM gave that code,
as CoinRun movement classes; DOWN and the letter keys count as NONE):

{_code_table(report['lam_code_by_action'])}

Real (odd rows) vs generated (even rows):

![real vs generated]({rel}/grid.png)

The 8 latent actions from three prompts: a CoinRun frame, a photo-like image, a hand-drawn sketch (rows: prompt x
action; columns: the prompt, then {args.strip_steps} steps holding that action):

![action strip]({rel}/prompts_action_strip.png)
"""
    atomic_write_bytes(args.md, md.encode())
    print(json.dumps({k: result[k] for k in (*figures, "all_targets_met")}, indent=2))


def _code_table(code_by_action: list[list[int]]) -> str:
    """Markdown: per latent action, its transitions and how they split over the 6 movement classes."""
    counts_AM = np.zeros((len(code_by_action), len(MOVEMENT_NAMES)), dtype=np.int64)
    for a, row in enumerate(code_by_action):
        np.add.at(counts_AM[a], movement_class(np.arange(len(row))), np.asarray(row))
    lines = ["| action | transitions | " + " | ".join(MOVEMENT_NAMES) + " |", "|---" * (len(MOVEMENT_NAMES) + 2) + "|"]
    for a, row in enumerate(counts_AM):
        n = int(row.sum())
        shares = " | ".join(f"{100 * c / n:.0f}%" if n else "" for c in row)
        lines.append(f"| a={a} | {n} | {shares} |")
    return "\n".join(lines)


def _test_level(data: Path) -> int:
    """A level seed of the dataset's test split (never trained on)."""
    manifest = json.loads((data / "manifest.json").read_text())
    levels = manifest["splits"]["test"]
    levels = levels["level_seeds"] if isinstance(levels, dict) else levels
    return int(sorted(levels)[0])


if __name__ == "__main__":
    main(tyro.cli(Args))
