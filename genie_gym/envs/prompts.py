"""Prompt conversion: anything a user may start a world from -> one uint8 (64, 64, 3) RGB frame.

Accepted prompts and how they are converted (documented in the README and `GenieEnv.reset`):

- a path (``str`` / ``os.PathLike``) to an image file PIL can read (PNG, JPEG, GIF: first frame, ...);
- a Procgen spec string ``"procgen:GAME:level=N"`` (optionally ``":mode=easy"``), the form
  ``info["prompt_source"]`` reports, so a world can be restarted from the same level;
- an ``np.ndarray`` of dtype uint8: ``H x W`` (grayscale), ``H x W x 1``, ``H x W x 3`` (RGB) or ``H x W x 4`` (RGBA);
- a ``PIL.Image.Image`` in any mode.

Default prompts (no prompt given at reset) are Procgen start frames, or, with `ReplayPrompts`, frames of a recorded
dataset (``prompt_data``).

Alpha is **composited on white** (a transparent sketch background becomes paper-white, not black). Images that
are not already 64x64 are **stretched** to 64x64 with PIL's bicubic filter, which widens its support when
shrinking and so averages the source area (antialiased, like an area filter); the aspect ratio is not kept, so
crop first if it matters. A uint8 64x64 RGB array is passed through bit-exactly.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from genie_gym.envs.procgen_prompt import procgen_source, procgen_start_frame
from genie_gym.errors import ConfigError, DatasetError, GenieError

PromptLike = str | os.PathLike | np.ndarray | Image.Image

FRAME_SIZE = 64


class PromptError(GenieError, ValueError):
    """A prompt could not be turned into a start frame (missing file, not an image, wrong rank or dtype)."""


def _composite_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparency is composited on white."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _resize(img: Image.Image, size: int) -> np.ndarray:
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.uint8).copy()


def array_to_frame(array: np.ndarray, size: int = FRAME_SIZE) -> np.ndarray:
    """A uint8 HxW / HxWx{1,3,4} array -> uint8 (size, size, 3); anything else is a `PromptError`."""
    if not isinstance(array, np.ndarray):
        raise PromptError(f"expected an np.ndarray prompt, got {type(array).__name__}")
    if array.dtype != np.uint8:
        hint = (
            "; scale floats in [0, 1] with (x * 255).round().astype(np.uint8)"
            if np.issubdtype(array.dtype, np.floating) else "; convert with x.astype(np.uint8)"
        )
        raise PromptError(f"prompt array must have dtype uint8 (0..255), got {array.dtype}{hint}")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise PromptError(
            f"prompt array must be H x W (grayscale), H x W x 3 (RGB) or H x W x 4 (RGBA), got shape "
            f"{array.shape}; for a batch or a video pass one frame, e.g. x[0]"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise PromptError(f"prompt array is empty (shape {array.shape})")
    if array.shape == (size, size, 3):
        return np.ascontiguousarray(array).copy()
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[array.ndim if array.ndim == 2 else array.shape[-1]]
    img = Image.fromarray(np.ascontiguousarray(array), mode=mode)
    return _resize(_composite_rgb(img), size)


def image_to_frame(img: Image.Image, size: int = FRAME_SIZE) -> np.ndarray:
    """A PIL image of any mode and size -> uint8 (size, size, 3)."""
    return _resize(_composite_rgb(img), size)


def _parse_procgen(spec: str) -> tuple[str, int, str]:
    """"procgen:coinrun:level=12[:mode=easy]" -> ("coinrun", 12, "easy")."""
    parts = spec.split(":")
    game, level, mode = "coinrun", 0, "hard"
    try:
        if len(parts) >= 2 and parts[1]:
            game = parts[1]
        for p in parts[2:]:
            key, _, value = p.partition("=")
            if key == "level":
                level = int(value)
            elif key == "mode":
                mode = value
            else:
                raise ValueError(p)
    except ValueError as e:
        raise PromptError(
            f"cannot parse Procgen prompt {spec!r}; expected 'procgen:GAME:level=N' (optionally ':mode=easy')"
        ) from e
    return game, level, mode


def path_to_frame(path: str | os.PathLike, size: int = FRAME_SIZE) -> np.ndarray:
    """Read an image file -> uint8 (size, size, 3); missing, unreadable or non-image files are `PromptError`s."""
    p = Path(path).expanduser()
    if not p.exists():
        raise PromptError(f"prompt file {str(p)!r} does not exist; pass the path of an image (PNG, JPEG, ...)")
    if p.is_dir():
        raise PromptError(f"prompt path {str(p)!r} is a directory; pass the path of one image file")
    try:
        with Image.open(p) as img:
            img.seek(0)
            img.load()
            return image_to_frame(img, size)
    except UnidentifiedImageError as e:
        raise PromptError(f"prompt file {str(p)!r} is not an image PIL can read; use a PNG or JPEG file") from e
    except OSError as e:  # permissions, truncated image data
        raise PromptError(f"cannot read prompt file {str(p)!r} ({e}); check that it is readable and whole") from e


def load_prompt(prompt: PromptLike, size: int = FRAME_SIZE) -> tuple[np.ndarray, str]:
    """Convert a prompt to a uint8 (size, size, 3) frame and say where it came from (for `info`)."""
    if isinstance(prompt, np.ndarray):
        return array_to_frame(prompt, size), "array"
    if isinstance(prompt, Image.Image):
        return image_to_frame(prompt, size), "pil"
    if isinstance(prompt, str) and prompt.startswith("procgen:"):
        game, level, mode = _parse_procgen(prompt)
        try:
            frame = procgen_start_frame(game, level, mode)
        except ValueError as e:
            raise PromptError(str(e)) from e
        return _resize(Image.fromarray(frame), size), procgen_source(game, level, mode)
    if isinstance(prompt, (str, os.PathLike)):
        return path_to_frame(prompt, size), f"file:{os.fspath(prompt)}"
    raise PromptError(
        f"unsupported prompt type {type(prompt).__name__}; pass a path, a uint8 np.ndarray, a PIL image "
        "or 'procgen:GAME:level=N'"
    )


def sketch_path() -> Path:
    """The hand-drawn-looking platformer sketch shipped in `genie_gym/assets/sketch.png`."""
    from importlib.resources import files

    return Path(str(files("genie_gym") / "assets" / "sketch.png"))


def draw_sketch(size: int = 256, seed: int = 7) -> Image.Image:
    """Draw the shipped sketch: a platformer scene in wobbly pencil strokes (how `assets/sketch.png` was made).

    Ground line, three platforms, a coin and a stick figure on paper-white, each stroke drawn twice with jitter so
    it looks hand-drawn. Deterministic in `seed`.
    """
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (size, size), (250, 248, 240))
    draw = ImageDraw.Draw(img)
    s = size / 256.0

    def stroke(points: list[tuple[float, float]], color: tuple[int, int, int], width: float = 3.0) -> None:
        for _ in range(2):  # two passes with jitter, like a pencil going over a line
            pts: list[tuple[float, float]] = []
            for (x0, y0), (x1, y1) in zip(points[:-1], points[1:], strict=True):
                n = max(2, int(np.hypot(x1 - x0, y1 - y0) / 12))
                for t in np.linspace(0.0, 1.0, n, endpoint=False):
                    pts.append((x0 + t * (x1 - x0) + rng.normal(0, 1.2), y0 + t * (y1 - y0) + rng.normal(0, 1.2)))
            pts.append((points[-1][0] + rng.normal(0, 1.0), points[-1][1] + rng.normal(0, 1.0)))
            draw.line([(x * s, y * s) for x, y in pts], fill=color, width=max(1, round(width * s)), joint="curve")

    pencil, green, brown, gold = (40, 40, 45), (40, 120, 50), (120, 80, 40), (210, 160, 20)
    stroke([(0, 214), (256, 210)], green, 4)  # ground
    for x in range(8, 256, 22):  # grass hatching under the ground line
        stroke([(x, 216), (x - 6, 230)], green, 2)
    for x0, x1, y in ((95, 150, 165), (140, 205, 120), (180, 245, 75)):  # platforms: boxes with a top edge
        stroke([(x0, y), (x1, y), (x1, y + 12), (x0, y + 12), (x0, y)], brown, 3)
    cx, cy, r = 215, 50, 8  # a coin above the highest platform
    ring = [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 14)]
    stroke(ring, gold, 3)
    hx, hy = 42, 171  # stick figure standing on the ground
    head = [(hx + 7 * np.cos(a), hy + 7 * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 12)]
    stroke(head, pencil, 3)
    stroke([(hx, hy + 7), (hx, hy + 24)], pencil, 3)  # body
    stroke([(hx - 10, hy + 14), (hx, hy + 11), (hx + 10, hy + 16)], pencil, 3)  # arms
    stroke([(hx - 8, hy + 40), (hx, hy + 24), (hx + 8, hy + 40)], pencil, 3)  # legs
    return img


class ReplayPrompts:
    """Default prompts drawn from the train split of a recorded dataset instead of Procgen start frames: imagination
    from replayed states, as IRIS and DreamerV3 start it. Every frame of the split is equally likely; with `tail`,
    only the last `tail` frames of the episodes that ended on the reward (a reverse curriculum: worlds start near
    the goal, so that a sparse learned reward is reached at all). The held-out splits are never read."""

    def __init__(self, root: str | os.PathLike, tail: int | None, size: int, paint_vel_info: bool) -> None:
        from genie_gym.data.dataset import EpisodeStore

        if tail is not None and (isinstance(tail, bool) or not isinstance(tail, (int, np.integer)) or tail < 1):
            raise ConfigError(f"prompt_data_tail must be a positive int (frames before an episode's end) or None, "
                              f"got {tail!r}")
        try:
            self.store = EpisodeStore(root, "train")
        except DatasetError as e:
            raise ConfigError(f"prompt_data: {e}") from e
        if self.store.paint_vel_info != paint_vel_info:
            raise ConfigError(f"prompt_data {root} was recorded {'with' if self.store.paint_vel_info else 'without'} "
                              f"Procgen's velocity bar but the world model was trained "
                              f"{'with' if paint_vel_info else 'without'} it; use a dataset of the model's kind")
        self.root = os.fspath(root)
        lengths_E = self.store.episode_lengths
        self.episodes_E = np.flatnonzero(self.store.solved) if tail else np.flatnonzero(lengths_E > 0)
        if len(self.episodes_E) == 0:
            raise ConfigError(f"prompt_data {root} has no {'episode that ended on the reward' if tail else 'frame'} "
                              "in its train split; record more data" + (" or drop prompt_data_tail" if tail else ""))
        lengths_E = lengths_E[self.episodes_E]
        self.first_E = np.maximum(lengths_E - tail, 0) if tail else np.zeros_like(lengths_E)
        self.cum_E = np.cumsum(lengths_E - self.first_E)
        shape = self.store.frames(int(self.episodes_E[0]), 0, 1).shape[1:]
        if shape != (size, size, 3):
            raise ConfigError(f"prompt_data {root} holds {shape} frames but the world model draws ({size}, {size}, "
                              "3); record the dataset at the model's image size")

    def __len__(self) -> int:
        return int(self.cum_E[-1])

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """One frame, uniformly over the candidates, and its source (`info["prompt_source"]`)."""
        j = int(rng.integers(len(self)))
        e = int(np.searchsorted(self.cum_E, j, side="right"))
        t = int(self.first_E[e] + j - (self.cum_E[e - 1] if e else 0))
        ep = int(self.episodes_E[e])
        return self.store.frames(ep, t, t + 1)[0], f"data:{self.root}:train:episode={ep}:frame={t}"
