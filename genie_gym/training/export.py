"""`genie-gym export`: a world-model file from a run's checkpoints, at the last step or any kept earlier one.

Training rewrites RUN/world_model.pt at every dynamics checkpoint (the latest step). To use an earlier step (the
model at a time budget, or the best one before a run went wrong), export a kept `RUN/dynamics/step_XXXXXXX.pt`;
`--tokenizer-ckpt` pairs the dynamics with another checkpoint of the same tokenizer design (a decoder fine-tuned
with `--freeze-encoder` makes the same tokens):

    genie-gym export --run runs/small --step 4000          # -> runs/small/world_model_step4000.pt
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genie_gym.config import GenieConfig, apply_overrides
from genie_gym.errors import CheckpointError, ConfigError
from genie_gym.training.checkpoint import check_tokenizer_fits, load_checkpoint, load_tokenizer_source
from genie_gym.utils.io import sha256_file


@dataclass
class Args:
    run: Path
    """run directory of `genie-gym train` / `pipeline` (holds tokenizer/ and dynamics/)"""
    step: int | None = None
    """dynamics step to export: a kept RUN/dynamics/step_XXXXXXX.pt (default: RUN/dynamics/last.pt)"""
    tokenizer_ckpt: Path | None = None
    """the frozen tokenizer checkpoint (default: the one the dynamics phase was trained with)"""
    out: Path | None = None
    """world-model file to write (default: RUN/world_model_step<N>.pt)"""
    set: tuple[str, ...] = ()
    """the file's default sampling settings, e.g. sampling.maskgit_steps=1 sampling.temperature=0 (only sampling.*:
    every other field must match the trained weights)"""


def world_model_metadata(data: Path | str | None, steps: dict[str, int], tokenizer_metrics: dict[str, Any],
                         dynamics_metrics: dict[str, Any], preset: str, init_from: Any, seed: int) -> dict[str, Any]:
    """What a world-model file records of its training (the model card's facts)."""
    manifest = Path(data) / "manifest.json" if data else None
    known = manifest is not None and manifest.is_file()
    return {
        "data_manifest_sha256": sha256_file(manifest) if known else None,
        # frames with Procgen's velocity bar: a LAM trained on them labels only painted frames (agents/latent_bc.py)
        "paint_vel_info": bool(json.loads(manifest.read_text()).get("settings", {}).get("paint_vel_info", False))
        if known else False,
        "steps": steps,
        "metrics": {
            **{f"tokenizer/{k}": v for k, v in tokenizer_metrics.items()},
            **{f"dynamics/{k}": v for k, v in dynamics_metrics.items()},
        },
        "preset": preset,
        "init_from": init_from,
        "seed": seed,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def write_world_model(cfg: GenieConfig, states: dict[str, dict], path: Path, metadata: dict[str, Any]) -> Path:
    """Bundle tokenizer, LAM and dynamics weights into one world-model file (atomic, checksummed)."""
    from genie_gym.models.world_model import WorldModel

    wm = WorldModel(cfg)
    for name in ("tokenizer", "lam", "dynamics"):
        getattr(wm, name).load_state_dict(states[name])
    wm.save(path, metadata)
    return path


def export(args: Args) -> Path:
    run = Path(args.run)
    dyn_dir = run / "dynamics"
    dyn_path = dyn_dir / (f"step_{args.step:07d}.pt" if args.step is not None else "last.pt")
    if not dyn_path.is_file():
        kept = sorted(p.name for p in dyn_dir.glob("step_*.pt"))
        raise CheckpointError(f"{dyn_path} does not exist; kept dynamics checkpoints of {run}: "
                              f"{', '.join(kept) or 'none'} (train phase dynamics first, or pick one of these)")
    dyn = load_checkpoint(dyn_path)
    if dyn.get("phase") != "dynamics":
        raise CheckpointError(f"{dyn_path} is a '{dyn.get('phase')}' checkpoint; export needs phase dynamics")
    saved_args = dyn.get("args", {})
    tok_path = Path(args.tokenizer_ckpt or saved_args.get("tokenizer_ckpt") or run / "tokenizer" / "last.pt")
    tok = load_tokenizer_source(tok_path)
    cfg = GenieConfig.from_dict(dyn["config"])
    not_sampling = [item for item in args.set if not item.strip().startswith("sampling.")]
    if not_sampling:
        raise ConfigError(f"--set {' '.join(not_sampling)}: export changes only sampling.* fields (the weights fix the "
                          "rest); train with --set to change the model")
    try:
        cfg = apply_overrides(cfg, args.set)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{e} (--set)") from None
    check_tokenizer_fits(tok, cfg, tok_path)
    metadata = world_model_metadata(
        saved_args.get("data"), {"tokenizer": int(tok["step"]), "dynamics": int(dyn["step"])},
        dict(tok.get("metrics", {})), dict(dyn.get("metrics", {})), cfg.preset, dyn.get("init_from"),
        int(saved_args.get("seed", 0)),
    )
    out = Path(args.out or run / f"world_model_step{int(dyn['step'])}.pt")
    states = {"tokenizer": tok["model"]["tokenizer"], **{k: dyn["model"][k] for k in ("lam", "dynamics")}}
    write_world_model(cfg, states, out, metadata)
    print(f"exported {dyn_path} (step {dyn['step']}) with tokenizer {tok_path} (step {tok['step']}) -> {out}")
    return out


def main(args: Args) -> None:
    export(args)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
