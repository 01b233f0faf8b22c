"""Training checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint is a dict: format version, phase, config, model/optimizer/scheduler state, step, RNG states
(python, numpy, torch, cuda) and the data stream position. `last.pt` is rewritten every `--ckpt-every` steps;
`step_XXXXXXX.pt` copies are kept (the newest `keep`) so that a damaged `last.pt` is never the only copy.
"""

from __future__ import annotations

import io
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genie_gym.config import GenieConfig
from genie_gym.errors import CheckpointError
from genie_gym.utils.io import atomic_write_bytes, check_file_header

CHECKPOINT_FORMAT_VERSION = 1
CHECKPOINT_KIND = "genie-gym-train-checkpoint"


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_bytes(payload: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save({"format_version": CHECKPOINT_FORMAT_VERSION, "kind": CHECKPOINT_KIND, **payload}, buf)
    return buf.getvalue()


def save_checkpoint(payload: dict[str, Any], ckpt_dir: Path, step: int, keep: int = 3) -> Path:
    """Write `step_{step}.pt` and `last.pt` atomically (serialised once), then prune old periodic copies."""
    ckpt_dir = Path(ckpt_dir)
    data = checkpoint_bytes(payload)
    periodic = ckpt_dir / f"step_{step:07d}.pt"
    atomic_write_bytes(periodic, data)
    atomic_write_bytes(ckpt_dir / "last.pt", data)
    if keep > 0:
        for old in sorted(ckpt_dir.glob("step_*.pt"))[:-keep]:
            old.unlink(missing_ok=True)
    return ckpt_dir / "last.pt"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a training checkpoint; every failure is a `CheckpointError` that says what to do."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist; train that phase first or pass the right path"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, OSError) as e:
        periodic = sorted(path.parent.glob("step_*.pt"))
        hint = f" or copy the newest periodic checkpoint ({periodic[-1].name}) over it" if periodic else ""
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({type(e).__name__}: {str(e)[:120]}); "
            f"delete it{hint}, "
            "or start the phase again without --resume"
        ) from e
    check_file_header(ckpt, f"checkpoint {path}", "kind", CHECKPOINT_KIND, CHECKPOINT_FORMAT_VERSION,
                      f"{path} is not a genie-gym training checkpoint (a world-model file? load those with "
                      "WorldModel.load)", "upgrade genie-gym (pip install -U genie-gym) to read it")
    return ckpt


def load_tokenizer_source(path: str | Path) -> dict[str, Any]:
    """A frozen tokenizer for phase dynamics or export: a tokenizer checkpoint, or a world-model file's tokenizer in
    the same form (`phase`, `config`, `model: {tokenizer}`, `step`, `metrics`), e.g. to continue its dynamics."""
    from genie_gym.models.world_model import WorldModel, is_world_model_file

    if not is_world_model_file(path):
        try:
            return load_checkpoint(path)
        except CheckpointError as e:
            raise CheckpointError(f"{path} is neither a tokenizer checkpoint nor a readable world-model file: "
                                  f"{e}") from e
    wm = WorldModel.load(path)
    return {"phase": "tokenizer", "config": wm.config.to_dict(), "model": {"tokenizer": wm.tokenizer.state_dict()},
            "step": int(wm.metadata.get("steps", {}).get("tokenizer", 0)),
            "metrics": {k.removeprefix("tokenizer/"): v for k, v in wm.metadata.get("metrics", {}).items()
                        if k.startswith("tokenizer/")}}


def config_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Readable differences between two nested config dicts, e.g. `tokenizer.codebook_size: 64 != 1024`"""
    out: list[str] = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_diff(va, vb, f"{prefix}{k}.")
        elif (list(va) if isinstance(va, tuple) else va) != (list(vb) if isinstance(vb, tuple) else vb):
            out.append(f"{prefix}{k}: {va!r} != {vb!r}")
    return out


TOKENIZER_LOSS_FIELDS = ("mse_weight", "l1_weight", "grad_weight")


def check_tokenizer_fits(tok_ckpt: dict[str, Any], cfg: GenieConfig, path: Path) -> None:
    """The frozen tokenizer must be the one the dynamics run's config describes (codebook, patch, size...)."""
    if tok_ckpt.get("phase") != "tokenizer":
        raise CheckpointError(
            f"{path} is a '{tok_ckpt.get('phase')}' checkpoint, not a tokenizer one; pass --tokenizer-ckpt "
            "RUN_DIR/tokenizer/last.pt or a world-model file"
        )
    theirs = tok_ckpt["config"]

    def design(tok: dict[str, Any]) -> dict[str, Any]:  # the loss weights shape training, not the model
        return {k: v for k, v in tok.items() if k not in TOKENIZER_LOSS_FIELDS}

    diffs = config_diff(
        {"tokenizer": design(theirs["tokenizer"]), "image_size": theirs["image_size"]},
        {"tokenizer": design(cfg.tokenizer.__dict__), "image_size": cfg.image_size},
    )
    if diffs:
        raise CheckpointError(
            f"tokenizer checkpoint {path} (preset '{theirs.get('preset')}') does not fit this dynamics run "
            f"(preset '{cfg.preset}'): {'; '.join(diffs)}. Train the tokenizer with --preset {cfg.preset} "
            f"first, or run the dynamics phase with --preset {theirs.get('preset')}"
        )


def check_resume_fits(ckpt: dict[str, Any], cfg: GenieConfig, phase: str, path: Path) -> None:
    """Resuming with a different phase or model config would silently mix runs; refuse it."""
    if ckpt.get("phase") != phase:
        raise CheckpointError(
            f"{path} is a '{ckpt.get('phase')}' checkpoint; cannot resume phase '{phase}' "
            "from it. Use another --out or drop --resume"
        )
    mine = cfg.to_dict()
    try:  # read through the config loader: older checkpoints' fields are migrated the way model files' are
        stored = GenieConfig.from_dict(ckpt["config"]).to_dict()
    except ValueError as e:
        raise CheckpointError(f"cannot resume from {path}: {e}") from None
    # phase tokenizer trains the tokenizer alone: the LAM and dynamics settings may still change before phase 2
    keys = ["image_size", "tokenizer"] if phase == "tokenizer" else ["image_size", "seq_len", "tokenizer", "lam",
                                                                     "dynamics"]
    diffs = config_diff({k: stored[k] for k in keys}, {k: mine[k] for k in keys})
    if diffs:
        raise CheckpointError(
            f"cannot resume from {path}: its model config differs from --preset {cfg.preset}: "
            f"{'; '.join(diffs)}. "
            f"Resume with --preset {ckpt['config'].get('preset')}, or use a fresh --out"
        )
