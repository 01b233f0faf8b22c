"""`genie-gym <command>`: one tyro dataclass per command, imported only when that command runs."""

from __future__ import annotations

import importlib
import os
import sys

# command -> (module, one-line help). Each module exposes `Args` (a tyro dataclass) and `main(args)`.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("genie_gym.data.recorder", "record unlabelled Procgen video into compressed shards"),
    "data inspect": ("genie_gym.data.inspect", "print dataset statistics, write a contact sheet and a GIF"),
    "train": ("genie_gym.training.train", "train the tokenizer (phase 1) or LAM + dynamics (phase 2)"),
    "eval": ("genie_gym.evaluation.evaluate", "evaluate a world model on a held-out split"),
    "export": ("genie_gym.training.export", "a world-model file from a run's checkpoints (last or an earlier step)"),
    "pipeline": ("genie_gym.training.pipeline", "data, tokenizer, dynamics, eval: one resumable command"),
    "play": ("genie_gym.envs.play", "play a generated world with the keyboard, or headless with --actions"),
    "demo": ("genie_gym.demo", "the main job: play the shipped model from a CoinRun frame and a sketch"),
    "bench": ("genie_gym.bench", "run the benchmarks in benchmarks/ and write their JSON"),
}


def _usage() -> str:
    lines = ["usage: genie-gym <command> [--help] [options]", "", "commands:"]
    lines += [f"  {name:<14} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Errors print one message naming the problem and the fix; GENIE_GYM_TRACEBACK=1 shows the traceback."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return
    name = argv[0]
    rest = argv[1:]
    if len(argv) > 1 and f"{argv[0]} {argv[1]}" in COMMANDS:
        name, rest = f"{argv[0]} {argv[1]}", argv[2:]
    if name not in COMMANDS:
        print(f"genie-gym: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        raise SystemExit(2)
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    args = tyro.cli(module.Args, args=rest, prog=f"genie-gym {name}", description=help_)
    from genie_gym.errors import GenieError

    try:
        module.main(args)
    except GenieError as e:  # our errors already name the problem and the fix: no traceback
        print(f"genie-gym {name}: error: {e}", file=sys.stderr)
        if os.environ.get("GENIE_GYM_TRACEBACK"):
            raise
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
