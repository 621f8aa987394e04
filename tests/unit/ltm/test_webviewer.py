"""cvpr24.pipelines.ltm.webviewer without a browser: the page's files are shipped and copied, they load nothing
from outside the asset folder, and a camera survives JSON exactly. (The page itself is checked against the torch
renderer in headless Chromium by tests/ops/test_ltm_viewer.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from cvpr24.pipelines.ltm import webviewer as W
from cvpr24.pipelines.ltm.raster import look_at, perspective

PAGE_DIR = Path(W.__file__).parent / "viewer"


def test_write_viewer_page_copies_the_files(tmp_path: Path) -> None:
    folder = tmp_path / "asset"
    folder.mkdir()
    (folder / "mlp.json").write_text("{}")
    (folder / "viewer.js").write_text("stale")
    index = W.write_viewer_page(folder)
    assert index == folder / "index.html"
    for name in W.VIEWER_FILES:
        assert (folder / name).read_bytes() == (PAGE_DIR / name).read_bytes()
        assert (folder / name).stat().st_size > 500
    assert sorted(p.name for p in folder.iterdir()) == ["index.html", "mlp.json", "viewer.js"]  # no temporaries
    assert (folder / "mlp.json").read_text() == "{}"
    assert '<script src="viewer.js"></script>' in index.read_text()
    with pytest.raises(FileNotFoundError):
        W.write_viewer_page(tmp_path / "missing")


def test_page_is_self_contained() -> None:
    """Offline from any static server: no absolute URL, no CDN, no module import of another file."""
    for name, data in W.viewer_files().items():
        text = data.decode()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), name
        assert "import " not in re.sub(r"//.*|<!--.*?-->", "", text, flags=re.S), name
    js = W.viewer_files()["viewer.js"].decode()
    # the conventions the torch reference (mesh.render_viewer) relies on
    for needle in ("UNPACK_FLIP_Y_WEBGL, true", "gl.NEAREST", "gl.CLAMP_TO_EDGE", "gl.disable(gl.CULL_FACE)",
                   "preserveDrawingBuffer: true", "antialias: false", "transpose(mvpRowMajor)",
                   "window.viewerReady = true", "window.viewerError", "mlp.json", "net.0.weight", "net.1.weight"):
        assert needle in js, needle


def test_camera_json_round_trips() -> None:
    mvp = perspective(45.0, 4 / 3, 0.1, 50.0) @ look_at((2.3, 1.3, 3.1), (0.0, -0.15, 0.0))
    eye = torch.tensor([2.3, 1.3, 3.1])
    doc = W.camera_json(mvp, eye, 120, 160, background=(0.1, 0.25, 0.45), mode="specular")
    text = json.dumps(doc)
    assert json.loads(text) == doc
    for src in (doc, text, json.loads(text)):
        cam = W.camera_from_json(src)
        np.testing.assert_array_equal(cam.mvp, mvp.numpy())  # float32 bit for bit
        assert cam.mvp.dtype == np.float32 and cam.mvp.shape == (4, 4)
        np.testing.assert_array_equal(cam.eye, eye.numpy())
        assert (cam.height, cam.width, cam.mode) == (120, 160, "specular")
        np.testing.assert_array_equal(cam.background, np.float32([0.1, 0.25, 0.45]))
    assert doc["mvp"] == mvp.tolist()  # row-major, as raster.project takes it (rows are rows)
    assert W.camera_json(perspective(45.0, 1.0, 0.1, 50.0), eye, 8, 8)["mvp"][3] == [0.0, 0.0, -1.0, 0.0]


def test_camera_json_file_defaults_and_checks(tmp_path: Path) -> None:
    mvp = np.eye(4)
    path = tmp_path / "camera.json"
    path.write_text(json.dumps(W.camera_json(mvp, [0, 0, 1], 10, 20, background=0.5)))
    for src in (path, str(path)):
        cam = W.camera_from_json(src)
        np.testing.assert_array_equal(cam.background, np.float32([0.5, 0.5, 0.5]))
        assert cam.mode is None and (cam.height, cam.width) == (10, 20)
    assert "background" not in W.camera_json(mvp, [0, 0, 1], 10, 20)
    with pytest.raises(ValueError, match="mvp"):
        W.camera_json(np.eye(3), [0, 0, 1], 10, 20)
    with pytest.raises(ValueError, match="eye"):
        W.camera_json(mvp, [0, 1], 10, 20)
    with pytest.raises(ValueError, match="mode"):
        W.camera_json(mvp, [0, 0, 1], 10, 20, mode="normals")
    with pytest.raises(ValueError, match="positive"):
        W.camera_json(mvp, [0, 0, 1], 0, 20)
    with pytest.raises(ValueError, match="finite"):
        W.camera_json(np.full((4, 4), np.nan), [0, 0, 1], 10, 20)
