"""`log_table_runs`: one MLflow run per (table, row, source), metrics and params in batches, the `latest` flag moved
to each new reproduction of a row, paper runs logged once."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cvpr24.core.tracking import log_table_runs


def _rows(value: float, n_params: int = 130) -> pd.DataFrame:
    params = json.dumps({f"block.param_{i}": i for i in range(n_params)})
    recs = [
        {"table": "table_1", "row": "ours A", "source": "ours", "metric": "psnr", "value": value, "std": 0.5,
         "over": "seeds", "n": 3, "profile": "ci", "params": params},
        {"table": "table_1", "row": "ours A", "source": "ours", "metric": "ssim", "value": 0.8, "std": float("nan"),
         "over": "", "n": 1, "profile": "ci", "params": params},
        {"table": "table_1", "row": "ours A", "source": "ours", "metric": "lpips", "value": float("nan"),
         "std": float("nan"), "over": "", "n": 1, "profile": "ci", "params": params},
        {"table": "table_1", "row": "paper A", "source": "paper", "metric": "psnr", "value": 30.0,
         "std": float("nan"), "over": "", "n": 1, "profile": "ci", "params": ""},
    ]
    return pd.DataFrame(recs)


def test_runs_metrics_params_and_latest(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = log_table_runs(_rows(20.0), experiment="t", tracking_uri=uri)
    assert len(first) == 2
    client = MlflowClient(tracking_uri=uri)
    ours = client.get_run(first[0])
    # finite values only, the seeds' spread beside its mean; every param (more than one batch of 100)
    assert ours.data.metrics == {"psnr": 20.0, "psnr_std": 0.5, "ssim": 0.8}
    assert len(ours.data.params) == 130 and ours.data.params["block.param_129"] == "129"
    assert ours.data.tags["latest"] == "true" and ours.data.tags["row"] == "ours A"
    assert ours.data.tags["n.psnr"] == "3" and ours.info.status == "FINISHED"

    second = log_table_runs(_rows(21.0), experiment="t", tracking_uri=uri)
    assert len(second) == 1   # the paper's values did not change: not logged again
    assert client.get_run(first[0]).data.tags["latest"] == "false"
    new = client.get_run(second[0])
    assert new.data.tags["latest"] == "true" and new.data.metrics["psnr"] == 21.0


def test_missing_columns_named():
    with pytest.raises(ValueError, match="metric"):
        log_table_runs(pd.DataFrame({"table": ["t"], "row": ["r"], "source": ["ours"], "value": [1.0]}),
                       experiment="t", tracking_uri="sqlite:///unused.db")
