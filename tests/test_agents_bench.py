"""benchmarks/bc_coinrun.py --quick: the whole latent-BC benchmark pipeline at tiny sizes, and its outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_bc_benchmark_quick_writes_results(tmp_path: Path) -> None:
    import bc_coinrun

    bc_coinrun.main(bc_coinrun.Args(quick=True, out=str(tmp_path)))
    res = json.loads((tmp_path / "bc_coinrun.json").read_text())
    for key in ("random", "run_right", "oracle", "expert"):
        assert 0.0 <= res[key]["solved"] <= 100.0 and res[key]["solved_ci95"] >= 0.0
        assert res[key]["num_levels"] == 4 and len(res[key]["solved_per_seed"]) == 2
    assert sorted(res["latent_bc"], key=int) == ["5", "10", "20"]
    assert all("solved" in v and "solved_ci95" in v for v in res["latent_bc"].values())
    assert list(res["latent_bc_greedy"]) == ["10"]
    assert 0.0 <= res["lam"]["nmi_codes_vs_actions"] <= 1.0
    conf = res["lam"]["confusion_codes_x_actions"]
    assert len(conf) == res["lam"]["num_codes"] and len(conf[0]) == 15
    assert sum(map(sum, conf)) == res["lam"]["transitions"]
    assert res["run_right"]["solved"] > 0  # run-right solves some of the 4 easy levels within 120 steps
    md = (tmp_path / "bc_coinrun.md").read_text()
    assert "| oracle |" in md and "N=20" in md
    for name in ("bc_coinrun.png", "bc_coinrun_confusion.png"):
        with Image.open(tmp_path / name) as im:
            assert im.size[0] > 100 and im.size[1] > 100


def test_lam_action_lag_pairs_code_of_t_plus_k_with_action_of_t() -> None:
    import numpy as np
    from lam_action_lag import lagged_pairs

    codes = [np.array([10, 11, 12, 13]), np.array([20, 21])]
    actions = [np.array([0, 1, 2, 3]), np.array([4, 5])]
    c, u = lagged_pairs(codes, actions, 1)  # never across an episode boundary
    assert c.tolist() == [11, 12, 13, 21] and u.tolist() == [0, 1, 2, 4]
    c, u = lagged_pairs(codes, actions, -2)
    assert c.tolist() == [10, 11] and u.tolist() == [2, 3]
    c, u = lagged_pairs(codes, actions, 0)
    assert c.tolist() == [10, 11, 12, 13, 20, 21] and u.tolist() == [0, 1, 2, 3, 4, 5]
