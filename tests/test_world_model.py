"""World-model file (save/load/verification) and the batched Simulator (cache vs full recompute, batching)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import genie_gym.models.world_model as wm_mod
from genie_gym.config import get_preset
from genie_gym.errors import CheckpointError, ConfigError
from genie_gym.models.simulator import Simulator
from genie_gym.models.world_model import FORMAT_VERSION, WorldModel


def assert_same_frames(a: np.ndarray, b: np.ndarray) -> None:
    """The same generated frames computed with other batch shapes: equal tokens, pixels within 1 of 255.

    Convolutions over batches of other sizes may sum in another order; a float difference of ~1e-7 can round a pixel
    to the next uint8 value, nothing more."""
    np.testing.assert_allclose(a.astype(np.int16), b.astype(np.int16), atol=1, rtol=0)
    assert (a != b).mean() < 1e-3


@pytest.fixture(scope="module")
def tiny() -> WorldModel:
    torch.manual_seed(0)
    return WorldModel(get_preset("tiny")).eval()


@pytest.fixture(scope="module")
def prompts() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)


# --- file format ----------------------------------------------------------------------------------------------------
def test_a_v02_file_still_loads_as_the_patch_vq_design(tmp_path):
    """v0.2 files have no stem/quantizer/groups/loss keys: they load as what they are (linear patches, VQ)."""
    import dataclasses

    from genie_gym.config import LEGACY_LAM_FIELDS, GenieConfig

    cfg = get_preset("tiny")
    cfg.tokenizer = dataclasses.replace(cfg.tokenizer, stem="patch", quantizer="vq", groups=1, code_dim=16,
                                        conv_channels=(64, 128), fsq_levels=(8, 5, 5, 5), mse_weight=1.0,
                                        l1_weight=0.0, grad_weight=0.0)
    cfg.dynamics = dataclasses.replace(cfg.dynamics, mask_rate_min=0.5, per_frame_mask=False, context_noise=0.0)
    torch.manual_seed(0)
    model = WorldModel(cfg)
    old = cfg.to_dict()  # the config as v0.2 wrote it: none of the keys added for v1.0
    for key in ("stem", "conv_channels", "quantizer", "fsq_levels", "groups", "mse_weight", "l1_weight", "grad_weight"):
        del old["tokenizer"][key]
    for key in ("per_frame_mask", "context_noise"):
        del old["dynamics"][key]
    old["lam"].update(LEGACY_LAM_FIELDS)  # up to v1.0 LAMConfig carried the ablation's switches
    assert GenieConfig.from_dict(old) == cfg
    path = tmp_path / "v02.pt"
    model.save(path)
    payload = torch.load(path, weights_only=True)
    inner = torch.load(io.BytesIO(payload["payload"].numpy().tobytes()), weights_only=True)
    inner["config"] = old
    buf = io.BytesIO()
    torch.save(inner, buf)
    raw = buf.getvalue()
    payload["payload"] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    payload["payload_sha256"] = __import__("hashlib").sha256(raw).hexdigest()
    torch.save(payload, path)
    loaded = WorldModel.load(path)
    assert loaded.config.tokenizer.stem == "patch" and loaded.config.tokenizer.quantizer == "vq"
    frames = torch.rand(1, 2, 64, 64, 3)
    assert torch.equal(loaded.tokenizer.encode(frames), model.eval().tokenizer.encode(frames))


@pytest.mark.parametrize("legacy", [{"latent_pool": "mean"}, {"decoder_history": True}, {"decoder_kernel": 0}])
def test_a_file_whose_lam_is_an_ablation_variant_is_a_clear_error(legacy):
    from genie_gym.config import GenieConfig

    old = get_preset("tiny").to_dict()
    old["lam"].update(legacy)
    with pytest.raises(ValueError, match="ablation variant.*retrain it with the current design"):
        GenieConfig.from_dict(old)


def test_save_load_roundtrip_keeps_weights_config_metadata(tiny, tmp_path):
    path = tmp_path / "wm.pt"
    digest = tiny.save(path, {"data_manifest_sha256": "abc", "steps": 12, "metrics": {"psnr": 30.5}})
    loaded = WorldModel.load(path)
    assert loaded.config == tiny.config
    assert loaded.metadata == {"data_manifest_sha256": "abc", "steps": 12, "metrics": {"psnr": 30.5}}
    assert loaded.payload_sha256 == digest
    for (k, a), (_, b) in zip(tiny.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert not loaded.training
    assert [p.name for p in tmp_path.iterdir()] == ["wm.pt"]  # atomic write leaves no temporary file


def test_bf16_save_halves_the_file_and_loads_as_float32(tiny, tmp_path):
    tiny.save(tmp_path / "f32.pt", {})
    tiny.save(tmp_path / "bf16.pt", {}, dtype=torch.bfloat16)
    assert (tmp_path / "bf16.pt").stat().st_size < 0.6 * (tmp_path / "f32.pt").stat().st_size
    loaded = WorldModel.load(tmp_path / "bf16.pt")
    w = loaded.dynamics.head.weight
    assert w.dtype == torch.float32
    assert torch.equal(w, tiny.dynamics.head.weight.to(torch.bfloat16).float())


def test_file_holds_the_payload_raw_and_format_1_files_still_load(tiny, tmp_path):
    path = tmp_path / "wm.pt"
    tiny.save(path, {"k": 1}, dtype=torch.bfloat16)
    weight_bytes = sum(2 * p.numel() for p in tiny.parameters())
    assert path.stat().st_size < 1.15 * weight_bytes + 200_000  # format 1 pickled bytes as UTF-8: ~1.5x
    outer = torch.load(path, weights_only=True)
    outer["format_version"], outer["payload"] = 1, outer["payload"].numpy().tobytes()  # the format-1 layout
    torch.save(outer, tmp_path / "v1.pt")
    old = WorldModel.load(tmp_path / "v1.pt")
    assert old.metadata == {"k": 1}
    assert torch.equal(old.dynamics.head.weight, WorldModel.load(path).dynamics.head.weight)


def test_metadata_must_be_json(tiny, tmp_path):
    with pytest.raises(ValueError, match="JSON"):
        tiny.save(tmp_path / "x.pt", {"bad": object()})


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        WorldModel.load(tmp_path / "nope.pt")


@pytest.mark.parametrize("damage", ["truncate", "flip_payload_byte", "garbage"])
def test_damaged_file_is_a_checkpoint_error(tiny, tmp_path, damage):
    path = tmp_path / "wm.pt"
    tiny.save(path, {})
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip_payload_byte":  # inside the stored weights: only the checksum can notice
        outer = torch.load(io.BytesIO(bytes(data)), weights_only=True)
        outer["payload"][len(outer["payload"]) // 2] ^= 0xFF
        buf = io.BytesIO()
        torch.save(outer, buf)
        data = buf.getvalue()
    else:
        data = b"this is not a checkpoint" * 10
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        WorldModel.load(path)


def test_damaged_shipped_file_says_how_to_reinstall(tiny, tmp_path, monkeypatch):
    shipped = tmp_path / "assets" / "world_model.pt"
    monkeypatch.setattr(wm_mod, "_default_path", lambda: shipped)
    with pytest.raises(CheckpointError, match="pip install --force-reinstall genie-gym"):
        WorldModel.load()  # missing
    tiny.save(shipped, {})
    shipped.write_bytes(shipped.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="git checkout genie_gym/assets"):
        WorldModel.load()


def test_newer_format_version_says_upgrade(tiny, tmp_path):
    path = tmp_path / "wm.pt"
    tiny.save(path, {})
    outer = torch.load(path, weights_only=True)
    outer["format_version"] = FORMAT_VERSION + 1
    torch.save(outer, path)
    with pytest.raises(CheckpointError, match="upgrade"):
        WorldModel.load(path)


def test_incompatible_weights_and_foreign_files(tiny, tmp_path):
    path = tmp_path / "wm.pt"
    tiny.save(path, {})
    outer = torch.load(path, weights_only=True)
    payload = torch.load(io.BytesIO(outer["payload"].numpy().tobytes()), weights_only=True)
    payload["state_dict"]["dynamics.head.weight"] = torch.zeros(3, 3)  # wrong shape, checksum made to fit
    buf = io.BytesIO()
    torch.save(payload, buf)
    outer["payload"] = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
    outer["payload_sha256"] = wm_mod.sha256_bytes(buf.getvalue())
    torch.save(outer, path)
    with pytest.raises(CheckpointError, match="incompatible"):
        WorldModel.load(path)
    torch.save(tiny.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a genie-gym world-model file"):
        WorldModel.load(tmp_path / "plain.pt")


def test_default_path_is_inside_the_package():
    p = WorldModel.default_path()
    assert p.name == "world_model.pt" and p.parent.name == "assets" and p.parent.parent.name == "genie_gym"


# --- simulator ------------------------------------------------------------------------------------------------------
def _rollout(sim: Simulator, prompts: np.ndarray, seeds: list[int], actions_SB: np.ndarray) -> np.ndarray:
    sim.reset(None, prompts, seeds)
    return np.stack([sim.step(a) for a in actions_SB])  # (S, B, H, W, C)


def test_cached_path_equals_full_recompute_within_the_window(tiny, prompts):
    W = 4
    actions_SB = np.random.default_rng(1).integers(0, 8, (W + 3, 3))
    cached = _rollout(Simulator(tiny, 3, context_frames=W, use_cache=True), prompts, [1, 2, 3], actions_SB)
    full = _rollout(Simulator(tiny, 3, context_frames=W, use_cache=False), prompts, [1, 2, 3], actions_SB)
    # Steps 1..W-1: the whole history fits in the window, both paths see exactly the same frames.
    assert_same_frames(cached[: W - 1], full[: W - 1])
    assert cached.dtype == np.uint8 and cached.shape == (W + 3, 3, 64, 64, 3)
    # Beyond, full recompute truncates while the cache keeps older frames' influence (documented): they differ.
    assert not np.array_equal(cached[W - 1:], full[W - 1:])


def test_cell_schedule_is_one_keyword_and_its_own_rollout(tiny, prompts):
    """maskgit_schedule='cell' (each pass decides a share of every grid cell) runs through the same Simulator, is
    deterministic per seed, and decodes other frames than the frame-wide schedule with as many passes."""
    W = 4
    actions_SB = np.random.default_rng(3).integers(0, 8, (W - 1, 3))

    def run(schedule: str, **kw) -> np.ndarray:
        sim = Simulator(tiny, 3, maskgit_steps=2, maskgit_schedule=schedule, context_frames=W, **kw)
        return _rollout(sim, prompts, [1, 2, 3], actions_SB)

    cell, frame = run("cell"), run("frame")
    assert np.array_equal(cell, run("cell")) and not np.array_equal(cell, frame)
    assert_same_frames(cell, run("cell", use_cache=False))  # within the window: the cached path's frames
    with pytest.raises(ConfigError, match="maskgit_schedule must be one of"):
        Simulator(tiny, 1, maskgit_schedule="rows")


def test_a_world_is_the_same_alone_or_in_a_batch_and_after_partial_reset(tiny, prompts):
    actions_SB = np.random.default_rng(2).integers(0, 8, (6, 3))
    batch = _rollout(Simulator(tiny, 3, context_frames=4), prompts, [1, 2, 3], actions_SB)
    alone = _rollout(Simulator(tiny, 1, context_frames=4), prompts[1:2], [2], actions_SB[:, 1:2])
    assert_same_frames(batch[:, 1], alone[:, 0])
    sim = Simulator(tiny, 3, context_frames=4)
    sim.reset(None, prompts[::-1].copy(), [7, 8, 9])
    sim.step(np.array([1, 2, 3]))
    sim.reset([1], prompts[1:2], [2])  # world 1 restarts while worlds 0 and 2 keep their history
    again = np.stack([sim.step(a) for a in actions_SB])
    assert_same_frames(again[:, 1], batch[:, 1])


def test_same_seed_same_frames_other_seed_other_frames(tiny, prompts):
    actions_SB = np.zeros((3, 1), dtype=np.int64)
    a = _rollout(Simulator(tiny, 1), prompts[:1], [5], actions_SB)
    b = _rollout(Simulator(tiny, 1), prompts[:1], [5], actions_SB)
    c = _rollout(Simulator(tiny, 1), prompts[:1], [6], actions_SB)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_simulator_rejects_bad_arguments(tiny, prompts):
    for kwargs in ({"num_worlds": 0}, {"maskgit_steps": 0}, {"temperature": -1.0}, {"context_frames": 1}):
        with pytest.raises(ConfigError):
            Simulator(tiny, **{"num_worlds": 1, **kwargs})
    with pytest.raises(ConfigError, match=r"10000000000 worlds need about .* GiB .* free; use at most"):
        Simulator(tiny, 10**10)  # refused before allocating anything
    sim = Simulator(tiny, 2)
    with pytest.raises(RuntimeError, match="never reset"):
        sim.step(np.array([0, 0]))
    with pytest.raises(ValueError, match="uint8"):
        sim.reset(None, prompts[:2].astype(np.float32), [0, 1])
    sim.reset(None, prompts[:2], [0, 1])
    with pytest.raises(ValueError, match=r"in \[0, 8\)"):
        sim.step(np.array([0, 8]))
    with pytest.raises(ValueError, match="shape"):
        sim.step(np.array([0]))
    assert sim.step(np.array([0, 7])).shape == (2, 64, 64, 3)  # still usable


def test_bfloat16_precision_runs_deterministically_and_bad_precision_is_an_error(tiny, prompts):
    actions = np.array([[1, 2, 0], [3, 4, 5], [5, 6, 7]])
    a = _rollout(Simulator(tiny, 3, precision="bfloat16"), prompts, [1, 2, 3], actions)
    b = _rollout(Simulator(tiny, 3, precision="bfloat16"), prompts, [1, 2, 3], actions)
    assert a.dtype == np.uint8 and a.shape[-3:] == (64, 64, 3) and np.array_equal(a, b)
    with pytest.raises(ConfigError, match="precision"):
        Simulator(tiny, 1, precision="fp8")


def test_compiled_simulator_gives_the_eager_frames(tiny, prompts):
    """torch.compile of the per-frame calls: float32 frames equal to eager's with the same seeds (or, where this
    machine cannot compile, a warning and the eager path: the same frames either way)."""
    import warnings

    actions = np.array([[1, 2, 0], [3, 4, 5], [5, 6, 7]])
    eager = _rollout(Simulator(tiny, 3, temperature=1.0), prompts, [1, 2, 3], actions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        compiled = _rollout(Simulator(tiny, 3, temperature=1.0, compile=True), prompts, [1, 2, 3], actions)
    assert_same_frames(compiled, eager)
    with pytest.raises(ConfigError, match="compile"):
        Simulator(tiny, 1, compile="yes")


def test_compile_failure_warns_once_and_runs_eager(tiny, prompts, monkeypatch):
    def broken_compile(fn, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("no C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    actions = np.array([[1, 2, 3], [4, 5, 6]])
    eager = _rollout(Simulator(tiny, 3), prompts, [1, 2, 3], actions)
    with pytest.warns(RuntimeWarning, match="torch.compile of the dynamics step failed.*no C\\+\\+ compiler"):
        fallback = _rollout(Simulator(tiny, 3, compile=True), prompts, [1, 2, 3], actions)
    np.testing.assert_array_equal(fallback, eager)


def test_coinrun_preset_builds_at_the_papers_sizes_on_the_meta_device():
    """The paper's case-study sizes (docs/paper.md section 1) construct and run shapes without allocating memory."""
    cfg = get_preset("coinrun")
    with torch.device("meta"):
        wm = WorldModel(cfg)
        logits = wm.dynamics(torch.zeros(1, 16, 256, dtype=torch.long), torch.zeros(1, 15, dtype=torch.long))
    assert all(p.is_meta for p in wm.parameters())
    t, d = cfg.tokenizer, cfg.dynamics
    assert (t.patch_size, t.codebook_size, t.code_dim, t.num_layers, t.d_model) == (4, 1024, 32, 8, 512)
    assert (d.num_layers, d.d_model, cfg.seq_len, cfg.sampling.maskgit_steps) == (12, 512, 16, 25)
    assert logits.shape == (1, 16, 256, 1024)  # (64 / 4)^2 tokens per frame, 1024 codes
    millions = {n: sum(p.numel() for p in getattr(wm, n).parameters()) / 1e6 for n in ("tokenizer", "dynamics")}
    assert 60 < millions["tokenizer"] < 75 and 45 < millions["dynamics"] < 60, millions
