"""Is int8 worth it for Genie-v0's matmuls? The speed issue lists int8 dynamic quantisation of the linear layers as
a lever to measure. This times one linear layer of each shape the `small` dynamics runs (d 192: attention in/out,
MLP up/down, the 4 x 1,000-logit head) at the row counts Genie-v0 feeds it: 64 positions x 1 world (one env),
x 16 (SB3 PPO's `GenieSB3VecEnv(16)`) and x 64 (the batched target), in float32, bfloat16 autocast, and
`torch.ao.quantization.quantize_dynamic` int8 weights (activations quantised per call), on this machine's threads.

    python benchmarks/studies/int8_linears.py

writes benchmarks/results/int8_linears.{json,md}. Speed only: the quality cost of int8 weights was not measured,
because PyTorch deprecates `torch.ao.quantization` in favour of the separate `torchao` package.
"""

from __future__ import annotations

import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import tyro

from genie_gym.utils.io import atomic_write_json, write_markdown

SHAPES = ((192, 576), (192, 192), (192, 768), (768, 192), (192, 4000))  # qkv, attention out, MLP up, down, head


@dataclass
class Args:
    """GFLOP/s of the dynamics' linear layers in float32, bfloat16 and int8 (dynamic quantisation)."""

    rows: tuple[int, ...] = (64, 1024, 4096)
    """rows per call: 64 positions x 1, 16 and 64 worlds"""
    repeats: int = 50
    """timed calls per cell (after 3 warm-up calls)"""
    threads: int = 2
    """torch threads"""
    out: Path = Path("benchmarks/results")
    """directory for int8_linears.{json,md}"""


def seconds_per_call(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main(args: Args) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return measure(args)
    finally:
        torch.set_num_threads(threads)


def measure(args: Args) -> dict:
    torch.manual_seed(0)
    rows_out = []
    for n in args.rows:
        for d_in, d_out in SHAPES:
            linear = nn.Linear(d_in, d_out).eval()
            x = torch.randn(n, d_in)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # its deprecation notices
                int8 = torch.ao.quantization.quantize_dynamic(nn.Sequential(linear), {nn.Linear},
                                                              dtype=torch.qint8)
            flop = 2 * n * d_in * d_out
            with torch.inference_mode():
                fp32 = seconds_per_call(lambda: linear(x), args.repeats)  # noqa: B023
                with torch.autocast("cpu", torch.bfloat16):
                    bf16 = seconds_per_call(lambda: linear(x), args.repeats)  # noqa: B023
                q8 = seconds_per_call(lambda: int8(x), args.repeats)  # noqa: B023
            rows_out.append({"rows": n, "shape": [d_in, d_out], "gflops": {
                "float32": flop / fp32 / 1e9, "bfloat16": flop / bf16 / 1e9, "int8": flop / q8 / 1e9}})
    result = {"command": "python benchmarks/studies/int8_linears.py", "torch": torch.__version__,
              "machine": f"{platform.machine()}, {args.threads} torch threads", "rows": rows_out}
    atomic_write_json(args.out / "int8_linears.json", result)
    lines = ["# int8 dynamic quantisation of the dynamics' linear layers: speed\n",
             f"`{result['command']}` ({result['machine']}, torch {result['torch']}): GFLOP/s of one `nn.Linear` per "
             "call; rows = 64 grid positions x worlds. int8 = `torch.ao.quantization.quantize_dynamic` (int8 "
             "weights, activations quantised per call; deprecated by PyTorch for the separate `torchao`). Quality "
             "not measured.\n",
             "| rows (worlds) | in -> out | float32 | bfloat16 | int8 | int8 / bfloat16 |", "|---|---|---|---|---|---|"]
    for r in rows_out:
        g = r["gflops"]
        lines.append(f"| {r['rows']} ({r['rows'] // 64}) | {r['shape'][0]} -> {r['shape'][1]} | {g['float32']:.0f} | "
                     f"{g['bfloat16']:.0f} | {g['int8']:.0f} | {g['int8'] / g['bfloat16']:.2f}x |")
    write_markdown(args.out / "int8_linears.md", lines)
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
