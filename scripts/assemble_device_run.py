"""Turn what `scripts/device_train.sh` brought back into a run directory and a world-model file.

The GPU machine returns weights-only checkpoints (`tokenizer_weights.pt`, `dynamics_weights.pt` or one
`dynamics_NAME_weights.pt` per arm of DYN_ARMS, a `tokenizer_NAME_weights.pt` beside it per arm of TOK_ARMS: no
optimiser state, each with its metrics.jsonl inside, and no LAM, which was frozen). This puts them in
RUN/tokenizer/last.pt and RUN/dynamics/last.pt (with their metrics.jsonl), the LAM taken from the file it was frozen
from (the dynamics checkpoint's `init_from`, checked by sha256), and exports RUN/world_model.pt as `genie-gym export`
does. Without `tokenizer_weights.pt` (TOK_S=0) the dynamics was trained on
that same file's tokenizer, which the export takes.

    python scripts/assemble_device_run.py --returned runs/gpu1/device_out --run runs/gpu1
    python scripts/assemble_device_run.py --returned runs/gpu2/device_out --arm l8 --run runs/gpu2_l8
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
    arm: str | None = None
    """which DYN_ARMS or TOK_ARMS arm to take (dynamics_ARM_weights.pt, and tokenizer_ARM_weights.pt where a TOK_ARMS
    arm trained its own tokenizer; default: dynamics_weights.pt)"""
    lam_from: Path | None = None
    """world-model file holding the frozen LAM (default: the dynamics' --init-from file, checked by sha256); without
    tokenizer_weights.pt, its tokenizer too"""


def main(args: Args) -> Path:
    dyn_file = args.returned / (f"dynamics_{args.arm}_weights.pt" if args.arm else "dynamics_weights.pt")
    if not dyn_file.is_file():
        found = sorted(f.name for f in args.returned.glob("dynamics*_weights.pt"))
        raise SystemExit(f"{dyn_file} is not there; {args.returned} holds {found or 'no dynamics weights'} "
                         "(dynamics_ARM_weights.pt: pass --arm ARM)")
    dyn = load_checkpoint(dyn_file)
    source = dyn.get("init_from") or {}
    lam_file = args.lam_from or Path(source.get("path", ""))
    if args.lam_from is None and (not lam_file.is_file() or sha256_file(lam_file) != source.get("sha256")):
        raise SystemExit(f"the dynamics' frozen LAM came from {source.get('path')} (sha256 {source.get('sha256')}); "
                         "that file is not here unchanged: restore it (git history) or name a file with the "
                         "same LAM with --lam-from")
    dyn["model"]["lam"] = WorldModel.load(lam_file).lam.state_dict()
    parts = {"dynamics": dyn}
    if dyn["args"].get("tokenizer_ckpt") == source.get("path"):  # TOK_S=0: the tokens of the file it started from
        dyn["args"]["tokenizer_ckpt"] = str(lam_file)
    else:  # the tokenizer phase of the same call: the arm's own (TOK_ARMS) or the one every arm shared
        tok_file = args.returned / (f"tokenizer_{args.arm}_weights.pt" if args.arm else "tokenizer_weights.pt")
        if args.arm and not tok_file.is_file():
            tok_file = args.returned / "tokenizer_weights.pt"
        if not tok_file.is_file():
            raise SystemExit(f"the dynamics was trained on the tokenizer {dyn['args'].get('tokenizer_ckpt')} of the "
                             f"device run; {args.returned} has no {tok_file.name} to go with it")
        parts["tokenizer"] = load_checkpoint(tok_file)
        dyn["args"]["tokenizer_ckpt"] = str(args.run / "tokenizer" / "last.pt")
    for phase, ckpt in parts.items():
        for key in ("format_version", "kind"):  # checkpoint_bytes writes them again
            ckpt.pop(key)
        metrics = ckpt.pop("metrics_jsonl", None)
        atomic_write_bytes(args.run / phase / "last.pt", checkpoint_bytes(ckpt))
        if metrics is not None:
            atomic_write_bytes(args.run / phase / "metrics.jsonl", metrics.encode())
    return export(ExportArgs(run=args.run, out=args.run / "world_model.pt"))


if __name__ == "__main__":
    main(tyro.cli(Args))
