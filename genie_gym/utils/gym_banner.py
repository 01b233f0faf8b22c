"""The old `gym` package (installed with procgen) prints an "unmaintained since 2022" banner to stderr when first
imported; stable-baselines3 (`patch_gym`) and procgen (via gym3) import it. Importing it once quietly, before them,
keeps our entry points' output clean: later imports find it loaded and print nothing."""

from __future__ import annotations

import contextlib
import io
import sys


def import_gym_quietly() -> None:
    """Import `gym` with its banner swallowed; nothing when it is already loaded or not installed."""
    if "gym" in sys.modules:
        return
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            import gym  # noqa: F401
        except ImportError:
            pass
