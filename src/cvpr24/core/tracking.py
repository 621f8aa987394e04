"""MLflow: one run per table row, the paper's numbers as `source=paper` runs beside ours.

The evaluate phase of every paper returns a long *table-rows* DataFrame:

    table | row | source ("ours", "paper" or "quoted") | metric | value | n | std | over | data | note

(`n`, `std`, `over`: how many seeds / images a value of ours averages and their spread; built by
`cvpr24.core.reporting.TableRows`). Every experiment gets the tag `mlflow.experimentKind =
custom_model_development`; `table`, `row` and `source` are run tags to group by.

plus optional run-level columns `params` (a JSON string), `profile`, `git_commit`, `data_fingerprint`.
`log_table_runs` groups it by (table, row, source) and logs each group as one run in the paper's
experiment: metrics are the finite values (the metric keys are the paper table's column keys, so the MLflow
compare view lines paper and ours up), tags name the table, row, source, profile, commit, fingerprint and
the data each metric came from. Paper runs are created once and then left alone; each new reproduction of
a row marks the previous one `latest=false`, so filtering on `tags.latest = 'true'` (or
`tags.source = 'paper'`) gives one run per row.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import pandas as pd

from cvpr24.core.provenance import git_commit

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
ARTIFACT_ROOT = Path("mlruns") / "artifacts"
REQUIRED = ["table", "row", "source", "metric", "value"]


def _client(tracking_uri: str | None):
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


# MLflow 3 opens an experiment without this tag on its GenAI overview; ours are model training
# (tag name and value as the installed mlflow sets them: `mlflow.experimentKind`, `custom_model_development`).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


def ensure_experiment(client, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        exp_id = exp.experiment_id
        if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp_id
    if str(client.tracking_uri).startswith(("http://", "https://")):
        exp_id = client.create_experiment(name)  # a tracking server: it chooses (and serves) the artifacts
    else:
        exp_id = client.create_experiment(name, artifact_location=(ARTIFACT_ROOT / name).resolve().as_uri())
    client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp_id


def _safe_key(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in str(text))[:250]


_BATCH = 100   # MLflow's log_batch takes at most 100 params (and 1,000 metrics) per call


def log_table_runs(rows: pd.DataFrame, *, experiment: str, tracking_uri: str | None = None) -> list[str]:
    """Log one MLflow run per (table, row, source) group of `rows`; return the created run ids."""
    missing = [c for c in REQUIRED if c not in rows.columns]
    if missing:
        raise ValueError(f"table rows for MLflow lack columns {missing}")
    from mlflow.entities import Metric, Param

    client = _client(tracking_uri)
    exp_id = ensure_experiment(client, experiment)
    created = []
    for (table, row, source), group in rows.groupby(["table", "row", "source"], sort=False):
        first = group.iloc[0]
        tags = {
            "table": str(table),
            "row": str(row),
            "source": str(source),
            "mlflow.runName": f"{table} | {row} | {source}",
        }
        for col in ("profile", "git_commit", "data_fingerprint"):
            if col in group.columns and pd.notna(first[col]):
                tags[col] = str(first[col])
        tags.setdefault("git_commit", git_commit())
        for _, rec in group.iterrows():
            for col in ("data", "note", "over"):
                if col in group.columns and isinstance(rec.get(col), str) and rec[col]:
                    tags[_safe_key(f"{col}.{rec['metric']}")] = str(rec[col])[:5000]
            if "n" in group.columns and _finite(rec.get("n")) and isinstance(rec.get("over"), str) and rec["over"]:
                tags[_safe_key(f"n.{rec['metric']}")] = str(int(rec["n"]))
        query = f"tags.table = '{table}' and tags.row = '{_escape(row)}' and tags.source = '{source}'"
        previous = client.search_runs([exp_id], filter_string=query, max_results=1000)
        if source in ("paper", "quoted"):
            signature = json.dumps(
                {str(r.metric): r.value for r in group.itertuples() if _finite(r.value)}, sort_keys=True
            )
            if any(p.data.tags.get("values") == signature for p in previous):
                continue
            tags["values"] = signature
        else:
            for p in previous:
                if p.data.tags.get("latest") == "true" and p.data.tags.get("profile") == tags.get("profile"):
                    client.set_tag(p.info.run_id, "latest", "false")
            tags["latest"] = "true"
        run = client.create_run(exp_id, tags=tags)
        run_id = run.info.run_id
        params: dict[str, str] = {}
        if "params" in group.columns and isinstance(first["params"], str) and first["params"]:
            for key, value in json.loads(first["params"]).items():
                params.setdefault(_safe_key(key), str(value)[:6000])
        now = int(time.time() * 1000)
        metrics = []
        for rec in group.itertuples():
            if _finite(rec.value):
                metrics.append(Metric(_safe_key(rec.metric), float(rec.value), now, 0))
            if getattr(rec, "over", "") == "seeds" and _finite(getattr(rec, "std", None)):
                metrics.append(Metric(_safe_key(f"{rec.metric}_std"), float(rec.std), now, 0))
        # batches (one database transaction each) instead of one call per value: a ci run logs ~1,500 values
        plist = [Param(k, v) for k, v in params.items()]
        for i in range(0, max(len(plist), len(metrics)), _BATCH):
            client.log_batch(run_id, metrics=metrics[i: i + _BATCH], params=plist[i: i + _BATCH])
        client.set_terminated(run_id)
        created.append(run_id)
    log.info("logged %d MLflow runs to experiment %r", len(created), experiment)
    return created


def flatten(d: dict, sep: str = ".", prefix: str = "") -> dict:
    """Nested dict -> one level with joined keys (`{"a": {"b": 1}}` -> `{"a.b": 1}`)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, sep, key + sep))
        else:
            out[key] = v
    return out


def log_history_to_active_run(history: list[dict], prefix: str = "loss") -> None:
    """Per-step training history (`{"job_id", "step", <metric>...}` records, e.g. collected from worker
    processes that had no MLflow run) to the active kedro-mlflow run as `<prefix>/<job_id>` metrics;
    a no-op without an active run."""
    import mlflow
    from mlflow.entities import Metric

    run = mlflow.active_run()
    if run is None or not history:
        return
    batch = [
        Metric(key=_safe_key(f"{prefix}/{h['job_id']}"[:200]) + ("" if k == "loss" else f"/{k}"),
               value=float(v), timestamp=0, step=int(h["step"]))
        for h in history for k, v in h.items() if k not in ("job_id", "step")
    ]
    client = mlflow.tracking.MlflowClient()
    for i in range(0, len(batch), 900):
        client.log_batch(run.info.run_id, metrics=batch[i: i + 900])


def read_runs(experiment: str, *, tracking_uri: str | None = None) -> pd.DataFrame:
    """All runs of an experiment as a DataFrame (tags.* and metrics.* columns, as mlflow.search_runs)."""
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    return mlflow.search_runs(experiment_names=[experiment], max_results=50000)


def _finite(value) -> bool:
    try:
        return not math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def _escape(text: str) -> str:
    return str(text).replace("'", "\\'")
