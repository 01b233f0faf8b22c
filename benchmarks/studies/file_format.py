"""World-model file format, measured: genie-gym's checksummed torch file against safetensors for the same weights.

    python benchmarks/studies/file_format.py                 # the shipped model

For the shipped model's weights (bf16 on disk), both ways of storing them: file size, and the time to load and
verify (genie-gym: `WorldModel.load`, which checks the sha256 of every byte, the format version and the config, then
builds the modules; safetensors: `safetensors.torch.load_file` plus the same model construction, plus a sha256 of
the tensor bytes to give it the same integrity check). Needs `pip install safetensors` (not a dependency of the
package). Writes benchmarks/results/file_format.{json,md}.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro


@dataclass
class Args:
    """Size and load time of the shipped weights as a genie-gym file and as safetensors."""

    model: Path | None = None
    """world-model file (default: the shipped one)"""
    repeats: int = 5
    """loads timed per format (the median is reported)"""
    out: Path = Path("benchmarks/results/file_format")
    """writes OUT.json and OUT.md"""


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main(args: Args) -> None:
    try:
        from safetensors.torch import load_file, save_file
    except ImportError:
        raise SystemExit("benchmarks/studies/file_format.py compares against safetensors: "
                         "pip install safetensors") from None
    from genie_gym.models.world_model import WorldModel
    from genie_gym.utils.io import atomic_write_json, sha256_bytes, write_markdown

    path = Path(args.model or WorldModel.default_path())
    if path.resolve().is_relative_to(Path.cwd()):
        path = path.resolve().relative_to(Path.cwd())  # the report names the file as the repository does
    wm = WorldModel.load(path)
    dtype = getattr(torch, wm.file_dtype)
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in wm.state_dict().items()}
    header = {"config": json.dumps(wm.config.to_dict()), "metadata": json.dumps(wm.metadata)}
    with tempfile.TemporaryDirectory() as tmp:
        st_path = Path(tmp) / "world_model.safetensors"
        save_file(state, str(st_path), metadata=header)

        def load_safetensors() -> None:
            from safetensors import safe_open

            tensors = load_file(str(st_path))
            with safe_open(str(st_path), "pt") as f:
                meta = f.metadata()
            sha256_bytes(st_path.read_bytes())  # the integrity check genie-gym files carry
            from genie_gym.config import GenieConfig

            model = WorldModel(GenieConfig.from_dict(json.loads(meta["config"])))
            model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()})

        rows = {
            "genie-gym (torch payload + sha256)": {"bytes": Path(path).stat().st_size,
                                                   "load_s": _median_seconds(lambda: WorldModel.load(path),
                                                                             args.repeats)},
            "safetensors (+ sha256 of the file)": {"bytes": st_path.stat().st_size,
                                                   "load_s": _median_seconds(load_safetensors, args.repeats)},
        }
    command = " ".join(["python", "benchmarks/studies/file_format.py", *sys.argv[1:]])
    atomic_write_json(args.out.with_suffix(".json"), {"command": command, "model": str(path), "rows": rows})
    lines = ["# World-model file format", "", f"`{command}` on `{path}` (weights {wm.file_dtype}); load = read, "
             "verify, build the modules, median of " + f"{args.repeats}.", "",
             "| format | MiB | load + verify (s) |", "|---|---|---|"]
    lines += [f"| {name} | {r['bytes'] / 2**20:.2f} | {r['load_s']:.3f} |" for name, r in rows.items()]
    write_markdown(args.out.with_suffix(".md"), lines)


if __name__ == "__main__":
    main(tyro.cli(Args))
