"""LTM's raw dataset: one scene folder in the mip-NeRF 360 layout (:mod:`.scene`'s docstring), generated (embedded
garden-lite) or pointed to (a real mip-NeRF 360 / Tanks and Temples / Deep Blending scene), and the arrays the
training phases read (`model_input`), built by the one validating loader :func:`.scene.load_scene_folder`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kedro.io import AbstractDataset

from cvpr24.core.datasets import atomic_write_bytes
from cvpr24.core.validation import DataValidationError
from cvpr24.pipelines.ltm.colmap import Cameras
from cvpr24.pipelines.ltm.scene import GardenLiteConfig, SceneData, generate_garden_lite, write_scene_folder

POINTER = "scene.json"


class SceneFolderDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """A pointer file ``<path>/scene.json`` to the scene folder. Saving ``{"config": GardenLiteConfig}`` writes the
    embedded scene (or ``{"data": GardenLiteData}``, already generated) into ``<path>/scene`` (atomically) and points there with a relative path (so the folder can move
    with the clone); saving ``{"pointer": {"root": ...}}`` records a real scene's folder. Loading returns the
    pointer with ``root`` resolved."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> dict[str, Any]:
        file = self._path / POINTER
        if not file.is_file():
            raise DataValidationError(f"{file} not found: run `kedro run --pipeline=ltm --tags=ingest` first")
        pointer = json.loads(file.read_text())
        if pointer.pop("inside", False):
            pointer["root"] = str(self._path / pointer["root"])
        return pointer

    def save(self, data: dict[str, Any]) -> None:
        if "data" in data or "config" in data:
            scene = data["data"] if "data" in data else generate_garden_lite(data["config"])
            write_scene_folder(self._path / "scene", scene)
            pointer = {"root": "scene", "inside": True, "kind": "embedded garden-lite"}
        elif "pointer" in data:
            pointer = dict(data["pointer"])
        else:
            raise DataValidationError("SceneFolderDataset.save needs {'config': GardenLiteConfig} or "
                                      "{'pointer': {'root': ...}}")
        self._path.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self._path / POINTER, json.dumps(pointer, indent=1, sort_keys=True).encode())

    def _exists(self) -> bool:
        return (self._path / POINTER).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


def garden_config(cfg: dict[str, Any], seed: int) -> GardenLiteConfig:
    """The embedded scene's configuration from ``ltm.data.garden_lite`` (unknown keys are refused)."""
    known = set(GardenLiteConfig.__dataclass_fields__)
    bad = sorted(set(cfg) - known)
    if bad:
        raise ValueError(f"ltm.data.garden_lite has unknown keys {bad}; known: {sorted(known)}")
    kw = {k: (tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v)
          for k, v in cfg.items()}
    return GardenLiteConfig(**{**kw, "seed": int(cfg.get("seed", seed))})


def manifest(scene: SceneData) -> pd.DataFrame:
    """One row per image: name, split, size, and value statistics (for the raw-data expectations)."""
    rows = []
    test = set(int(i) for i in scene.test_ids)
    for i, name in enumerate(scene.cameras.names):
        img = scene.images[i]
        rows.append({"sample_id": name, "split": "test" if i in test else "train", "height": int(img.shape[0]),
                     "width": int(img.shape[1]), "channels": int(img.shape[2]), "dtype": str(img.dtype),
                     "min": float(img.min()), "max": float(img.max()), "mean": float(img.mean()),
                     "has_nan": False})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- model input
CAMERA_KEYS = ("width", "height", "fx", "fy", "cx", "cy", "c2w")


def to_arrays(scene: SceneData) -> dict[str, np.ndarray]:
    """The scene as plain arrays (what `model_input` stores). The folder is kept relative to the working directory
    (the project root under Kedro), so the arrays do not depend on where the project was cloned."""
    cams = scene.cameras
    out = {k: np.asarray(getattr(cams, k)) for k in CAMERA_KEYS}
    out["root"] = np.asarray(os.path.relpath(Path(scene.root).resolve()))
    out["names"] = np.asarray(cams.names)
    out["images"] = scene.images
    out["train_ids"] = np.asarray(scene.train_ids, dtype=np.int64)
    out["test_ids"] = np.asarray(scene.test_ids, dtype=np.int64)
    if scene.gt_surface_points is not None:
        out["gt_points"] = scene.gt_surface_points.astype(np.float32)
        if scene.gt_surface_normals is not None:
            out["gt_normals"] = scene.gt_surface_normals.astype(np.float32)
    return out


def from_arrays(arrays: dict[str, np.ndarray]) -> SceneData:
    """The inverse of :func:`to_arrays` (a SceneData the stages can read; ``root`` = the scene folder, which the
    analytic SDF of ``sdf_source: analytic`` reads its generator settings from)."""
    root = str(arrays["root"]) if "root" in arrays else "."
    cams = Cameras([str(n) for n in arrays["names"]], *(arrays[k] for k in CAMERA_KEYS))
    return SceneData(Path(root), "model_input", Path(root), cams, arrays["images"], arrays["train_ids"],
                     arrays["test_ids"], gt_surface_points=arrays.get("gt_points"),
                     gt_surface_normals=arrays.get("gt_normals"))
