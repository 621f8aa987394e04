"""OmniLocalRF's raw dataset: a pointer file to the scene folders in the released layout (`data.py`'s docstring):
the dynamic video (`on`) and, when there is one, its static-only twin (`off`).

Saving ``{"scene": StreetScene, "write": {...}}`` writes the embedded street and its twin into ``<path>/street_on``
and ``<path>/street_off`` (both built completely before either is renamed into place, `data.write_street`) and
points there with relative paths, so a clone can move; saving ``{"pointer": {"on": ..., "off": ...}}`` records a
real scene's folders. Loading returns the pointer with the paths resolved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

from cvpr24.core.datasets import atomic_write_bytes
from cvpr24.core.validation import DataValidationError
from cvpr24.pipelines.omnilocalrf.data import write_street

POINTER = "scene.json"


class StreetFolderDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> dict[str, Any]:
        file = self._path / POINTER
        if not file.is_file():
            raise DataValidationError(f"{file} not found: run `kedro run --pipeline=omnilocalrf --tags=ingest` "
                                      "first")
        pointer = json.loads(file.read_text())
        if pointer.pop("inside", False):
            for key in ("on", "off"):
                if pointer.get(key):
                    pointer[key] = str(self._path / pointer[key])
        return pointer

    def save(self, data: dict[str, Any]) -> None:
        if "scene" in data:
            self._path.mkdir(parents=True, exist_ok=True)
            write_street(data["scene"], self._path / "street_on", static_dest=self._path / "street_off",
                         **dict(data.get("write") or {}))
            pointer = {"on": "street_on", "off": "street_off", "inside": True, "kind": "embedded street"}
        elif "pointer" in data:
            pointer = dict(data["pointer"])
        else:
            raise DataValidationError("StreetFolderDataset.save needs {'scene': StreetScene} or "
                                      "{'pointer': {'on': ..., 'off': ...}}")
        self._path.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self._path / POINTER, json.dumps(pointer, indent=1, sort_keys=True).encode())

    def _exists(self) -> bool:
        return (self._path / POINTER).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
