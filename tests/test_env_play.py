"""`genie-gym play`: headless videos (gif, mp4), the CLI, the action strip, and the keyboard loop (dummy display)."""

from __future__ import annotations

import imageio.v2 as imageio
import numpy as np
import pytest

from genie_gym.cli import main as cli_main
from genie_gym.envs.genie_env import GenieEnv
from genie_gym.envs.play import action_strip, parse_actions, play_headless, play_interactive, write_video
from genie_gym.envs.prompts import load_prompt, sketch_path
from genie_gym.models.world_model import WorldModel


@pytest.fixture(scope="module")
def ckpt(tiny_model_file) -> str:
    return str(tiny_model_file)


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_headless_play_writes_a_video(ckpt, tmp_path, suffix):
    env = GenieEnv(checkpoint=ckpt, prompt_levels=(0, 2))
    out = tmp_path / f"run{suffix}"
    frames = play_headless(env, [7, 7, 3, 3, 0], out, prompt=sketch_path(), seed=0, scale=2)
    assert len(frames) == 6 and all(f.shape == (64, 64, 3) for f in frames)
    video = imageio.mimread(out)
    assert len(video) == 6 and video[0].shape[:2] == (128, 128)
    if suffix == ".gif":  # 256-colour palette: the first frame is the (upscaled) sketch prompt, nearly exactly
        diff = np.abs(np.asarray(video[0])[::2, ::2, :3].astype(int) - frames[0])
        assert diff.mean() < 1.0
    assert not list(tmp_path.glob(".*tmp*"))  # written whole, then renamed


def test_cli_headless(ckpt, tmp_path, capsys):
    out = tmp_path / "cli.gif"
    cli_main(["play", "--checkpoint", ckpt, "--headless", "--actions", "1,2,3", "--level", "3", "--record",
              str(out)])
    assert "frames/s" in capsys.readouterr().out
    assert len(imageio.mimread(out)) == 4


@pytest.mark.parametrize("argv, message", [
    (["--actions", "9"], r"--actions must be in \[0, 8\)"),
    (["--actions", "7,x"], "comma-separated integers"),
    (["--actions", "1", "--record", "x.avi"], ".mp4 or .gif"),
])
def test_play_cli_errors_are_one_line_before_any_frame(ckpt, capsys, argv, message):
    with pytest.raises(SystemExit):
        cli_main(["play", "--checkpoint", ckpt, "--headless", *argv])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("genie-gym play: error:")
    assert __import__("re").search(message, err), err


def test_bad_play_input():
    with pytest.raises(ValueError, match="comma-separated"):
        parse_actions("7,x")
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        parse_actions("7,8")
    with pytest.raises(ValueError, match=".mp4 or .gif"):
        write_video([np.zeros((64, 64, 3), np.uint8)], "out.avi")


def test_action_strip_rows_share_prompt_and_seed_but_differ_by_action(ckpt, tmp_path):
    wm = WorldModel.load(ckpt)
    sketch = load_prompt(sketch_path())[0]
    img = action_strip(wm, sketch, steps_k=3, out_png=tmp_path / "strip.png", scale=1, gap=2, labels=False)
    assert img.shape == (8 * 66, 4 * 66, 3) and (tmp_path / "strip.png").exists()
    cells = [[img[r * 66:r * 66 + 64, c * 66:c * 66 + 64] for c in range(4)] for r in range(8)]
    for r in range(8):
        np.testing.assert_array_equal(cells[r][0], sketch)
    assert len({cells[r][3].tobytes() for r in range(8)}) > 1  # the action changes what is generated
    labelled = action_strip(wm, [sketch, sketch], steps_k=1, scale=1, gap=2)  # two prompts, a label column
    assert labelled.shape[0] == 16 * 66 + 6 and labelled.shape[1] > 2 * 66


def test_keyboard_loop_steps_records_and_quits(ckpt, tmp_path):
    import pygame

    env = GenieEnv(checkpoint=ckpt, prompt_levels=(0, 2))
    pygame.init()
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_4))
    out = tmp_path / "kb.gif"
    frames = play_interactive(env, None, seed=0, record_path=out, fps=1000, max_steps=1)
    assert len(frames) == 2  # prompt + one step taken by the key press
    assert len(imageio.mimread(out)) == 2
