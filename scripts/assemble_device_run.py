"""Turn what `scripts/device_train.sh` brought back into a run directory and a world-model file.

The GPU machine returns weights-only checkpoints (`tokenizer_weights.pt`, `dynamics_weights.pt`: no optimiser
state, and no LAM, which was frozen). This puts them in RUN/tokenizer/last.pt and RUN/dynamics/last.pt, the LAM
taken from the file it was frozen from (the dynamics checkpoint's `init_from`, checked by sha256), and exports
RUN/world_model.pt as `genie-gym export` does.

    python scripts/assemble_device_run.py --returned runs/gpu1/device_out --run runs/gpu1
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tyro

from genie_gym.models.world_model import WorldModel
from genie_gym.training.checkpoint import checkpoint_bytes, load_checkpoint
from genie_gym.training.export import Args as ExportArgs
from genie_gym.training.export import export
from genie_gym.utils.io import atomic_write_bytes, sha256_file


@dataclass
class Args:
    returned: Path
    """folder holding tokenizer_weights.pt and dynamics_weights.pt"""
    run: Path
    """run directory to create (RUN/tokenizer/last.pt, RUN/dynamics/last.pt, RUN/world_model.pt)"""
    lam_from: Path | None = None
    """world-model file holding the frozen LAM (default: the dynamics' --init-from file, checked by sha256)"""


def main(args: Args) -> Path:
    tok = load_checkpoint(args.returned / "tokenizer_weights.pt")
    dyn = load_checkpoint(args.returned / "dynamics_weights.pt")
    source = dyn.get("init_from") or {}
    lam_file = args.lam_from or Path(source.get("path", ""))
    if args.lam_from is None and (not lam_file.is_file() or sha256_file(lam_file) != source.get("sha256")):
        raise SystemExit(f"the dynamics' frozen LAM came from {source.get('path')} (sha256 {source.get('sha256')}); "
                         "that file is not here unchanged: restore it (git history) or name a file with the "
                         "same LAM with --lam-from")
    dyn["model"]["lam"] = WorldModel.load(lam_file).lam.state_dict()
    dyn["args"]["tokenizer_ckpt"] = str(args.run / "tokenizer" / "last.pt")
    for phase, ckpt in (("tokenizer", tok), ("dynamics", dyn)):
        for key in ("format_version", "kind"):  # checkpoint_bytes writes them again
            ckpt.pop(key)
        atomic_write_bytes(args.run / phase / "last.pt", checkpoint_bytes(ckpt))
    return export(ExportArgs(run=args.run, out=args.run / "world_model.pt"))


if __name__ == "__main__":
    main(tyro.cli(Args))
