"""Latent action model ablation: train the LAM alone, then measure how its 8 codes relate to the true actions.

    python benchmarks/studies/lam_ablation.py --data data/coinrun_hard_sticky --steps 600 \
        --variants baseline entropy raw raw_entropy

Each variant is the `small` preset's LAM sizes with a few design switches changed (`VARIANTS`); the switches and
the variants' code live here (`VariantConfig`, `VariantLAM`), the library's `LatentActionModel` is the winner.
Each trains for `--steps` AdamW steps on the train split (no dynamics model: the LAM's own reconstruction loss is
all it learns from), then labels every transition of `--test-clips` held-out test clips and reports:
- code usage and perplexity (all 8 codes in use means perplexity near 8; the target is >= 5);
- NMI against the 15 Procgen actions and against 6 *movement classes* (left / none / right x up or not):
  most of the 15 actions are synonyms in CoinRun, so the movement NMI is the one that says whether a code means
  "move right" or "jump";
- the code x movement-class table (which class each code fires on);
- LAM reconstruction MSE next to the "copy the last frame" MSE (how much the codes tell the decoder);
- per code, the share of its transitions that moved left, moved right and pressed UP, the best code of each
  (the playable-codes targets: >= 0.6, >= 0.6, >= 0.8) and the names `name_actions` gives the codes.
A dataset recorded with `--paint-vel-info` (Procgen's velocity bar in the frame) is read as such: the expert
episodes are then recorded painted too (the expert still acts on plain frames, `run_policy_episodes`).
`--save-dir DIR` keeps every trained LAM of the library's design as DIR/<variant>.pt, a world-model file: the
shipped model with its LAM replaced, for `benchmarks/bc_coinrun.py --world-model` (only its LAM is meaningful:
the dynamics was trained on the shipped LAM's codes).
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
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from agents.collect import ExpertSet
from agents.latent_bc import label_expert_set, transitions
from genie_gym.config import LEGACY_LAM_FIELDS, LAMConfig, OptimConfig, get_preset
from genie_gym.data.dataset import ClipDataset
from genie_gym.data.games import MOVEMENT_NAMES, movement_class, name_actions
from genie_gym.evaluation.metrics import best_shift, code_stats, nmi
from genie_gym.models.frames import patchify, unpatchify
from genie_gym.models.lam import LatentActionModel
from genie_gym.models.st_transformer import init_weights
from genie_gym.models.tokenizer import edge_l1
from genie_gym.models.vq import VectorQuantizer
from genie_gym.training.schedule import make_scheduler
from genie_gym.utils.io import atomic_write_json, write_markdown
from genie_gym.utils.seeding import seed_everything


@dataclass
class VariantConfig(LAMConfig):
    """The library's LAMConfig plus the switches this ablation measured (the library keeps the winner only)."""

    vq_normalize: bool = True  # cosine-similarity VQ (l2-normalised codes and latents); the library: raw
    usage_entropy_weight: float = 0.0  # > 0: batch code-usage entropy bonus (EntropyVQ)
    predict_residual: bool = False  # pixel head predicts frame t+1 - frame t
    latent_pool: str = "mean"  # per-frame feature: "mean" of the encoder tokens, or "flatten" (the library)
    decoder_history: bool = True  # the decoder attends to frames <= t (the paper); the library: frame t only
    bar_loss_weight: float = 0.0  # > 0: extra MSE on Procgen's velocity bar (rows 0-12, cols 0-25 of painted frames)
    center_loss_weight: float = 0.0  # > 0: extra MSE on the frame's centre, where the camera keeps the agent
    edge_loss_weight: float = 0.0  # > 0: plus L1 of the image-gradient differences (tokenizer.edge_l1)
    hard_kernel: bool = False  # the shift kernel is one-hot (straight-through): the decoder cannot blur between shifts
    kernel_residual: bool = True  # False: no pixel residual beside the kernel (nothing else to hedge with)
    global_kernel: bool = False  # one shift kernel for the whole frame (the patches' logits averaged): a camera scroll
    # decoder_kernel = 0: a sigmoid pixel head instead of the library's shift kernel


class EntropyVQ(VectorQuantizer):
    """VQ plus a usage-entropy bonus: with soft assignments p(code | z) = softmax(-dist / tau) the loss adds
    weight * (mean per-vector entropy - entropy of the batch-mean assignment), which spreads the batch over the
    codebook while each vector stays decisive."""

    def __init__(self, *args, entropy_weight: float = 0.0, temperature: float = 0.3, **kwargs):
        super().__init__(*args, **kwargs)
        self.entropy_weight, self.temperature = entropy_weight, temperature

    def forward(self, z_e: torch.Tensor):
        z_q, idx, loss, stats = super().forward(z_e)
        if self.entropy_weight > 0 and self.training:
            z_SD, c_VD = self.prepare(z_e), self.codes()
            dist_SV = z_SD.pow(2).sum(1, keepdim=True) - 2 * z_SD @ c_VD.t() + c_VD.pow(2).sum(1)[None]
            logp_SV = F.log_softmax(-dist_SV / self.temperature, dim=1)
            per_vector = -(logp_SV.exp() * logp_SV).sum(1).mean()
            mean_V = logp_SV.exp().mean(0)
            batch = -(mean_V * torch.log(mean_V.clamp_min(1e-10))).sum()
            loss = loss + self.entropy_weight * (per_vector - batch)
        return z_q, idx, loss, stats


class VariantLAM(LatentActionModel):
    """`LatentActionModel` with the ablation's switches (VariantConfig) put back."""

    def __init__(self, cfg: VariantConfig, image_size: int = 64, max_frames: int = 16, channels: int = 3):
        super().__init__(dataclasses.replace(cfg, decoder_kernel=cfg.decoder_kernel or 1), image_size, max_frames,
                         channels)
        self.cfg = cfg
        if cfg.latent_pool not in ("mean", "flatten"):
            raise ValueError(f"latent_pool must be 'mean' or 'flatten', got {cfg.latent_pool!r}")
        D = cfg.d_model
        if cfg.latent_pool == "mean":
            self.pre_quant = nn.Linear(D, cfg.code_dim, bias=False)
            init_weights(self.pre_quant)
        self.vq = EntropyVQ(cfg.num_actions, cfg.code_dim, cfg.commitment_weight, dead_code_threshold=20,
                            normalize=cfg.vq_normalize, entropy_weight=cfg.usage_entropy_weight)
        if not cfg.decoder_kernel:
            self.head = nn.Linear(D, cfg.patch_size ** 2 * channels)
            init_weights(self.head)

    def frame_features(self, frames_BTHWC: torch.Tensor) -> torch.Tensor:
        if self.cfg.latent_pool == "flatten":
            return super().frame_features(frames_BTHWC)
        self._check(frames_BTHWC)
        return self.encoder(self.enc_patch_embed(patchify(frames_BTHWC, self.patch)) + self.enc_pos).mean(dim=2)

    def forward(self, frames_BTHWC: torch.Tensor) -> dict:
        out = super().forward(frames_BTHWC)
        if self.cfg.bar_loss_weight:  # the bar is ~8% of the frame: weigh what it says about the velocity up
            bar = (slice(None), slice(None), slice(0, BAR_ROWS), slice(0, BAR_COLS))
            bar_mse = F.mse_loss(out["recon_BTHWC"][bar].float(), frames_BTHWC[:, 1:][bar].float())
            out["loss"] = out["loss"] + self.cfg.bar_loss_weight * bar_mse
        if self.cfg.center_loss_weight:  # the agent's own pixels (its sprite turns and walks when a key is held)
            c = (slice(None), slice(None), CENTER, CENTER)
            center_mse = F.mse_loss(out["recon_BTHWC"][c].float(), frames_BTHWC[:, 1:][c].float())
            out["loss"] = out["loss"] + self.cfg.center_loss_weight * center_mse
        if self.cfg.edge_loss_weight:  # a 1-px scroll moves every edge: a blur that hedges between scrolls pays here
            edges = edge_l1(out["recon_BTHWC"].float(), frames_BTHWC[:, 1:].float())
            out["loss"] = out["loss"] + self.cfg.edge_loss_weight * edges
        return out

    def _kernel_decode(self, frames_BTHWC: torch.Tensor, head_BTNO: torch.Tensor) -> torch.Tensor:
        if not self.cfg.kernel_residual:  # zero the residual part of the head (the first patch*patch*C outputs)
            P = self.patch * self.patch * frames_BTHWC.shape[-1]
            head_BTNO = torch.cat([torch.zeros_like(head_BTNO[..., :P]), head_BTNO[..., P:]], dim=-1)
        return super()._kernel_decode(frames_BTHWC, head_BTNO)

    def _kernel_weights(self, logits_BTNK: torch.Tensor) -> torch.Tensor:
        if self.cfg.global_kernel:
            logits_BTNK = logits_BTNK.mean(2, keepdim=True).expand_as(logits_BTNK)
        soft = super()._kernel_weights(logits_BTNK)
        if not self.cfg.hard_kernel:
            return soft
        # one tap per patch in the forward pass, the softmax's gradient in the backward (straight-through)
        hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
        return hard + soft - soft.detach()

    def decode(self, frames_BTHWC: torch.Tensor, a_q_BTC: torch.Tensor) -> torch.Tensor:
        if not self.cfg.decoder_history and self.cfg.decoder_kernel:
            return super().decode(frames_BTHWC, a_q_BTC)
        x_BTND = self.dec_patch_embed(patchify(frames_BTHWC, self.patch)) + self.dec_pos
        x_BTND = x_BTND + self.action_proj(a_q_BTC)[:, :, None]
        B, T, N, D = x_BTND.shape
        if self.cfg.decoder_history:
            h_BTND = self.decoder(x_BTND)
        else:
            h_BTND = self.decoder(x_BTND.reshape(B * T, 1, N, D)).reshape(B, T, N, D)
        if self.cfg.decoder_kernel:
            return self._kernel_decode(frames_BTHWC, self.head(h_BTND))
        S = self.image_size
        out_BTHWC = unpatchify(self.head(h_BTND), self.patch, S, S)
        if self.cfg.predict_residual:
            return (frames_BTHWC + out_BTHWC).clamp(0, 1)
        return torch.sigmoid(out_BTHWC)


BAR_ROWS, BAR_COLS = 13, 26  # where paint_vel_info draws in a 64x64 frame (the rows and columns that differ)
CENTER = slice(24, 40)  # rows and columns of a 64x64 frame's centre, where CoinRun's camera keeps the agent

# Every variant starts from the `small` preset's sizes with the LAM of the first shipped model (session 1): cosine
# VQ, mean-pooled features, a pixel decoder with history, no warm-up. The preset now uses a variant of it.
BASE = {"vq_normalize": True, "latent_pool": "mean", "predict_residual": False, "decoder_history": True,
        "decoder_kernel": 0, "continuous_warmup_steps": 0, "usage_entropy_weight": 0.0}
# The shipped LAM's design as a variant of BASE (`warmup_raw_flatten_kernel5_nohist`): the later variants change it.
SHIPPED_DESIGN = {"latent_pool": "flatten", "decoder_kernel": 5, "decoder_history": False,
                  "continuous_warmup_steps": 300, "vq_normalize": False}
VARIANTS: dict[str, dict] = {
    "baseline": {},  # the first shipped LAM: cosine VQ, no entropy bonus
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
    # Continuous warm-up, then k-means codebook (lam.py): the decoder learns to read the latent before it is cut.
    "warmup_residual": {"predict_residual": True, "continuous_warmup_steps": 300},
    "warmup_flatten_residual_nohist": {"latent_pool": "flatten", "predict_residual": True, "decoder_history": False,
                                       "continuous_warmup_steps": 300},
    "warmup_flatten_kernel5_nohist": {"latent_pool": "flatten", "decoder_kernel": 5, "decoder_history": False,
                                      "continuous_warmup_steps": 300},
    "warmup_raw_flatten_kernel5_nohist": dict(SHIPPED_DESIGN),
    "warmup_flatten_kernel5": {"latent_pool": "flatten", "decoder_kernel": 5, "continuous_warmup_steps": 300},
    # The paper's decoder (history x_1..x_t) with the fixes that made codes follow the movement (raw VQ, warm-up):
    # the history can carry the velocity, so the 8 codes are free to say what the action changes.
    "warmup_raw_flatten_kernel5": {"latent_pool": "flatten", "decoder_kernel": 5, "continuous_warmup_steps": 300,
                                   "vq_normalize": False},
    # For velocity-painted data only: the shipped design plus 10 x the velocity bar's own MSE (a bar pixel then
    # weighs ~120 other pixels), which the plain loss leaves to the scroll (lam_ablation_vel.md): do the codes
    # then read the action the bar shows?
    "warmup_raw_flatten_kernel5_nohist_bar10": {**SHIPPED_DESIGN, "bar_loss_weight": 10.0},
    # Plain frames: the same with 10 x the MSE of the 16 x 16 centre (a centre pixel weighs ~160 others), so that
    # the codes spend themselves on the agent rather than on the camera's scroll.
    "warmup_raw_flatten_kernel5_nohist_center10": {**SHIPPED_DESIGN, "center_loss_weight": 10.0},
    # Plain frames: the shipped design plus an edge loss. A camera scroll of a pixel moves every edge; under MSE a
    # decoder that does not know the direction hedges with a blur at little cost, and the codes never say it
    # (benchmarks/results/dream_response.md: no code goes one way horizontally). L1 on edges makes the hedge costly.
    "warmup_raw_flatten_kernel5_nohist_edge1": {**SHIPPED_DESIGN, "edge_loss_weight": 1.0},
    "warmup_raw_flatten_kernel5_nohist_edge5": {**SHIPPED_DESIGN, "edge_loss_weight": 5.0},
    # Plain frames: the shipped design with a one-hot shift kernel per patch (straight-through): a decoder that
    # must pick one shift cannot hedge between scroll directions, so the code has to say which.
    "warmup_raw_flatten_kernel5_nohist_hard": {**SHIPPED_DESIGN, "hard_kernel": True},
    # ... and without the pixel residual beside the kernel, which could still hedge
    "warmup_raw_flatten_kernel5_nohist_hard_nores": {**SHIPPED_DESIGN, "hard_kernel": True, "kernel_residual": False},
    # Plain frames: one shift kernel for the whole frame (what a scrolling camera does; the `global_shift` reference
    # labels transitions that way with no model), soft or one-hot, with the per-patch pixel residual for the rest
    "warmup_raw_flatten_kernel5_nohist_global": {**SHIPPED_DESIGN, "global_kernel": True},
    "warmup_raw_flatten_kernel5_nohist_hard_global": {**SHIPPED_DESIGN, "hard_kernel": True, "global_kernel": True},
    # Plain frames: the shipped design with 16 codes instead of 8: room for sideways and vertical moves together?
    "warmup_raw_flatten_kernel5_nohist_a16": {**SHIPPED_DESIGN, "num_actions": 16},
    "warmup_raw_flatten_kernel5_nohist_entropy": {**SHIPPED_DESIGN, "usage_entropy_weight": 0.1},
}
# Not LAMs: the LAM encoder trained *with* the true movement classes (cross-entropy from its pre-quantisation
# latent), an inverse-dynamics ceiling for what that encoder can read from two frames in the same steps.
# `history_only_flatten` predicts the movement of t -> t+1 from frames <= t alone (the causal encoder's h_t): how
# much of the action the past already gives away (sticky data repeat actions).
SUPERVISED = {"idm_mean": {}, "idm_flatten": {"latent_pool": "flatten"},
              "history_only_flatten": {"latent_pool": "flatten"}}
VARIANTS.update(SUPERVISED)
# Not a model: label each test transition by the integer shift (dx, dy in -3..3) that best maps frame t onto frame
# t+1 on the central 48x48 crop (a scrolling camera). Its MSE and NMI show how much of the change is a scroll and
# how much a perfect "which way did the view move" code says about the action.
REFERENCES = {"global_shift": {}}
VARIANTS.update(REFERENCES)
MOVE_NAMES = list(MOVEMENT_NAMES)


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
    expert_episodes: int = 100
    """episodes of the shipped PPO expert (CoinRun easy, levels 100000..) to label: NMI of the codes against the
    expert's actions, what latent BC needs (0 = skip)"""
    report_only: bool = False
    """rebuild <out>.md from <out>.json without training anything"""
    save_dir: str | None = None
    """write each trained LAM of the library's design as DIR/<variant>.pt (the shipped world model with that LAM)"""


def history_latents(lam: LatentActionModel, frames_BTHWC: torch.Tensor) -> torch.Tensor:
    """(B, T-1, code_dim) from h_t alone (frames <= t), the probe of `history_only_flatten`."""
    return lam.pre_quant(lam.frame_features(frames_BTHWC)[:, :-1])


def direction_shares(code_by_movement: np.ndarray) -> dict:
    """Per code (rows of a code x movement-class count table): shares of its transitions moving left, moving right
    and pressing UP; and the largest of each over the codes that label at least 2% of the transitions."""
    t = np.asarray(code_by_movement, dtype=np.float64)
    n = t.sum(1)
    share = {"left": t[:, 0] + t[:, 1], "right": t[:, 4] + t[:, 5], "up": t[:, 1::2].sum(1)}
    share = {k: v / np.maximum(n, 1) for k, v in share.items()}
    used = n >= 0.02 * max(n.sum(), 1)
    return {"per_code": {k: v.tolist() for k, v in share.items()},
            "best": {k: float(v[used].max()) if used.any() else 0.0 for k, v in share.items()}}


def save_world_model(lam: LatentActionModel, path: Path, data: str, paint_vel_info: bool) -> None:
    """The shipped world model with `lam` in place of its LAM (same sizes), written to `path`."""
    from genie_gym.models.world_model import WorldModel

    wm = WorldModel.load(None)
    if lam.num_actions != wm.num_actions:  # the shipped dynamics embeds its own number of actions
        print(f"--save-dir: {path.name} not written: {lam.num_actions} codes, the shipped model has {wm.num_actions}")
        return
    wm.lam.load_state_dict(lam.state_dict())
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in wm.metadata.items() if not k.startswith("action_meanings")}  # the old LAM's names
    wm.save(path, {**meta, "lam_from": "benchmarks/studies/lam_ablation.py", "lam_data": data,
                   "paint_vel_info": paint_vel_info})


def expert_nmi(lam: LatentActionModel, expert: ExpertSet | None, seq_len: int) -> dict:
    """NMI of the LAM's codes against the expert's real actions and movement classes (None without an expert)."""
    if expert is None:
        return {"expert_nmi_actions": None, "expert_nmi_movement": None}
    _, codes, acts = transitions(expert, label_expert_set(lam, expert, seq_len, progress=False))
    return {"expert_nmi_actions": nmi(codes, acts), "expert_nmi_movement": nmi(codes, movement_class(acts))}


def test_clip_indices(args: Args, test: ClipDataset) -> np.ndarray:
    return np.random.default_rng(1234).choice(len(test), min(args.test_clips, len(test)), replace=False)


def global_shift_reference(args: Args, test: ClipDataset, radius: int = 3, crop: int = 8) -> dict:
    """The `global_shift` row: best integer shift per test transition (see REFERENCES)."""
    labels, actions, shift_err, copy_err = [], [], [], []
    for i in test_clip_indices(args, test):
        f = test[int(i)].numpy().astype(np.float32) / 255
        for t in range(len(f) - 1):
            dx, dy, err, copy = best_shift(f[t], f[t + 1], radius, crop)
            labels.append((dy + radius) * (2 * radius + 1) + dx + radius)
            shift_err.append(err)
            copy_err.append(copy)
        actions.append(test.clip_actions(int(i)).numpy())
    labels_all, actions_all = np.array(labels), np.concatenate(actions)
    moves = movement_class(actions_all)
    return {"changes": {}, "train_s": 0.0, "usage": None, "perplexity": None, "histogram": [],
            "nmi_actions": nmi(labels_all, actions_all), "nmi_movement": nmi(labels_all, moves),
            "recon_mse": float(np.mean(shift_err)), "copy_last_frame_mse": float(np.mean(copy_err)),
            "warmup_train_recon_mse": None, "code_by_movement": [], "movement_accuracy": None,
            "expert_nmi_actions": None, "expert_nmi_movement": None}


def run_variant(name: str, args: Args, train: ClipDataset, test: ClipDataset, expert: ExpertSet | None) -> dict:
    if name in REFERENCES:
        return global_shift_reference(args, test)
    cfg = get_preset("small")
    cfg.lam = VariantConfig(**{**dataclasses.asdict(cfg.lam), **BASE, **VARIANTS[name]})
    seed_everything(args.seed)
    lam = VariantLAM(cfg.lam, cfg.image_size, cfg.seq_len, cfg.channels)
    supervised = name in SUPERVISED
    latents = history_latents if name.startswith("history_only") else LatentActionModel.encode_latents
    head = torch.nn.Linear(cfg.lam.code_dim, len(MOVE_NAMES))
    params = list(lam.parameters()) + (list(head.parameters()) if supervised else [])
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=1e-4)
    sched = make_scheduler(
        opt, OptimConfig(steps=args.steps, lr=args.lr, min_lr=args.lr / 10, warmup_steps=50), args.steps
    )
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    bar = tqdm(range(args.steps), desc=name, mininterval=5)
    warmup, warmup_recon = cfg.lam.continuous_warmup_steps, []
    lam.quantize = not warmup
    for step in bar:
        idx = rng.integers(0, len(train), args.batch_size)
        frames = torch.stack([train[int(i)] for i in idx]).float() / 255
        if not supervised and warmup and step == warmup:
            with torch.no_grad():
                z = torch.cat([lam.encode_latents(torch.stack([train[int(i)] for i in rng.integers(0, len(train),
                               args.batch_size)]).float() / 255).reshape(-1, cfg.lam.code_dim) for _ in range(8)])
            lam.vq.init_kmeans(z, generator=gen)
            lam.quantize = True
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
        if warmup and step < warmup:
            warmup_recon.append(out["recon_loss"].item())
        if not supervised and lam.quantize and (step + 1) % args.dead_code_every == 0:
            lam.vq.reset_dead_codes(out["z_e"].reshape(-1, cfg.lam.code_dim), gen)
        if step % 20 == 0:
            bar.set_postfix(recon=f"{out['recon_loss'].item():.5f}", ppl=f"{out['stats']['perplexity'].item():.2f}")
    train_s = time.perf_counter() - t0

    lam.eval()
    test_idx = test_clip_indices(args, test)
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
    library_design = cfg.lam.decoder_kernel > 0 and all(getattr(cfg.lam, k) == v for k, v in LEGACY_LAM_FIELDS.items())
    if args.save_dir and not supervised and library_design:
        save_world_model(lam, Path(args.save_dir) / f"{name}.pt", args.data, train.store.paint_vel_info)
    directions = direction_shares(table[: cfg.lam.num_actions])  # its per-code shares go in with 3 decimals
    return {
        "changes": VARIANTS[name],
        "train_s": round(train_s, 1),
        "usage": stats["usage"],
        "perplexity": stats["perplexity"],
        "histogram": stats["histogram"],
        "nmi_actions": nmi(codes_all, actions_all),
        "nmi_movement": nmi(codes_all, moves),
        "recon_mse": float(np.mean(recon)),
        "warmup_train_recon_mse": float(np.mean(warmup_recon[-20:])) if warmup_recon else None,
        "copy_last_frame_mse": float(np.mean(copy)),
        "code_by_movement": table.tolist(),
        "directions": {**directions, "per_code": {k: np.round(v, 3).tolist()
                                                  for k, v in directions["per_code"].items()}},
        "action_names": None if supervised else name_actions(table[: cfg.lam.num_actions]),
        "movement_accuracy": float((codes_all == moves).mean()) if supervised else None,
        **(expert_nmi(lam, expert, cfg.seq_len) if not supervised else expert_nmi(lam, None, 0)),
    }


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.3f}"


def write_report(report: dict, out: Path) -> None:
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
        "are not LAMs: the encoder trained with the true movement classes (the ceiling of what it reads). "
        "The *reference* row `global_shift` is no model: each transition labelled by the integer shift (|dx|, |dy| "
        "<= 3) that best maps frame t onto frame t+1, its MSE and the copy MSE on the central 48x48 crop.",
        "",
        "| variant | changes | perplexity | NMI (15 actions) | NMI (movement) | recon MSE | copy MSE | "
        "expert NMI (actions) | expert NMI (movement) | best code left / right / up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        label = f"{name} (*probe*)" if name in SUPERVISED else f"{name} (*reference*)" if name in REFERENCES else name
        recon = "" if name in SUPERVISED else f"{r['recon_mse']:.5f}"
        ppl = "" if name in REFERENCES else f"{r['perplexity']:.2f}"
        best = direction_shares(r["code_by_movement"])["best"] if r["code_by_movement"] else None
        shares = "" if best is None else f"{best['left']:.2f} / {best['right']:.2f} / {best['up']:.2f}"
        lines.append(
            f"| {label} | `{r['changes']}` | {ppl} | {r['nmi_actions']:.3f} | "
            f"{r['nmi_movement']:.3f} | {recon} | {r['copy_last_frame_mse']:.5f} | "
            f"{_fmt(r.get('expert_nmi_actions'))} | {_fmt(r.get('expert_nmi_movement'))} | {shares} |"
        )
    tables = [r["code_by_movement"] for r in results.values() if r["code_by_movement"]]
    base = direction_shares(np.asarray(tables[0]).sum(0, keepdims=True))["best"] if tables else None
    lines += ["", "Best code left / right / up: over the codes that label >= 2% of the test transitions, the largest "
              "share of a code's transitions that moved left, moved right, pressed UP (the playable-codes targets "
              "are 0.6 / 0.6 / 0.8)."
              + ("" if base is None else f" The test transitions as a whole: {base['left']:.2f} / "
                 f"{base['right']:.2f} / {base['up']:.2f}, what a code that fires at random scores.")]
    write_markdown(out.with_suffix(".md"), lines, echo=False)


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    if args.report_only:
        write_report(json.loads(Path(args.out).with_suffix(".json").read_text()), Path(args.out))
        return
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    seq_len = get_preset("small").seq_len
    train, test = ClipDataset(args.data, "train", seq_len), ClipDataset(args.data, "test", seq_len)
    bar = [v for v in args.variants if VARIANTS[v].get("bar_loss_weight")]
    if bar and not train.store.paint_vel_info:
        raise SystemExit(f"{', '.join(bar)} weigh Procgen's velocity bar, which {args.data} does not have; record "
                         "data with `genie-gym data --paint-vel-info` and pass it with --data")
    command = "python benchmarks/studies/lam_ablation.py " + " ".join(sys.argv[1:])
    expert = None
    if args.expert_episodes > 0:
        from agents.collect import make_collect_policy, run_policy_episodes

        expert = run_policy_episodes(make_collect_policy("expert", None), args.expert_episodes, args.seed,
                                     paint_vel_info=train.store.paint_vel_info)
    results = {}
    for name in args.variants:
        results[name] = r = {**run_variant(name, args, train, test, expert), "command": command}
        print(
            f"{name}: perplexity {_fmt(r['perplexity'])}  NMI actions {r['nmi_actions']:.3f}  "
            f"NMI movement {r['nmi_movement']:.3f}  recon {r['recon_mse']:.5f} (copy {r['copy_last_frame_mse']:.5f})"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Variants measured earlier with the same settings are kept, so the table can be built up run by run.
    same = {k: v for k, v in dataclasses.asdict(args).items()
            if k not in ("variants", "out", "threads", "report_only", "expert_episodes", "save_dir")}
    if out.with_suffix(".json").is_file():
        old = json.loads(out.with_suffix(".json").read_text())
        if {k: v for k, v in old.get("args", {}).items() if k in same} == same:
            kept = {n: {"command": old.get("command"), **r} for n, r in old["variants"].items() if n not in results}
            results = {**kept, **results}
    report = {"args": dataclasses.asdict(args), "movement_classes": MOVE_NAMES, "variants": results}
    atomic_write_json(out.with_suffix(".json"), report)
    write_report(report, out)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
