"""`genie-gym play`: play a generated world with the keyboard, or headless from a list of actions.

    genie-gym play                                  # shipped model, a CoinRun start frame (level from --seed)
    genie-gym play --level 42 --record run.mp4      # CoinRun level 42, recorded to mp4 as you play
    genie-gym play --sketch                         # the hand-drawn sketch shipped in the package
    genie-gym play --prompt photo.jpg               # any image, resized to 64x64
    genie-gym play --headless --actions 7,7,3,3 --record out.gif   # no window: write the video and exit

Keys (the window shows this legend): 1..8 pick latent actions 0..7; the arrow keys pick the actions the model's
metadata names left/right/up/down (else 0..3); z x c v pick 4..7. A held key repeats at 10 frames/s. R starts /
stops recording, Backspace restarts the world from a new level (or the same image), Esc or Q quits.

Reusable pieces for `genie-gym demo`: `play_headless`, `write_video`, `action_strip`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from genie_gym.envs.genie_env import GenieEnv, key_legend, keys_to_action
from genie_gym.envs.prompts import PromptLike, load_prompt, sketch_path
from genie_gym.errors import ConfigError
from genie_gym.models.simulator import Simulator
from genie_gym.models.world_model import WorldModel


@dataclass
class Args:
    """Play a Genie world from a prompt with the keyboard, or headless from --actions."""

    checkpoint: Path | None = None
    """World-model file; default: the model shipped in the package."""
    prompt: str | None = None
    """Start frame: an image path, or 'procgen' for a CoinRun start frame chosen by --seed."""
    level: int | None = None
    """Start from this CoinRun level's first frame (instead of --prompt)."""
    sketch: bool = False
    """Start from the hand-drawn platformer sketch shipped in the package."""
    seed: int = 0
    """Reset seed: picks the CoinRun level when no prompt is given, and seeds MaskGIT sampling."""
    headless: bool = False
    """No window: play --actions, write --record, print frames/s."""
    actions: str = ""
    """Comma-separated latent actions for --headless, e.g. 7,7,3,3,0."""
    record: Path | None = None
    """Record to this .mp4 or .gif (from the start; R toggles recording in the window)."""
    fps: int = 10
    """Frames per second of the window and of recorded videos."""
    scale: int = 8
    """Window / video upscaling of the 64x64 frames (nearest neighbour)."""
    maskgit_steps: int | None = None
    """MaskGIT steps per frame; default: the model's (Genie: 25)."""
    maskgit_schedule: Literal["frame", "cell"] | None = None
    """frame: MaskGIT ranks the whole frame; cell: each step decides a share of every grid cell's tokens (sharper
    long rollouts; steps <= tokens per cell); default: the model's."""
    temperature: float | None = None
    """Sampling temperature; default: the model's (CoinRun: 1.0)."""
    context_frames: int | None = None
    """Frames of context the model sees; default: the model's."""
    device: str = "cpu"
    """cpu, cuda or auto."""


# --- videos -------------------------------------------------------------------------------------------------------
def upscale(frame_HWC: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling (keeps the pixel-art look of 64x64 frames)."""
    return frame_HWC if scale == 1 else np.repeat(np.repeat(frame_HWC, scale, axis=0), scale, axis=1)


def check_video_path(path: str | Path) -> Path:
    """A .mp4 or .gif path, checked before any frame is generated."""
    path = Path(path)
    if path.suffix.lower() not in (".mp4", ".gif"):
        raise ConfigError(f"cannot record to {str(path)!r}: use a .mp4 or .gif file name")
    return path


def write_video(frames: Sequence[np.ndarray], path: str | Path, fps: int = 10, scale: int = 4) -> Path:
    """Write uint8 HxWx3 frames to .mp4 (H.264 via imageio-ffmpeg) or .gif (Pillow); returns the path."""
    import imageio.v2 as imageio

    path = check_video_path(path)
    suffix = path.suffix.lower()
    if len(frames) == 0:
        raise ValueError("no frames to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    big = [upscale(np.asarray(f, dtype=np.uint8), scale) for f in frames]
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # written whole, then renamed: never half a video
    if suffix == ".mp4":
        # imageio-ffmpeg directly: gym3 pins imageio-ffmpeg < 0.4, whose API imageio's own ffmpeg plugin no longer
        # matches (it passes `audio_path`). H.264 in yuv420p plays everywhere.
        import warnings

        with warnings.catch_warnings():  # gym3's pinned imageio-ffmpeg 0.3 imports the deprecated pkg_resources
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
            import imageio_ffmpeg

        h, w = big[0].shape[:2]
        writer = imageio_ffmpeg.write_frames(str(tmp), (w, h), fps=fps, codec="libx264", quality=8,
                                             macro_block_size=1, ffmpeg_log_level="error",
                                             output_params=["-f", "mp4"])
        writer.send(None)
        try:
            for f in big:
                writer.send(np.ascontiguousarray(f).tobytes())
        finally:
            writer.close()
    else:
        imageio.mimsave(tmp, big, duration=1000.0 / fps, loop=0)
    tmp.replace(path)
    return path


def parse_actions(text: str, num_actions: int = 8) -> list[int]:
    """'7,7,3' -> [7, 7, 3], each checked to be in [0, num_actions)."""
    try:
        actions = [int(a) for a in text.replace(" ", "").split(",") if a != ""]
    except ValueError:
        raise ConfigError(f"--actions must be comma-separated integers like 7,7,3, got {text!r}") from None
    bad = [a for a in actions if not 0 <= a < num_actions]
    if bad:
        raise ConfigError(f"--actions must be in [0, {num_actions}) (latent actions), got {bad}")
    return actions


def play_headless(env: GenieEnv, actions: Sequence[int], record_path: str | Path | None = None,
                  prompt: PromptLike | None = None, seed: int | None = 0, fps: int = 10,
                  scale: int = 4) -> list[np.ndarray]:
    """Reset `env` (from `prompt`, else a Procgen level chosen by `seed`), play `actions`, optionally write a video.

    Returns the frames (prompt frame first). The env's `max_episode_steps` is respected: playing stops when the
    episode is truncated.
    """
    options = {"prompt": prompt} if prompt is not None else None
    obs, _ = env.reset(seed=seed, options=options)
    frames = [obs]
    for a in actions:
        obs, _, terminated, truncated, _ = env.step(int(a))
        frames.append(obs)
        if terminated or truncated:
            break
    if record_path is not None:
        write_video(frames, record_path, fps=fps, scale=scale)
    return frames


# --- action strip -------------------------------------------------------------------------------------------------
def action_strip(world_model: WorldModel, prompt_HWC: np.ndarray | Sequence[np.ndarray], steps_k: int,
                 out_png: str | Path | None = None, seed: int = 0, scale: int = 2, gap: int = 2,
                 maskgit_steps: int | None = None, temperature: float | None = None,
                 device: str = "cpu", labels: bool = True) -> np.ndarray:
    """Grid of what each latent action does: per prompt, one row per action (the prompt, then `steps_k` frames
    of that action repeated). All rows of a prompt share the same sampling seed, so they differ only by action.
    One batched `Simulator` runs every row at once. `labels` adds a left column naming each row's action.
    Returns the uint8 image (and writes `out_png` if given)."""
    prompts = [prompt_HWC] if isinstance(prompt_HWC, np.ndarray) and prompt_HWC.ndim == 3 else list(prompt_HWC)
    frames0 = [load_prompt(p)[0] for p in prompts]
    A = world_model.num_actions
    rows = len(frames0) * A
    sim = Simulator(world_model, rows, maskgit_steps, temperature, None, device)
    sim.reset(None, np.stack([f for f in frames0 for _ in range(A)]), [seed] * rows)
    actions_R = np.tile(np.arange(A), len(frames0))
    grid_RK = [[f] for f in np.stack([f for f in frames0 for _ in range(A)])]
    for _ in range(steps_k):
        for r, frame in enumerate(sim.step(actions_R)):
            grid_RK[r].append(frame)
    S = frames0[0].shape[0] * scale
    H = rows * (S + gap) + (len(frames0) - 1) * 3 * gap
    W = (steps_k + 1) * (S + gap)
    image = np.full((H, W, 3), 255, dtype=np.uint8)
    for r, row in enumerate(grid_RK):
        y = r * (S + gap) + (r // A) * 3 * gap
        for c, frame in enumerate(row):
            image[y:y + S, c * (S + gap):c * (S + gap) + S] = upscale(frame, scale)
    if labels:
        from PIL import Image, ImageDraw

        names = world_model.metadata.get("action_meanings")
        names = names if isinstance(names, (list, tuple)) and len(names) == A else [""] * A
        margin = 30 + 6 * max(len(str(n)) for n in names)
        canvas = Image.new("RGB", (W + margin, H), (255, 255, 255))
        canvas.paste(Image.fromarray(image), (margin, 0))
        draw = ImageDraw.Draw(canvas)
        for r in range(rows):
            y = r * (S + gap) + (r // A) * 3 * gap + S // 2 - 10
            draw.text((4, y), f"a{r % A}", fill=(0, 0, 0))
            draw.text((4, y + 10), str(names[r % A]), fill=(90, 90, 90))
        image = np.asarray(canvas).copy()
    if out_png is not None:
        from PIL import Image

        Path(out_png).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(out_png)
    return image


# --- interactive --------------------------------------------------------------------------------------------------
def play_interactive(env: GenieEnv, options: dict[str, Any] | None, seed: int | None, record_path: Path | None,
                     fps: int = 10, scale: int = 8, max_steps: int | None = None) -> list[np.ndarray]:
    """A pygame window with the world on the left and the key legend on the right. Returns the recorded frames."""
    import pygame

    pygame.display.init()  # only what the window uses: no audio (a screen of ALSA errors without a sound card)
    pygame.font.init()
    font = pygame.font.Font(None, 20)
    meanings = env.get_action_meanings()
    mapping = keys_to_action(meanings)
    legend = key_legend(meanings) + ["", "R: record on/off", "Backspace: restart", "Esc/Q: quit"]
    S = env.observation_space.shape[0] * scale
    screen = pygame.display.set_mode((S + 300, max(S, 20 * len(legend) + 40)))
    pygame.display.set_caption("genie-gym play")
    clock = pygame.time.Clock()
    obs, info = env.reset(seed=seed, options=options)
    recording = record_path is not None
    record_path = record_path or Path("outputs") / f"play_{time.strftime('%Y%m%d_%H%M%S')}.mp4"
    frames: list[np.ndarray] = [obs] if recording else []
    steps, running, t0 = 0, True, time.perf_counter()
    pressed_now: int | None = None
    while running:
        for event in pygame.event.get():
            if event.type == pygame.QUIT or (event.type == pygame.KEYDOWN and event.key in (pygame.K_ESCAPE,
                                                                                               pygame.K_q)):
                running = False
            elif event.type == pygame.KEYDOWN and event.key == pygame.K_r:
                if recording and frames:
                    print(f"recorded {len(frames)} frames -> {write_video(frames, record_path, fps, scale=4)}")
                    frames = []
                recording = not recording
                if recording:
                    frames = [obs]
            elif event.type == pygame.KEYDOWN and event.key == pygame.K_BACKSPACE:
                obs, info = env.reset(options=options)
                frames += [obs] if recording else []
            elif event.type == pygame.KEYDOWN and (event.key,) in mapping:
                pressed_now = mapping[(event.key,)]  # a tap steps once even if released before the tick
        pressed = pygame.key.get_pressed()
        action = next((a for keys, a in mapping.items() if all(pressed[k] for k in keys)), pressed_now)
        pressed_now = None
        if running and action is not None:
            obs, _, terminated, truncated, _ = env.step(action)
            steps += 1
            frames += [obs] if recording else []
            if terminated or truncated:
                obs, info = env.reset(options=options)
        screen.fill((20, 20, 24))
        screen.blit(pygame.surfarray.make_surface(upscale(obs, scale).swapaxes(0, 1)), (0, 0))
        lines = [info.get("prompt_source", ""), f"{'REC ' if recording else ''}step {steps}", ""] + legend
        for i, line in enumerate(lines):
            color = (255, 80, 80) if line.startswith("REC") else (230, 230, 230)
            screen.blit(font.render(line, True, color), (S + 12, 10 + 20 * i))
        pygame.display.flip()
        clock.tick(fps)
        if max_steps is not None and steps >= max_steps:
            running = False
    if recording and frames:
        print(f"recorded {len(frames)} frames -> {write_video(frames, record_path, fps, scale=4)}")
    elapsed = time.perf_counter() - t0
    print(f"{steps} steps in {elapsed:.1f} s")
    pygame.quit()
    return frames


def resolve_options(args: Args) -> dict[str, Any] | None:
    """--sketch / --level / --prompt -> reset options (None: a CoinRun level chosen by --seed)."""
    chosen = [name for name, on in (("--sketch", args.sketch), ("--level", args.level is not None),
                                    ("--prompt", args.prompt is not None)) if on]
    if len(chosen) > 1:
        raise SystemExit(f"genie-gym play: choose one prompt source, got {' and '.join(chosen)}")
    if args.sketch:
        return {"prompt": str(sketch_path())}
    if args.level is not None:
        return {"prompt": f"procgen:coinrun:level={args.level}"}
    if args.prompt is not None and args.prompt != "procgen":
        return {"prompt": args.prompt}
    return None


def main(args: Args) -> None:
    options = resolve_options(args)
    if args.record is not None:
        check_video_path(args.record)  # bad input fails before the model loads and frames are generated
    if args.headless and args.actions:
        parse_actions(args.actions, num_actions=2**31)  # the syntax now; the range once the model is loaded
    env = GenieEnv(checkpoint=args.checkpoint, maskgit_steps=args.maskgit_steps, temperature=args.temperature,
                   context_frames=args.context_frames, device=args.device, max_episode_steps=None,
                   maskgit_schedule=args.maskgit_schedule)
    if args.headless:
        if not args.actions:
            raise SystemExit("genie-gym play --headless needs --actions, e.g. --actions 7,7,3,3")
        actions = parse_actions(args.actions, env.action_space.n)
        record = args.record or Path("outputs") / "play.mp4"
        t0 = time.perf_counter()
        frames = play_headless(env, actions, None, options["prompt"] if options else None, args.seed)
        elapsed = time.perf_counter() - t0
        write_video(frames, record, fps=args.fps, scale=max(1, args.scale // 2))
        print(f"{len(frames) - 1} frames in {elapsed:.2f} s ({(len(frames) - 1) / elapsed:.1f} frames/s) -> {record}")
        return
    play_interactive(env, options, args.seed, args.record, fps=args.fps, scale=args.scale)
