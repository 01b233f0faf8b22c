"""Model and training configuration, and the three presets.

`tiny` runs in seconds (tests), `small` is the CPU model we ship, `coinrun` holds the paper's case-study sizes
(Genie, App. and docs/paper.md section 1). Every number that the paper fixes is a default here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class TokenizerConfig:
    """ST-ViViT tokenizer over 64x64 frames (defaults: the paper's patch-4 VQ-VAE).

    `stem="patch"` embeds pixel patches linearly and decodes them with a linear head (the paper's ST-ViViT);
    `stem="conv"` is the hybrid: a convolutional encoder down to the (image/patch_size)^2 grid, the same causal ST
    transformer on that grid, and a convolutional decoder with a pixel-shuffle head. `quantizer="fsq"` replaces the
    VQ codebook by finite scalar quantisation (levels `fsq_levels`, code_dim = len(fsq_levels)); `groups` > 1
    gives each grid cell that many tokens (a frame has grid^2 x groups tokens; see models/tokenizer.py).
    """

    patch_size: int = 4
    codebook_size: int = 1024
    code_dim: int = 32
    d_model: int = 512
    num_layers: int = 8  # encoder and decoder each
    num_heads: int = 8
    qk_norm: bool = True
    commitment_weight: float = 0.25
    stem: str = "patch"  # "patch" (linear patches, the paper) or "conv" (convolutional encoder and decoder)
    conv_channels: tuple[int, ...] = (64, 128)  # conv stem widths, one per stride-2 stage before the grid
    quantizer: str = "vq"  # "vq" (codebook_size learned codes of code_dim) or "fsq" (fixed grid of fsq_levels)
    fsq_levels: tuple[int, ...] = (8, 5, 5, 5)
    groups: int = 1  # tokens per grid cell
    mse_weight: float = 1.0  # reconstruction loss = mse * MSE + l1 * L1 + grad * L1 of the image gradients
    l1_weight: float = 0.0
    grad_weight: float = 0.0


@dataclass
class LAMConfig:
    """Latent action model: pixels in, |A| codes out (models/lam.py). One design, the one that won
    benchmarks/results/lam_ablation.md; its variants live in that benchmark, not here."""

    patch_size: int = 16
    num_actions: int = 8
    code_dim: int = 32
    d_model: int = 512
    num_layers: int = 8  # encoder and decoder each
    num_heads: int = 8
    qk_norm: bool = True
    commitment_weight: float = 0.25
    decoder_kernel: int = 5  # odd k: each patch of frame t+1 = frame t filtered by a predicted k x k kernel
    continuous_warmup_steps: int = 500  # un-quantised latents this many steps, then k-means codebook (see lam.py)


# LAM fields of model files and checkpoints written before v1.1, when LAMConfig carried the ablation's switches:
# the value each must have to be the one design above (anything else was a variant, now only in the benchmark).
LEGACY_LAM_FIELDS = {"vq_normalize": False, "usage_entropy_weight": 0.0, "predict_residual": False,
                     "latent_pool": "flatten", "decoder_history": False}


def _migrate_lam(d: dict[str, Any]) -> dict[str, Any]:
    """Drop the legacy LAM fields of an older file; a file whose LAM was another variant is a clear error."""
    d = dict(d)
    for key, value in LEGACY_LAM_FIELDS.items():
        old = d.pop(key, value)
        if old != value:
            raise ValueError(f"this file's LAM is an ablation variant ({key}={old!r} is not the shipped "
                             f"design's {value!r}), which the library no longer builds; retrain it with the "
                             "current design (genie-gym train) or study it with benchmarks/studies/lam_ablation.py")
    if d.get("decoder_kernel", 1) == 0:
        raise ValueError("this file's LAM decodes with a pixel head (decoder_kernel=0), an ablation variant the "
                         "library no longer builds; retrain it with the current design (genie-gym train)")
    return d


@dataclass
class DynamicsConfig:
    """MaskGIT dynamics over tokenizer tokens, conditioned on latent actions (added embeddings)."""

    d_model: int = 512
    num_layers: int = 12
    num_heads: int = 8
    qk_norm: bool = True
    mask_rate_min: float = 0.5
    mask_rate_max: float = 1.0
    per_frame_mask: bool = False  # False: one rate per clip (the paper); True: an independent rate per frame
    context_noise: float = 0.0  # > 0: unmasked tokens replaced by random codes at a per-frame rate ~ U(0, this)


@dataclass
class HeadsConfig:
    """Reward and episode-end heads, a small CNN on the last `frames` frames (models/heads.py), trained after the two
    unsupervised phases (`genie-gym train --phase heads`); a model without them has `enabled=False`."""

    enabled: bool = False
    frames: int = 2  # frames t-K+1..t the heads read (2: the frame and its motion)
    width: int = 32  # channels of the first convolution (then 2x, 2x, 4x)
    hidden: int = 128  # the MLP after the convolutions (v1.6's heads: 1.27M parameters at 64x64)
    full_res: bool = True  # a first 3x3 convolution at the frames' full resolution before the strided ones (v1.6:
    # 6-7 more points of recall for episode ends; files written before the option, as v1.5's, load with False)
    reward_value: float = 10.0  # the reward of a reward event (the mean non-zero reward of the training data)
    threshold: float = 0.5  # an event happens when its predicted probability is at least this (deterministic)
    horizon: int = 1  # frames before an event that carry its label: 1 = only the frame its transition leaves;
    # k > 1 = "within k transitions of it" (Genie-v0 then ends an episode up to k - 1 frames before the real game)
    reward_ends_episode: bool = False  # 99% of the training data's rewards ended their episode (CoinRun's coin): a
    # predicted reward then ends the episode too, so an agent cannot collect it again and again near the coin


@dataclass
class OptimConfig:
    """AdamW with linear warm-up and cosine decay."""

    steps: int = 300_000
    batch_size: int = 48
    lr: float = 3e-4
    min_lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.9)
    weight_decay: float = 1e-4
    warmup_steps: int = 10_000
    grad_clip: float = 1.0


@dataclass
class SamplingConfig:
    """MaskGIT inference settings (Genie: 25 steps, temperature 1.0 for CoinRun, 16 frames of context)."""

    maskgit_steps: int = 25
    temperature: float = 1.0
    context_frames: int = 16
    schedule: str = "frame"  # "frame": MaskGIT's confidence ranking over the whole frame (the paper); "cell": each
    # step decides a share of every grid cell's tokens (models/maskgit.py; needs maskgit_steps <= tokens per cell)


@dataclass
class GenieConfig:
    """Everything that defines a world model and how it is trained."""

    preset: str = "coinrun"
    image_size: int = 64
    channels: int = 3
    seq_len: int = 16  # frames per training clip
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    lam: LAMConfig = field(default_factory=LAMConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    tokenizer_optim: OptimConfig = field(default_factory=OptimConfig)
    dynamics_optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            steps=200_000, batch_size=36, lr=3e-5, min_lr=3e-6, warmup_steps=5_000
        )
    )
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GenieConfig:
        """Inverse of `to_dict`; unknown keys are an error so that a bad config never loads silently."""
        d = dict(d)
        sub = {
            "tokenizer": TokenizerConfig,
            "lam": LAMConfig,
            "dynamics": DynamicsConfig,
            "tokenizer_optim": OptimConfig,
            "dynamics_optim": OptimConfig,
            "sampling": SamplingConfig,
            "heads": HeadsConfig,
        }
        kwargs: dict[str, Any] = {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}; expected a subset of {sorted(known)}")
        for k, v in d.items():
            if k in sub and isinstance(v, dict):
                if k == "lam":
                    v = _migrate_lam(v)
                if k == "heads":  # heads written before `full_res` existed have the stride-2 first layer
                    v = {"full_res": False, **v}
                    if v.pop("crop", 0):  # files of sessions 23-24 record the removed experiment's `crop`: 0 is none
                        raise ValueError("these heads have a branch on the frames' centre (heads.crop), an "
                                         "experiment the library no longer builds (WorldModel.load reads such a "
                                         "file without its heads); retrain them with `genie-gym train --phase "
                                         "heads --model FILE`")
                sub_known = {f.name for f in dataclasses.fields(sub[k])}
                bad = set(v) - sub_known
                if bad:
                    raise ValueError(f"unknown keys {sorted(bad)} in config section '{k}'")
                v = {kk: tuple(vv) if isinstance(vv, list) else vv for kk, vv in v.items()}
                kwargs[k] = sub[k](**v)
            else:
                kwargs[k] = v
        return cls(**kwargs)

    @property
    def tokens_per_frame(self) -> int:
        return (self.image_size // self.tokenizer.patch_size) ** 2 * self.tokenizer.groups


def _tiny() -> GenieConfig:
    return GenieConfig(
        preset="tiny",
        seq_len=4,
        tokenizer=TokenizerConfig(patch_size=8, codebook_size=64, code_dim=3, d_model=32, num_layers=1,
                                  num_heads=2, stem="conv", conv_channels=(8, 16), quantizer="fsq",
                                  fsq_levels=(4, 4, 4), groups=2, l1_weight=1.0),
        lam=LAMConfig(patch_size=16, num_actions=8, code_dim=16, d_model=32, num_layers=1, num_heads=2,
                      continuous_warmup_steps=10),
        dynamics=DynamicsConfig(d_model=32, num_layers=1, num_heads=2, mask_rate_min=0.0, per_frame_mask=True,
                                context_noise=0.1),
        tokenizer_optim=OptimConfig(steps=40, batch_size=4, lr=3e-3, min_lr=3e-4, warmup_steps=5),
        dynamics_optim=OptimConfig(steps=40, batch_size=4, lr=3e-3, min_lr=3e-4, warmup_steps=5),
        sampling=SamplingConfig(maskgit_steps=4, temperature=1.0, context_frames=4),
        heads=HeadsConfig(width=8, hidden=64),
    )


def _small() -> GenieConfig:
    # The model we ship, sized to train on 2 CPU cores and to play at >= 15 frames/s there. Tokenizer: the hybrid
    # ST-ViViT that won benchmarks/results/tokenizer_bakeoff.md (conv encoder/decoder around a causal ST transformer
    # on an 8x8 grid, FSQ [8, 5, 5, 5] with 4 tokens per cell: 2,551 bits a frame; MSE + L1 + edge loss). The
    # dynamics runs over the 64 grid positions (4 tokens each), so its cost per frame is that of a 64-token model.
    # `coinrun` keeps the paper's sizes (patch-4 ST-ViViT, VQ) for GPUs.
    return GenieConfig(
        preset="small",
        seq_len=8,
        tokenizer=TokenizerConfig(patch_size=8, codebook_size=1000, code_dim=4, d_model=128, num_layers=2,
                                  num_heads=4, stem="conv", conv_channels=(64, 128), quantizer="fsq",
                                  fsq_levels=(8, 5, 5, 5), groups=4, mse_weight=1.0, l1_weight=1.0, grad_weight=1.0),
        # LAM: the library's one design (raw VQ on flattened features, a shift-kernel decoder without history, 500
        # un-quantised warm-up steps then k-means codes), the variant of benchmarks/lam_ablation.md whose codes
        # follow the movement.
        lam=LAMConfig(patch_size=16, num_actions=8, code_dim=32, d_model=128, num_layers=4, num_heads=4),
        # Per-frame mask rates U(0, 1) and up to 10% of context tokens replaced by random codes: the model learns to
        # predict a frame from a clean (or slightly wrong) past, as it must at inference (models/dynamics.py;
        # measured against the paper's per-clip U(0.5, 1) in benchmarks/results/dynamics_bakeoff.md).
        dynamics=DynamicsConfig(d_model=192, num_layers=4, num_heads=6, mask_rate_min=0.0, per_frame_mask=True,
                                context_noise=0.1),
        tokenizer_optim=OptimConfig(steps=3000, batch_size=8, lr=1e-3, min_lr=1e-4, warmup_steps=200),
        dynamics_optim=OptimConfig(steps=3600, batch_size=8, lr=6e-4, min_lr=6e-5, warmup_steps=200),
        # 1 MaskGIT step, argmax: benchmarks/results/env_speed.md's fastest setting within 0.3 dB rollout PSNR and
        # 0.2 dB delta-PSNR of the paper's 25 steps (v1.2: 0.44 dB above them) at 10x their speed; argmax won
        # benchmarks/results/sampling_sweep.md (temperature=1.0, maskgit_steps=25 stay one keyword away).
        sampling=SamplingConfig(maskgit_steps=1, temperature=0.0, context_frames=8),
    )


def _coinrun() -> GenieConfig:
    return GenieConfig(preset="coinrun")


PRESETS = {"tiny": _tiny, "small": _small, "coinrun": _coinrun}
Preset = Literal["tiny", "small", "coinrun"]


def apply_overrides(cfg: GenieConfig, overrides: list[str] | tuple[str, ...]) -> GenieConfig:
    """A copy of `cfg` with `SECTION.FIELD=VALUE` (or top-level `FIELD=VALUE`) overrides, e.g.
    `dynamics.context_noise=0.05`, `tokenizer.fsq_levels=8,5,5,5`; values are parsed as the field's current type.
    An unknown field or an unparsable value is a ValueError naming the fields that exist."""
    d = cfg.to_dict()
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"config override {item!r} is not KEY=VALUE, e.g. dynamics.context_noise=0.05")
        *section, name = key.strip().split(".")
        target = d
        for part in section:
            if not isinstance(target.get(part), dict):
                sections = [k for k, v in d.items() if isinstance(v, dict)]
                raise ValueError(f"config override {item!r}: no section {part!r}; sections: {sections}")
            target = target[part]
        if name not in target or isinstance(target[name], dict):
            fields = [k for k, v in target.items() if not isinstance(v, dict)]
            raise ValueError(f"config override {item!r}: unknown field {key!r}; fields here: {fields}")
        target[name] = _parse_like(target[name], text.strip(), item)
    return GenieConfig.from_dict(d)


def _parse_like(current: Any, text: str, item: str) -> Any:
    """`text` as a value of `current`'s type (bool, int, float, str, tuple/list of numbers, or None -> number)."""
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        if isinstance(current, (list, tuple)):
            kind = type(current[0]) if current else float
            return tuple(kind(v) for v in text.replace("(", "").replace(")", "").split(",") if v.strip())
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if current is None:
            return None if text.lower() == "none" else float(text) if "." in text or "e" in text else int(text)
        return text
    except ValueError:
        raise ValueError(f"config override {item!r}: {text!r} is not a valid {type(current).__name__}") from None


def get_preset(name: str) -> GenieConfig:
    """A fresh config for a named preset; an unknown name says which exist."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}'; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()
