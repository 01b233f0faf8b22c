"""`genie-gym train`: phase `tokenizer`, then phase `dynamics` (LAM + dynamics, tokenizer frozen).

Single process: `genie-gym train --phase tokenizer --preset tiny --data data/coinrun --out runs/tiny`.
Several processes (DDP; gloo on CPU, NCCL on CUDA):
`torchrun --nproc_per_node 2 -m genie_gym.cli train --phase tokenizer ...`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from genie_gym.config import Preset


@dataclass
class Args:
    phase: Literal["tokenizer", "dynamics", "heads"] = "tokenizer"
    """which phase to train: `tokenizer` first, then `dynamics` (LAM + dynamics with the tokenizer frozen), then
    optionally `heads` (reward and episode-end heads on the frozen world model: training/heads.py)"""
    preset: Preset = "tiny"
    """model and optimiser sizes: tiny (tests), small (the CPU model), coinrun (paper sizes, GPU)"""
    set: tuple[str, ...] = ()
    """config overrides on top of the preset, SECTION.FIELD=VALUE, e.g. --set dynamics.context_noise=0.05
    tokenizer.groups=2 (checkpoints record the result; pass the same --set when resuming)"""
    data: Path = Path("data/coinrun-hard")
    """dataset directory written by `genie-gym data` (holds manifest.json)"""
    out: Path = Path("runs/tiny")
    """run directory: RUN/<phase>/{last.pt,step_*.pt,tb,metrics.jsonl}; dynamics adds RUN/world_model.pt"""
    steps: int | None = None
    """total optimiser steps of this phase (default: the preset's)"""
    batch_size: int | None = None
    """clips per step and per process (default: the preset's)"""
    lr: float | None = None
    """peak learning rate (default: the preset's); min_lr is capped at it"""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N"""
    bf16: bool = True
    """bf16 autocast on CUDA (the paper's precision); --no-bf16 trains in float32"""
    cpu_bf16: bool = False
    """also autocast to bf16 on CPU (faster on CPUs with AVX-512 bf16, slightly less exact)"""
    resume: bool = False
    """continue from RUN/<phase>/last.pt exactly (weights, optimiser, schedule, RNG, data position)"""
    seed: int = 0
    """seed for initialisation, data order and masking"""
    num_workers: int = -1
    """DataLoader worker processes (-1: 0 on CPU, up to 8 on CUDA)"""
    cache_mib: int = 256
    """decompressed frames each data process keeps (MiB); the size of the dataset in frames x 12 KiB removes
    decompression from the loop where RAM allows"""
    log_every: int = 10
    """steps between TensorBoard scalars / metrics.jsonl lines"""
    image_every: int = 500
    """steps between TensorBoard reconstructions and generated clips (0: never)"""
    ckpt_every: int = 500
    """steps between checkpoints (last.pt and step_N.pt); one is always written at the end"""
    keep: int = 3
    """how many periodic step_N.pt checkpoints to keep (0: all)"""
    dead_code_every: int = 10
    """steps between dead-code checks of the VQ codebooks (each code has its own unused-for threshold; 0: never)"""
    tokenizer_ckpt: Path | None = None
    """phase dynamics: the tokenizer to freeze: a tokenizer checkpoint or a world-model file (its tokenizer, e.g. to
    continue its dynamics on the same tokens; default RUN/tokenizer/last.pt)"""
    init_from: Path | None = None
    """start from the weights of this world-model file or checkpoint of the same phase (fine-tuning; ignored when
    --resume finds a checkpoint of this run); recorded in the checkpoints and the world model's metadata. A model
    with fewer layers than this run's (e.g. --set dynamics.num_layers=6) is deepened: the new blocks start as the
    identity"""
    init_parts: tuple[str, ...] = ()
    """which parts --init-from loads (default: the phase's own: tokenizer; or lam and dynamics; or just lam)"""
    freeze_encoder: bool = False
    """phase tokenizer: keep the --init-from tokenizer's stem, encoder and quantiser fixed and train only its
    decoder (sharper frames, the same tokens: a dynamics trained on them stays valid)"""
    freeze_lam: bool = False
    """phase dynamics: keep the LAM loaded by --init-from fixed and train only the dynamics on its actions"""
    split: str = "train"
    """dataset split to train on"""
    stride: int = 1
    """frames between the starts of consecutive training clips"""
    stop_at: int | None = None
    """stop (with a checkpoint) at this step although --steps is larger; continue later with --resume"""
    time_limit_min: float | None = None
    """stop (with a checkpoint) after this many minutes; continue later with --resume"""
    tensorboard: bool = True
    """write TensorBoard logs to RUN/<phase>/tb"""
    model: Path | None = None
    """phase heads: the world-model file to add heads to (default RUN/world_model.pt); writes RUN/world_model.pt"""
    heads_events: int = 100_000
    """phase heads: at most this many frames labelled with an event train the heads (all of them by default)"""
    heads_negatives: int = 20
    """phase heads: random frames per event frame in the training sample (fewer: the heads fire too often)"""
    heads_horizon: int = 1
    """phase heads: an event's label covers the k frames before it ("within k transitions"); 1 = only the frame its
    transition leaves (Procgen's data never holds the frame that shows it: k > 1 learns the approach)"""
    heads_reconstructed: float = 0.0
    """phase heads: share of the training sample shown as the tokenizer's reconstructions (encoded, then decoded, as
    Genie-v0's frames are decoded) instead of the recorded frames"""
    heads_stream: bool = False
    """phase heads: read each batch's frames from the shards instead of holding the sample in RAM (samples larger
    than RAM: 20 negatives take 24 KiB per pair at 64x64, 15 GB for an 18M-frame recording); the same batches"""
    heads_eval_episodes: int = 200
    """phase heads: held-out (validation) episodes scored for precision and recall"""


def main(args: Args) -> None:
    import os

    if args.phase == "heads":
        from genie_gym.training.heads import check_heads_args, train_heads

        check_heads_args(args)
        train_heads(args)
        return
    from genie_gym.training.trainer import train

    losses = train(args)
    if losses and os.environ.get("RANK", "0") == "0":
        print(f"phase {args.phase}: {len(losses)} steps, final loss {losses[-1]:.4f}; outputs in {args.out}")


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
