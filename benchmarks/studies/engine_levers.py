"""Two exact levers of a Genie-v0 step on the CPU, each on and off in alternation in one run:

1. **commit without features** (`DynamicsModel.commit_step`): after a frame is decided, the cache commit runs the
   dynamics over its tokens only for the keys and values of each layer's temporal attention, so the last layer
   stops once its keys and values are written: no temporal read, no MLP, no final norm. (Event heads once read
   those features; they read the frames now, so every commit stops there.)
2. **fused nearest x2 + conv** (`tokenizer.upsample2x_conv`): the pixel decoder's two "nearest upsample, then 3x3
   conv" stages computed as four 2x2 convolutions on the low-resolution grid (4 x 4 instead of 4 x 9
   multiply-adds per output pixel), the same weights and, to float rounding, the same frames.

"off" runs the code they replaced: the commit asked for features, `ConvDecoder.forward` as `self.net(x)`. Rates are
medians over rounds; the arms alternate, so a change of machine load falls on all of them.

    python benchmarks/studies/engine_levers.py

writes benchmarks/results/engine_levers.{json,md}.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tyro
from attention_cpu import frames_per_s, genie_simulator, train_step

from genie_gym.models import tokenizer
from genie_gym.utils.io import atomic_write_json, write_markdown

FUSED_FORWARD = tokenizer.ConvDecoder.forward
ARMS = {"both off": (False, False), "commit lever only": (True, False), "fused decoder only": (False, True),
        "both on (the library)": (True, True)}


@dataclass
class Args:
    """Commit without features and the fused upsample-conv decoder, each on and off, end to end."""

    rounds: int = 4
    """alternations of the four arms (each times `seconds`)"""
    seconds: float = 3.0
    """seconds timed per measurement"""
    threads: int = 2
    """torch threads"""
    out: Path = Path("benchmarks/results")
    """writes OUT/engine_levers.{json,md}"""


def _set(sim: Any, commit_lever: bool, fused: bool) -> None:
    tokenizer.ConvDecoder.forward = FUSED_FORWARD if fused else (lambda self, x: self.net(x))
    if sim is not None:
        dyn = sim.model.dynamics

        def full_commit(t: torch.Tensor, a: torch.Tensor, c: Any) -> None:  # the replaced code: features too
            dyn.transformer.forward_step(dyn._embed(t, None, a.long()), c, commit=True, output=True)

        sim._dyn_commit = dyn.commit_step if commit_lever else full_commit


def _jobs() -> dict[str, tuple[Any, Callable[[], Any], int]]:
    jobs: dict[str, tuple[Any, Callable[[], Any], int]] = {}
    for n, precision in ((1, "float32"), (64, "bfloat16"), (64, "float32")):
        sim = genie_simulator(n, precision)
        actions = np.zeros(n, dtype=np.int64)
        jobs[f"Genie-v0, {n} world{'s' if n > 1 else ''}, {precision} (frames/s)"] = (
            sim, lambda sim=sim, actions=actions: sim.step(actions), n)
    from genie_gym.config import get_preset
    from genie_gym.training.trainer import phase_optim

    cfg = get_preset("small")
    jobs["training, small tokenizer, bf16 autocast (frames/s)"] = (
        None, train_step("tokenizer"), phase_optim(cfg, "tokenizer").batch_size * cfg.seq_len)
    return jobs


def main(args: Args) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    rows = []
    for name, (sim, fn, frames_per_call) in _jobs().items():
        arms = [a for a in ARMS if sim is not None or not ARMS[a][0]]  # training has no commit
        rates: dict[str, list[float]] = {a: [] for a in arms}
        for r in range(args.rounds):
            for arm in (arms if r % 2 == 0 else arms[::-1]):
                _set(sim, *ARMS[arm])
                rates[arm].append(frames_per_s(fn, frames_per_call, args.seconds))
        _set(sim, True, True)
        med = {a: float(np.median(v)) for a, v in rates.items()}
        base = med["both off"]
        rows.append({"what": name, "frames_per_s": med, "speedup": {a: v / base for a, v in med.items()},
                     "all": rates})
        print(rows[-1]["what"], {a: f"{v:.1f} ({v / base:.2f}x)" for a, v in med.items()})
    result = {"command": "python benchmarks/studies/engine_levers.py", "machine": platform.machine(),
              "torch": torch.__version__, "threads": args.threads, "rounds": args.rounds, "seconds": args.seconds,
              "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "engine_levers.json", result)
    lines = ["# Engine levers: commit without features, fused upsample-conv decoder", "",
             f"`{result['command']}` ({result['machine']}, {args.threads} torch threads, torch {result['torch']}; "
             f"the shipped model, 1 MaskGIT step, random prompts; {args.rounds} rounds of {args.seconds:.0f} s per "
             "arm, arms in alternation, medians; speed-up against both off in the same run).", "",
             "| what | " + " | ".join(ARMS) + " |", "|---|" + "---|" * len(ARMS)]
    for r in rows:
        cells = [f"{r['frames_per_s'][a]:.1f} ({r['speedup'][a]:.2f}x)" if a in r["frames_per_s"] else "—"
                 for a in ARMS]
        lines.append(f"| {r['what']} | " + " | ".join(cells) + " |")
    write_markdown(args.out / "engine_levers.md", lines)
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
