"""Custom Kedro datasets.

- `NpzDataset`: a dict of NumPy arrays as one `.npz` (no pickle, written atomically).
- `ReportDataset`: a folder of report files (tables as md/csv, figures as png, metrics.json, ...) that a
  report node returns as `{relative path: str | bytes}`; each file is written atomically, so a killed run
  leaves the previous report intact rather than half-written.
- `MlflowTableRunsDataset`: one MLflow run per table row (see `cvpr24.core.tracking`).
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from kedro.io import AbstractDataset, DatasetError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def swap_in_folder(new: Path, dest: Path) -> None:
    """Replace the folder `dest` by the folder `new` with renames: an existing `dest` is moved aside first and
    put back if the rename fails (then `new` is deleted and the error re-raised), so `dest` is never half
    written; the old copy is deleted only once the new one is in place."""
    import shutil
    import uuid

    dest.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(dest, old)
    try:
        os.rename(new, dest)
    except BaseException:
        if old is not None:
            os.rename(old, dest)
        shutil.rmtree(new, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class NpzDataset(AbstractDataset[dict[str, np.ndarray], dict[str, np.ndarray]]):
    """A dict of arrays in one compressed `.npz` file (keys are the array names)."""

    def __init__(self, filepath: str, compress: bool = True, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self._compress = compress
        self.metadata = metadata

    def load(self) -> dict[str, np.ndarray]:
        if not self._filepath.is_file():
            raise DatasetError(
                f"{self._filepath} does not exist: run the phase that produces it first "
                "(e.g. `kedro run --pipeline=<slug> --tags=ingest`)"
            )
        try:
            with np.load(self._filepath, allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
        except Exception as exc:
            raise DatasetError(
                f"{self._filepath} is not a readable .npz ({exc}); delete it and re-run the phase that writes it"
            ) from exc

    def save(self, data: dict[str, np.ndarray]) -> None:
        if not isinstance(data, dict):
            raise DatasetError(f"NpzDataset({self._filepath}) saves a dict of arrays, got {type(data)}")
        buf = io.BytesIO()
        (np.savez_compressed if self._compress else np.savez)(buf, **{k: np.asarray(v) for k, v in data.items()})
        atomic_write_bytes(self._filepath, buf.getvalue())

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "compress": self._compress}


class ReportDataset(AbstractDataset[dict[str, str | bytes], dict[str, Path]]):
    """A folder of report files. `save({"table_1.md": "...", "figures/a.png": b"..."})`.

    Files the report no longer produces are removed only when `prune` lists their suffixes, so a folder
    shared with hand-written files (a README) is left alone.
    """

    def __init__(self, path: str, prune: list[str] | None = None, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self._prune = tuple(prune or [])
        self.metadata = metadata

    def load(self) -> dict[str, Path]:
        if not self._path.is_dir():
            raise DatasetError(f"report folder {self._path} does not exist: run the report phase first")
        return {str(p.relative_to(self._path)): p for p in sorted(self._path.rglob("*")) if p.is_file()}

    def save(self, data: dict[str, str | bytes]) -> None:
        for rel, content in data.items():
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise DatasetError(f"report file name {rel!r} must be a relative path inside {self._path}")
            payload = content.encode() if isinstance(content, str) else bytes(content)
            atomic_write_bytes(self._path / rel, payload)
        if self._prune:
            keep = {str(Path(rel)) for rel in data}
            for p in self._path.rglob("*"):
                if p.is_file() and p.suffix in self._prune and str(p.relative_to(self._path)) not in keep:
                    p.unlink()

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class MlflowTableRunsDataset(AbstractDataset[Any, Any]):
    """Saving a table-rows DataFrame logs one MLflow run per row in `experiment` (with the paper's
    numbers as `source=paper` runs); loading reads the experiment's runs back as a DataFrame."""

    def __init__(self, experiment: str, tracking_uri: str | None = None, metadata: dict[str, Any] | None = None):
        self._experiment = experiment
        self._tracking_uri = tracking_uri
        self.metadata = metadata

    def save(self, data: Any) -> None:
        from cvpr24.core.tracking import log_table_runs

        log_table_runs(data, experiment=self._experiment, tracking_uri=self._tracking_uri)

    def load(self) -> Any:
        from cvpr24.core.tracking import read_runs

        return read_runs(self._experiment, tracking_uri=self._tracking_uri)

    def _describe(self) -> dict[str, Any]:
        return {"experiment": self._experiment, "tracking_uri": self._tracking_uri}
