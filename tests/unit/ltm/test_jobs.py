"""The LTM pipeline's own pieces: the run plan, stage C's budgets, stage B's errors, Chamfer / normal consistency,
the scene-folder dataset, and the claim measurements on hand-made scores (each would fail if it were wrong)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cvpr24.pipelines.ltm import data as D
from cvpr24.pipelines.ltm import jobs as J
from cvpr24.pipelines.ltm import mesh as M

pytestmark = pytest.mark.usefixtures("one_thread")


def _sphere(radius: float = 0.5, res: int = 48):
    fn = lambda p: np.linalg.norm(np.asarray(p), axis=-1) - radius  # noqa: E731
    c = M.extract_cascades(fn, [res, 8], contraction="linf", array="numpy")[0]
    return c.vertices, c.faces


def test_plan_runs_changes_one_setting_per_ablation_and_skips_the_ltm_budget():
    train = {"budget": 2000, "budgets": [250, 2000, 8000], "stage_d": {"iterations": 5, "lambda_lap": 1e-3},
             "ablations": {"no_reg": {"lambda_lap": 0.0}, "no_refine": {"freeze_vertices": True}}}
    runs = {r["name"]: r for r in J.plan_runs(train)}
    assert list(runs) == ["ltm", "no_reg", "no_refine", "budget_250", "budget_8000"]
    assert runs["no_reg"]["refine"] == {"iterations": 5, "lambda_lap": 0.0}
    assert runs["no_refine"]["refine"]["freeze_vertices"] is True and runs["no_refine"]["budget"] == 2000
    assert runs["budget_8000"]["refine"] == train["stage_d"]
    with pytest.raises(ValueError, match="duplicate"):
        J.plan_runs({**train, "ablations": {"ltm": {}}})


def test_stage_c_meets_each_cascades_budget():
    v, f = _sphere()
    out = J.stage_c([(v, f), (v, f)], 300, {"backend": "fast-simplification", "outer_ratio": 0.5})
    assert len(out[0][1]) <= 300 and len(out[1][1]) <= 150
    assert len(out[0][1]) > 200                                   # simplified to the budget, not far below it


def test_chamfer_is_small_on_the_true_surface_and_grows_with_an_offset():
    v, f = _sphere(0.5, 64)
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(20000, 3))
    gt /= np.linalg.norm(gt, axis=1, keepdims=True)
    exact = J.chamfer(v, f, 0.5 * gt, gt, n=20000, extent=0.9)
    shifted = J.chamfer(v * 1.1, f, 0.5 * gt, gt, n=20000, extent=0.9)
    assert exact["chamfer"] < 0.01 and exact["normal_consistency"] > 0.98
    assert shifted["chamfer"] == pytest.approx(0.05, abs=0.01)    # a 10 % larger sphere is 0.05 away


def test_stage_b_names_the_fix_when_nothing_is_extracted(tmp_path, monkeypatch):
    class Empty(torch.nn.Module):
        def forward(self, x):
            return torch.ones(x.shape[0])

    monkeypatch.setattr(J, "sdf_field", lambda cfg, state, root=None: Empty())
    fields = {"cfg": {"contraction": "linf", "bound": 2.0}, "sdf_state": {"w": torch.zeros(1)}}
    scene = D.SceneData(tmp_path, "x", tmp_path, None, np.zeros((1, 2, 2, 3), np.uint8), np.array([0]),
                        np.array([], dtype=np.int64))
    with pytest.raises(RuntimeError, match="no surface.*ltm.train.stage_a"):
        J.stage_b(fields, scene, {"resolution": [8, 8]}, seed=0, root=tmp_path, data_fp="x", code="y")


def test_scene_dataset_stores_a_relative_pointer(tmp_path):
    ds = D.SceneFolderDataset(str(tmp_path / "raw"))
    ds.save({"pointer": {"root": "/data/garden", "kind": "real"}})
    assert ds.load()["root"] == "/data/garden"
    (tmp_path / "raw" / "scene.json").write_text(json.dumps({"root": "scene", "inside": True}))
    assert ds.load()["root"] == str(tmp_path / "raw" / "scene")
    with pytest.raises(ValueError, match="unknown keys"):
        D.garden_config({"no_such_key": 1}, seed=0)


def _scores(rows: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"row": r, "view": f"v{i}", "psnr": p, "ssim": 0.5} for r, ps in rows.items()
                         for i, p in enumerate(ps)])


def test_claims_measure_ratios_and_per_view_differences():
    from cvpr24.pipelines.ltm.report import measure_claims

    scores = _scores({"ltm": [25, 26], "bakedsdf_lite": [25.5, 26.5], "no_refine": [24, 25.9],
                      "silhouette_only": [24.9, 26.1], "surface_only": [24.5, 25.0], "vertex_colour": [22, 23],
                      "budget_8000": [25.5, 26.5], "budget_250": [23, 24], "export_fidelity": [40, 41]})
    assets = pd.DataFrame([
        {"row": "ltm", "triangles": 3000, "disk_bytes": 100_000, "dihedral": 5.0, "flipped": 0, "budget": 2000,
         "chamfer": 0.01},
        {"row": "bakedsdf_lite", "triangles": 120_000, "disk_bytes": 900_000, "dihedral": 2.0, "flipped": np.nan,
         "budget": np.nan, "chamfer": 0.009},
        {"row": "no_reg", "triangles": 3000, "disk_bytes": 100_000, "dihedral": 7.5, "flipped": 3, "budget": 2000,
         "chamfer": 0.01},
        {"row": "no_refine", "triangles": 3000, "disk_bytes": 100_000, "dihedral": 5.0, "flipped": 0, "budget": 2000,
         "chamfer": 0.01},
        {"row": "silhouette_only", "triangles": 3000, "disk_bytes": 1, "dihedral": 5.0, "flipped": 0, "budget": 2000,
         "chamfer": 0.01},
        {"row": "surface_only", "triangles": 3000, "disk_bytes": 1, "dihedral": 5.0, "flipped": 0, "budget": 2000,
         "chamfer": 0.01},
        {"row": "budget_8000", "triangles": 12000, "disk_bytes": 1, "dihedral": 5.0, "flipped": 0, "budget": 8000,
         "chamfer": 0.01},
        {"row": "budget_250", "triangles": 375, "disk_bytes": 1, "dihedral": 5.0, "flipped": 0, "budget": 250,
         "chamfer": 0.01},
    ])
    m = measure_claims(scores, assets)
    assert m["C1"].values == {"scene": pytest.approx(40.0)}
    assert m["C1b"].values == {"scene": pytest.approx(9.0)}
    assert m["C1c"].values == {"v0": pytest.approx(-0.5), "v1": pytest.approx(-0.5)}
    assert m["C2"].values == {"v0": pytest.approx(1.0), "v1": pytest.approx(0.1)}
    assert m["C2b"].values == {"v0": pytest.approx(0.1), "v1": pytest.approx(-0.1)}
    assert m["C3"].values == {"v0": pytest.approx(3.0), "v1": pytest.approx(3.0)}
    assert m["C4"].values == {"scene": pytest.approx(2.5)}
    assert m["C5"].values == {"scene": pytest.approx(0.5)}
    assert m["S2"].values == {"v0": pytest.approx(2.0), "v1": pytest.approx(2.0)}
    assert m["S3"].values["scene"] == pytest.approx(100 * 0.01 / (2 * np.sqrt(3)))
