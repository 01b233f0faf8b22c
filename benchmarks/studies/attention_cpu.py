"""Fused attention or two matmuls on the CPU? `F.scaled_dot_product_attention` picks a fused (flash) kernel on the
CPU; over our short sequences (8 frames of one grid position, 64 positions of one frame) it was the largest single
item of a batched Genie-v0 step in bfloat16 (a torch profiler run of 64 worlds: 24% of the step). This times, on
this machine's threads:

1. **one attention call** of every shape the `small` model runs: Genie-v0's temporal step (64 worlds x 64
   positions, 1 query over 8 cached frames, masked), its spatial attention (64 frames x 64 positions), and
   training's temporal (8 clips x 64 positions x 8 causal frames, forward and backward) and spatial attention,
   fused against `st_transformer.math_attention`, in float32 and bfloat16;
2. **end to end**, with `st_transformer.MATH_ATTENTION_ON_CPU_BF16` on and off in alternation: Genie-v0 frames/s
   (the shipped model, 1 and 64 worlds, bfloat16) and a training step of the `small` tokenizer and dynamics under
   bfloat16 autocast (`--cpu-bf16`), on random clips; and Genie-v0 in float32 with and without this study's patch
   that sends float32 attention without autograd to the matmuls too (`fp32_inference_math`: single calls favour the
   matmuls in float32 as well, yet end to end the library's fused float32 stays faster, so the patch is not in it).

    python benchmarks/studies/attention_cpu.py

writes benchmarks/results/attention_cpu.{json,md}.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import tyro

from genie_gym.models import st_transformer
from genie_gym.utils.io import atomic_write_json, write_markdown

# name -> (q shape, key length, mask kind, backward): the `small` preset's head size 32, 6 heads (dynamics)
SHAPES: dict[str, tuple[tuple[int, int, int, int], int, str, bool]] = {
    "Genie-v0 temporal step (64 worlds)": ((64 * 64, 6, 1, 32), 8, "cache", False),
    "Genie-v0 spatial (64 worlds)": ((64, 6, 64, 32), 64, "none", False),
    "training temporal, fwd+bwd (8 clips x 8 frames)": ((8 * 64, 6, 8, 32), 8, "causal", True),
    "training spatial, fwd+bwd (8 clips x 8 frames)": ((8 * 8, 6, 64, 32), 64, "none", True),
}


@dataclass
class Args:
    """Fused vs matmul attention on the CPU: single calls and end to end."""

    repeats: int = 20
    """timed calls per attention cell"""
    rounds: int = 4
    """end to end: alternations of math on / off (each times `seconds`)"""
    seconds: float = 3.0
    """end to end: seconds timed per measurement"""
    threads: int = 2
    """torch threads"""
    out: Path = Path("benchmarks/results")
    """writes OUT/attention_cpu.{json,md}"""


def _time(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of one call (after 2 warm-up calls)."""
    fn(), fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def frames_per_s(fn: Callable[[], Any], frames_per_call: int, seconds: float) -> float:
    """One untimed call (in a setting just switched), then as many calls as fit in `seconds`: frames per second."""
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n * frames_per_call / (time.perf_counter() - t0)


def single_calls(args: Args) -> list[dict[str, Any]]:
    rows = []
    g = torch.Generator().manual_seed(0)
    for name, (q_shape, M, mask_kind, backward) in SHAPES.items():
        S, H, L, hd = q_shape
        for dtype in (torch.float32, torch.bfloat16):
            q = torch.randn(S, H, L, hd, generator=g).to(dtype).requires_grad_(backward)
            k = torch.randn(S, H, M, hd, generator=g).to(dtype).requires_grad_(backward)
            v = torch.randn(S, H, M, hd, generator=g).to(dtype).requires_grad_(backward)
            mask = None
            if mask_kind == "cache":  # worlds with 3..8 valid cached frames
                mask = torch.arange(M)[None, :] < torch.randint(3, M + 1, (S, 1), generator=g)
                mask = mask.view(S, 1, 1, M)
            causal = mask_kind == "causal"
            cell = {}
            for impl, fn in (("fused", F.scaled_dot_product_attention), ("math", st_transformer.math_attention)):
                def call(fn=fn, q=q, k=k, v=v, mask=mask, causal=causal, backward=backward) -> None:
                    y = fn(q, k, v, attn_mask=mask, is_causal=causal)
                    if backward:
                        y.float().sum().backward()
                cell[impl] = _time(call, args.repeats)
            ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal).float()
            err = (st_transformer.math_attention(q, k, v, mask, causal).float() - ref).abs().max().item()
            rows.append({"shape": name, "dtype": str(dtype).removeprefix("torch."), "fused_ms": 1e3 * cell["fused"],
                         "math_ms": 1e3 * cell["math"], "speedup": cell["fused"] / cell["math"], "max_abs_diff": err})
            print(rows[-1])
    return rows


def genie_simulator(num_worlds: int, precision: str = "bfloat16") -> Any:
    """The shipped model's Simulator, reset on random prompts and stepped until its context is full."""
    from genie_gym.models.simulator import Simulator
    from genie_gym.models.world_model import WorldModel

    sim = Simulator(WorldModel.load(WorldModel.default_path()), num_worlds=num_worlds, precision=precision)
    prompts = np.random.default_rng(0).integers(0, 255, (num_worlds, 64, 64, 3), dtype=np.uint8)
    sim.reset(None, prompts, list(range(num_worlds)))
    for _ in range(sim.context_frames):
        sim.step(np.zeros(num_worlds, dtype=np.int64))
    return sim


def _genie_steps(num_worlds: int, precision: str = "bfloat16") -> Callable[[], Any]:
    sim, actions = genie_simulator(num_worlds, precision), np.zeros(num_worlds, dtype=np.int64)
    return lambda: sim.step(actions)


def train_step(phase: str) -> Callable[[], Any]:
    from genie_gym.config import get_preset
    from genie_gym.models.frames import to_float
    from genie_gym.training.schedule import make_optimizer
    from genie_gym.training.trainer import DynamicsObjective, TokenizerObjective, build_tokenizer, phase_optim

    cfg = get_preset("small")
    optim = phase_optim(cfg, phase)
    torch.manual_seed(0)
    model = TokenizerObjective(cfg) if phase == "tokenizer" else \
        DynamicsObjective(cfg, build_tokenizer(cfg).eval().requires_grad_(False))
    model.train()
    opt = make_optimizer(model, optim)
    frames_u8 = torch.randint(0, 256, (optim.batch_size, cfg.seq_len, cfg.image_size, cfg.image_size, 3),
                              dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(to_float(frames_u8), torch.Generator().manual_seed(1))
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
    return step


LIBRARY_ATTENTION = st_transformer.attention


def fp32_inference_math(q_SHLd: torch.Tensor, k_SHMd: torch.Tensor, v_SHMd: torch.Tensor,
                        attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
    """The library's `attention`, except that float32 on the CPU without autograd takes `math_attention` too."""
    if q_SHLd.device.type == "cpu" and q_SHLd.dtype == torch.float32 and not torch.is_grad_enabled():
        return st_transformer.math_attention(q_SHLd, k_SHMd, v_SHMd, attn_mask, is_causal)
    return LIBRARY_ATTENTION(q_SHLd, k_SHMd, v_SHMd, attn_mask, is_causal)


def switch(flag: str, on: bool) -> None:
    """Turn the math path of one end-to-end row on or off: the library's bf16 flag, or this study's fp32 patch."""
    if flag == "MATH_ATTENTION_ON_CPU_BF16":
        st_transformer.MATH_ATTENTION_ON_CPU_BF16 = on
    else:
        st_transformer.attention = fp32_inference_math if on else LIBRARY_ATTENTION


def end_to_end(args: Args) -> list[dict[str, Any]]:
    from genie_gym.config import get_preset
    from genie_gym.training.trainer import phase_optim

    cfg = get_preset("small")
    bf16, inference = "MATH_ATTENTION_ON_CPU_BF16", "fp32_inference_math (study patch)"
    jobs = {"Genie-v0, 1 world (frames/s)": (_genie_steps(1), 1, bf16),
            "Genie-v0, 64 worlds (frames/s)": (_genie_steps(64), 64, bf16),
            "Genie-v0, 1 world, float32 (frames/s)": (_genie_steps(1, "float32"), 1, inference),
            "Genie-v0, 64 worlds, float32 (frames/s)": (_genie_steps(64, "float32"), 64, inference)}
    for phase in ("tokenizer", "dynamics"):
        jobs[f"training, small {phase}, bf16 autocast (frames/s)"] = (
            train_step(phase), phase_optim(cfg, phase).batch_size * cfg.seq_len, bf16)
    rows = []
    for name, (fn, frames_per_call, flag) in jobs.items():
        rates: dict[bool, list[float]] = {True: [], False: []}
        for r in range(args.rounds):
            for on in ((True, False) if r % 2 == 0 else (False, True)):
                switch(flag, on)
                rates[on].append(frames_per_s(fn, frames_per_call, args.seconds))
        switch(flag, flag == bf16)  # back to the library's setting
        fused, math = float(np.median(rates[False])), float(np.median(rates[True]))
        rows.append({"what": name, "flag": flag, "fused": fused, "math": math, "speedup": math / fused,
                     "fused_all": rates[False], "math_all": rates[True]})
        print(rows[-1])
    return rows


def main(args: Args) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    result = {"command": "python benchmarks/studies/attention_cpu.py", "machine": platform.machine(),
              "torch": torch.__version__, "threads": args.threads, "single_calls": single_calls(args),
              "end_to_end": end_to_end(args)}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "attention_cpu.json", result)
    lines = ["# Attention on the CPU: fused kernel or two matmuls", "",
             f"`{result['command']}` ({result['machine']}, {args.threads} torch threads, torch {result['torch']}). "
             "Single calls: median of "
             f"{args.repeats} calls; `math` is `st_transformer.math_attention` (q k^T, softmax, v); max |diff| "
             "against the fused output.", "",
             "| attention call | dtype | fused ms | math ms | math speed-up | max abs diff |",
             "|---|---|---|---|---|---|"]
    for r in result["single_calls"]:
        lines.append(f"| {r['shape']} | {r['dtype']} | {r['fused_ms']:.2f} | {r['math_ms']:.2f} | "
                     f"{r['speedup']:.2f}x | {r['max_abs_diff']:.2g} |")
    lines += ["", f"End to end, the row's flag off (fused) and on (math) in alternation, {args.rounds} "
              f"rounds of {args.seconds:.0f} s each, medians (Genie-v0: the shipped model, bfloat16 unless "
              "float32 is named, 1 MaskGIT step; training: `small`, random clips, the presets' batch):", "",
              "| what | math path (`st_transformer.` flag, or the study's patch) | fused | math | speed-up |",
              "|---|---|---|---|---|"]
    for r in result["end_to_end"]:
        lines.append(f"| {r['what']} | `{r['flag']}` | {r['fused']:.1f} | {r['math']:.1f} | {r['speedup']:.2f}x |")
    write_markdown(args.out / "attention_cpu.md", lines)
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
