"""One query over a few cached frames on a GPU: fused attention or two matmuls? Prepared for a GPU session.

On one H200, `step_profile.py --device cuda` found one cuDNN attention kernel with a 64-query tile taking 47% of
a batched Genie-v0 step's GPU time (1,024 worlds, bf16; `benchmarks/results/step_profile_cuda.md`). The likely
caller is the temporal read of the cached step (`STBlock.step`): every grid position of every world asks one query
against at most 8 cached frames, 65,536 such sequences at 1,024 worlds, a shape the fused kernels tile for long
sequences. This study routes exactly those calls (one query) elsewhere, a patch of this study only, two ways:
`matmul` (`st_transformer.math_attention`: q k^T, softmax, v as batched matmuls) and `elementwise` (the scores as
(q * k).sum over the head dimension, the output as the probability-weighted sum of v: no GEMM for a 1 x 8 product),
and times Genie-v0 under each arm, the arms in alternation:

1. one attention call of that shape (N worlds x 64 positions, 6 heads of 32, 1 query, 8 keys, masked) per arm, and
   each arm's largest difference from the fused kernel;
2. end to end, Genie-v0 frames/s at each `--num-worlds`, the shipped model, 1 MaskGIT step, `--precision`.

    python benchmarks/studies/attention_cuda.py --device cuda

writes benchmarks/results/attention_cuda.{json,md}. If the patch pays, the library's `attention()` takes it.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tyro

from genie_gym.models import st_transformer
from genie_gym.utils.io import atomic_write_json, write_markdown

LIBRARY_ATTENTION = st_transformer.attention


@dataclass
class Args:
    """Fused attention against matmuls or elementwise products for Genie-v0's one-query temporal reads, on a GPU."""

    device: str = "cuda"
    """cuda (cpu runs too: a smoke test of the script, not the question)"""
    model: Path | None = None
    """world-model file (default: the shipped model)"""
    num_worlds: list[int] = field(default_factory=lambda: [256, 1024, 4096])
    """batched worlds per end-to-end measurement"""
    precision: str = "bfloat16"
    """generation precision"""
    rounds: int = 4
    """alternations of the two arms"""
    seconds: float = 3.0
    """seconds timed per measurement"""
    out: Path = Path("benchmarks/results")
    """writes OUT/attention_cuda.{json,md}"""


def one_query_math(q_SHLd: torch.Tensor, k_SHMd: torch.Tensor, v_SHMd: torch.Tensor,
                   attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
    """The library's `attention`, except that a single query (the cached temporal read) takes `math_attention`."""
    if q_SHLd.shape[-2] == 1 and not is_causal:
        return st_transformer.math_attention(q_SHLd, k_SHMd, v_SHMd, attn_mask)
    return LIBRARY_ATTENTION(q_SHLd, k_SHMd, v_SHMd, attn_mask, is_causal)


def elementwise_attention(q_SHLd: torch.Tensor, k_SHMd: torch.Tensor, v_SHMd: torch.Tensor,
                          attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v for one query (L = 1) without matrix products: what `math_attention` gives."""
    scores_SHM = (q_SHLd * k_SHMd).sum(-1) * q_SHLd.shape[-1] ** -0.5
    if attn_mask is not None:
        mask_SHM = attn_mask.squeeze(-2).expand_as(scores_SHM)
        scores_SHM = scores_SHM.masked_fill(~mask_SHM, float("-inf")) if attn_mask.dtype == torch.bool \
            else scores_SHM + mask_SHM
    p_SHM = scores_SHM.float().softmax(-1).to(v_SHMd.dtype)
    return (p_SHM[..., None] * v_SHMd).sum(-2, keepdim=True)


def one_query_elementwise(q_SHLd: torch.Tensor, k_SHMd: torch.Tensor, v_SHMd: torch.Tensor,
                          attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
    """The library's `attention`, except that a single query takes `elementwise_attention`."""
    if q_SHLd.shape[-2] == 1 and not is_causal:
        return elementwise_attention(q_SHLd, k_SHMd, v_SHMd, attn_mask)
    return LIBRARY_ATTENTION(q_SHLd, k_SHMd, v_SHMd, attn_mask, is_causal)


ARMS = {"fused": LIBRARY_ATTENTION, "matmul": one_query_math, "elementwise": one_query_elementwise}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def single_call(args: Args, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    S, H, M, hd = max(args.num_worlds) * 64, 6, 8, 32
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(S, H, L, hd, generator=g, device=device).to(dtype) for L in (1, M, M))
    mask = (torch.arange(M, device=device)[None, :] < torch.randint(3, M + 1, (S, 1), generator=g, device=device))
    mask = mask.view(S, 1, 1, M)
    calls = {"fused": lambda: LIBRARY_ATTENTION(q, k, v, attn_mask=mask),  # in launches of <= 32,768 sequences
             "matmul": lambda: st_transformer.math_attention(q, k, v, mask),
             "elementwise": lambda: elementwise_attention(q, k, v, mask)}
    ref = calls["fused"]().float()
    row: dict[str, Any] = {"sequences": S}
    for name, fn in calls.items():
        fn(), fn()
        _sync(device)
        t = time.perf_counter()
        for _ in range(20):
            fn()
        _sync(device)
        ms = 1e3 * (time.perf_counter() - t) / 20
        row[name] = {"ms": ms, "max_abs_diff": (fn().float() - ref).abs().max().item()}
    return row


def frames_per_s(sim: Any, n: int, seconds: float, device: torch.device) -> float:
    actions = np.zeros(n, dtype=np.int64)
    sim.step(actions)
    _sync(device)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sim.step(actions)
        steps += 1
    _sync(device)
    return n * steps / (time.perf_counter() - t0)


def end_to_end(args: Args, device: torch.device) -> list[dict[str, Any]]:
    from genie_gym.models.simulator import Simulator
    from genie_gym.models.world_model import WorldModel

    wm = WorldModel.load(args.model or WorldModel.default_path())
    rows = []
    for n in args.num_worlds:
        sim = Simulator(wm, num_worlds=n, device=device, precision=args.precision)
        prompts = np.random.default_rng(0).integers(0, 255, (n, wm.image_size, wm.image_size, 3), dtype=np.uint8)
        sim.reset(None, prompts, list(range(n)))
        for _ in range(sim.context_frames):
            sim.step(np.zeros(n, dtype=np.int64))
        rates: dict[str, list[float]] = {a: [] for a in ARMS}
        for r in range(args.rounds):
            for arm in (list(ARMS) if r % 2 == 0 else list(ARMS)[::-1]):
                st_transformer.attention = ARMS[arm]
                rates[arm].append(frames_per_s(sim, n, args.seconds, device))
        st_transformer.attention = LIBRARY_ATTENTION
        med = {a: float(np.median(v)) for a, v in rates.items()}
        rows.append({"num_worlds": n, "frames_per_s": med, "speedup": {a: v / med["fused"] for a, v in med.items()},
                     "all": rates})
        print(rows[-1], flush=True)
        del sim
    return rows


def main(args: Args) -> dict[str, Any]:
    from genie_gym.utils.device import resolve_device

    device = resolve_device(args.device)
    dtype = getattr(torch, args.precision)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    command = (f"python benchmarks/studies/attention_cuda.py --device {args.device} --num-worlds "
               f"{' '.join(map(str, args.num_worlds))} --precision {args.precision} --rounds {args.rounds} "
               f"--seconds {args.seconds:g}" + (f" --model {args.model}" if args.model else ""))
    result = {"command": command, "device": name,
              "torch": torch.__version__, "precision": args.precision, "rounds": args.rounds,
              "seconds": args.seconds, "single_call": single_call(args, device, dtype),
              "end_to_end": end_to_end(args, device)}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "attention_cuda.json", result)
    c = result["single_call"]
    lines = ["# One-query attention on a GPU: fused kernel, matmuls or elementwise products", "",
             f"`{result['command']}` ({name}, torch {result['torch']}, {args.precision}; the shipped model unless "
             f"--model, 1 MaskGIT step, random prompts; {args.rounds} rounds of {args.seconds:.0f} s per arm, "
             "arms in alternation, medians).", "",
             f"One call, {c['sequences']:,} sequences x 6 heads, 1 query over 8 masked keys: "
             + ", ".join(f"{a} {c[a]['ms']:.3f} ms (max |diff| {c[a]['max_abs_diff']:.2g})" for a in ARMS) + ".", "",
             "| worlds | " + " | ".join(f"{a} (frames/s)" for a in ARMS) + " |", "|---|" + "---|" * len(ARMS)]
    lines += [f"| {r['num_worlds']} | " + " | ".join(f"{r['frames_per_s'][a]:.1f} ({r['speedup'][a]:.2f}x)"
                                                   for a in ARMS) + " |" for r in result["end_to_end"]]
    write_markdown(args.out / "attention_cuda.md", lines)
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
