"""Latent-action behaviour cloning (Genie section 3.3; docs/paper.md section 4).

    python -m agents.latent_bc --data runs/expert_data --out runs/latent_bc --n-labelled 200

(a) The LAM (default: the shipped world model's, which never saw these levels) labels every expert transition
    (x_t, x_t+1) with a latent code a_t, using causal windows of the LAM's `seq_len` frames.
(b) A policy of the oracle's architecture learns pi(a_t | x_t) by cross-entropy on the codes.
(c) N transitions with their real actions u_t build the table D: code -> list of real actions. Acting: a ~ pi(x),
    then u uniformly from D[a]. Fallback for a code never seen among the N samples: u is drawn from the pooled
    actions of all N samples (the best guess about the expert without a code).
(d) Ablation (`--mapping learned`): a small classifier from (code, frame) to real action, trained on the same N.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from agents.baselines import NUM_ACTIONS
from agents.bc import train_classifier
from agents.collect import ExpertSet
from agents.policies import ImpalaPolicy, check_frames, sample_categorical
from genie_gym.errors import CheckpointError, ConfigError
from genie_gym.models.frames import to_float
from genie_gym.models.lam import lam_fingerprint
from genie_gym.utils.io import atomic_torch_save, atomic_write_json


# ------------------------------------------------------------------------------------------------ (a) labelling
def window_starts(num_frames: int, window: int) -> list[int]:
    """Starts of windows of `window` frames that overlap by one frame and cover the episode; the last is flush
    with the end. Transition t is labelled by the first window that contains frames t and t+1."""
    if num_frames <= window:
        return [0]
    starts = list(range(0, num_frames - window + 1, window - 1))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return starts


@torch.no_grad()
def label_episode(lam: nn.Module, frames_LHWC: np.ndarray, window: int) -> np.ndarray:
    """LAM codes (L-1,) for one episode: codes[t] describes frames[t] -> frames[t+1], with causal context."""
    L = len(frames_LHWC)
    if L < 2:
        return np.zeros(0, dtype=np.int64)
    check_frames(frames_LHWC, "expert frames")
    w = min(window, L)
    starts = window_starts(L, w)
    clips = torch.stack([to_float(frames_LHWC[s : s + w]) for s in starts])  # (W, w, H, W, C)
    codes_W = lam.infer_actions(clips).cpu().numpy()  # (num_windows, w-1)
    out = np.full(L - 1, -1, dtype=np.int64)
    for s, c in zip(starts, codes_W, strict=True):
        seg = out[s : s + w - 1]
        seg[seg < 0] = c[: len(seg)][seg < 0]  # keep the label with the most context: the earlier window's
    assert (out >= 0).all()
    return out


def label_expert_set(lam: nn.Module, data: ExpertSet, window: int, progress: bool = True) -> list[np.ndarray]:
    """Codes for every transition of every episode (episode i: `data.episodes[i].length - 1` codes)."""
    data.check_nonempty()
    lam.eval()
    return [label_episode(lam, ep.frames, window)
            for ep in tqdm(data.episodes, desc="label", disable=not progress, leave=False)]


def load_lam(world_model: str | None, paint_vel_info: bool | None = None) -> tuple[nn.Module, int]:
    """The LAM of a world-model file (default: the shipped model) and its clip length. With `paint_vel_info` given,
    the frames it will label must be of the kind its LAM was trained on (the file's metadata; older files: plain)."""
    from genie_gym.models.world_model import WorldModel

    try:
        wm = WorldModel.load(world_model)
    except CheckpointError as e:
        if world_model is not None:
            raise
        raise CheckpointError(f"{e}. Or pass --world-model PATH (a world model trained with `genie-gym train`)") from e
    painted = bool(wm.metadata.get("paint_vel_info", False))
    if paint_vel_info is not None and painted != paint_vel_info:
        kind = {True: "velocity-painted", False: "plain"}
        raise ConfigError(f"the LAM of {world_model or 'the shipped model'} was trained on {kind[painted]} frames "
                          f"but is asked to label {kind[paint_vel_info]} ones; use a world model trained on "
                          f"{kind[paint_vel_info]} data (or {'drop' if paint_vel_info else 'pass'} --paint-vel-info)")
    return wm.lam.eval(), int(wm.config.seq_len)


def transitions(data: ExpertSet, codes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames x_t, codes a_t, real actions u_t) over all labelled transitions (the last step of each episode has
    no next frame and is left out)."""
    frames = np.concatenate([ep.frames[: ep.length - 1] for ep in data.episodes])
    acts = np.concatenate([ep.actions[: ep.length - 1] for ep in data.episodes]).astype(np.int64)
    c = np.concatenate(codes).astype(np.int64)
    assert len(frames) == len(c) == len(acts)
    return frames, c, acts


def select_labelled(num_transitions: int, n: int, seed: int) -> np.ndarray:
    """Indices of the N transitions whose real actions we may use, drawn without replacement."""
    if num_transitions == 0:
        raise ConfigError("the expert set has no transitions; record episodes with `python -m agents.collect`")
    if n < 1 or n > num_transitions:
        raise ConfigError(
            f"--n-labelled {n} is not within 1..{num_transitions} (the expert set's labelled transitions); "
            "pass a smaller --n-labelled or record more episodes with `python -m agents.collect --episodes ...`"
        )
    return np.sort(np.random.default_rng(seed).choice(num_transitions, size=n, replace=False))


# ------------------------------------------------------------------------------------------------ (c) table D
class CodeActionTable:
    """D: code -> the real actions seen with it among N labelled transitions; unseen codes use the pooled list."""

    def __init__(self, codes: np.ndarray, actions: np.ndarray, num_codes: int) -> None:
        codes, actions = np.asarray(codes, np.int64), np.asarray(actions, np.int64)
        if len(codes) == 0 or len(codes) != len(actions):
            raise ConfigError(f"the table needs N >= 1 (code, action) pairs of equal length, got {len(codes)} codes "
                              f"and {len(actions)} actions; label at least one expert transition")
        if codes.min() < 0 or codes.max() >= num_codes:
            raise ConfigError(f"codes span {codes.min()}..{codes.max()} but the LAM has {num_codes} codes")
        self.num_codes = num_codes
        self.table: list[list[int]] = [actions[codes == c].tolist() for c in range(num_codes)]
        self.pooled: list[int] = actions.tolist()
        self._codes: list[int] = codes.tolist()

    def choices(self, code: int) -> list[int]:
        """The list an action for `code` is drawn from (the pooled fallback if the code was never seen)."""
        return self.table[code] if self.table[code] else self.pooled

    def sample(self, codes: np.ndarray, obs_BHWC: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        out = np.empty(len(codes), dtype=np.int64)
        for i, c in enumerate(np.asarray(codes)):
            ch = self.choices(int(c))
            out[i] = ch[int(rng.integers(len(ch)))]
        return out

    def most_frequent(self, codes: np.ndarray) -> np.ndarray:
        """Greedy ablation: each code's most frequent action among the N (ties: the lowest action index)."""
        modes = [int(np.bincount(self.choices(c)).argmax()) for c in range(self.num_codes)]
        return np.asarray(modes, dtype=np.int64)[np.asarray(codes, dtype=np.int64)]

    def to_dict(self) -> dict[str, Any]:
        return {"num_codes": self.num_codes, "codes": self._codes, "actions": self.pooled,
                "table": {str(c): a for c, a in enumerate(self.table)},
                "unseen_codes": [c for c in range(self.num_codes) if not self.table[c]],
                "fallback": "pooled actions of all N"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CodeActionTable:
        return cls(np.asarray(d["codes"]), np.asarray(d["actions"]), int(d["num_codes"]))


# ------------------------------------------------------------------------------------------------ (d) learned map
class MappingNet(nn.Module):
    """Small (code, frame) -> real action classifier: code embedding + a two-layer strided CNN on the frame."""

    def __init__(self, num_codes: int, num_actions: int = NUM_ACTIONS, width: int = 64) -> None:
        super().__init__()
        self.num_codes = num_codes
        self.embed = nn.Embedding(num_codes, width)
        self.cnn = nn.Sequential(nn.Conv2d(3, 16, 8, stride=4), nn.ReLU(), nn.Conv2d(16, 32, 4, stride=2), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128, width))
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(width, num_actions))

    def forward(self, codes_B: torch.Tensor, frames_BHWC: torch.Tensor) -> torch.Tensor:
        x = frames_BHWC.permute(0, 3, 1, 2).float() / 255.0
        return self.head(self.embed(codes_B) + self.cnn(x))


class LearnedMapping:
    """Ablation (d): `MappingNet` trained by cross-entropy on the N labelled transitions; sampled at acting time."""

    def __init__(self, net: MappingNet) -> None:
        self.net = net.eval()
        self.num_codes = net.num_codes

    @classmethod
    def fit(cls, codes: np.ndarray, actions: np.ndarray, frames_NHWC: np.ndarray, num_codes: int,
            steps: int = 300, seed: int = 0, lr: float = 1e-3) -> LearnedMapping:
        CodeActionTable(codes, actions, num_codes)  # same input checks as the table
        check_frames(frames_NHWC, "labelled frames")
        torch.manual_seed(seed)
        net = MappingNet(num_codes)
        opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
        g = torch.Generator().manual_seed(seed)
        c, a = torch.as_tensor(codes, dtype=torch.long), torch.as_tensor(actions, dtype=torch.long)
        f = torch.from_numpy(np.ascontiguousarray(frames_NHWC))
        for _ in range(steps):
            idx = torch.randint(0, len(c), (min(64, len(c)),), generator=g)
            loss = F.cross_entropy(net(c[idx], f[idx]), a[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return cls(net)

    @torch.no_grad()
    def sample(self, codes: np.ndarray, obs_BHWC: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        logits = self.net(torch.as_tensor(codes, dtype=torch.long), torch.from_numpy(np.ascontiguousarray(obs_BHWC)))
        return sample_categorical(torch.softmax(logits.double(), -1).numpy(), rng)


# ------------------------------------------------------------------------------------------------ acting
class LatentBCPolicy:
    """Acts as the paper: sample a code from pi(x), then a real action from the mapping (table D by default).

    `greedy=True` (an ablation, table D only): the most likely code, then that code's most frequent action.
    """

    def __init__(self, policy: ImpalaPolicy, mapping: CodeActionTable | LearnedMapping, greedy: bool = False) -> None:
        check_code_count(policy, mapping.num_codes)
        if greedy and not isinstance(mapping, CodeActionTable):
            raise ConfigError("greedy acting needs table D (CodeActionTable), not a learned mapping")
        self.policy = policy
        self.mapping = mapping
        self.greedy = greedy

    def act(self, obs_BHWC: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        probs = self.policy.probs(obs_BHWC)
        if self.greedy:
            return self.mapping.most_frequent(probs.argmax(1))
        return self.mapping.sample(sample_categorical(probs, rng), obs_BHWC, rng)


def check_code_count(policy: ImpalaPolicy, num_codes: int) -> None:
    if policy.num_outputs != num_codes:
        raise ConfigError(
            f"the latent policy predicts {policy.num_outputs} codes but the LAM has {num_codes}; retrain the policy "
            "on codes from this LAM (`python -m agents.latent_bc --world-model PATH`) or pass the world model it "
            "was trained with"
        )


# ------------------------------------------------------------------------------------------------ script
@dataclass
class Args:
    data: str = "runs/expert_data"
    """expert dataset directory written by agents/collect.py"""
    world_model: str | None = None
    """world-model file whose LAM labels the expert videos (default: the shipped genie_gym/assets model)"""
    out: str = "runs/latent_bc"
    """output directory: policy.pt, mapping.json, labels.npz, info.json"""
    n_labelled: int = 200
    """N: expert transitions whose real actions build the code -> action mapping"""
    mapping: str = "table"
    """table (the paper's D, code -> uniform over seen actions) or learned (ablation: (code, frame) classifier)"""
    steps: int = 2000
    """optimiser steps for the latent policy"""
    batch_size: int = 64
    """frames per minibatch"""
    lr: float = 5e-4
    """Adam learning rate"""
    seed: int = 0
    """seed for the policy, the choice of the N labelled transitions and the learned mapping"""


def main(args: Args) -> None:
    from agents.collect import load_expert_set
    from genie_gym.evaluation.metrics import nmi

    if args.mapping not in ("table", "learned"):
        raise ConfigError(f"--mapping {args.mapping!r} is unknown; use table or learned")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    from genie_gym.data.dataset import EpisodeStore

    # The expert set's manifest says whether its frames are velocity-painted; the LAM must have seen the same kind.
    lam, seq_len = load_lam(args.world_model, paint_vel_info=EpisodeStore(args.data, "train").paint_vel_info)
    data = load_expert_set(args.data)
    codes = label_expert_set(lam, data, seq_len)
    frames, c, u = transitions(data, codes)
    A = int(lam.num_actions)
    idx = select_labelled(len(c), args.n_labelled, args.seed)  # before training: a bad N fails fast
    net, stats = train_classifier(frames, c, A, args.steps, args.batch_size, args.lr, args.seed, desc="latent bc")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    net.save(out / "policy.pt", metadata={"kind": "latent_bc", "labels": "LAM codes", "num_codes": A,
                                           "args": asdict(args), **stats})
    table = CodeActionTable(c[idx], u[idx], A)
    atomic_write_json(out / "mapping.json", {**table.to_dict(), "labelled_indices": idx.tolist(),
                                             "mapping": args.mapping, "lam_sha256": lam_fingerprint(lam)})
    if args.mapping == "learned":
        learned = LearnedMapping.fit(c[idx], u[idx], frames[idx], A, seed=args.seed)
        atomic_torch_save(learned.net.state_dict(), out / "mapping.pt")
    np.savez_compressed(out / "labels.npz", codes=c, actions=u)
    info = {"transitions": len(c), "nmi_codes_actions": nmi(c, u),
            "code_histogram": np.bincount(c, minlength=A).tolist(), **stats,
            "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_json(out / "info.json", info)
    print(json.dumps(info))


def load_latent_bc(directory: str | Path, num_codes: int | None = None,
                   lam: nn.Module | None = None) -> LatentBCPolicy:
    """Rebuild a latent BC agent saved by `main`; `num_codes` (the LAM's |A|) is checked against the policy, and
    `lam` (whose codes the agent will be given) against the LAM that labelled the table's transitions."""
    d = Path(directory)
    policy, _ = ImpalaPolicy.load(d / "policy.pt")
    if not (d / "mapping.json").is_file():
        raise CheckpointError(f"{d / 'mapping.json'} is missing; rerun `python -m agents.latent_bc --out {d}`")
    spec = json.loads((d / "mapping.json").read_text())
    if num_codes is not None:
        check_code_count(policy, num_codes)
    if lam is not None and spec.get("lam_sha256") not in (None, lam_fingerprint(lam)):
        raise CheckpointError(f"{d / 'mapping.json'} maps the codes of another LAM (sha256 "
                              f"{str(spec['lam_sha256'])[:12]}..., this one {lam_fingerprint(lam)[:12]}...); rebuild "
                              f"it with `python -m agents.latent_bc --world-model <this model> --out {d}`")
    if spec.get("mapping") == "learned":
        net = MappingNet(int(spec["num_codes"]))
        net.load_state_dict(torch.load(d / "mapping.pt", map_location="cpu", weights_only=True))
        return LatentBCPolicy(policy, LearnedMapping(net))
    return LatentBCPolicy(policy, CodeActionTable.from_dict(spec))


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
