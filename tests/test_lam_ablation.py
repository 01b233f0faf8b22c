"""`benchmarks/lam_ablation.py` runs end to end on a small recording and builds its table up run by run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import lam_ablation  # noqa: E402


def test_movement_classes_follow_the_procgen_action_combos():
    # 0 LEFT+DOWN, 2 LEFT+UP, 4 NOOP, 5 UP, 8 RIGHT+UP, 9 "D" (a no-op in CoinRun)
    assert lam_ablation.movement_class(np.array([0, 2, 4, 5, 8, 9])).tolist() == [0, 1, 2, 3, 5, 2]


def test_ablation_runs_and_merges_variants(tmp_path: Path):
    from genie_gym.data import recorder

    data = recorder.record(recorder.Args(frames=600, max_steps=60, num_envs=8, out=tmp_path / "data",
                                         val_frac=0.2, test_frac=0.3, progress=False, policy="sticky"))
    common = dict(data=str(data), steps=2, batch_size=2, test_clips=4, threads=1, out=str(tmp_path / "abl"),
                  expert_episodes=2)
    lam_ablation.main(lam_ablation.Args(variants=["baseline"], **common))
    lam_ablation.main(lam_ablation.Args(variants=["idm_mean"], **common))
    report = json.loads((tmp_path / "abl.json").read_text())
    assert list(report["variants"]) == ["baseline", "idm_mean"]
    base = report["variants"]["baseline"]
    assert 1.0 <= base["perplexity"] <= 8.0 and 0.0 <= base["nmi_movement"] <= 1.0
    assert sum(map(sum, base["code_by_movement"])) == sum(base["histogram"])
    assert 0.0 <= base["expert_nmi_movement"] <= 1.0  # codes of the shipped expert's own episodes
    assert report["variants"]["idm_mean"]["movement_accuracy"] is not None
    assert "| idm_mean (*probe*) |" in (tmp_path / "abl.md").read_text()
