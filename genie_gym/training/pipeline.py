"""`genie-gym pipeline`: data -> tokenizer -> dynamics -> eval in one resumable command.

Each stage is skipped when its output is complete (a complete dataset manifest, a phase whose status.json
reached its step target, an eval.json newer than the world model); an interrupted training stage resumes from
its last.pt. RUN/pipeline.json keeps each stage's wall time, summed over the calls that resumed it.
`genie-gym pipeline --preset tiny --out runs/tiny` takes a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from genie_gym.config import Preset
from genie_gym.data.games import Game, Mode

# Recording sizes per preset: tiny is a smoke test, small is the shipped CPU model, coinrun the paper's 10M.
DATA_FRAMES = {"tiny": 3_000, "small": 400_000, "coinrun": 10_000_000}
# Recording policy per preset: small records as the shipped model's data was (actions held 4 steps: the model
# card measures why); the paper's uniformly random policy otherwise.
DATA_POLICY = {"small": "sticky"}
# Short episodes for tiny give it several levels in every split; the paper's 1000-step cap otherwise.
DATA_MAX_STEPS = {"tiny": 200, "small": 1000, "coinrun": 1000}


@dataclass
class Args:
    preset: Preset = "tiny"
    """model preset: tiny (minutes, a smoke test), small (the CPU model), coinrun (the paper's sizes)"""
    set: tuple[str, ...] = ()
    """config overrides on top of the preset, SECTION.FIELD=VALUE (as `genie-gym train --set`)"""
    out: Path = Path("runs/tiny")
    """run directory (RUN/data, RUN/tokenizer, RUN/dynamics, RUN/world_model.pt, RUN/eval)"""
    game: Game = "coinrun"
    """Procgen game to record"""
    mode: Mode = "hard"
    """Procgen distribution mode (the paper's CoinRun case study used hard)"""
    data_frames: int | None = None
    """frames to record (default per preset: tiny 3k, small 400k, coinrun 10M)"""
    data: Path | None = None
    """use this existing dataset instead of recording into RUN/data"""
    policy: str | None = None
    """recording policy: random (the paper) or sticky (default per preset: small sticky, as shipped; else random)"""
    seed: int = 0
    """seed for recording, training and evaluation"""
    device: str = "auto"
    """auto | cpu | cuda"""
    tokenizer_steps: int | None = None
    """tokenizer steps (default: the preset's)"""
    dynamics_steps: int | None = None
    """LAM + dynamics steps (default: the preset's)"""
    batch_size: int | None = None
    """clips per training step (default: the preset's)"""
    num_workers: int = -1
    """DataLoader workers (-1: 0 on CPU, up to 8 on CUDA)"""
    eval_clips: int = 16
    """held-out clips for the final evaluation"""
    log_every: int = 10
    """steps between logged metrics"""
    ckpt_every: int = 500
    """steps between checkpoints"""
    cpu_bf16: bool = False
    """autocast training to bf16 on CPU too (the shipped small model was trained so: ~1.6x faster on AVX-512 bf16)"""
    lam_from: Path | None = None
    """keep the LAM of this world-model file fixed and train only the dynamics on its codes (default: co-train a new
    LAM); the shipped v1.0 reuses v0.2's LAM this way"""
    eval_stability_steps: int | None = None
    """frames of the eval's long-horizon stability rollouts (default: 200; 20 for tiny, whose episodes are short)"""
    heads: bool = True
    """train the reward / episode-end heads after the dynamics (`genie-gym train --phase heads`)"""
    heads_steps: int | None = None
    """steps of the heads phase (default: 4000; 50 for tiny)"""


def _stage(name: str) -> float:
    print(f"\n=== pipeline: {name} ===", flush=True)
    return time.time()


def _phase_done(phase_dir: Path, target_steps: int) -> bool:
    status = phase_dir / "status.json"
    if not status.is_file():
        return False
    try:
        return int(json.loads(status.read_text())["step"]) >= target_steps
    except (json.JSONDecodeError, KeyError, ValueError, OSError):
        return False


class _Timings:
    """Wall seconds per stage in RUN/pipeline.json, summed over resumed calls (a killed call loses its unsaved part)."""

    def __init__(self, run: Path, args: Args) -> None:
        self.path = run / "pipeline.json"
        self.state: dict = {"timings_s": {}}
        if self.path.is_file():
            try:
                self.state = json.loads(self.path.read_text())
            except (json.JSONDecodeError, OSError):
                print(f"warning: {self.path} is unreadable; wall times start again from zero")
        self.state.setdefault("timings_s", {})
        self.state["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}

    def add(self, stage: str, seconds: float) -> None:
        from genie_gym.utils.io import atomic_write_json

        timings = self.state["timings_s"]
        timings[stage] = round(timings.get(stage, 0.0) + seconds, 1)
        self.state["total_s"] = round(sum(timings.values()), 1)
        atomic_write_json(self.path, self.state)


def run_pipeline(args: Args) -> dict:
    from genie_gym.config import apply_overrides, get_preset
    from genie_gym.errors import ConfigError
    from genie_gym.training import train as train_mod
    from genie_gym.training.trainer import train

    try:
        cfg = apply_overrides(get_preset(args.preset), args.set)  # every bad value fails here, before any work
    except ValueError as e:
        raise ConfigError(f"{e} (--preset / --set)") from None
    run = Path(args.out)
    run.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    saved = _Timings(run, args)

    # 1. data
    data = Path(args.data) if args.data is not None else run / "data"
    t = _stage(f"data -> {data}")
    if args.data is None:
        from genie_gym.data import recorder

        small_run = args.preset == "tiny"
        recorder.record(
            recorder.Args(
                game=args.game,
                mode=args.mode,
                frames=args.data_frames or DATA_FRAMES.get(args.preset, 300_000),
                max_steps=DATA_MAX_STEPS.get(args.preset, 1000),
                policy=args.policy or DATA_POLICY.get(args.preset, "random"),  # type: ignore[arg-type]
                seed=args.seed,
                out=data,
                num_envs=16 if small_run else 64,
                val_frac=0.15 if small_run else 0.05,
                test_frac=0.2 if small_run else 0.05,
            )
        )
    timings["data_s"] = time.time() - t
    saved.add("data_s", timings["data_s"])

    # 2-3. training phases (resume from last.pt; skipped when the target step is reached)
    phase_steps = {
        "tokenizer": args.tokenizer_steps or cfg.tokenizer_optim.steps,
        "dynamics": args.dynamics_steps or cfg.dynamics_optim.steps,
    }
    for phase, steps in phase_steps.items():
        t = _stage(f"train {phase} ({steps} steps)")
        if _phase_done(run / phase, steps) and (phase != "dynamics" or (run / "world_model.pt").is_file()):
            print(f"{run / phase} already reached step {steps}; skipping")
        else:
            train(
                train_mod.Args(
                    phase=phase,
                    preset=args.preset,
                    set=args.set,
                    data=data,
                    out=run,
                    steps=steps,  # type: ignore[arg-type]
                    batch_size=args.batch_size,
                    device=args.device,
                    resume=True,
                    seed=args.seed,
                    num_workers=args.num_workers,
                    log_every=args.log_every,
                    ckpt_every=args.ckpt_every,
                    image_every=max(args.ckpt_every, steps),
                    cpu_bf16=args.cpu_bf16,
                    **({"init_from": args.lam_from, "init_parts": ("lam",), "freeze_lam": True}
                       if phase == "dynamics" and args.lam_from is not None else {}),
                )
            )
        timings[f"{phase}_s"] = time.time() - t
        saved.add(f"{phase}_s", timings[f"{phase}_s"])

    # 3. reward / episode-end heads on the frozen world model
    wm_path = run / "world_model.pt"
    if args.heads:
        from genie_gym.errors import DatasetError
        from genie_gym.models.world_model import WorldModel
        from genie_gym.training.heads import train_heads

        t = _stage("train heads")
        if WorldModel.load(wm_path).heads is not None:
            print(f"{wm_path} already has its heads; skipping")
        else:
            try:
                train_heads(train_mod.Args(phase="heads", out=run, data=data, seed=args.seed, cpu_bf16=args.cpu_bf16,
                                           resume=True,  # a killed pipeline continues its heads from RUN/heads
                                           steps=args.heads_steps or (50 if args.preset == "tiny" else 4000),
                                           heads_negatives=4 if args.preset == "tiny" else 20))
            except DatasetError as e:  # e.g. tiny data whose episodes were all cut by the time limit
                print(f"heads not trained: {e}")
        timings["heads_s"] = time.time() - t
        saved.add("heads_s", timings["heads_s"])

    # 4. evaluation on the held-out test split
    from genie_gym.evaluation import evaluate as eval_mod

    eval_dir = run / "eval"
    t = _stage(f"eval -> {eval_dir}")
    eval_json = eval_dir / "eval.json"
    if eval_json.is_file() and eval_json.stat().st_mtime >= wm_path.stat().st_mtime:
        print(f"{eval_json} is newer than {wm_path}; skipping")
        result = json.loads(eval_json.read_text())
    else:
        result = eval_mod.evaluate(
            eval_mod.Args(
                model=wm_path,
                data=data,
                split="test",
                out=eval_dir,
                num_clips=args.eval_clips,
                seed=args.seed,
                device=args.device,
                stability_steps=args.eval_stability_steps or (20 if args.preset == "tiny" else 200),
                name_actions=True,  # the model file learns what its latent actions do (Genie-v0's keys use it)
            )
        )
    timings["eval_s"] = time.time() - t
    saved.add("eval_s", timings["eval_s"])
    print(
        f"\npipeline done in {sum(timings.values()):.0f} s: "
        + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())
    )
    print(f"wall time summed over resumed calls: {saved.state['total_s']:.0f} s ({saved.path})")
    print(f"world model: {wm_path}; eval: {eval_json}")
    return {"timings": timings, "timings_all_calls": saved.state["timings_s"], "eval": result}


def main(args: Args) -> None:
    run_pipeline(args)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
