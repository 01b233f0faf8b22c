"""Make a trained world-model file Genie-v0's default: bf16 weights (half the bytes; loaded into float32), the
sampling defaults the benchmarks chose, and a version label, written atomically into the package.

    genie-gym eval --model runs/v14/world_model.pt --data data/coinrun_hard_sticky --name-actions --out runs/v14/eval
    python scripts/ship_model.py --model runs/v14/world_model.pt --version 1.4 \
        --decoder-from runs/v14c/tokenizer/last.pt

Run `genie-gym eval --name-actions` on the float32 file first: the action names it writes travel with the metadata.
`--decoder-from` takes the decoder side of a `--freeze-encoder` fine-tune of the model's own tokenizer (its stem,
encoder and quantiser must be the model's, bit for bit, so every token and the dynamics trained on them stay valid).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

from genie_gym.models.tokenizer import VideoTokenizer
from genie_gym.models.world_model import WorldModel
from genie_gym.training.checkpoint import check_tokenizer_fits, load_checkpoint
from genie_gym.utils.io import sha256_file


@dataclass
class Args:
    model: Path
    """trained world-model file (float32, from `genie-gym train --phase dynamics` or `genie-gym export`)"""
    version: str
    """version label stored in the metadata under `version` (the model card's, e.g. 1.4)"""
    out: Path | None = None
    """file to write (default: the packaged model, genie_gym/assets/world_model.pt)"""
    maskgit_steps: int = 1
    """default MaskGIT steps of the shipped file (benchmarks/results/env_speed.md)"""
    temperature: float = 0.0
    """default sampling temperature of the shipped file (0 = argmax; benchmarks/results/sampling_sweep.md)"""
    decoder_from: Path | None = None
    """tokenizer checkpoint whose decoder side replaces the model's (a --freeze-encoder fine-tune of its tokenizer)"""


def swap_decoder(wm: WorldModel, path: Path) -> dict:
    """Load the tokenizer of checkpoint `path` into `wm` after checking that everything deciding the tokens is
    unchanged; returns what the metadata records of it."""
    ckpt = load_checkpoint(path)
    if ckpt.get("phase") != "tokenizer":
        raise SystemExit(f"--decoder-from {path} is a '{ckpt.get('phase')}' checkpoint; pass RUN/tokenizer/last.pt")
    check_tokenizer_fits(ckpt, wm.config, path)  # the same design (FSQ levels, groups, ...), loss weights aside
    state, ours = ckpt["model"]["tokenizer"], wm.tokenizer.state_dict()
    # VQ's `steps_unused` counts training calls even with the encoder frozen; it never changes a token.
    changed = [k for k, v in ours.items() if k.split(".")[0] in VideoTokenizer.ENCODER_SIDE
               and not k.endswith("steps_unused")
               and (k not in state or state[k].shape != v.shape or not torch.equal(state[k].to(v.dtype), v))]
    if changed:
        raise SystemExit(f"--decoder-from {path}: its encoder side differs from the model's ({len(changed)} tensors, "
                         f"e.g. {changed[0]}): its tokens are not the ones the dynamics learnt; pass a "
                         "`--freeze-encoder` fine-tune started from this model")
    wm.tokenizer.load_state_dict(state)
    return {"path": str(path), "sha256": sha256_file(path), "step": int(ckpt["step"]),
            "metrics": {f"tokenizer/{k}": v for k, v in ckpt.get("metrics", {}).items()}}


def main(args: Args) -> Path:
    wm = WorldModel.load(args.model)
    if "action_meanings" not in wm.metadata:
        raise SystemExit(f"{args.model} has no action names; run `genie-gym eval --model {args.model} --data DIR "
                         "--name-actions` first")
    wm.config.sampling.maskgit_steps = args.maskgit_steps
    wm.config.sampling.temperature = args.temperature
    out = args.out or WorldModel.default_path()
    metadata = {**wm.metadata, "version": args.version, "shipped_from": str(args.model)}
    if args.decoder_from is not None:
        metadata["decoder_from"] = swap_decoder(wm, args.decoder_from)
    payload_sha256 = wm.save(out, metadata, dtype=torch.bfloat16)
    shipped = WorldModel.load(out)  # the checksum and config read back
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, payload sha256 {payload_sha256[:16]}..., version "
          f"{shipped.metadata['version']}, {shipped.config.sampling.maskgit_steps} MaskGIT steps, temperature "
          f"{shipped.config.sampling.temperature})")
    return out


if __name__ == "__main__":
    main(tyro.cli(Args))
