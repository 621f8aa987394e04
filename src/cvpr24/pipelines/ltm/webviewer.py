"""LTM's browser viewer (spec 2.5): a static page that draws an exported asset (:func:`.mesh.export_viewer`'s
``mesh_<c>.obj`` / ``.mtl``, ``feat0_<c>.jpg``, ``feat1_<c>.jpg``, ``mlp.json``) with plain WebGL 2 and no
external library, so it works offline and from any static server.

The page (``viewer/index.html`` + ``viewer/viewer.js`` beside this module) evaluates exactly
:func:`.mesh.viewer_shade` in its fragment shader: ``clamp(k_d + sigmoid(relu([d, k_s] W0) W1), 0, 1)``, W0 =
``net.0.weight`` (6 x H), W1 = ``net.1.weight`` (H x 3) as stored, no biases, d the unit vector from the camera
centre to the fragment, NEAREST texels with clamp to edge and no mipmaps, every cascade in one depth buffer,
double-sided, opaque, no antialiasing. It follows :mod:`.raster`'s conventions (OpenGL clip space ``clip = [x, y,
z, 1] @ mvp.T``, row 0 at the top, OBJ ``vt`` with v up), so a fixed camera renders what
:func:`.mesh.render_viewer` renders, apart from the torch renderer's analytic antialiasing on silhouettes and
rasterisation ties (tests/ops/test_ltm_viewer.py compares the two).

Use::

    write_viewer_page("data/.../ltm_viewer")               # index.html + viewer.js into the exported folder
    python -m http.server -d data/.../ltm_viewer --bind 127.0.0.1 8000
    # open http://127.0.0.1:8000/ : left drag orbits, right (or shift) drag pans, the wheel zooms,
    # keys 1 / 2 / 3 show full / diffuse / specular shading, r resets the view

(``file://`` does not work: browsers refuse ``fetch`` of local files.) URL parameters: ``?mode=full|diffuse|
specular``; ``?up=0,-1,0`` the orbit's up axis (default +y); ``?base=<url of a folder>`` to load an asset from
another folder than the page's; ``?camera=<url of a json>`` renders exactly one camera instead of the orbit
(:func:`camera_json` writes that json; the page then sets ``window.viewerReady = true``). The page also defines
``window.renderView(camera)`` (a promise) for scripts and tests, and sets ``window.viewerError`` (a string, also
shown on the page) when anything fails: a missing file, an invalid ``mlp.json``, no WebGL 2.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

VIEWER_FILES = ("index.html", "viewer.js")
MODES = ("full", "diffuse", "specular")


def viewer_files() -> dict[str, bytes]:
    """The page's files by name (read from the package: ``cvpr24/pipelines/ltm/viewer/``)."""
    root = resources.files("cvpr24.pipelines.ltm").joinpath("viewer")
    return {name: root.joinpath(name).read_bytes() for name in VIEWER_FILES}


def write_viewer_page(folder: str | Path) -> Path:
    """Copy the viewer page (``index.html``, ``viewer.js``) into an exported asset folder (existing files of
    those names are replaced; nothing else is touched). Returns the path of ``index.html``. Serve the folder
    over http to view it (module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder (expected an exported viewer asset: mesh.export_viewer)")
    for name, data in viewer_files().items():
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(folder / name)
    return folder / "index.html"


def _floats(values: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=np.float32)
    if arr.shape != shape:
        raise ValueError(f"{what} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} must be finite")
    return arr


def camera_json(mvp: Any, eye: Any, height: int, width: int, *, background: Sequence[float] | float | None = None,
                mode: str | None = None) -> dict[str, Any]:
    """A camera for the page's test mode (``?camera=<url>`` or ``window.renderView``) as a JSON-ready dict:
    ``mvp`` the 4 x 4 row-major clip matrix of :func:`.raster.project` (the one :func:`.mesh.render_viewer`
    takes), ``eye`` the camera centre (world), the canvas ``width`` x ``height`` in pixels, optionally the
    ``background`` RGB in [0, 1] (a scalar is grey) and the shading ``mode``. Values are float32 (what both
    renderers use), written exactly: ``json.dumps`` / ``json.loads`` and :func:`camera_from_json` give them
    back bit for bit."""
    doc: dict[str, Any] = {
        "mvp": _floats(mvp, (4, 4), "mvp").tolist(),
        "eye": _floats(eye, (3,), "eye").tolist(),
        "width": int(width),
        "height": int(height),
    }
    if doc["width"] < 1 or doc["height"] < 1:
        raise ValueError(f"width and height must be positive, got {width} x {height}")
    if background is not None:
        bg = np.broadcast_to(np.asarray(background, dtype=np.float32), (3,))
        doc["background"] = _floats(bg, (3,), "background").tolist()
    if mode is not None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        doc["mode"] = mode
    return doc


@dataclass
class ViewerCamera:
    """A camera read back from :func:`camera_json`'s dict (or its JSON text / file)."""

    mvp: np.ndarray  # (4, 4) float32, row-major
    eye: np.ndarray  # (3,) float32
    height: int
    width: int
    background: np.ndarray | None  # (3,) float32 or None
    mode: str | None


def camera_from_json(doc: Mapping[str, Any] | str | Path) -> ViewerCamera:
    """Read a camera written by :func:`camera_json`: the dict itself, its JSON text, or a path to a json file."""
    if isinstance(doc, Path) or (isinstance(doc, str) and not doc.lstrip().startswith("{")):
        doc = json.loads(Path(doc).read_text())
    elif isinstance(doc, str):
        doc = json.loads(doc)
    bg = doc.get("background")
    return ViewerCamera(
        mvp=_floats(doc["mvp"], (4, 4), "mvp"),
        eye=_floats(doc["eye"], (3,), "eye"),
        height=int(doc["height"]),
        width=int(doc["width"]),
        background=None if bg is None else _floats(bg, (3,), "background"),
        mode=doc.get("mode"),
    )

