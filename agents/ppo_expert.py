"""PPO expert on Procgen CoinRun (easy) with stable-baselines3 and the Procgen paper's hyper-parameters.

    python -m agents.ppo_expert --total-timesteps 2000000 --out runs/ppo_coinrun

Procgen speaks gym3 (`act`/`observe`, automatic resets); `ProcgenSB3VecEnv` adapts it to SB3's `VecEnv`.
`<out>/final.zip` is resumable; `<out>/expert.zip` (no optimizer moments, a few MiB) is what ships as
`agents/assets/ppo_coinrun_easy.zip`; see agents/README.md.
"""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, CheckpointCallback
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import VecEnv, VecMonitor, VecNormalize
from tqdm import tqdm

from agents.policies import ImpalaEncoder
from genie_gym.errors import CheckpointError
from genie_gym.utils.device import resolve_device
from genie_gym.utils.io import atomic_write_json

DEFAULT_EXPERT = Path(__file__).resolve().parent / "assets" / "ppo_coinrun_easy.zip"


class ProcgenSB3VecEnv(VecEnv):
    """`procgen.ProcgenGym3Env` as a stable-baselines3 `VecEnv` (uint8 64x64x3 observations, Discrete(15)).

    gym3 semantics: after `act(a)`, `observe()` returns the reward of that step and the next observation; when
    `first[i]` is True, that observation is the first of a new episode, i.e. the step just taken ended the previous
    one. So SB3's `done[i]` for a step is exactly the `first[i]` observed after it, and the observation returned is
    already the reset one (SB3's auto-reset convention).

    `terminal_observation`: gym3 never exposes the true last frame of an episode. We store the last frame the agent
    acted on (the frame before the terminal step) as a stand-in. SB3 only reads it to bootstrap episodes flagged
    `TimeLimit.truncated`, which this adapter never sets (Procgen does not distinguish its 1000-step timeout), so the
    stand-in never enters the PPO update.
    """

    def __init__(
        self,
        num_envs: int,
        env_name: str = "coinrun",
        num_levels: int = 0,
        start_level: int = 0,
        distribution_mode: str = "easy",
        seed: int = 0,
    ) -> None:
        from procgen import ProcgenGym3Env

        self._kwargs = dict(
            num=num_envs,
            env_name=env_name,
            num_levels=num_levels,
            start_level=start_level,
            distribution_mode=distribution_mode,
        )
        self._seed = int(seed)
        self._make = ProcgenGym3Env
        self.env = ProcgenGym3Env(**self._kwargs, rand_seed=self._seed)
        self._stepped = False
        observation_space = gym.spaces.Box(0, 255, shape=(64, 64, 3), dtype=np.uint8)
        action_space = gym.spaces.Discrete(self.env.ac_space.eltype.n)
        self.render_mode = None
        super().__init__(num_envs, observation_space, action_space)
        self._actions: np.ndarray | None = None
        self._last_obs = self.env.observe()[1]["rgb"]

    def reset(self) -> np.ndarray:
        # gym3 envs cannot be reset from outside; a reset after stepping builds a fresh env with the next seed.
        if self._stepped:
            self._seed += 1
            self.env = self._make(**self._kwargs, rand_seed=self._seed)
            self._stepped = False
        self._last_obs = self.env.observe()[1]["rgb"]
        return self._last_obs.copy()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.int32).reshape(self.num_envs)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        assert self._actions is not None, "step_async must be called before step_wait"
        self.env.act(self._actions)
        self._stepped = True
        rew, obs, first = self.env.observe()
        obs = obs["rgb"]
        infos: list[dict[str, Any]] = []
        for i, info in enumerate(self.env.get_info()):
            d = {"level_seed": info.get("level_seed")}
            if first[i]:
                d["terminal_observation"] = self._last_obs[i].copy()
                d["level_complete"] = bool(info.get("prev_level_complete", 0))
            infos.append(d)
        self._last_obs = obs
        return obs.copy(), rew.astype(np.float32), first.astype(bool), infos

    def close(self) -> None:
        self.env = None

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any) -> list:
        raise NotImplementedError(f"ProcgenSB3VecEnv has no per-env method {method_name!r}")

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False] * len(self._get_indices(indices))

    def get_images(self) -> list[np.ndarray]:
        return list(self._last_obs)

    def seed(self, seed: int | None = None) -> list[int | None]:
        if seed is not None:
            self._seed = int(seed) - 1  # the next reset() uses `seed`
            self._stepped = True
        return [seed] * self.num_envs


class ImpalaExtractor(BaseFeaturesExtractor):
    """SB3 features extractor: the IMPALA CNN of `agents.policies` (SB3 hands it CHW floats in [0, 1])."""

    def __init__(
        self, observation_space: gym.spaces.Box, features_dim: int = 256, channels: tuple[int, ...] = (16, 32, 32)
    ) -> None:
        super().__init__(observation_space, features_dim)
        self.cnn = ImpalaEncoder(tuple(channels), features_dim, in_channels=observation_space.shape[0])

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.cnn(observations)


class ProgressCallback(BaseCallback):
    """tqdm bar over environment frames, with the measured frames/s and the recent mean episode return."""

    def __init__(self, total: int, log_path: Path | None = None, wall_before: float = 0.0,
                 time_limit_s: float | None = None) -> None:
        super().__init__()
        self.total = total
        self.time_limit_s = time_limit_s
        self.out_of_time = False
        self.t0 = 0.0
        self.frames = 0
        self.log_path = log_path
        self.wall_before = wall_before

    def _on_training_start(self) -> None:
        self.t0 = time.perf_counter()
        self.bar = tqdm(total=self.total, unit="frame", desc="ppo")

    def _on_step(self) -> bool:
        n = self.training_env.num_envs
        self.frames += n
        self.bar.update(n)
        if self.n_calls % 64 == 0:
            buf = self.model.ep_info_buffer
            ret = float(np.mean([e["r"] for e in buf])) if buf else float("nan")
            self.bar.set_postfix(fps=f"{self.fps:.0f}", ret=f"{ret:.2f}")
            if self.log_path is not None:  # cumulative wall time survives kills and resumes
                atomic_write_json(
                    self.log_path,
                    {
                        "frames": int(self.model.num_timesteps),
                        "wall_s_total": round(self.wall_total, 1),
                        "recent_train_return": ret,
                    },
                )
        return not self.out_of_time  # set at a rollout's end: the collected rollout is always learned from

    def _on_rollout_end(self) -> None:
        # --time-limit-min: stop before the next rollout (the caller saves final.zip and a checkpoint)
        self.out_of_time = self.time_limit_s is not None and time.perf_counter() - self.t0 >= self.time_limit_s

    @property
    def wall_total(self) -> float:
        return self.wall_before + time.perf_counter() - self.t0

    @property
    def fps(self) -> float:
        return self.frames / max(time.perf_counter() - self.t0, 1e-9)

    def _on_training_end(self) -> None:
        self.bar.close()


@dataclass
class PPOSettings:
    """PPO's settings and run outputs, whatever the environment (`dream_ppo` trains on Genie-v0 with them)."""

    total_timesteps: int = 25_000_000
    """environment frames to train for (the Procgen paper: 25M; mean return >= 8 on easy needs ~2M)"""
    num_envs: int = 64
    """parallel Procgen environments (Procgen paper: 64)"""
    n_steps: int = 256
    """rollout length per environment per update (Procgen paper: 256)"""
    gamma: float = 0.999
    """discount (Procgen paper)"""
    gae_lambda: float = 0.95
    """GAE lambda (Procgen paper)"""
    learning_rate: float = 5e-4
    """Adam learning rate (Procgen paper)"""
    ent_coef: float = 0.01
    """entropy bonus (Procgen paper)"""
    n_epochs: int = 3
    """PPO epochs per rollout (Procgen paper)"""
    n_minibatches: int = 8
    """minibatches per epoch (Procgen paper): batch size = num_envs * n_steps / n_minibatches"""
    clip_range: float = 0.2
    """PPO clip (Procgen paper)"""
    vf_coef: float = 0.5
    """value loss weight"""
    max_grad_norm: float = 0.5
    """gradient clipping"""
    norm_reward: bool = True
    """normalise rewards by a running return std (Procgen's baselines do; acting does not need the statistics)"""
    cnn: str = "auto"
    """features extractor: impala (Procgen paper, ~60 MFLOP/frame), nature (SB3 CnnPolicy, ~8x cheaper), or auto
    (impala on CUDA, nature on CPU, where the IMPALA update runs at ~20 frames/s on 2 cores)"""
    seed: int = 0
    """seed for the environments, the network initialisation and PPO's sampling"""
    out: str = "runs/ppo_coinrun"
    """output directory: checkpoints/, tb/ (TensorBoard), final.zip, train_info.json"""
    checkpoint_every: int = 1_000_000
    """save a checkpoint every this many frames"""
    device: str = "auto"
    """torch device: auto, cpu or cuda"""
    threads: int = 2
    """torch CPU threads (one torch job at a time on the 2-core dev machines: two oversubscribe the cores)"""
    resume: bool = False
    """continue from the newest readable checkpoint in <out>/checkpoints (weights, optimizer, reward statistics)"""
    time_limit_min: float | None = None
    """stop after about this many minutes of learning (final.zip is written; --resume continues)"""


@dataclass
class Args(PPOSettings):
    """PPO expert on Procgen (the Procgen paper's settings)."""

    num_levels: int = 0
    """number of training levels (0 = unlimited, the generalisation-free expert)"""
    start_level: int = 0
    """first training level seed"""
    distribution_mode: str = "easy"
    """Procgen difficulty: easy or hard"""
    env_name: str = "coinrun"
    """Procgen game"""


def make_model(args: PPOSettings, venv: VecEnv) -> Any:
    from stable_baselines3 import PPO

    policy_kwargs: dict[str, Any] = {}
    if args.cnn == "auto":
        args.cnn = "impala" if resolve_device(args.device).type == "cuda" else "nature"
        print(f"--cnn auto -> {args.cnn}")
    if args.cnn == "impala":
        policy_kwargs = dict(
            features_extractor_class=ImpalaExtractor,
            features_extractor_kwargs={},
            net_arch=dict(pi=[], vf=[]),
            activation_fn=nn.ReLU,
        )
    elif args.cnn != "nature":
        raise ValueError(f"--cnn {args.cnn!r} is unknown; use impala or nature")
    batch = args.num_envs * args.n_steps
    if batch % args.n_minibatches:
        raise ValueError(f"num_envs*n_steps={batch} must be divisible by --n-minibatches {args.n_minibatches}")
    return PPO(
        "CnnPolicy",
        venv,
        n_steps=args.n_steps,
        batch_size=batch // args.n_minibatches,
        n_epochs=args.n_epochs,
        gamma=args.gamma,
        gae_lambda=args.gae_lambda,
        learning_rate=args.learning_rate,
        ent_coef=args.ent_coef,
        clip_range=args.clip_range,
        vf_coef=args.vf_coef,
        max_grad_norm=args.max_grad_norm,
        policy_kwargs=policy_kwargs,
        tensorboard_log=str(Path(args.out) / "tb"),
        seed=args.seed,
        device=args.device,
        verbose=0,
    )


def load_expert(path: str | Path | None = None, device: str = "cpu") -> Any:
    """The PPO expert (default: the shipped `agents/assets/ppo_coinrun_easy.zip`); missing -> `CheckpointError`."""
    from stable_baselines3 import PPO

    path = Path(path) if path is not None else DEFAULT_EXPERT
    if not path.is_file():
        raise CheckpointError(
            f"expert checkpoint {path} does not exist; train one with `python -m agents.ppo_expert "
            f"--total-timesteps 2000000 --out runs/ppo_coinrun` and pass --expert runs/ppo_coinrun/expert.zip "
            "(for a smoke run without an expert: `python -m agents.collect --policy run_right` or "
            "`python benchmarks/bc_coinrun.py --quick`)"
        )
    try:
        return PPO.load(path, device=device)
    except Exception as e:  # SB3 raises a variety of errors on a foreign zip
        raise CheckpointError(f"{path} is not a stable-baselines3 PPO checkpoint ({e}); retrain the expert") from e


def export_expert(model: Any, path: str | Path, max_bytes: int = 10 * 2**20) -> int:
    """Writes a compact copy for shipping: weights without Adam's moment estimates (acting never needs them)."""
    full_opt = model.policy.optimizer
    model.policy.optimizer = type(full_opt)(model.policy.parameters(), **full_opt.defaults)
    try:
        model.save(path)
    finally:
        model.policy.optimizer = full_opt
    size = Path(path).stat().st_size
    if size > max_bytes:
        print(f"warning: {path} is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB budget for shipping")
    return size


def latest_checkpoint(out: Path) -> tuple[Path, Path | None] | None:
    """Newest `ppo_<frames>_steps.zip` in `<out>/checkpoints` with its VecNormalize statistics, if any."""
    found = sorted((out / "checkpoints").glob("ppo_*_steps.zip"), key=lambda p: int(p.stem.split("_")[1]))
    for zip_path in reversed(found):
        try:  # a kill during SB3's (non-atomic) save leaves a truncated zip: skip it, use the one before
            with zipfile.ZipFile(zip_path) as z:
                if z.testzip() is not None:
                    raise zipfile.BadZipFile("bad member CRC")
        except zipfile.BadZipFile:
            print(f"warning: {zip_path} is damaged (interrupted save?); trying the checkpoint before it")
            continue
        norm = zip_path.with_name(zip_path.name.replace("ppo_", "ppo_vecnormalize_").replace(".zip", ".pkl"))
        return zip_path, norm if norm.is_file() else None
    return None


def train_ppo(args: PPOSettings, venv: VecEnv, export: bool = True) -> dict[str, Any]:
    """PPO on `venv` (wrapped here in VecMonitor, and VecNormalize with --norm-reward), resumable from
    <out>/checkpoints; writes final.zip (resumable), expert.zip (compact, when `export`) and train_info.json."""
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    venv = VecMonitor(venv)
    if args.norm_reward:
        venv = VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=args.gamma)
    start = latest_checkpoint(out) if args.resume else None
    if args.resume and start is None:
        print(f"--resume: no checkpoint in {out / 'checkpoints'}; starting from scratch")
    if start is not None:
        from stable_baselines3 import PPO

        zip_path, norm_path = start
        if norm_path is not None and isinstance(venv, VecNormalize):
            venv = VecNormalize.load(str(norm_path), venv.venv)
        model = PPO.load(zip_path, env=venv, device=args.device, tensorboard_log=str(out / "tb"))
        if args.cnn == "auto":
            args.cnn = "impala" if isinstance(model.policy.features_extractor, ImpalaExtractor) else "nature"
        print(f"resumed from {zip_path} at {model.num_timesteps} frames")
    else:
        model = make_model(args, venv)
    done = int(model.num_timesteps)
    if done >= args.total_timesteps:
        print(f"already trained for {done} frames >= --total-timesteps {args.total_timesteps}; exporting only")
    remaining = max(args.total_timesteps - done, 0)
    progress_path = out / "progress.json"
    wall_before = 0.0
    if start is not None and progress_path.is_file():
        wall_before = float(json.loads(progress_path.read_text()).get("wall_s_total", 0.0))
    progress = ProgressCallback(remaining, progress_path, wall_before,
                                None if args.time_limit_min is None else 60 * args.time_limit_min)
    ckpt = CheckpointCallback(
        max(args.checkpoint_every // args.num_envs, 1),
        str(out / "checkpoints"),
        name_prefix="ppo",
        save_vecnormalize=True,
    )
    t0 = time.perf_counter()
    if remaining:
        model.learn(
            total_timesteps=remaining, callback=CallbackList([progress, ckpt]), reset_num_timesteps=start is None
        )
    wall = time.perf_counter() - t0
    model.save(out / "final.zip")  # resumable (optimizer state included)
    if remaining:  # the newest checkpoint is the trained state: --resume (after --time-limit-min) starts from it
        model.save(out / "checkpoints" / f"ppo_{model.num_timesteps}_steps.zip")
        if isinstance(venv, VecNormalize):
            venv.save(str(out / "checkpoints" / f"ppo_vecnormalize_{model.num_timesteps}_steps.pkl"))
    if model.num_timesteps < args.total_timesteps:
        print(f"--time-limit-min reached at {model.num_timesteps} frames; continue with --resume")
    size = export_expert(model, out / "expert.zip") if export else None
    buf = model.ep_info_buffer
    info = {
        "args": asdict(args),
        "frames": int(model.num_timesteps),
        "frames_this_run": int(model.num_timesteps) - done,
        "resumed_from_frames": done,
        "wall_s_this_run": round(wall, 1),
        "wall_s_total": round(wall_before + wall, 1),
        "frames_per_s": round((model.num_timesteps - done) / max(wall, 1e-9), 1) if remaining
        else round(model.num_timesteps / max(wall_before, 1e-9), 1),  # nothing learned now: the run's overall rate
        "recent_train_return": float(np.mean([e["r"] for e in buf])) if buf else None,
        "torch_threads": torch.get_num_threads(),
        "device": str(model.device),
        "cnn": args.cnn,
        "expert_zip_bytes": size,
    }
    (out / "train_info.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    print(f"frames {info['frames']}  wall {wall:.1f}s  frames/s {info['frames_per_s']}  "
          f"recent train return {info['recent_train_return']}  -> {out / 'final.zip'}")
    return info


def main(args: Args) -> None:
    venv = ProcgenSB3VecEnv(
        args.num_envs, args.env_name, args.num_levels, args.start_level, args.distribution_mode, args.seed
    )
    info = train_ppo(args, venv)
    print(f"{Path(args.out) / 'expert.zip'} ({info['expert_zip_bytes'] / 2**20:.1f} MiB, to ship as "
          f"{DEFAULT_EXPERT.name})")


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
