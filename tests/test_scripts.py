"""scripts/: the GPU session's tools (pack a dataset, train on the device, assemble what came back), run on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genie_gym.data.dataset import EpisodeStore
from genie_gym.data.shards import load_manifest

ROOT = Path(__file__).resolve().parent.parent


def test_pack_dataset_copies_whole_shards_bit_for_bit(tiny_data: Path, tmp_path: Path):
    from pack_dataset import Args, main

    out = tmp_path / "packed"
    with pytest.raises(SystemExit, match="--level 0"):
        main(Args(src=tiny_data, out=out, level=0))
    main(Args(src=tiny_data, out=out, splits=("train", "validation"), level=3))  # level 19 (the default): ~9x slower
    src_manifest, manifest = load_manifest(tiny_data), load_manifest(out)
    for split in ("train", "validation"):
        a, b = EpisodeStore(out, split), EpisodeStore(tiny_data, split)  # sha256 of every shard checked on read
        assert len(a) == len(b) > 0
        for i in range(len(a)):
            for get in (a.frames, a.actions, a.rewards, a.dones):
                assert np.array_equal(get(i), getattr(b, get.__name__)(i))
        assert manifest["splits"][split]["frames"] == src_manifest["splits"][split]["frames"]
    assert manifest["packed_from"]["zstd_level"] == 3
    assert manifest["splits"]["test"]["episodes"] == 0 and not list((out / "shards").glob("test-*"))
    assert sum(e["bytes"] for e in manifest["shards"]) < sum(e["bytes"] for e in src_manifest["shards"]
                                                             if e["split"] != "test")
    with pytest.raises(SystemExit, match="exists"):
        main(Args(src=tiny_data, out=out))
    capped = tmp_path / "capped"
    main(Args(src=tiny_data, out=capped, max_mib=1e-3, level=1))  # no whole shard fits: none is copied, none is cut
    assert load_manifest(capped)["splits"]["train"]["episodes"] == 0


@pytest.mark.slow
def test_device_train_script_runs_on_cpu_and_assembles(tiny_data: Path, tiny_model_file: Path, tmp_path: Path):
    """scripts/device_train.sh end to end at tiny sizes (what the GPU session runs), then assemble_device_run.py."""
    import torch
    from assemble_device_run import Args as AssembleArgs
    from assemble_device_run import main as assemble
    from pack_dataset import Args as PackArgs
    from pack_dataset import main as pack

    from genie_gym.models.world_model import WorldModel
    from genie_gym.training.checkpoint import load_checkpoint

    packed, out = tmp_path / "packed", tmp_path / "out"
    pack(PackArgs(src=tiny_data, out=packed, level=3))
    env = {**os.environ, "OUT": str(out), "DATA": str(packed), "RUN": str(tmp_path / "run"),
           "MODEL": str(tiny_model_file), "PRESET": "tiny", "PYTHON": sys.executable, "DEVICE": "cpu", "BATCH": "2",
           "PROBE": "3", "TOK_S": "1", "DYN_STEPS": "7", "SPEED": "0", "CACHE_MIB": "64",
           "DYN_SET": "dynamics_optim.min_lr=1e-5"}  # the tokenizer's steps from its probe, the dynamics' set
    r = subprocess.run(["bash", "scripts/device_train.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{phase}{suffix}" for phase in ("tokenizer", "dynamics") for suffix in (".log", "_weights.pt"))
    steps = {}
    for phase in ("tokenizer", "dynamics"):
        ckpt = load_checkpoint(out / f"{phase}_weights.pt")
        assert set(ckpt["model"]) == {phase} and ckpt["optimizer"] is None
        assert {v.dtype for v in ckpt["model"][phase].values() if v.is_floating_point()} == {torch.bfloat16}
        assert len(ckpt["metrics_jsonl"].splitlines()) >= 1  # its metrics.jsonl travels inside
        assert ckpt["init_from"]["path"] == str(tiny_model_file)
        steps[phase] = ckpt["step"]
    assert ckpt["config"]["dynamics_optim"]["min_lr"] == 1e-5  # DYN_SET reached the dynamics phase's --set
    tok_cfg = load_checkpoint(out / "tokenizer_weights.pt")["config"]
    assert tok_cfg["dynamics_optim"]["min_lr"] != 1e-5  # ... and only that phase
    assert steps["tokenizer"] >= 20 and steps["dynamics"] == 7  # the probe's speed sets >= 20; DYN_STEPS sets 7
    wm = WorldModel.load(assemble(AssembleArgs(returned=out, run=tmp_path / "assembled")))
    assert wm.metadata["steps"] == steps
    assert (tmp_path / "assembled" / "dynamics" / "metrics.jsonl").is_file()
    source = WorldModel.load(tiny_model_file)
    for k, v in source.lam.state_dict().items():  # the frozen LAM is the source file's
        assert np.array_equal(wm.lam.state_dict()[k].numpy(), v.numpy()), k

    # no tokenizer phase, two dynamics arms at once: each continues on the source file's tokens
    arms = tmp_path / "arms"
    env = {**env, "OUT": str(arms), "RUN": str(tmp_path / "run_arms"), "TOK_S": "0", "DYN_STEPS": "3",
           "DYN_ARMS": "same: deep:dynamics.num_layers=3,dynamics_optim.warmup_steps=1"}
    r = subprocess.run(["bash", "scripts/device_train.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert sorted(p.name for p in arms.iterdir()) == sorted(
        f"dynamics_{arm}{suffix}" for arm in ("same", "deep") for suffix in (".log", "_weights.pt"))
    deep_cfg = load_checkpoint(arms / "dynamics_deep_weights.pt")["config"]
    assert deep_cfg["dynamics"]["num_layers"] == 3 and deep_cfg["dynamics_optim"]["warmup_steps"] == 1
    assert deep_cfg["dynamics_optim"]["min_lr"] == 1e-5  # DYN_SET reaches every arm
    wm = WorldModel.load(assemble(AssembleArgs(returned=arms, arm="deep", run=tmp_path / "assembled_deep")))
    assert wm.metadata["steps"] == {"tokenizer": source.metadata["steps"]["tokenizer"], "dynamics": 3}
    assert wm.config.dynamics.num_layers == 3
    for k, v in source.tokenizer.state_dict().items():  # the tokens it trained on are the source file's
        assert np.array_equal(wm.tokenizer.state_dict()[k].numpy(), v.numpy()), k

    # two tokenizer designs from scratch, each with a dynamics from scratch on its own tokens
    designs = tmp_path / "designs"
    env = {**env, "OUT": str(designs), "RUN": str(tmp_path / "run_designs"), "TOK_S": "1", "TOK_STEPS": "3",
           "DYN_STEPS": "3", "DYN_ARMS": "",
           "TOK_ARMS": "same: g1:tokenizer.groups=1,tokenizer.fsq_levels=2/4/8,tokenizer_optim.warmup_steps=1"}
    r = subprocess.run(["bash", "scripts/device_train.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert sorted(p.name for p in designs.iterdir()) == sorted(
        f"{phase}_{arm}{suffix}" for phase in ("tokenizer", "dynamics") for arm in ("same", "g1")
        for suffix in (".log", "_weights.pt"))
    tok_g1 = load_checkpoint(designs / "tokenizer_g1_weights.pt")
    assert tok_g1["config"]["tokenizer"]["groups"] == 1 and tok_g1.get("init_from") is None  # from scratch
    assert list(tok_g1["config"]["tokenizer"]["fsq_levels"]) == [2, 4, 8]  # a tuple's elements written with /
    dyn_g1 = load_checkpoint(designs / "dynamics_g1_weights.pt")
    assert dyn_g1["config"]["tokenizer"]["groups"] == 1 and dyn_g1["config"]["dynamics_optim"]["min_lr"] == 1e-5
    wm = WorldModel.load(assemble(AssembleArgs(returned=designs, arm="g1", run=tmp_path / "assembled_g1")))
    assert wm.config.tokenizer.groups == 1 and wm.metadata["steps"] == {"tokenizer": 3, "dynamics": 3}
    for k, v in source.lam.state_dict().items():  # the LAM stays the source file's
        assert np.array_equal(wm.lam.state_dict()[k].numpy(), v.numpy()), k


@pytest.mark.parametrize("settings, message", [
    ({"DYN_ARMS": "a: a:dynamics.num_layers=3"}, "DYN_ARMS: arm name 'a' given twice"),
    ({"DYN_ARMS": "a: b/c:"}, "is not NAME:SETS"),
    ({"TOK_ARMS": "a: b/c:", "TOK_S": "60"}, "TOK_ARMS: 'b/c:' is not NAME:SETS"),
    ({"TOK_ARMS": "a: b:tokenizer.groups=1"}, "needs TOK_S > 0"),
    ({"TOK_ARMS": "a:", "TOK_S": "60", "DYN_ARMS": "b:"}, "no DYN_ARMS")])
def test_device_train_checks_every_arm_before_starting_any(tmp_path: Path, settings: dict, message: str):
    """A bad DYN_ARMS or TOK_ARMS stops the script before any arm trains (none is left running into $OUT)."""
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "DEVICE": "cpu", "TOK_S": "0", **settings}
    r = subprocess.run(["bash", "scripts/device_train.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0 and message in r.stdout + r.stderr
    assert not any(out.iterdir())


def test_ship_model_writes_a_bf16_default_with_names_version_and_sampling(tiny_model_file: Path, tmp_path: Path):
    import torch
    from ship_model import Args, main

    from genie_gym.models.world_model import WorldModel

    out = tmp_path / "shipped.pt"
    with pytest.raises(SystemExit, match="--name-actions"):  # names first: Genie-v0's keys read them
        main(Args(model=tiny_model_file, version="9.9", out=out))
    wm = WorldModel.load(tiny_model_file)
    named = tmp_path / "named.pt"
    wm.save(named, {**wm.metadata, "action_meanings": [f"a{i}" for i in range(wm.num_actions)]})
    main(Args(model=named, version="9.9", out=out, maskgit_steps=3, temperature=0.5))
    shipped = WorldModel.load(out)
    assert shipped.metadata["version"] == "9.9" and shipped.metadata["action_meanings"][0] == "a0"
    assert (shipped.config.sampling.maskgit_steps, shipped.config.sampling.temperature) == (3, 0.5)
    assert out.stat().st_size < 0.7 * named.stat().st_size  # bf16 weights
    for k, v in wm.dynamics.state_dict().items():
        torch.testing.assert_close(shipped.dynamics.state_dict()[k], v.to(torch.bfloat16).float())


def test_ship_model_takes_a_decoder_only_from_a_fine_tune_with_the_same_encoder(tiny_model_file: Path,
                                                                                tmp_path: Path):
    import torch
    from ship_model import Args, main

    from genie_gym.models.world_model import WorldModel
    from genie_gym.training.checkpoint import checkpoint_bytes
    from genie_gym.utils.io import atomic_write_bytes

    wm = WorldModel.load(tiny_model_file)
    named = tmp_path / "named.pt"
    wm.save(named, {**wm.metadata, "action_meanings": [f"a{i}" for i in range(wm.num_actions)]})
    state = {k: v.clone() for k, v in wm.tokenizer.state_dict().items()}
    dec_key = next(k for k in state if k.startswith("decoder.") and state[k].is_floating_point())
    enc_key = next(k for k in state if k.startswith("encoder.") and state[k].is_floating_point())
    state[dec_key] += 0.5
    fine_tune = tmp_path / "tok.pt"
    tok_ckpt = {"phase": "tokenizer", "config": wm.config.to_dict(), "model": {"tokenizer": state}, "step": 7}
    atomic_write_bytes(fine_tune, checkpoint_bytes(tok_ckpt))
    out = tmp_path / "shipped.pt"
    main(Args(model=named, version="9.9", out=out, decoder_from=fine_tune))
    shipped = WorldModel.load(out)
    torch.testing.assert_close(shipped.tokenizer.state_dict()[dec_key], state[dec_key].to(torch.bfloat16).float())
    assert shipped.metadata["decoder_from"]["step"] == 7
    state[enc_key] += 0.5  # another encoder: other tokens, which the dynamics never saw
    atomic_write_bytes(fine_tune, checkpoint_bytes({**tok_ckpt, "step": 8}))
    with pytest.raises(SystemExit, match="encoder side differs"):
        main(Args(model=named, version="9.9", out=tmp_path / "other.pt", decoder_from=fine_tune))

