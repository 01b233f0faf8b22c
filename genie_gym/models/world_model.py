"""The world model as one object and one file: tokenizer + latent action model + dynamics, config and metadata.

File format (format version 2), written atomically with `atomic_torch_save`:

    {"format": "genie-gym/world-model", "format_version": 2, "genie_gym_version": "...",
     "payload_sha256": "<hex sha256 of payload>", "payload": <uint8 tensor: the bytes of torch.save({config,
     state_dict, metadata, dtype})>}

Version 1 stored the payload as a Python `bytes` object; torch.save's pickle protocol 2 writes those as a latin-1
string in UTF-8, which inflates every byte >= 0x80 to two (a 15 MB payload took 22 MB). Version 2 keeps the bytes in
a uint8 tensor, stored raw. Both versions load.

The checksum covers the whole payload, so a flipped byte anywhere in the weights is caught before any weight is
used: a damaged file gives a `CheckpointError` that says how to repair it, never garbage frames. Weights may be
stored in bf16/fp16 (`dtype=`) to keep the shipped file small; they are loaded back into float32 modules.
Everything is read with `torch.load(weights_only=True)`, so loading a file never runs pickled code.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from genie_gym.config import GenieConfig
from genie_gym.errors import CheckpointError
from genie_gym.models.dynamics import DynamicsModel
from genie_gym.models.heads import EventHeads
from genie_gym.models.lam import LatentActionModel
from genie_gym.models.tokenizer import VideoTokenizer
from genie_gym.utils.io import atomic_torch_save, check_file_header, sha256_bytes

FORMAT_NAME = "genie-gym/world-model"
FORMAT_VERSION = 2
# Temporal window of the ST transformers' full `forward`. It holds no parameters (time is RoPE), so it only has to
# be at least the longest clip or context ever run through `forward`; the env's context window is set separately.
MAX_FRAMES = 256

_REINSTALL = (
    "reinstall the package's model with `pip install --force-reinstall genie-gym` (from a source checkout: "
    "`git checkout genie_gym/assets`), or pass checkpoint=PATH to use another world-model file"
)


def _default_path() -> Path:
    from importlib.resources import files

    return Path(str(files("genie_gym") / "assets" / "world_model.pt"))


def max_frames_of(config: GenieConfig) -> int:
    return max(MAX_FRAMES, config.seq_len, config.sampling.context_frames)


def build_tokenizer(config: GenieConfig) -> VideoTokenizer:
    return VideoTokenizer(config.tokenizer, config.image_size, max_frames_of(config), config.channels)


def build_lam(config: GenieConfig) -> LatentActionModel:
    return LatentActionModel(config.lam, config.image_size, max_frames_of(config), config.channels)


def build_dynamics(config: GenieConfig) -> DynamicsModel:
    return DynamicsModel(
        config.dynamics,
        num_tokens_V=config.tokenizer.codebook_size,
        tokens_per_frame_N=config.tokens_per_frame,
        num_actions_A=config.lam.num_actions,
        max_frames=max_frames_of(config),
        groups=config.tokenizer.groups,
    )


def build_heads(config: GenieConfig) -> EventHeads | None:
    return EventHeads(config.heads, config.image_size, config.channels) if config.heads.enabled else None



def is_world_model_file(path: str | os.PathLike) -> bool:
    """Whether `path` holds a genie-gym world-model file (its header, read by mmap without the weights), as
    opposed to a training checkpoint or anything unreadable (whose own loader then names the problem)."""
    try:
        header = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # damaged, or a training checkpoint (it holds RNG states weights_only refuses)
        return False
    return isinstance(header, dict) and header.get("format") == FORMAT_NAME

class WorldModel(nn.Module):
    """Tokenizer, LAM and dynamics of one Genie world model (and, when trained, the reward / episode-end heads).
    At play time the LAM is unused (user actions).

    The three parts are built by `build_tokenizer`, `build_lam` and `build_dynamics`, which the trainer uses too, so a
    training checkpoint's state dicts drop straight into a world model."""

    def __init__(self, config: GenieConfig):
        super().__init__()
        self.config = config
        self.tokenizer = build_tokenizer(config)
        self.lam = build_lam(config)
        self.dynamics = build_dynamics(config)
        self.heads = build_heads(config)  # reward / episode-end heads, when trained (`--phase heads`)
        self.metadata: dict[str, Any] = {}
        self.payload_sha256: str | None = None  # set by `load`: identifies the exact weights in use
        self.file_dtype = "float32"  # the dtype its file stored (`load` sets it): what a re-save keeps

    @property
    def num_actions(self) -> int:
        return self.config.lam.num_actions

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @staticmethod
    def default_path() -> Path:
        """The world model shipped inside the package (`genie_gym/assets/world_model.pt`)."""
        return _default_path()

    # --- saving -------------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, metadata: dict[str, Any] | None = None,
             dtype: torch.dtype | None = None) -> str:
        """Write one self-verifying file atomically; returns the payload's sha256.

        `metadata` (JSON-serialisable: data manifest hash, steps, metrics, ...) is stored beside the weights and
        comes back as `.metadata`. `dtype=torch.bfloat16` / `torch.float16` halves the file (floating tensors only).
        """
        metadata = dict(self.metadata if metadata is None else metadata)
        try:
            json.dumps(metadata)
        except TypeError as e:
            raise ValueError(f"world-model metadata must be JSON-serialisable (str, int, float, bool, None, "
                             f"lists and dicts of them): {e}") from e
        if dtype is not None and dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype must be torch.float32, torch.float16 or torch.bfloat16, got {dtype}")
        state = {
            k: (v.detach().to("cpu", dtype) if dtype is not None and v.is_floating_point() else v.detach().cpu())
            for k, v in self.state_dict().items()
        }
        payload = {
            "config": self.config.to_dict(),
            "state_dict": state,
            "metadata": metadata,
            "dtype": str(dtype or torch.float32).replace("torch.", ""),
        }
        buf = io.BytesIO()
        torch.save(payload, buf)
        payload_bytes = buf.getvalue()
        digest = sha256_bytes(payload_bytes)
        from genie_gym import __version__

        atomic_torch_save(
            {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "genie_gym_version": __version__,
                "payload_sha256": digest,
                "payload": torch.frombuffer(bytearray(payload_bytes), dtype=torch.uint8),
            },
            path,
        )
        return digest

    # --- loading ------------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike | None = None, map_location: str | torch.device = "cpu") -> WorldModel:
        """Load and verify a world-model file (default: the shipped one). Any problem is a `CheckpointError`."""
        path = Path(path) if path is not None else cls.default_path()
        shipped = path.resolve() == cls.default_path().resolve()
        fix = _REINSTALL if shipped else "re-export it with WorldModel.save() or pass another checkpoint"
        what = "the world model shipped with genie-gym" if shipped else "world-model file"
        if not path.exists():
            raise CheckpointError(f"{what} {str(path)!r} does not exist; {fix}")
        if path.is_dir():
            raise CheckpointError(f"{str(path)!r} is a directory, not a world-model file; pass the .pt file")
        try:
            outer = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated zip, bad pickle, not a torch file at all
            raise CheckpointError(f"{what} {str(path)!r} is truncated or corrupt ({type(e).__name__}: {e}); "
                                  f"{fix}") from e
        check_file_header(
            outer, repr(str(path)), "format", FORMAT_NAME, FORMAT_VERSION,
            f"{str(path)!r} is not a genie-gym world-model file (no '{FORMAT_NAME}' header); a training checkpoint "
            "must be exported first (WorldModel.save), and plain state dicts are not accepted",
            f"it was written by genie-gym {outer.get('genie_gym_version') if isinstance(outer, dict) else '?'}; "
            "upgrade with `pip install --upgrade genie-gym`")
        payload_bytes = outer.get("payload")
        if isinstance(payload_bytes, torch.Tensor) and payload_bytes.dtype == torch.uint8:  # format 2
            payload_bytes = payload_bytes.numpy().tobytes()
        if not isinstance(payload_bytes, bytes) or sha256_bytes(payload_bytes) != outer.get("payload_sha256"):
            raise CheckpointError(f"{what} {str(path)!r} is corrupt (sha256 of its weights does not match the "
                                  f"checksum stored in it); {fix}")
        try:
            payload = torch.load(io.BytesIO(payload_bytes), map_location="cpu", weights_only=True)
            heads_d = payload["config"].get("heads") if isinstance(payload["config"], dict) else None
            centre = isinstance(heads_d, dict) and bool(heads_d.get("crop", 0))
            if centre:  # heads of the removed centre-branch experiment (sessions 23-24): the rest of the file loads
                heads_d = {k: v for k, v in heads_d.items() if k != "crop"} | {"enabled": False}
                payload["config"] = {**payload["config"], "heads": heads_d}
            config = GenieConfig.from_dict(payload["config"])
        except Exception as e:
            raise CheckpointError(f"{str(path)!r} holds a config this genie-gym cannot read ({e}); it was "
                                  f"written by genie-gym {outer.get('genie_gym_version')}: use that version or "
                                  "re-export the model") from e
        state = payload["state_dict"]
        earlier = config.heads.enabled and "heads.query" in state  # the first heads design, on the dynamics features
        if earlier or centre:
            design = "a branch on the frames' centre (heads.crop), an experiment" if centre else \
                "an earlier design (on the dynamics' features), which"
            warnings.warn(f"{str(path)!r} holds event heads of {design} this genie-gym no longer builds; loading it "
                          "without heads: retrain them with `genie-gym train --phase heads --model FILE`",
                          UserWarning, stacklevel=2)
            config = dataclasses.replace(config, heads=dataclasses.replace(config.heads, enabled=False))
            state = {k: v for k, v in state.items() if not k.startswith("heads.")}
            payload["metadata"] = {k: v for k, v in (payload.get("metadata") or {}).items() if k != "heads"}
        try:
            model = cls(config)
            model.load_state_dict(state, strict=True)
        except Exception as e:  # missing/unexpected keys, shape mismatches
            raise CheckpointError(f"{str(path)!r} has weights incompatible with its config / this genie-gym's "
                                  f"model code ({str(e).splitlines()[0][:300]}); re-export the model with this "
                                  "version, or use the genie-gym version that wrote it") from e
        model.metadata = dict(payload.get("metadata") or {})
        model.file_dtype = str(payload.get("dtype", "float32"))
        model.payload_sha256 = str(outer["payload_sha256"])
        model.eval()
        return model.to(map_location)
