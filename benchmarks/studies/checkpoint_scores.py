"""Score training checkpoints on held-out clips without a full `genie-gym eval`: the quick check between fine-tunes.

- `--tokenizers`: tokenizer checkpoints (or world-model files) decoded on `genie-gym eval`'s tokenizer clips (split
  test, 8-frame clips, seed 0): PSNR as `genie-gym eval` reports it, and the gradient-energy ratio of the
  reconstructions to the real frames (1.0 = as sharp as the real frames).
- `--models`: world-model files scored by `genie-gym eval`'s next-frame token accuracy (4 real context frames, all
  tokens of the frame masked, argmax) beside copying the last frame, on the clips `genie-gym eval --seed 0` draws
  with the same `--split` and `--num-clips` (eval's defaults are test and 32; this study's validation and 64).
  `--decode cell:4 frame:4 ...` adds the same accuracy with frame t decoded by MaskGIT (argmax, that schedule and
  number of passes, each pass seeing the tokens decided before it) instead of one pass over all-masked tokens.
  `--copy-bias 0.5 ...` adds the one-pass accuracy with that many nats added to the log-probability of each
  position's token in the previous frame (a prior for "nothing changed here"; not a Genie-v0 setting).

    python benchmarks/studies/checkpoint_scores.py --base runs/v13/world_model.pt \
        --tokenizers runs/v14c/tokenizer/last.pt --models runs/v14e4/world_model.pt --split validation

Writes `--out` (JSON) and a markdown table beside it (.md), and prints one line per checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import tyro

from genie_gym.evaluation.evaluate import infer_actions_windowed, open_clips, pick_clips, token_accuracy
from genie_gym.evaluation.metrics import gradient_energy, psnr
from genie_gym.models.frames import to_float
from genie_gym.models.maskgit import maskgit_sample
from genie_gym.models.world_model import WorldModel
from genie_gym.training.checkpoint import load_tokenizer_source
from genie_gym.utils.io import write_markdown


@dataclass
class Args:
    base: Path
    """world-model file whose tokenizer a tokenizer checkpoint's weights replace"""
    tokenizers: tuple[Path, ...] = ()
    """tokenizer checkpoints (RUN/tokenizer/*.pt) or world-model files to score"""
    models: tuple[Path, ...] = ()
    """world-model files whose dynamics to score by next-frame token accuracy"""
    data: Path = Path("data/coinrun_hard_sticky")
    """dataset directory"""
    tokenizer_split: str = "test"
    """split of the tokenizer clips (genie-gym eval's default)"""
    split: str = "validation"
    """split of the token-accuracy clips (validation: choosing between fine-tunes leaves test untouched)"""
    num_clips: int = 64
    """clips per score"""
    context_frames: int | None = None
    """token accuracy with this many frames in the dynamics' window (the new one included; default: each model's
    sampling setting, 8 for the shipped one): how much the past helps"""
    decode: tuple[str, ...] = ()
    """SCHEDULE:STEPS settings (e.g. cell:4 frame:4) of MaskGIT argmax decoding to score beside the one-pass
    accuracy"""
    copy_bias: tuple[float, ...] = ()
    """log-probability bonuses (nats) for the previous frame's token to score beside the plain argmax"""
    threads: int = 2
    """torch threads"""
    out: Path = Path("runs/checkpoint_scores.json")
    """JSON of every score"""


def tokenizer_scores(wm: WorldModel, path: Path, frames_BTHWC: torch.Tensor) -> dict[str, float]:
    wm.tokenizer.load_state_dict(load_tokenizer_source(path)["model"]["tokenizer"])
    psnrs, ratios = [], []
    with torch.no_grad():
        for b in range(0, len(frames_BTHWC), 16):
            real = frames_BTHWC[b : b + 16]
            recon = wm.tokenizer.decode(wm.tokenizer.encode(real)).float().clamp(0, 1)
            psnrs.append(psnr(recon, real).flatten())
            ratios.append((gradient_energy(recon) / gradient_energy(real).clamp_min(1e-8)).flatten())
    return {"psnr": float(torch.cat(psnrs).mean()), "gradient_energy_ratio": float(torch.cat(ratios).mean())}


def dynamics_scores(path: Path, args: Args) -> dict[str, float]:
    wm = WorldModel.load(path).eval()
    if args.context_frames is not None:
        if not 2 <= args.context_frames <= wm.config.seq_len:
            raise SystemExit(f"--context-frames must be 2..{wm.config.seq_len} (the model's training length), "
                             f"got {args.context_frames}")
        wm.config.sampling.context_frames = args.context_frames
    predictors = {f"gain_over_copy_{d}": decoded(*parse_decode(d, wm.tokenizer.groups)) for d in args.decode}
    predictors |= {f"gain_over_copy_bias{b:g}": copy_biased(b) for b in args.copy_bias}
    context, generated = 4, 10  # genie-gym eval's defaults: --context 1 4, --rollout-steps 10
    ds = open_clips(args.data, args.split, context + generated, "token accuracy")
    idx = pick_clips(len(ds), args.num_clips, 1)  # the rollout clips of `genie-gym eval --seed 0`
    hits = copies = 0.0
    other = dict.fromkeys(predictors, 0.0)
    with torch.no_grad():
        for b in range(0, len(idx), 16):
            real = to_float(torch.stack([ds[i] for i in idx[b : b + 16]]))
            actions_BT = infer_actions_windowed(wm.lam, real, wm.config.seq_len)
            tokens_BTN = wm.tokenizer.encode(real)
            acc, copy = token_accuracy(wm, tokens_BTN, actions_BT, context)
            hits, copies = hits + acc * len(real), copies + copy * len(real)
            for key, predict in predictors.items():
                other[key] += next_frame_accuracy(wm, tokens_BTN, actions_BT, context, predict) * len(real)
    n = len(idx)
    out = {"token_accuracy": hits / n, "copy_token_accuracy": copies / n, "gain_over_copy": (hits - copies) / n}
    out |= {key: (h - copies) / n for key, h in other.items()}
    return out


def parse_decode(setting: str, groups: int) -> tuple[int, int]:
    """'cell:4' -> (cell_size, steps) for `maskgit_sample`."""
    schedule, _, steps = setting.partition(":")
    if schedule not in ("frame", "cell") or not steps.isdigit() or int(steps) < 1:
        raise SystemExit(f"--decode takes SCHEDULE:STEPS with SCHEDULE frame or cell, e.g. cell:4; got {setting!r}")
    return (groups if schedule == "cell" else 1), int(steps)


def _next_frame_logits(wm: WorldModel, context_BTN: torch.Tensor, actions_BT: torch.Tensor, frame_BN: torch.Tensor,
                       mask_BN: torch.Tensor) -> torch.Tensor:
    """The dynamics' logits for the frame after `context_BTN`, its masked tokens `mask_BN`."""
    window_BTN = torch.cat([context_BTN, frame_BN[:, None]], 1)
    mask_BTN = torch.zeros_like(window_BTN, dtype=torch.bool)
    mask_BTN[:, -1] = mask_BN
    return wm.dynamics(window_BTN, actions_BT, mask_BTN)[:, -1]


def next_frame_accuracy(wm: WorldModel, tokens_BTN: torch.Tensor, actions_BT: torch.Tensor, first: int,
                        predict: Callable[[Callable, torch.Tensor], torch.Tensor]) -> float:
    """`token_accuracy` with frame t's tokens from `predict(logits_fn, prev_BN)` (logits_fn as `maskgit_sample`
    takes it; prev_BN: frame t-1's real tokens) instead of one argmax pass."""
    W = wm.config.sampling.context_frames
    hits, n = 0.0, 0
    for t in range(max(first, 1), tokens_BTN.shape[1]):
        lo = max(0, t - (W - 1))
        logits_fn = partial(_next_frame_logits, wm, tokens_BTN[:, lo:t], actions_BT[:, lo:t])
        pred_BN = predict(logits_fn, tokens_BTN[:, t - 1])
        hits += float((pred_BN == tokens_BTN[:, t]).float().sum())
        n += pred_BN.numel()
    return hits / n


def decoded(cell_size: int, steps: int) -> Callable[[Callable, torch.Tensor], torch.Tensor]:
    """MaskGIT argmax decoding with that schedule: each pass sees the tokens decided before it."""
    return lambda logits_fn, prev_BN: maskgit_sample(logits_fn, prev_BN.shape[0], prev_BN.shape[1], steps=steps,
                                                     temperature=0.0, cell_size=cell_size)


def copy_biased(bias: float) -> Callable[[Callable, torch.Tensor], torch.Tensor]:
    """One pass, `bias` nats added to the log-probability of the previous frame's token everywhere."""
    def predict(logits_fn: Callable, prev_BN: torch.Tensor) -> torch.Tensor:
        logp_BNV = logits_fn(torch.zeros_like(prev_BN), torch.ones_like(prev_BN, dtype=torch.bool))
        logp_BNV = logp_BNV.float().log_softmax(-1)
        return logp_BNV.scatter_add(-1, prev_BN[..., None], torch.full_like(logp_BNV[..., :1], bias)).argmax(-1)
    return predict


def main(args: Args) -> dict:
    torch.set_num_threads(args.threads)
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "tokenizers": {}, "models": {}}
    if args.tokenizers:
        wm = WorldModel.load(args.base).eval()
        ds = open_clips(args.data, args.tokenizer_split, wm.config.seq_len, "tokenizer clips")
        frames = to_float(torch.stack([ds[i] for i in pick_clips(len(ds), args.num_clips, 0)]))
        for path in (args.base, *args.tokenizers):
            r = results["tokenizers"][str(path)] = tokenizer_scores(wm, Path(path), frames)
            print(f"tokenizer {path}: PSNR {r['psnr']:.3f} dB, gradient-energy ratio {r['gradient_energy_ratio']:.3f}")
    for path in args.models:
        r = results["models"][str(path)] = dynamics_scores(Path(path), args)
        extra = "".join(f", {k.removeprefix('gain_over_copy_')} {v:+.4f}" for k, v in r.items()
                        if k.startswith("gain_over_copy_"))
        print(f"dynamics {path} ({args.split}): token accuracy {r['token_accuracy']:.4f}, copy "
              f"{r['copy_token_accuracy']:.4f}, gain {r['gain_over_copy']:+.4f}{extra}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    write_report(results, args.out.with_suffix(".md"))
    return results


def write_report(results: dict, path: Path) -> None:
    a = results["args"]
    lines = ["# Checkpoint scores", "", "`python benchmarks/studies/checkpoint_scores.py` (see the JSON's `args`); "
             f"data `{a['data']}`, {a['num_clips']} clips per score.", ""]
    if results["tokenizers"]:
        lines += [f"Tokenizers on the `{a['tokenizer_split']}` split (as `genie-gym eval` reports tokenizer PSNR):", "",
                  "| checkpoint | PSNR (dB) | gradient-energy ratio (reconstruction / real) |", "|---|---|---|"]
        lines += [f"| `{k}` | {v['psnr']:.3f} | {v['gradient_energy_ratio']:.3f} |"
                  for k, v in results["tokenizers"].items()]
        lines.append("")
    if results["models"]:
        decode = [k.removeprefix("gain_over_copy_") for k in next(iter(results["models"].values()))
                  if k.startswith("gain_over_copy_")]
        lines += [f"Dynamics on the `{a['split']}` split (next-frame token accuracy, 4 real context frames; gains "
                  "decoded by MaskGIT argmax with SCHEDULE:PASSES, or in one pass with a copy bias of B nats, beside "
                  "the plain one pass):", "",
                  "| world model | token accuracy | copy last frame | gain (points) |"
                  + "".join(f" gain, {d} |" for d in decode), "|---|---|---|---|" + "---|" * len(decode)]
        lines += [f"| `{k}` | {v['token_accuracy']:.2%} | {v['copy_token_accuracy']:.2%} | "
                  f"{100 * v['gain_over_copy']:+.2f} |" + "".join(f" {100 * v[f'gain_over_copy_{d}']:+.2f} |"
                                                                  for d in decode)
                  for k, v in results["models"].items()]
    write_markdown(path, lines, echo=False)


if __name__ == "__main__":
    main(tyro.cli(Args))
