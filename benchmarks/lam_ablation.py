"""Latent action model ablation: train the LAM alone, then measure how its 8 codes relate to the true actions.

    python benchmarks/lam_ablation.py --data data/coinrun_hard_sticky --steps 600 \
        --variants baseline entropy raw raw_entropy

Each variant is the `small` preset's LAM with a few fields changed (`VARIANTS`). It trains for `--steps` AdamW
steps on the train split (no dynamics model: the LAM's own reconstruction loss is all it learns from), then
labels every transition of `--test-clips` held-out test clips and reports:
- code usage and perplexity (all 8 codes in use means perplexity near 8; the target is >= 5);
- NMI against the 15 Procgen actions and against 6 *movement classes* (left / none / right x up or not):
  most of the 15 actions are synonyms in CoinRun, so the movement NMI is the one that says whether a code means
  "move right" or "jump";
- the code x movement-class table (which class each code fires on);
- LAM reconstruction MSE next to the "copy the last frame" MSE (how much the codes tell the decoder).
Two reference rows are not LAMs: `idm_mean` / `idm_flatten` train the same encoder with the true movement classes
(an inverse-dynamics model), the ceiling of what that encoder reads from frame pairs in as many steps.
Writes `benchmarks/results/lam_ablation.{json,md}`. Run it alone: two torch jobs on 2 cores are 20x slower.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genie_gym.config import OptimConfig, get_preset  # noqa: E402
from genie_gym.data.dataset import ClipDataset  # noqa: E402
from genie_gym.data.games import PROCGEN_ACTION_COMBOS  # noqa: E402
from genie_gym.evaluation.metrics import code_stats, nmi  # noqa: E402
from genie_gym.models.lam import LatentActionModel  # noqa: E402
from genie_gym.training.schedule import WarmupCosine  # noqa: E402
from genie_gym.utils.io import atomic_write_json  # noqa: E402
from genie_gym.utils.seeding import seed_everything  # noqa: E402

VARIANTS: dict[str, dict] = {
    "baseline": {},  # the shipped LAM: cosine VQ, no entropy bonus
    "entropy": {"usage_entropy_weight": 0.1},
    "raw": {"vq_normalize": False},
    "raw_entropy": {"vq_normalize": False, "usage_entropy_weight": 0.1},
    "residual": {"predict_residual": True},
    "residual_entropy": {"predict_residual": True, "usage_entropy_weight": 0.1},
    "flatten": {"latent_pool": "flatten"},
    "flatten_residual": {"latent_pool": "flatten", "predict_residual": True},
    "flatten_residual_entropy": {"latent_pool": "flatten", "predict_residual": True, "usage_entropy_weight": 0.1},
    "flatten_residual_nohist": {"latent_pool": "flatten", "predict_residual": True, "decoder_history": False},
    "flatten_residual_nohist_entropy": {"latent_pool": "flatten", "predict_residual": True, "decoder_history": False,
                                        "usage_entropy_weight": 0.1},
    "patch8_residual": {"patch_size": 8, "predict_residual": True},
    "flatten_kernel5": {"latent_pool": "flatten", "decoder_kernel": 5},
    "flatten_kernel5_nohist": {"latent_pool": "flatten", "decoder_kernel": 5, "decoder_history": False},
}
# Not LAMs: the LAM encoder trained *with* the true movement classes (cross-entropy from its pre-quantisation
# latent), an inverse-dynamics ceiling for what that encoder can read from two frames in the same steps.
# `history_only_flatten` predicts the movement of t -> t+1 from frames <= t alone (the causal encoder's h_t): how
# much of the action the past already gives away (sticky data repeat actions).
SUPERVISED = {"idm_mean": {}, "idm_flatten": {"latent_pool": "flatten"},
              "history_only_flatten": {"latent_pool": "flatten"}}
VARIANTS.update(SUPERVISED)
MOVE_NAMES = [f"{h}{'+UP' if up else ''}" for h in ("LEFT", "NONE", "RIGHT") for up in (0, 1)]


# Procgen action index -> 0..5 = 2 * (horizontal: left 0, none 1, right 2) + (UP pressed).
MOVE_OF_ACTION = np.array(
    [2 * (0 if "LEFT" in c else 2 if "RIGHT" in c else 1) + ("UP" in c) for c in PROCGEN_ACTION_COMBOS]
)


def movement_class(actions: np.ndarray) -> np.ndarray:
    """Movement class (see MOVE_NAMES) of each Procgen action index."""
    return MOVE_OF_ACTION[actions]


@dataclass
class Args:
    data: str = "data/coinrun_hard_sticky"
    """dataset recorded by `genie-gym data` (train and test splits are used)"""
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    """which variants to run, in order (see VARIANTS)"""
    steps: int = 600
    """training steps per variant"""
    batch_size: int = 16
    """clips per step"""
    lr: float = 6e-4
    """peak learning rate (the small preset's dynamics-phase rate), warm-up 50 steps, cosine to lr/10"""
    test_clips: int = 512
    """held-out test clips to label (each gives seq_len - 1 transitions)"""
    dead_code_every: int = 10
    """reset codes unused for 20 steps every this many steps (as the trainer does)"""
    seed: int = 0
    """seed for initialisation and clip sampling (every variant uses the same clips)"""
    threads: int = 2
    """torch CPU threads"""
    out: str = "benchmarks/results/lam_ablation"
    """output stem: writes <out>.json and <out>.md"""
    report_only: bool = False
    """rebuild <out>.md from <out>.json without training anything"""


def history_latents(lam: LatentActionModel, frames_BTHWC: torch.Tensor) -> torch.Tensor:
    """(B, T-1, code_dim) from h_t alone (frames <= t), the probe of `history_only_flatten`."""
    return lam.pre_quant(lam.frame_features(frames_BTHWC)[:, :-1])


def run_variant(name: str, args: Args, train: ClipDataset, test: ClipDataset) -> dict:
    cfg = get_preset("small")
    cfg.lam = dataclasses.replace(cfg.lam, **VARIANTS[name])
    seed_everything(args.seed)
    lam = LatentActionModel(cfg.lam, cfg.image_size, cfg.seq_len, cfg.channels)
    supervised = name in SUPERVISED
    latents = history_latents if name.startswith("history_only") else LatentActionModel.encode_latents
    head = torch.nn.Linear(cfg.lam.code_dim, len(MOVE_NAMES))
    params = list(lam.parameters()) + (list(head.parameters()) if supervised else [])
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=1e-4)
    sched = WarmupCosine(
        opt, OptimConfig(steps=args.steps, lr=args.lr, min_lr=args.lr / 10, warmup_steps=50), args.steps
    )
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    bar = tqdm(range(args.steps), desc=name, mininterval=5)
    for step in bar:
        idx = rng.integers(0, len(train), args.batch_size)
        frames = torch.stack([train[int(i)] for i in idx]).float() / 255
        if supervised:
            y = torch.from_numpy(movement_class(np.stack([train.clip_actions(int(i)).numpy() for i in idx])))
            loss = F.cross_entropy(head(latents(lam, frames)).flatten(0, 1), y.flatten())
            out = {"loss": loss, "recon_loss": loss, "stats": {"perplexity": torch.tensor(0.0)}}
        else:
            out = lam(frames)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if not supervised and (step + 1) % args.dead_code_every == 0:
            lam.vq.reset_dead_codes(out["z_e"].reshape(-1, cfg.lam.code_dim), gen)
        if step % 20 == 0:
            bar.set_postfix(recon=f"{out['recon_loss'].item():.5f}", ppl=f"{out['stats']['perplexity'].item():.2f}")
    train_s = time.perf_counter() - t0

    lam.eval()
    test_idx = np.random.default_rng(1234).choice(len(test), min(args.test_clips, len(test)), replace=False)
    codes, actions, recon, copy = [], [], [], []
    with torch.inference_mode():
        for chunk in np.array_split(test_idx, max(1, len(test_idx) // 32)):
            frames = torch.stack([test[int(i)] for i in chunk]).float() / 255
            if supervised:
                codes.append(head(latents(lam, frames)).argmax(-1).reshape(-1).numpy())
                recon.append(float("nan"))
            else:
                out = lam(frames)
                codes.append(out["actions_BT"].reshape(-1).numpy())
                recon.append(out["recon_loss"].item())
            actions.append(np.concatenate([test.clip_actions(int(i)).numpy() for i in chunk]))
            copy.append(F.mse_loss(frames[:, :-1], frames[:, 1:]).item())
    codes_all, actions_all = np.concatenate(codes), np.concatenate(actions)
    moves = movement_class(actions_all)
    table = np.zeros((max(cfg.lam.num_actions, len(MOVE_NAMES)), len(MOVE_NAMES)), dtype=int)
    np.add.at(table, (codes_all, moves), 1)
    stats = code_stats(codes_all, cfg.lam.num_actions)
    return {
        "changes": VARIANTS[name],
        "train_s": round(train_s, 1),
        "usage": stats["usage"],
        "perplexity": stats["perplexity"],
        "histogram": stats["histogram"],
        "nmi_actions": nmi(codes_all, actions_all),
        "nmi_movement": nmi(codes_all, moves),
        "recon_mse": float(np.mean(recon)),
        "copy_last_frame_mse": float(np.mean(copy)),
        "code_by_movement": table.tolist(),
        "movement_accuracy": float((codes_all == moves).mean()) if supervised else None,
    }


def write_markdown(report: dict, out: Path) -> None:
    """`<out>.md`: one row per variant; the supervised probes are marked (they read the true actions)."""
    a, results = report["args"], report["variants"]
    seq_len = get_preset("small").seq_len
    commands = ", ".join(f"`{c}`" for c in dict.fromkeys(r["command"] for r in results.values()))
    lines = [
        "# LAM ablation",
        "",
        f"Commands: {commands}.",
        "",
        f"{a['steps']} steps x {a['batch_size']} clips of {seq_len} frames per variant; "
        f"{a['test_clips']} held-out test clips; movement classes: {', '.join(MOVE_NAMES)}. Rows marked *probe* "
        "are not LAMs: the encoder trained with the true movement classes (the ceiling of what it reads).",
        "",
        "| variant | changes | perplexity | NMI (15 actions) | NMI (movement) | recon MSE | copy MSE |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        label = f"{name} (*probe*)" if name in SUPERVISED else name
        recon = "" if name in SUPERVISED else f"{r['recon_mse']:.5f}"
        lines.append(
            f"| {label} | `{r['changes']}` | {r['perplexity']:.2f} | {r['nmi_actions']:.3f} | "
            f"{r['nmi_movement']:.3f} | {recon} | {r['copy_last_frame_mse']:.5f} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    if args.report_only:
        write_markdown(json.loads(Path(args.out).with_suffix(".json").read_text()), Path(args.out))
        return
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    seq_len = get_preset("small").seq_len
    train, test = ClipDataset(args.data, "train", seq_len), ClipDataset(args.data, "test", seq_len)
    command = "python benchmarks/lam_ablation.py " + " ".join(sys.argv[1:])
    results = {}
    for name in args.variants:
        results[name] = r = {**run_variant(name, args, train, test), "command": command}
        print(
            f"{name}: perplexity {r['perplexity']:.2f}  NMI actions {r['nmi_actions']:.3f}  "
            f"NMI movement {r['nmi_movement']:.3f}  recon {r['recon_mse']:.5f} (copy {r['copy_last_frame_mse']:.5f})"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Variants measured earlier with the same settings are kept, so the table can be built up run by run.
    same = {k: v for k, v in dataclasses.asdict(args).items() if k not in ("variants", "out", "threads", "report_only")}
    if out.with_suffix(".json").is_file():
        old = json.loads(out.with_suffix(".json").read_text())
        if {k: v for k, v in old.get("args", {}).items() if k in same} == same:
            kept = {n: {"command": old.get("command"), **r} for n, r in old["variants"].items() if n not in results}
            results = {**kept, **results}
    report = {"args": dataclasses.asdict(args), "movement_classes": MOVE_NAMES, "variants": results}
    atomic_write_json(out.with_suffix(".json"), report)
    write_markdown(report, out)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
