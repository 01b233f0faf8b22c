"""`genie-gym bench`: run the measurement scripts in the repository's `benchmarks/` folder.

The scripts live beside the package (not inside it), so this command runs from a source checkout.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

BENCHMARKS = {
    "data": "data_speed.py",
    "train": "train_speed.py",
    "env": "env_speed.py",
    "bc": "bc_coinrun.py",
    "bc_labels": "latent_bc_labels.py",
    "quality": "world_model_quality.py",
    "from_scratch": "small_from_scratch.py",
}


@dataclass
class Args:
    """Run benchmarks and write their JSON and markdown into benchmarks/results/."""

    names: list[str] = field(default_factory=lambda: ["data", "train", "env"])
    """Benchmarks to run, of: data, train, env, bc and bc_labels (these need the PPO expert; bc_labels runs latent
    BC with labels of known quality, ~45 min), quality and from_scratch (these need data/coinrun_hard_sticky;
    from_scratch trains for ~2 h)."""
    quick: bool = False
    """Tiny sizes: checks that the scripts run, the figures are not meaningful."""
    root: Path = Path(".")
    """Repository checkout that holds benchmarks/."""


def main(args: Args) -> None:
    bench_dir = args.root / "benchmarks"
    if not bench_dir.is_dir():
        raise SystemExit(
            f"genie-gym bench: no benchmarks/ folder under {args.root.resolve()}; "
            "run it from a source checkout of genie-gym or pass --root PATH"
        )
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"genie-gym bench: unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)}")
    for name in args.names:
        cmd = [sys.executable, str(bench_dir / BENCHMARKS[name])] + (["--quick"] if args.quick else [])
        print(f"== {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, check=True)
