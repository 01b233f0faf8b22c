"""`genie-gym train` on the tiny preset and a tiny recorded dataset: checkpoints, exact resume, DDP, bad
input, and the resumable pipeline end to end (data -> tokenizer -> dynamics -> eval)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import record_tiny

from genie_gym.config import get_preset
from genie_gym.errors import CheckpointError, ConfigError, DatasetError
from genie_gym.models.tokenizer import VideoTokenizer
from genie_gym.models.world_model import build_tokenizer
from genie_gym.training.checkpoint import CHECKPOINT_FORMAT_VERSION, checkpoint_bytes, load_checkpoint
from genie_gym.training.train import Args
from genie_gym.training.trainer import NonFiniteLossError, Trainer, train
from genie_gym.utils.io import atomic_write_bytes, sha256_file

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tokenizer_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory whose tokenizer phase finished (6 steps)."""
    run = tmp_path_factory.mktemp("tok_run")
    train(targs(tiny_data, run, "tokenizer", steps=6))
    return run


def tb_tags(event_file: Path) -> dict[str, list[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(event_file))
    acc.Reload()
    return acc.Tags()


def targs(data: Path, out: Path, phase: str = "tokenizer", **kw) -> Args:
    base = dict(
        phase=phase,
        preset="tiny",
        data=data,
        out=out,
        device="cpu",
        num_workers=0,
        log_every=2,
        ckpt_every=3,
        image_every=0,
        tensorboard=False,
        seed=1,
        dead_code_every=2,
    )
    return Args(**{**base, **kw})


def test_checkpoint_round_trip(tiny_data: Path, tmp_path: Path):
    trainer = Trainer(targs(tiny_data, tmp_path, steps=4, stop_at=3))
    trainer.run()
    ckpt = load_checkpoint(tmp_path / "tokenizer" / "last.pt")
    assert ckpt["format_version"] == CHECKPOINT_FORMAT_VERSION and ckpt["phase"] == "tokenizer"
    assert ckpt["step"] == 3 and ckpt["config"] == trainer.cfg.to_dict()
    assert {"python", "numpy", "torch"} <= set(ckpt["rng"])
    assert ckpt["sampler"]["epoch"] * 10**9 + ckpt["sampler"]["offset"] > 0
    for k, v in trainer.model.tokenizer.state_dict().items():
        assert torch.equal(v, ckpt["model"]["tokenizer"][k]), k
    assert (tmp_path / "tokenizer" / "step_0000003.pt").is_file()
    assert json.loads((tmp_path / "tokenizer" / "status.json").read_text())["step"] == 3

    resumed = Trainer(targs(tiny_data, tmp_path, steps=4, resume=True))
    assert resumed.step == 3 and resumed.stream.state_dict() == trainer.stream.state_dict()
    assert resumed.scheduler.get_last_lr() == trainer.scheduler.get_last_lr()
    for p, q in zip(resumed.model.parameters(), trainer.model.parameters(), strict=True):
        assert torch.equal(p, q)
    for s, t in zip(resumed.optimizer.state.values(), trainer.optimizer.state.values(), strict=True):
        assert torch.equal(s["exp_avg"], t["exp_avg"])


@pytest.mark.parametrize("phase", ["tokenizer", "dynamics"])
def test_resume_reproduces_identical_losses(phase: str, tiny_data: Path, tokenizer_run: Path, tmp_path: Path):
    tok = tokenizer_run / "tokenizer" / "last.pt"
    full = train(targs(tiny_data, tmp_path / "full", phase, steps=6, tokenizer_ckpt=tok))
    first = train(targs(tiny_data, tmp_path / "split", phase, steps=6, stop_at=3, tokenizer_ckpt=tok))
    log = tmp_path / "split" / phase / "metrics.jsonl"
    with open(log, "a") as f:  # what a kill after the step-3 checkpoint leaves behind: steps logged, then lost
        f.write(json.dumps({"step": 4, "loss": 1.0}) + "\n" + '{"step": 5, "lo')
    rest = train(targs(tiny_data, tmp_path / "split", phase, steps=6, resume=True, tokenizer_ckpt=tok))
    assert len(full) == 6 and len(first) == 3 and len(rest) == 3
    assert first + rest == full  # bit-identical, not approximately equal
    assert len(set(full)) > 1
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 6  # the lost steps were dropped, then logged once
    if phase == "dynamics":
        from genie_gym.models.world_model import WorldModel

        wm = WorldModel.load(tmp_path / "split" / "world_model.pt")
        assert wm.metadata["steps"] == {"tokenizer": 6, "dynamics": 6}
        assert wm.metadata["data_manifest_sha256"] == sha256_file(tiny_data / "manifest.json")
        assert "dynamics/loss" in wm.metadata["metrics"]


def test_lam_continuous_warmup_switches_to_kmeans_codes_and_resumes_exactly(
    tiny_data: Path, tokenizer_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """continuous_warmup_steps=3: no VQ loss for steps 1-3, k-means codebook at step 3, quantised after; a run
    split at the step-3 checkpoint (before the k-means) gives the same losses as one run."""
    import dataclasses

    from genie_gym import config

    def tiny_warmup() -> config.GenieConfig:
        cfg = config.PRESETS["tiny"]()
        return dataclasses.replace(cfg, lam=dataclasses.replace(cfg.lam, continuous_warmup_steps=3))

    monkeypatch.setitem(config.PRESETS, "tiny_warmup", tiny_warmup)
    tok = tokenizer_run / "tokenizer" / "last.pt"
    kw = dict(steps=6, tokenizer_ckpt=tok, log_every=1, dead_code_every=1)
    trainer = Trainer(targs(tiny_data, tmp_path / "full", "dynamics", preset="tiny_warmup", **kw))
    init_codes = trainer.model.lam.vq.codebook.detach().clone()
    assert not trainer.model.lam.quantize
    full = trainer.run()
    assert trainer.model.lam.quantize and not torch.equal(init_codes, trainer.model.lam.vq.codebook)
    rows = [json.loads(line) for line in (tmp_path / "full" / "dynamics" / "metrics.jsonl").read_text().splitlines()]
    vq_loss = {r["step"]: r["lam_vq_loss"] for r in rows}
    assert all(vq_loss[s] == 0.0 for s in (1, 2, 3)) and all(vq_loss[s] > 0 for s in (4, 5, 6))
    first = train(targs(tiny_data, tmp_path / "split", "dynamics", preset="tiny_warmup", stop_at=3, **kw))
    rest = train(targs(tiny_data, tmp_path / "split", "dynamics", preset="tiny_warmup", resume=True, **kw))
    assert first + rest == full


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(tiny_data: Path, tokenizer_run: Path, tmp_path: Path):
    """Phase dynamics (LAM VQ resets broadcast from rank 0, world-model export) under torchrun with gloo."""
    out, phase = tmp_path / "ddp", "dynamics"
    flags = (
        f"--phase {phase} --preset tiny --steps 3 --device cpu --num-workers 0 --log-every 1 --ckpt-every 3 "
        "--dead-code-every 1 --image-every 3"
    ).split()
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "genie_gym.cli"]
    cmd = [*launcher, "train", *flags, "--data", str(tiny_data), "--out", str(out),
           "--tokenizer-ckpt", str(tokenizer_run / "tokenizer" / "last.pt")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = load_checkpoint(out / phase / "last.pt")
    assert ckpt["step"] == 3 and ckpt["sampler"]["world_size"] == 2
    assert isinstance(ckpt["rng"], list) and len(ckpt["rng"]) == 2  # each rank's RNG, for an exact resume
    events = list((out / phase / "tb").glob("events.*"))
    assert len(events) == 1  # only rank 0 logs
    tags = tb_tags(events[0])
    assert {"generated", "reconstruction"} <= set(tags["images"])
    scalars = {"train/loss", "lam/usage", "lam/perplexity", "train/frames_per_s", "train/lr"}
    assert scalars <= set(tags["scalars"])
    assert proc.stdout.count("final loss") == 1  # only rank 0 reports
    assert (out / "world_model.pt").is_file()


def test_bad_checkpoints_are_clear_errors(tiny_data: Path, tokenizer_run: Path, tmp_path: Path):
    train(targs(tiny_data, tmp_path, steps=3))
    last = tmp_path / "tokenizer" / "last.pt"
    good = last.read_bytes()

    atomic_write_bytes(last, good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt.*step_0000003.pt"):
        Trainer(targs(tiny_data, tmp_path, steps=6, resume=True))

    ckpt = load_checkpoint(tokenizer_run / "tokenizer" / "last.pt")
    torch.save({**ckpt, "format_version": CHECKPOINT_FORMAT_VERSION + 1}, last)
    with pytest.raises(CheckpointError, match="newer.*upgrade"):
        Trainer(targs(tiny_data, tmp_path, steps=6, resume=True))

    payload = {k: v for k, v in ckpt.items() if k not in ("format_version", "kind")}
    mismatched = dict(
        payload, config={**ckpt["config"], "tokenizer": {**ckpt["config"]["tokenizer"], "codebook_size": 32}}
    )
    bad_tok = tmp_path / "other_tokenizer.pt"
    atomic_write_bytes(bad_tok, checkpoint_bytes(mismatched))
    with pytest.raises(CheckpointError, match="codebook_size: 32 != 64.*--preset tiny"):
        Trainer(targs(tiny_data, tmp_path, "dynamics", tokenizer_ckpt=bad_tok))
    with pytest.raises(CheckpointError, match="train phase 1 first"):
        Trainer(targs(tiny_data, tmp_path / "empty", "dynamics"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_data: Path, tmp_path: Path):
    train(targs(tiny_data, tmp_path, steps=6, stop_at=3))
    last = tmp_path / "tokenizer" / "last.pt"
    digest = sha256_file(last)
    trainer = Trainer(targs(tiny_data, tmp_path, steps=6, resume=True))
    with torch.no_grad():
        trainer.model.tokenizer.post_quant.weight.fill_(float("nan"))
    with pytest.raises(
        NonFiniteLossError, match=r"step 3: loss is nan.*last good checkpoint.*kept.*--resume"
    ):
        trainer.run()
    assert sha256_file(last) == digest
    assert load_checkpoint(last)["step"] == 3


def test_bad_arguments_are_clear_errors(tiny_data: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="unknown preset 'huge'.*coinrun"):
        Trainer(targs(tiny_data, tmp_path, preset="huge"))
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available.*--device cpu"):
            Trainer(targs(tiny_data, tmp_path, device="cuda"))
    with pytest.raises(DatasetError, match="does not exist"):
        Trainer(targs(tmp_path / "nowhere", tmp_path))
    short = record_tiny(
        tmp_path / "short_data", frames=40, max_steps=3
    )  # episodes of 3 frames < context of 4
    with pytest.raises(DatasetError, match="clip_len=4 is longer than every episode"):
        Trainer(targs(short, tmp_path))


def test_config_overrides_from_the_command_line(tiny_data: Path, tokenizer_run: Path, tmp_path: Path):
    """--set SECTION.FIELD=VALUE changes the preset's config (an ablation needs no code), is recorded in the
    checkpoint, must be repeated to resume, and a typo names the fields that exist."""
    from genie_gym.cli import main as cli_main

    over = ("dynamics.context_noise=0.0", "dynamics.mask_rate_min=0.5", "lam.num_actions=6")
    tok = tokenizer_run / "tokenizer" / "last.pt"
    run = Trainer(targs(tiny_data, tmp_path, "dynamics", steps=2, set=over, tokenizer_ckpt=tok))
    assert (run.cfg.dynamics.context_noise, run.cfg.dynamics.mask_rate_min, run.cfg.lam.num_actions) == (0.0, 0.5, 6)
    run.run()
    assert load_checkpoint(tmp_path / "dynamics" / "last.pt")["config"]["lam"]["num_actions"] == 6
    with pytest.raises(CheckpointError, match="lam.num_actions: 6 != 8"):
        Trainer(targs(tiny_data, tmp_path, "dynamics", steps=3, resume=True, tokenizer_ckpt=tok))
    with pytest.raises(ConfigError, match=r"unknown field 'dynamics.context_nois'.*'context_noise'.*\(--set\)"):
        Trainer(targs(tiny_data, tmp_path, set=("dynamics.context_nois=0.1",)))
    with pytest.raises(SystemExit):  # the CLI: one line, no traceback
        cli_main(["train", "--data", str(tiny_data), "--out", str(tmp_path), "--set", "lam.num_actions=many"])


@pytest.mark.slow
def test_tiny_pipeline_end_to_end_and_resumable(tiny_data: Path, tmp_path: Path):
    from genie_gym.training.pipeline import Args as PArgs
    from genie_gym.training.pipeline import run_pipeline

    args = PArgs(
        preset="tiny",
        out=tmp_path / "run",
        data=tiny_data,
        device="cpu",
        num_workers=0,
        tokenizer_steps=8,
        dynamics_steps=8,
        eval_clips=4,
    )
    result = run_pipeline(args)
    run = tmp_path / "run"
    for f in (
        "world_model.pt",
        "eval/eval.json",
        "eval/grid.png",
        "eval/action_strip.png",
        "tokenizer/last.pt",
        "dynamics/last.pt",
    ):
        assert (run / f).is_file(), f
    assert len(result["eval"]["rollout_psnr"]) == 10
    from genie_gym.models.world_model import WorldModel

    named = WorldModel.load(run / "world_model.pt").metadata["action_meanings"]  # eval named the latent actions
    assert named == result["eval"]["lam_action_meanings"] and len(named) == 8
    mtimes = {
        f: (run / f).stat().st_mtime_ns for f in ("world_model.pt", "eval/eval.json", "tokenizer/last.pt")
    }
    first_s = json.loads((run / "pipeline.json").read_text())["timings_s"]
    assert set(first_s) == {"data_s", "tokenizer_s", "dynamics_s", "heads_s", "eval_s"} and first_s["tokenizer_s"] > 0
    again = run_pipeline(args)  # every stage is complete: nothing is retrained or rewritten
    assert {f: (run / f).stat().st_mtime_ns for f in mtimes} == mtimes
    assert again["eval"] == result["eval"]
    summed_s = json.loads((run / "pipeline.json").read_text())["timings_s"]
    assert all(first_s[k] <= summed_s[k] < first_s[k] + 5 for k in first_s)  # a skipped stage adds ~0 s


def test_init_from_a_world_model_fine_tunes_and_is_recorded(tiny_data: Path, tokenizer_run: Path, tmp_path: Path):
    from genie_gym.models.world_model import WorldModel

    tok = tokenizer_run / "tokenizer" / "last.pt"
    train(targs(tiny_data, tmp_path / "a", "dynamics", steps=3, tokenizer_ckpt=tok))
    src = tmp_path / "a" / "world_model.pt"
    b = tmp_path / "b"
    trainer = Trainer(targs(tiny_data, b, "dynamics", steps=3, tokenizer_ckpt=tok, init_from=src))
    ref = WorldModel.load(src)
    for name in ("lam", "dynamics"):
        for k, v in getattr(ref, name).state_dict().items():
            torch.testing.assert_close(trainer.model.parts()[name].state_dict()[k], v, msg=f"{name}.{k}")
    trainer.run()
    meta = WorldModel.load(b / "world_model.pt").metadata
    assert meta["init_from"]["sha256"] == sha256_file(src) and meta["init_from"]["steps"]["dynamics"] == 3
    with pytest.raises(CheckpointError, match="'tokenizer' checkpoint"):
        Trainer(targs(tiny_data, tmp_path / "c", "dynamics", steps=3, tokenizer_ckpt=tok, init_from=tok))
    with pytest.raises(ConfigError, match="--init-parts"):
        Trainer(targs(tiny_data, tmp_path / "d", "dynamics", steps=3, tokenizer_ckpt=tok, init_from=src,
                      init_parts=("decoder",)))


def test_a_frozen_tokenizer_fits_whatever_loss_weights_trained_it():
    """A tokenizer whose decoder was fine-tuned with other loss weights (--set tokenizer.mse_weight=...) is the same
    model to the dynamics; another design (here 2 tokens per cell instead of the preset's) is refused."""
    from genie_gym.training.checkpoint import check_tokenizer_fits

    cfg = get_preset("tiny")
    ckpt = {"phase": "tokenizer", "config": cfg.to_dict()}
    ckpt["config"]["tokenizer"].update(mse_weight=10.0, grad_weight=0.5)
    check_tokenizer_fits(ckpt, cfg, Path("tok.pt"))
    ckpt["config"]["tokenizer"]["groups"] = cfg.tokenizer.groups + 1
    with pytest.raises(CheckpointError, match="groups"):
        check_tokenizer_fits(ckpt, cfg, Path("tok.pt"))


def test_init_from_a_shallower_dynamics_deepens_it_as_the_identity(tiny_data: Path, tokenizer_run: Path,
                                                                   tmp_path: Path):
    """--init-from a model with fewer ST blocks (--set dynamics.num_layers=...): its blocks fill the first ones, the
    new ones start as the identity, so the deepened dynamics predicts exactly what the source did; then it trains."""
    from genie_gym.models.world_model import WorldModel

    tok = tokenizer_run / "tokenizer" / "last.pt"
    train(targs(tiny_data, tmp_path / "a", "dynamics", steps=3, tokenizer_ckpt=tok))
    src = tmp_path / "a" / "world_model.pt"
    ref = WorldModel.load(src).dynamics.eval()
    n = ref.cfg.num_layers
    trainer = Trainer(targs(tiny_data, tmp_path / "b", "dynamics", steps=2, tokenizer_ckpt=tok, init_from=src,
                            set=(f"dynamics.num_layers={n + 2}",)))
    deep = trainer.model.parts()["dynamics"].eval()
    assert len(deep.transformer.blocks) == n + 2
    assert trainer.init_from["deepened"] == [f"dynamics.transformer: {n} -> {n + 2} blocks"]
    g = torch.Generator().manual_seed(0)
    tokens_BTN = torch.randint(0, ref.num_tokens, (2, 4, ref.tokens_per_frame), generator=g)
    actions_BT = torch.randint(0, ref.num_actions, (2, 3), generator=g)
    with torch.no_grad():
        torch.testing.assert_close(deep(tokens_BTN, actions_BT), ref(tokens_BTN, actions_BT))
    new_blocks = deep.transformer.blocks[n:]
    before = [p.detach().clone() for p in new_blocks.parameters()]
    trainer.run()
    assert any(not torch.equal(a, b) for a, b in zip(before, new_blocks.parameters(), strict=True))
    assert WorldModel.load(tmp_path / "b" / "world_model.pt").config.dynamics.num_layers == n + 2
    with pytest.raises(CheckpointError, match="shallower one of the same width"):  # another width does not load
        Trainer(targs(tiny_data, tmp_path / "c", "dynamics", steps=2, tokenizer_ckpt=tok, init_from=src,
                      set=("dynamics.d_model=48",)))


def test_init_from_fine_tunes_a_tokenizer(tiny_data: Path, tokenizer_run: Path, tmp_path: Path):
    """Phase tokenizer starts from a world-model file's tokenizer (or a tokenizer checkpoint), step 0, new schedule."""
    from genie_gym.models.world_model import WorldModel

    tok = tokenizer_run / "tokenizer" / "last.pt"
    train(targs(tiny_data, tmp_path / "a", "dynamics", steps=2, tokenizer_ckpt=tok))
    src = tmp_path / "a" / "world_model.pt"
    trainer = Trainer(targs(tiny_data, tmp_path / "b", "tokenizer", steps=2, init_from=src))
    for k, v in WorldModel.load(src).tokenizer.state_dict().items():
        torch.testing.assert_close(trainer.model.parts()["tokenizer"].state_dict()[k], v, msg=k)
    assert trainer.step == 0 and trainer.init_from["parts"] == ["tokenizer"]
    trainer.run()
    assert load_checkpoint(tmp_path / "b" / "tokenizer" / "last.pt")["init_from"]["sha256"] == sha256_file(src)
    Trainer(targs(tiny_data, tmp_path / "c", "tokenizer", steps=2, init_from=tok))  # a tokenizer checkpoint
    with pytest.raises(CheckpointError, match="'dynamics' checkpoint"):
        Trainer(targs(tiny_data, tmp_path / "d", "tokenizer", steps=2,
                      init_from=tmp_path / "a" / "dynamics" / "last.pt"))
    with pytest.raises(ConfigError, match="takes tokenizer"):
        Trainer(targs(tiny_data, tmp_path / "e", "tokenizer", steps=2, init_from=src, init_parts=("lam",)))


def test_freeze_lam_trains_only_the_dynamics(tiny_data: Path, tokenizer_run: Path, tmp_path: Path):
    """--freeze-lam: the LAM loaded by --init-from labels the clips and never changes; the dynamics learns."""
    from genie_gym.models.world_model import WorldModel

    tok = tokenizer_run / "tokenizer" / "last.pt"
    train(targs(tiny_data, tmp_path / "a", "dynamics", steps=3, tokenizer_ckpt=tok))
    src = tmp_path / "a" / "world_model.pt"
    train(targs(tiny_data, tmp_path / "b", "dynamics", steps=4, tokenizer_ckpt=tok, init_from=src,
                init_parts=("lam",), freeze_lam=True))
    before, after = WorldModel.load(src), WorldModel.load(tmp_path / "b" / "world_model.pt")
    for k, v in before.lam.state_dict().items():
        assert torch.equal(after.lam.state_dict()[k], v), k
    assert any(not torch.equal(after.dynamics.state_dict()[k], v) for k, v in before.dynamics.state_dict().items())
    with pytest.raises(ConfigError, match="--init-from FILE --init-parts lam"):
        Trainer(targs(tiny_data, tmp_path / "c", "dynamics", steps=3, tokenizer_ckpt=tok, freeze_lam=True))


def test_freeze_encoder_trains_only_the_decoder(tiny_data: Path, tokenizer_run: Path, tmp_path: Path):
    """--freeze-encoder: the --init-from tokenizer's encoder side (and so every token) stays; the decoder learns;
    resuming must repeat the flag; it needs a trained tokenizer and belongs to phase tokenizer."""
    from genie_gym.data.dataset import ClipDataset
    from genie_gym.models.frames import to_float

    tok = tokenizer_run / "tokenizer" / "last.pt"
    train(targs(tiny_data, tmp_path / "b", "tokenizer", steps=4, init_from=tok, freeze_encoder=True, lr=1e-2))
    before, after = load_checkpoint(tok)["model"]["tokenizer"], load_checkpoint(
        tmp_path / "b" / "tokenizer" / "last.pt")["model"]["tokenizer"]
    encoder_side = {k for k in before if k.split(".")[0] in VideoTokenizer.ENCODER_SIDE}
    assert encoder_side and all(torch.equal(after[k], before[k]) for k in encoder_side)
    assert any(not torch.equal(after[k], v) for k, v in before.items() if k not in encoder_side)
    cfg = get_preset("tiny")
    old, new = build_tokenizer(cfg), build_tokenizer(cfg)
    old.load_state_dict(before)
    new.load_state_dict(after)
    clip = to_float(ClipDataset(tiny_data, "train", cfg.seq_len)[0].unsqueeze(0))
    assert torch.equal(old.encode(clip), new.encode(clip))
    with pytest.raises(CheckpointError, match="resume with --freeze-encoder"):
        Trainer(targs(tiny_data, tmp_path / "b", "tokenizer", steps=6, resume=True))
    with pytest.raises(ConfigError, match="--init-from FILE"):
        Trainer(targs(tiny_data, tmp_path / "c", "tokenizer", steps=2, freeze_encoder=True))
    with pytest.raises(ConfigError, match="belongs to phase tokenizer"):
        Trainer(targs(tiny_data, tmp_path / "d", "dynamics", steps=2, tokenizer_ckpt=tok, freeze_encoder=True))


@pytest.mark.slow
def test_small_from_scratch_benchmark_quick(tiny_data: Path, tmp_path: Path):
    """studies/small_from_scratch.py --quick: pipeline, timing, scoring and the comparison table, at tiny sizes."""

    import small_from_scratch as bench

    res = bench.main(bench.Args(run=tmp_path / "run", data=tiny_data, out=tmp_path / "out", quick=True))
    saved = json.loads((tmp_path / "out" / "small_from_scratch.json").read_text())
    assert saved["metrics"] == res["metrics"] and set(res["metrics"]) == set(bench.METRICS)
    assert all(r["reached"] == (r["from_scratch"] >= r["shipped"]) for r in res["metrics"].values())
    assert set(res["timings_s"]) == {"data_s", "tokenizer_s", "dynamics_s", "heads_s", "eval_s"}
    assert 0 < res["training_s"] <= res["total_s"] and res["within_budget"]
    assert (tmp_path / "run" / "quality" / "world_model_quality.json").is_file()
    md = (tmp_path / "out" / "small_from_scratch.md").read_text()
    assert "| **total** |" in md and "| LAM perplexity (of 8) |" in md


def test_export_an_earlier_dynamics_step(tiny_data: Path, tokenizer_run: Path, tmp_path: Path):
    from genie_gym.models.world_model import WorldModel
    from genie_gym.training.export import Args as EArgs
    from genie_gym.training.export import export

    tok = tokenizer_run / "tokenizer" / "last.pt"
    train(targs(tiny_data, tmp_path, "dynamics", steps=6, tokenizer_ckpt=tok))  # checkpoints at steps 3 and 6
    path = export(EArgs(run=tmp_path, step=3))
    assert path == tmp_path / "world_model_step3.pt"
    wm, ckpt = WorldModel.load(path), load_checkpoint(tmp_path / "dynamics" / "step_0000003.pt")
    assert wm.metadata["steps"] == {"tokenizer": 6, "dynamics": 3}
    assert wm.metadata["data_manifest_sha256"] == sha256_file(tiny_data / "manifest.json")
    for name in ("lam", "dynamics"):
        assert all(torch.equal(v, ckpt["model"][name][k]) for k, v in getattr(wm, name).state_dict().items())
    last = WorldModel.load(export(EArgs(run=tmp_path, out=tmp_path / "last.pt")))
    final = WorldModel.load(tmp_path / "world_model.pt")  # what training itself wrote at its end
    assert last.metadata["steps"] == final.metadata["steps"] == {"tokenizer": 6, "dynamics": 6}
    assert all(torch.equal(v, final.state_dict()[k]) for k, v in last.state_dict().items())
    with pytest.raises(CheckpointError, match=r"step_0000005.pt does not exist; kept .*step_0000003.pt"):
        export(EArgs(run=tmp_path, step=5))
    # --set changes the file's default sampling, nothing else
    one = WorldModel.load(export(EArgs(run=tmp_path, out=tmp_path / "one.pt", set=("sampling.maskgit_steps=1",))))
    assert one.config.sampling.maskgit_steps == 1 and final.config.sampling.maskgit_steps != 1
    assert all(torch.equal(v, final.state_dict()[k]) for k, v in one.state_dict().items())
    with pytest.raises(ConfigError, match="only sampling"):
        export(EArgs(run=tmp_path, out=tmp_path / "x.pt", set=("dynamics.d_model=8",)))
    with pytest.raises(ConfigError, match="--set"):
        export(EArgs(run=tmp_path, out=tmp_path / "x.pt", set=("sampling.maskgit_step=1",)))
