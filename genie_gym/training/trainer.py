"""The training loop for both phases (CleanRL-style: one file you can read top to bottom).

Phase `tokenizer` trains the VideoTokenizer. Phase `dynamics` co-trains the LAM and the dynamics model with
the tokenizer frozen: tokens come from `tokenizer.encode` (no grad), actions from the LAM's quantiser; the
dynamics model gets the action *indices* (discrete, so no gradient reaches the LAM through them),
loss = LAM loss + dynamics loss.

Everything that makes `--resume` exact lives in the checkpoint: weights, AdamW moments, schedule step, RNG
states and the data stream position; per-step randomness (the dynamics mask) comes from a generator seeded by
(seed, step, rank).
"""

from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from genie_gym.config import GenieConfig, OptimConfig, apply_overrides, get_preset
from genie_gym.errors import CheckpointError, ConfigError, DatasetError, GenieError
from genie_gym.models.frames import to_float, to_uint8
from genie_gym.models.world_model import build_dynamics, build_lam, build_tokenizer
from genie_gym.training.checkpoint import (
    check_resume_fits,
    check_tokenizer_fits,
    load_checkpoint,
    load_tokenizer_source,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from genie_gym.training.distributed import (
    all_reduce_mean,
    barrier,
    broadcast_module,
    cleanup_distributed,
    init_distributed,
)
from genie_gym.training.sampler import ClipIndexStream, StreamBatchSampler
from genie_gym.training.schedule import load_optimizer_state, lr_at, make_optimizer, make_scheduler
from genie_gym.utils.device import resolve_device
from genie_gym.utils.io import atomic_write_bytes, atomic_write_json, sha256_file
from genie_gym.utils.seeding import seed_everything, torch_generator

if TYPE_CHECKING:
    from genie_gym.training.train import Args

PHASES = ("tokenizer", "dynamics")
PHASE_PARTS = {"tokenizer": ("tokenizer",), "dynamics": ("lam", "dynamics")}  # what --init-from can load


def load_deepened(module: nn.Module, state: dict[str, torch.Tensor]) -> list[tuple[str, int, int]]:
    """`module.load_state_dict(state)`, where `state` may come from a model with fewer blocks in some ST
    transformer (`--set dynamics.num_layers=...` above the --init-from model's). Its blocks fill the first ones;
    the others keep their initialisation with their residual projections zeroed, so each starts as the identity
    and the loaded model computes exactly what the source did. Returns (transformer, blocks in state, blocks now)
    for each transformer deepened; any other mismatch raises load_state_dict's RuntimeError."""
    from genie_gym.models.st_transformer import STTransformer

    added, expected_missing = [], set()
    for where, sub in module.named_modules():
        if not isinstance(sub, STTransformer):
            continue
        prefix = f"{where}.blocks." if where else "blocks."
        n_state = len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})
        if 0 < n_state < len(sub.blocks):
            added.append((where, n_state, len(sub.blocks)))
            expected_missing |= {f"{prefix}{i}.{k}" for i in range(n_state, len(sub.blocks))
                                 for k in sub.blocks[i].state_dict()}
    if not added:
        module.load_state_dict(state)
        return []
    missing, unexpected = module.load_state_dict(state, strict=False)
    if unexpected or set(missing) != expected_missing:
        module.load_state_dict(state)  # raises with the full list of mismatched keys
    for where, n_state, n_now in added:
        for block in list(module.get_submodule(where).blocks)[n_state:n_now]:
            for proj in (block.spatial.proj, block.temporal.proj, block.mlp.proj):
                nn.init.zeros_(proj.weight)
                nn.init.zeros_(proj.bias)
    return added


class NonFiniteLossError(GenieError, RuntimeError):
    """The loss or the gradient norm became NaN/inf; training stopped before the weights were touched."""


# --- models: built by the world model's own builders, so their state dicts drop straight into the export ----------
class TokenizerObjective(nn.Module):
    """Phase 1: reconstruct clips through the VQ bottleneck."""

    def __init__(self, cfg: GenieConfig, freeze_encoder: bool = False) -> None:
        super().__init__()
        self.tokenizer = build_tokenizer(cfg)
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:  # a trained tokenizer (--init-from) whose tokens stay as they are: only its decoder learns
            self.tokenizer.freeze_encoder()

    def vq_modules(self) -> dict[str, nn.Module]:
        """Quantisers whose dead codes the trainer re-seeds (FSQ has no learned codes; a frozen one keeps its own)."""
        if self.freeze_encoder or self.tokenizer.cfg.quantizer != "vq":
            return {}
        return {"tokenizer": self.tokenizer.vq}

    def parts(self) -> dict[str, nn.Module]:
        """The trained sub-models, by the names their weights have in checkpoints."""
        return {"tokenizer": self.tokenizer}

    def forward(self, frames_BTHWC: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, Any]:
        out = self.tokenizer(frames_BTHWC)
        return {
            "loss": out["loss"],
            "scalars": {
                "recon_loss": out["recon_loss"],
                "mse": out["mse"],
                "psnr": -10 * torch.log10(out["mse"].clamp_min(1e-10)),
                "vq_loss": out["vq_loss"],
                "vq/usage": out["stats"]["usage"],
                "vq/perplexity": out["stats"]["perplexity"],
            },
            "z_e": {"tokenizer": out["z_e"]},
            "recon_BTHWC": out["recon_BTHWC"],
        }


class DynamicsObjective(nn.Module):
    """Phase 2: LAM + dynamics, co-trained on the tokens of a frozen tokenizer."""

    def __init__(self, cfg: GenieConfig, tokenizer: nn.Module, freeze_lam: bool = False) -> None:
        super().__init__()
        self.lam = build_lam(cfg)
        self.dynamics = build_dynamics(cfg)
        self.freeze_lam = freeze_lam
        if freeze_lam:  # a LAM trained before (--init-from): it labels the clips, only the dynamics learns
            self.lam.requires_grad_(False)
        self._frozen = (tokenizer,)  # a tuple hides it from parameters(), state_dict() and DDP

    @property
    def tokenizer(self) -> nn.Module:
        return self._frozen[0]

    def vq_modules(self) -> dict[str, nn.Module]:
        if self.freeze_lam or not self.lam.quantize:  # no dead codes in a fixed LAM or a continuous warm-up
            return {}
        return {"lam": self.lam.vq}

    def parts(self) -> dict[str, nn.Module]:
        return {"lam": self.lam, "dynamics": self.dynamics}

    def forward(self, frames_BTHWC: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, Any]:
        with torch.no_grad():
            tokens_BTN = self.tokenizer.encode(frames_BTHWC)
        dyn_scalars: dict[str, Any] = {}
        if self.freeze_lam:  # only the LAM's encoder and quantiser run: its codes label the transitions
            self.lam.eval()
            with torch.no_grad():
                z_e = self.lam.encode_latents(frames_BTHWC)
                _, actions_BT, _, stats = self.lam.vq(z_e)
            lam_out = {"actions_BT": actions_BT, "stats": stats, "z_e": z_e, "recon_BTHWC": None}
            loss = 0.0
        else:
            lam_out = self.lam(frames_BTHWC)
            loss = lam_out["loss"]
            dyn_scalars = {"lam_recon_loss": lam_out["recon_loss"], "lam_vq_loss": lam_out["vq_loss"]}
        actions_BT = lam_out["actions_BT"].detach()  # stop-gradient (indices are discrete anyway)
        dyn_loss, dyn_stats = self.dynamics.loss(tokens_BTN, actions_BT, generator=generator)
        return {
            "loss": loss + dyn_loss,
            "scalars": {
                **dyn_scalars,
                "dynamics_loss": dyn_loss,
                "dynamics_accuracy": dyn_stats["accuracy"],
                "dynamics_copy_accuracy": dyn_stats["copy_accuracy"],
                "lam/usage": lam_out["stats"]["usage"],
                "lam/perplexity": lam_out["stats"]["perplexity"],
            },
            "z_e": {"lam": lam_out["z_e"]},
            "recon_BTHWC": lam_out["recon_BTHWC"],
        }


def phase_optim(cfg: GenieConfig, phase: str) -> OptimConfig:
    return cfg.tokenizer_optim if phase == "tokenizer" else cfg.dynamics_optim


def step_seed(seed: int, step: int, rank: int) -> int:
    """A distinct, reproducible seed per (run seed, step, rank) for the per-step generator."""
    return (seed * 1_000_003 + step * 7919 + rank * 104_729) % (2**62)


class _MetricsWindow:
    """Scalars collected since the last log line; `flush` returns their means with frames/s and tokens/s."""

    def __init__(self, frames_per_step: int, step: int) -> None:
        self.frames_per_step, self.step, self.t = frames_per_step, step, time.time()
        self.values: dict[str, list[float]] = {}

    def add(self, scalars: dict[str, Any]) -> None:
        for k, v in scalars.items():
            self.values.setdefault(k, []).append(float(v.detach()) if torch.is_tensor(v) else float(v))

    def flush(self, step: int, tokens_per_frame: int) -> dict[str, float]:
        fps = self.frames_per_step * (step - self.step) / max(time.time() - self.t, 1e-9)
        metrics = {k: float(np.mean(v)) for k, v in self.values.items()}
        metrics["lr"] = self.values["lr"][-1]  # the last step's, not the window's mean
        metrics.update(frames_per_s=fps, tokens_per_s=fps * tokens_per_frame, steps_per_s=fps / self.frames_per_step)
        self.values, self.step, self.t = {}, step, time.time()
        return metrics


# --- the trainer --------------------------------------------------------------------------------------------
class Trainer:
    """Builds everything from `Args`, resumes if asked, and runs the loop (`run()` returns the losses)."""

    def __init__(self, args: Args, config: GenieConfig | None = None) -> None:
        """`config` replaces the preset's (benchmarks train variants this way); checkpoints record it."""
        if args.phase not in PHASES:
            raise ConfigError(f"unknown phase '{args.phase}'; choose one of {PHASES}")
        if args.freeze_encoder and args.phase != "tokenizer":
            raise ConfigError("--freeze-encoder belongs to phase tokenizer (phase dynamics always keeps the "
                              "tokenizer fixed)")
        self.args = args
        if config is not None:
            self.cfg = config
        else:
            try:
                self.cfg = get_preset(args.preset)
            except ValueError as e:
                raise ConfigError(f"{e} (--preset)") from None
            try:
                self.cfg = apply_overrides(self.cfg, getattr(args, "set", ()))
            except (ValueError, TypeError) as e:
                raise ConfigError(f"{e} (--set)") from None
        cfg = self.cfg
        optim = phase_optim(cfg, args.phase)
        overrides = {
            k: v
            for k, v in (("steps", args.steps), ("batch_size", args.batch_size), ("lr", args.lr))
            if v is not None
        }
        if "lr" in overrides:
            overrides["min_lr"] = min(optim.min_lr, overrides["lr"])
        self.optim_cfg = OptimConfig(**{**asdict(optim), **overrides})
        if self.optim_cfg.steps <= 0 or self.optim_cfg.batch_size <= 0:
            raise ConfigError(
                f"--steps and --batch-size must be positive, got {self.optim_cfg.steps} and "
                f"{self.optim_cfg.batch_size}"
            )

        self.dist, self.device = init_distributed(resolve_device(args.device))
        self.run_dir = Path(args.out)
        self.phase_dir = self.run_dir / args.phase
        if self.dist.is_main:
            self.phase_dir.mkdir(parents=True, exist_ok=True)
        self.amp = (self.device.type == "cuda" and args.bf16) or (self.device.type == "cpu" and args.cpu_bf16)

        self.dataset = self._open_dataset()
        seed_everything(args.seed)  # identical init on every rank (DDP also broadcasts rank 0's weights)

        self.tokenizer_step = 0
        self.tokenizer_metrics: dict[str, float] = {}
        self.init_parts = tuple(args.init_parts) or PHASE_PARTS.get(args.phase, ())
        if args.phase == "tokenizer":
            self.model: nn.Module = TokenizerObjective(cfg, freeze_encoder=args.freeze_encoder)
        else:
            tokenizer = self._load_frozen_tokenizer()
            if args.freeze_lam and (args.init_from is None or "lam" not in self.init_parts):
                raise ConfigError("--freeze-lam keeps a trained LAM fixed: load one with --init-from FILE "
                                  "--init-parts lam (or lam dynamics)")
            self.model = DynamicsObjective(cfg, tokenizer, freeze_lam=args.freeze_lam)
        self.model.to(self.device)
        self.optimizer = make_optimizer(self.model, self.optim_cfg)
        self.scheduler = make_scheduler(self.optimizer, self.optim_cfg, self.optim_cfg.steps)
        self.stream = ClipIndexStream(
            len(self.dataset), self.optim_cfg.batch_size, args.seed, self.dist.rank, self.dist.world_size
        )
        self.step = 0
        self.metrics: dict[str, float] = {}
        self.init_from: dict[str, Any] | None = None
        resumed = args.resume and self._resume()
        if args.freeze_encoder and not resumed and args.init_from is None:
            raise ConfigError("--freeze-encoder keeps a trained tokenizer's tokens: load one with --init-from FILE "
                              "(a world_model.pt or a tokenizer last.pt)")
        if not resumed:
            if args.init_from is not None:
                self._init_from(Path(args.init_from), self.init_parts)
            seed_everything(args.seed + self.dist.rank)
        warmup = cfg.lam.continuous_warmup_steps
        # a checkpoint at `warmup` precedes k-means
        if args.phase == "dynamics" and warmup > 0 and self.step <= warmup and not args.freeze_lam:
            self.model.lam.quantize = False
        self.ddp: nn.Module = self.model
        if self.dist.enabled:
            self.ddp = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    # --- setup helpers --------------------------------------------------------------------------------------
    def _open_dataset(self):
        from genie_gym.data.dataset import ClipDataset

        T = self.cfg.seq_len
        data = Path(self.args.data)
        if not data.exists():
            raise DatasetError(
                f"--data {data} does not exist; record data first with `genie-gym data --out {data}`"
            )
        if self.args.cache_mib < 1:
            raise ConfigError(f"--cache-mib must be >= 1, got {self.args.cache_mib}")
        ds = ClipDataset(data, split=self.args.split, clip_len=T, stride=self.args.stride,
                         cache_bytes=self.args.cache_mib << 20)
        if len(ds) == 0:
            raise DatasetError(
                f"no clip of {T} frames (preset '{self.cfg.preset}' context) fits in any episode of {data} "
                f"split '{self.args.split}': episodes are shorter than the model's context; "
                "record longer episodes "
                "or use a preset with a shorter seq_len"
            )
        frames_THWC = ds[0]
        S, C = self.cfg.image_size, self.cfg.channels
        if tuple(frames_THWC.shape) != (T, S, S, C):
            raise DatasetError(
                f"clips of {data} have shape {tuple(frames_THWC.shape)}, but preset "
                f"'{self.cfg.preset}' needs ({T}, {S}, {S}, {C}); clips shorter than the model's "
                "context or frames of another size do not fit: re-record the data"
            )
        return ds

    def _load_frozen_tokenizer(self) -> nn.Module:
        path = (
            Path(self.args.tokenizer_ckpt)
            if self.args.tokenizer_ckpt
            else self.run_dir / "tokenizer" / "last.pt"
        )
        if not path.is_file():
            raise CheckpointError(
                f"tokenizer checkpoint {path} not found; train phase 1 first (genie-gym train "
                f"--phase tokenizer --out {self.run_dir}) or pass --tokenizer-ckpt PATH (a tokenizer checkpoint "
                "or a world-model file)"
            )
        ckpt = load_tokenizer_source(path)
        check_tokenizer_fits(ckpt, self.cfg, path)
        tokenizer = build_tokenizer(self.cfg)
        tokenizer.load_state_dict(ckpt["model"]["tokenizer"])
        tokenizer.to(self.device).eval().requires_grad_(False)
        self.tokenizer_step = int(ckpt["step"])
        self.tokenizer_metrics = dict(ckpt.get("metrics", {}))
        self.tokenizer_ckpt_path = path
        return tokenizer

    def _init_from(self, path: Path, parts: tuple[str, ...]) -> None:
        """Load some parts' weights from a world-model file or a checkpoint of this phase (a fine-tuning start)."""
        phase = self.args.phase
        allowed = PHASE_PARTS.get(phase, ())
        if not allowed:
            raise ConfigError(f"--init-from applies to phases {' and '.join(PHASE_PARTS)}, not {phase}")
        unknown = set(parts) - set(allowed)
        if unknown or not parts:
            raise ConfigError(f"--init-parts of phase {phase} takes {' and/or '.join(allowed)}, got {list(parts)}")
        if not path.is_file():
            raise CheckpointError(f"--init-from {path} does not exist; pass a world_model.pt or a {phase} last.pt")
        from genie_gym.models.world_model import WorldModel, is_world_model_file

        if is_world_model_file(path):
            wm = WorldModel.load(path)
            states = {name: getattr(wm, name).state_dict() for name in allowed}
            source_steps = wm.metadata.get("steps")
        else:
            ckpt = load_checkpoint(path)
            if ckpt.get("phase") != phase:
                raise CheckpointError(f"--init-from {path} is a '{ckpt.get('phase')}' checkpoint; pass a "
                                      f"world_model.pt or a phase-{phase} checkpoint")
            states, source_steps = ckpt["model"], {phase: ckpt["step"]}
        model_parts = self.model.parts()
        grown: list[str] = []
        for name in parts:
            try:
                added = load_deepened(model_parts[name], states[name])
            except RuntimeError as e:
                raise CheckpointError(f"--init-from {path}: its {name} does not fit preset '{self.cfg.preset}' "
                                      f"({str(e).splitlines()[0]}); use a model of the same preset, or a "
                                      "shallower one of the same width (it is deepened)") from e
            grown += [f"{'.'.join(filter(None, (name, where)))}: {n_from} -> {n_to} blocks"
                      for where, n_from, n_to in added]
        self.init_from = {"path": str(path), "sha256": sha256_file(path), "parts": list(parts),
                          "steps": source_steps}
        if grown:
            self.init_from["deepened"] = grown
        if self.dist.is_main:
            print(f"--init-from: loaded {', '.join(parts)} from {path} (trained {source_steps} steps)"
                  + (f"; deepened {', '.join(grown)} (the new blocks start as the identity)" if grown else ""))

    def _resume(self) -> bool:
        """Load RUN/<phase>/last.pt if it exists; returns whether it did."""
        path = self.phase_dir / "last.pt"
        if not path.is_file():
            if self.dist.is_main:
                print(f"--resume: no checkpoint at {path}, starting phase '{self.args.phase}' from step 0")
            return False
        ckpt = load_checkpoint(path)
        self.init_from = ckpt.get("init_from")
        check_resume_fits(ckpt, self.cfg, self.args.phase, path)
        was_frozen = bool(ckpt.get("args", {}).get("freeze_encoder", False))
        if was_frozen != self.args.freeze_encoder:
            flag = "--freeze-encoder" if was_frozen else "--no-freeze-encoder"
            raise CheckpointError(f"{path} was trained {'with' if was_frozen else 'without'} --freeze-encoder; "
                                  f"resume with {flag}, or start a new --out")
        for name, part in self.model.parts().items():
            part.load_state_dict(ckpt["model"][name])
        load_optimizer_state(self.optimizer, ckpt["optimizer"], self.model)
        self.step = int(ckpt["step"])
        # The schedule is a function of the step: rebuilt, not loaded. A longer --steps stretches the cosine decay.
        self.scheduler = make_scheduler(self.optimizer, self.optim_cfg, self.optim_cfg.steps, self.step)
        old_total = int(ckpt["scheduler"]["total_steps"])
        if old_total != self.optim_cfg.steps and self.dist.is_main:
            print(f"--resume: the schedule spanned {old_total} steps, now {self.optim_cfg.steps} (--steps): the "
                  f"cosine decay is stretched, so the lr at step {self.step} changes from "
                  f"{lr_at(self.step, self.optim_cfg, old_total):.2e} to {self.scheduler.get_last_lr()[0]:.2e}")
        if self.dist.is_main:
            self._truncate_metrics_log(self.step)
        self.metrics = dict(ckpt.get("metrics", {}))
        sampler_state = ckpt["sampler"]
        if sampler_state.get("world_size") != self.dist.world_size or sampler_state.get("num_items") != len(
            self.dataset
        ):
            raise CheckpointError(
                f"{path} was written with world size {sampler_state.get('world_size')} and "
                f"{sampler_state.get('num_items')} clips; this run has {self.dist.world_size} and "
                f"{len(self.dataset)}. Resume with the same --nproc-per-node and --data"
            )
        self.stream.load_state_dict(sampler_state)
        rngs = ckpt["rng"]
        set_rng_state(rngs[self.dist.rank] if isinstance(rngs, list) and len(rngs) > self.dist.rank else rngs)
        if self.dist.is_main:
            print(f"resumed phase '{self.args.phase}' from {path} at step {self.step}")
        return True

    def _truncate_metrics_log(self, step: int) -> None:
        """Drop metrics.jsonl lines logged after the checkpoint we resume from (they will be logged again)."""
        path = self.phase_dir / "metrics.jsonl"
        if not path.is_file():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                if int(json.loads(line).get("step", 0)) > step:
                    continue
            except (ValueError, AttributeError):
                continue  # a line cut by the kill
            kept.append(line)
        atomic_write_bytes(path, ("\n".join(kept) + "\n" if kept else "").encode())

    # --- checkpoints ----------------------------------------------------------------------------------------
    def _gather_rng(self) -> Any:
        state = rng_state()
        if not self.dist.enabled:
            return state
        import torch.distributed as dist

        states: list[Any] = [None] * self.dist.world_size
        dist.all_gather_object(states, state)
        return states

    def save(self) -> None:
        rngs = self._gather_rng()  # collective: every rank calls save()
        if not self.dist.is_main:
            return
        payload = {
            "phase": self.args.phase,
            "config": self.cfg.to_dict(),
            "optim": asdict(self.optim_cfg),
            "model": {name: part.state_dict() for name, part in self.model.parts().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"total_steps": self.optim_cfg.steps},  # the schedule itself follows from the step
            "step": self.step,
            "rng": rngs,
            "sampler": self.stream.state_dict(),
            "metrics": self.metrics,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(self.args).items()},
            "init_from": self.init_from,
        }
        save_checkpoint(payload, self.phase_dir, self.step, keep=self.args.keep)
        atomic_write_json(
            self.phase_dir / "status.json",
            {
                "phase": self.args.phase,
                "step": self.step,
                "total_steps": self.optim_cfg.steps,
                "finished": self.step >= self.optim_cfg.steps,
                "metrics": self.metrics,
            },
        )
        if self.args.phase == "dynamics":
            self.export_world_model()

    def export_world_model(self) -> Path:
        """Bundle tokenizer + LAM + dynamics into RUN_DIR/world_model.pt (genie_gym.training.export)."""
        from genie_gym.training.export import world_model_metadata, write_world_model

        assert isinstance(self.model, DynamicsObjective)
        states = {name: getattr(self.model, name).state_dict() for name in ("tokenizer", "lam", "dynamics")}
        metadata = world_model_metadata(
            self.args.data, {"tokenizer": self.tokenizer_step, "dynamics": self.step}, self.tokenizer_metrics,
            self.metrics, self.cfg.preset, self.init_from, self.args.seed,
        )
        return write_world_model(self.cfg, states, self.run_dir / "world_model.pt", metadata)

    # --- the loop -------------------------------------------------------------------------------------------
    def _make_loader(self) -> torch.utils.data.DataLoader:
        workers = self.args.num_workers
        if workers < 0:
            workers = 0 if self.device.type == "cpu" else min(8, os.cpu_count() or 1)
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=StreamBatchSampler(self.stream),
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            prefetch_factor=4 if workers > 0 else None,
        )

    def _reset_dead_codes(self, z_e: dict[str, torch.Tensor]) -> dict[str, int]:
        """Re-seed unused codes (same generator on every rank, then rank 0's codebook wins)."""
        counts = {}
        for name, vq in self.model.vq_modules().items():
            g = torch_generator(step_seed(self.args.seed, self.step, 0) + 1, self.device)
            counts[name] = vq.reset_dead_codes(z_e[name].detach().reshape(-1, vq.code_dim), generator=g)
            broadcast_module(vq, self.dist)
        return counts

    def _maybe_start_quantising(self, clips: int = 64) -> None:
        """End of the LAM's continuous warm-up: seed its codebook by k-means on the latents of `clips` clips
        drawn with a seed of the step (the same on every rank and after a resume), then quantise."""
        lam = getattr(self.model, "lam", None)
        if lam is None or lam.quantize or self.step < self.cfg.lam.continuous_warmup_steps:
            return
        g = torch_generator(step_seed(self.args.seed, self.step, 0) + 2, torch.device("cpu"))
        pick = torch.randint(0, len(self.dataset), (clips,), generator=g).tolist()
        with torch.no_grad():
            z_e = torch.cat([
                lam.encode_latents(to_float(torch.stack([self.dataset[i] for i in pick[j : j + 16]]).to(self.device)))
                .reshape(-1, lam.vq.code_dim).float()
                for j in range(0, clips, 16)
            ])
        lam.vq.init_kmeans(z_e, generator=g)
        broadcast_module(lam.vq, self.dist)
        lam.quantize = True
        if self.dist.is_main:
            tqdm.write(f"step {self.step}: LAM warm-up over; codebook seeded by k-means on {len(z_e)} latents")

    def run(self, stop_at: int | None = None) -> list[float]:
        """Train until --steps (or stop_at, --stop-at, --time-limit-min); returns this call's losses."""
        args, total = self.args, self.optim_cfg.steps
        stop = min(total, stop_at or args.stop_at or total)
        losses: list[float] = []
        if self.step >= stop:
            if self.dist.is_main:
                print(f"phase '{args.phase}' already at step {self.step} >= {stop}; nothing to do")
            return losses
        writer = None
        if self.dist.is_main and args.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.phase_dir / "tb"), purge_step=self.step)
        log = _MetricsWindow(self.optim_cfg.batch_size * self.cfg.seq_len * self.dist.world_size, self.step)
        if self.dist.is_main:
            where = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else self.device.type
            print(f"phase '{args.phase}' on {where} (torch {torch.__version__}{', bf16 autocast' if self.amp else ''})"
                  f": steps {self.step} -> {stop} of {self.optim_cfg.batch_size} clips x {self.cfg.seq_len} frames"
                  f" x {self.dist.world_size} process(es)")
        t_start = time.time()
        loader_it = iter(self._make_loader())
        self.model.train()
        bar = tqdm(total=stop, initial=self.step, desc=f"train {args.phase}", disable=not self.dist.is_main,
                   dynamic_ncols=True)
        try:
            while self.step < stop:
                frames_BTHWC = to_float(next(loader_it).to(self.device, non_blocking=True))
                out, scalars = self._train_step(frames_BTHWC)
                losses.append(float(scalars["loss"]))
                if args.dead_code_every > 0 and self.step % args.dead_code_every == 0:
                    resets = self._reset_dead_codes(out["z_e"])
                    if writer is not None:
                        for k, n in resets.items():
                            writer.add_scalar(f"{k}/codes_reset", n, self.step)
                log.add(scalars)
                bar.update(1)
                if self.step % args.log_every == 0 or self.step == stop:
                    self.metrics = log.flush(self.step, self.cfg.tokens_per_frame)
                    bar.set_postfix(loss=f"{self.metrics['loss']:.4f}", fps=f"{self.metrics['frames_per_s']:.0f}")
                    self._write_metrics(writer)
                if writer is not None and args.image_every > 0 and self.step % args.image_every == 0:
                    self._log_images(writer, frames_BTHWC, out)
                if self.step % args.ckpt_every == 0 or self.step == stop:
                    self.save()
                if args.time_limit_min and time.time() - t_start > 60 * args.time_limit_min and self.step < stop:
                    if self.dist.is_main:
                        print(f"\n--time-limit-min {args.time_limit_min} reached at step {self.step}; "
                              "checkpoint written, continue with --resume")
                    self.save()
                    break
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        barrier(self.dist)
        return losses

    def _train_step(self, frames_BTHWC: torch.Tensor) -> tuple[dict[str, Any], dict[str, Any]]:
        """One optimiser step on a batch; returns the model's outputs and the step's scalars (loss, grad norm, lr,
        the objective's own). Stops before the update when the loss or the gradient is not finite."""
        self._maybe_start_quantising()
        gen = torch_generator(step_seed(self.args.seed, self.step, self.dist.rank), self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else nullcontext():
            out = self.ddp(frames_BTHWC, gen)
        loss = out["loss"]
        loss_mean = all_reduce_mean(loss.detach().float(), self.dist)
        if not torch.isfinite(loss_mean):
            self._diverged(f"loss is {loss_mean.item()}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.optim_cfg.grad_clip)
        if not torch.isfinite(grad_norm):
            self._diverged(f"gradient norm is {grad_norm.item()}")
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self.stream.next_batch()  # the loader consumed this batch: advance the checkpointed copy
        return out, {"loss": loss_mean.item(), "grad_norm": grad_norm.detach(), "lr": lr, **out["scalars"]}

    def _write_metrics(self, writer: Any) -> None:
        """The current window's means to RUN/<phase>/metrics.jsonl and TensorBoard (rank 0)."""
        if self.dist.is_main:
            with open(self.phase_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"step": self.step, **self.metrics}) + "\n")
        if writer is not None:
            for k, v in self.metrics.items():
                writer.add_scalar(k if "/" in k else f"train/{k}", v, self.step)

    def _diverged(self, what: str) -> None:
        last = self.phase_dir / "last.pt"
        kept = (
            f"the last good checkpoint {last} was kept"
            if last.is_file()
            else "no checkpoint had been written yet"
        )
        raise NonFiniteLossError(
            f"phase '{self.args.phase}' diverged at step {self.step}: {what}; "
            f"stopped before the update, {kept}. "
            "Lower the learning rate (--lr) or use --no-bf16 / drop --cpu-bf16, then continue with --resume"
        )

    @torch.no_grad()
    def _log_images(self, writer: Any, frames_BTHWC: torch.Tensor, out: dict[str, Any]) -> None:
        """Real clip (top) over its reconstruction; in phase dynamics also a generated clip from frame 0."""
        from genie_gym.evaluation.rollout import clip_strip

        real = frames_BTHWC[0].float()
        if out["recon_BTHWC"] is not None:  # none from a frozen LAM
            recon = out["recon_BTHWC"][0].float()
            if self.args.phase == "dynamics":
                real = real[1:]  # the LAM decoder predicts frames 1..T-1
            writer.add_image("reconstruction", clip_strip([real, recon]), self.step, dataformats="HWC")
        if self.args.phase == "dynamics":
            from genie_gym.models.simulator import Simulator
            from genie_gym.models.world_model import WorldModel

            assert isinstance(self.model, DynamicsObjective)
            wm = WorldModel(self.cfg)  # the env's generation path, on copies of the weights being trained
            for name in ("tokenizer", "lam", "dynamics"):
                getattr(wm, name).load_state_dict(getattr(self.model, name).state_dict())
            clip = frames_BTHWC[:1].float()
            self.model.eval()
            actions_BT = self.model.lam.infer_actions(clip)
            self.model.train()
            sim = Simulator(wm, num_worlds=1, device=self.device)
            sim.reset(None, to_uint8(clip[:, 0]).cpu().numpy(), [self.args.seed])
            gen_BTHWC = torch.stack([to_float(sim.step(actions_BT[:, t].cpu().numpy())) for t in
                                     range(actions_BT.shape[1])], dim=1)
            writer.add_image("generated", clip_strip([clip[0].cpu(), gen_BTHWC[0]]), self.step, dataformats="HWC")


def train(args: Args) -> list[float]:
    """Build, run, and tear down; returns this call's losses."""
    trainer = Trainer(args)
    try:
        return trainer.run()
    finally:
        cleanup_distributed()


def ckpt_is_finished(phase_dir: Path) -> bool:
    """True when the phase's status file says it reached its step target (used by the pipeline)."""
    status = Path(phase_dir) / "status.json"
    if not status.is_file():
        return False
    try:
        return bool(json.loads(status.read_text()).get("finished"))
    except (json.JSONDecodeError, OSError):
        return False
