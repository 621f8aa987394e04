"""LTM's browser viewer (cvpr24.pipelines.ltm.webviewer, spec 2.5) in headless Chromium (WebGL 2 through
SwiftShader): a small two-cascade asset written by mesh.export_viewer is served on 127.0.0.1 with
`python -m http.server`, the page renders a fixed camera, and its pixels are compared with the torch reference
mesh.render_viewer of the same files. The textures are sharp and asymmetric (a flipped v or swapped u / v
changes most pixels) and the MLP's specular term is large and view-dependent; the test first checks that
the reference itself tells those mistakes apart. A missing mlp.json must give a clear error on the page."""

from __future__ import annotations

import base64
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cvpr24.pipelines.ltm import mesh as M
from cvpr24.pipelines.ltm.raster import look_at, perspective
from cvpr24.pipelines.ltm.webviewer import camera_json, write_viewer_page
from tests.conftest import serve
from tests.ops.conftest import offline_page

pytestmark = pytest.mark.ops

WIDTH, HEIGHT = 160, 120  # not square: a swapped width / height shows
BACKGROUND = (0.1, 0.25, 0.45)
EYE = (2.3, 1.3, 3.1)
HIDDEN = 32


# ------------------------------------------------------------------------------------------------ the asset
def _blocks(h: int, w: int, block: int, seed: int, lo: float, hi: float) -> np.ndarray:
    """(h, w, 3) uint8: constant blocks of random colours in [lo, hi], plus a bright bar along the top rows and
    a dark one down the left columns (so a flipped v or a swapped u / v moves them)."""
    rng = np.random.default_rng(seed)
    cells = rng.uniform(lo, hi, ((h + block - 1) // block, (w + block - 1) // block, 3))
    img = np.repeat(np.repeat(cells, block, 0), block, 1)[:h, :w]
    img[: h // 6] = [hi, hi * 0.9, lo]
    img[:, : w // 8] = [lo, lo, hi]
    return (img * 255).astype(np.uint8)


def _sphere(n_lat: int = 10, n_lon: int = 16, radius: float = 0.8):
    """A UV sphere: positions shared across the seam, equirectangular vt (v up = north) duplicated there."""
    lat = np.linspace(-np.pi / 2, np.pi / 2, n_lat + 1)
    lon = np.linspace(0, 2 * np.pi, n_lon + 1)
    verts = [[0.0, -radius, 0.0]]
    for la in lat[1:-1]:
        for lo in lon[:-1]:
            verts.append([radius * np.cos(la) * np.cos(lo), radius * np.sin(la), radius * np.cos(la) * np.sin(lo)])
    verts.append([0.0, radius, 0.0])
    uu, vv = np.meshgrid(lon / (2 * np.pi), (lat + np.pi / 2) / np.pi)
    uvs = np.stack([uu.ravel(), vv.ravel()], 1)

    def vi(i: int, j: int) -> int:  # latitude ring i, longitude j
        if i == 0:
            return 0
        if i == n_lat:
            return len(verts) - 1
        return 1 + (i - 1) * n_lon + j % n_lon

    def ti(i: int, j: int) -> int:
        return i * (n_lon + 1) + j

    faces, uv_faces = [], []
    for i in range(n_lat):
        for j in range(n_lon):
            quad = [(i, j), (i, j + 1), (i + 1, j + 1), (i + 1, j)]
            for tri in ((0, 1, 2), (0, 2, 3)):
                corners = [quad[k] for k in tri]
                ids = [vi(*c) for c in corners]
                if len(set(ids)) < 3:  # the pole's degenerate half
                    continue
                faces.append(ids)
                uv_faces.append([ti(*c) for c in corners])
    return (np.asarray(verts, np.float32) + np.float32([0.0, 0.1, 0.0]), np.asarray(faces, np.int64),
            uvs.astype(np.float32), np.asarray(uv_faces, np.int64))


def _ground(n: int = 6, extent: float = 6.0, y: float = -0.75):
    s = np.linspace(-extent, extent, n + 1)
    xx, zz = np.meshgrid(s, s)
    verts = np.stack([xx.ravel(), np.full(xx.size, y), zz.ravel()], 1).astype(np.float32)
    uvs = np.stack([(xx.ravel() + extent) / (2 * extent), (zz.ravel() + extent) / (2 * extent)], 1)
    faces = []
    for i in range(n):
        for j in range(n):
            a, b, c, d = i * (n + 1) + j, i * (n + 1) + j + 1, (i + 1) * (n + 1) + j + 1, (i + 1) * (n + 1) + j
            faces += [[a, b, c], [a, c, d]]
    f = np.asarray(faces, np.int64)
    return verts, f, uvs.astype(np.float32), f.copy()


def make_asset(folder: Path) -> Path:
    """Two cascades (sphere: 288 faces, ground: 72 faces), kd in [0, 0.45] (little clamping), random ks, and an
    H = 32 MLP whose specular term (mean ~0.45, spread ~0.13 per channel here) varies with the view direction and
    ks; about 7 % of the full render's foreground channels clamp at 1."""
    sv, sf, st, stf = _sphere()
    gv, gf, gt, gtf = _ground()
    cascades = [
        M.TexturedCascade(sv, sf, st, stf, _blocks(48, 96, 6, 1, 0.0, 0.45), _blocks(40, 72, 4, 2, 0.0, 1.0)),
        M.TexturedCascade(gv, gf, gt, gtf, _blocks(36, 64, 4, 3, 0.0, 0.45), _blocks(64, 48, 8, 4, 0.0, 1.0)),
    ]
    g = torch.Generator().manual_seed(2)
    weights = {"net.0.weight": torch.randn(HIDDEN, 6, generator=g) * 1.5,
               "net.1.weight": torch.randn(3, HIDDEN, generator=g) * 0.2}
    M.export_viewer(folder, cascades, weights, bound=8.0)
    write_viewer_page(folder)
    return folder


def fixed_camera():
    mvp = perspective(45.0, WIDTH / HEIGHT, 0.1, 50.0) @ look_at(EYE, (0.0, -0.15, 0.0))
    return mvp, EYE


# ------------------------------------------------------------------------------------------------ helpers
def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def to_u8(img: torch.Tensor) -> np.ndarray:
    return np.clip(np.rint(img.numpy() * 255.0), 0, 255).astype(np.uint8)


def snapshot(page) -> np.ndarray:
    from PIL import Image

    url = page.evaluate("document.getElementById('view').toDataURL('image/png')")
    img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    return np.asarray(img.convert("RGB"))


@pytest.fixture(scope="module")
def asset(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return make_asset(tmp_path_factory.mktemp("ltm_viewer") / "asset")


def _http_server(folder: Path, log: Path):
    return serve(lambda port: [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "-d", str(folder)], "/index.html", log, timeout=30)


def _open(browser, url: str, width: int = 320, height: int = 240):
    page = offline_page(browser, width, height)
    page.set_default_timeout(20_000)
    messages: list[str] = []
    page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
    page.goto(url)
    page.wait_for_function("window.viewerReady === true || window.viewerError !== null")
    return page, messages


# ------------------------------------------------------------------------------------------------ tests
def test_browser_render_matches_torch_reference(asset: Path, browser, tmp_path: Path) -> None:
    mvp, eye = fixed_camera()
    cam = camera_json(mvp, eye, HEIGHT, WIDTH, background=BACKGROUND)
    (asset / "camera.json").write_text(json.dumps(cam))

    loaded = M.load_viewer(asset)
    ref = {mode: to_u8(M.render_viewer(loaded, mvp, eye, HEIGHT, WIDTH, background=BACKGROUND, mode=mode))
           for mode in ("full", "specular", "diffuse")}
    # the reference tells the mistakes apart: the specular term, a flipped v, enough of both cascades in view
    assert psnr(ref["full"], ref["diffuse"]) < 15
    flipped = M.load_viewer(asset)
    for cas in flipped.cascades:
        cas.uvs = cas.uvs * np.float32([1, -1]) + np.float32([0, 1])
    assert psnr(ref["full"], to_u8(M.render_viewer(flipped, mvp, eye, HEIGHT, WIDTH, background=BACKGROUND))) < 22
    bg = np.rint(np.asarray(BACKGROUND) * 255).astype(np.uint8)
    is_bg = np.all(ref["full"] == bg, -1)
    assert 0.1 < is_bg.mean() < 0.6  # sky above the ground plane, sphere and ground below

    with _http_server(asset, tmp_path / "http.log") as url:
        page, messages = _open(browser, f"{url}/index.html?camera=camera.json")
        assert page.evaluate("window.viewerError") is None, (page.evaluate("window.viewerError"), messages)
        got = {"full": snapshot(page)}
        for mode in ("specular", "diffuse"):
            page.evaluate("cam => window.renderView(cam)", {**cam, "mode": mode})
            assert page.evaluate("window.viewerReady") is True
            got[mode] = snapshot(page)
        bad_cam = {"mvp": [[1, 0], [0, 1]], "eye": [0, 0, 0], "width": 4, "height": 4}
        err = page.evaluate("cam => window.renderView(cam).then(() => null, e => e.message)", bad_cam)
        assert err is not None and "mvp" in err and page.evaluate("window.viewerError") == err
        page.close()

    out = {}
    for mode, img in got.items():
        assert img.shape == (HEIGHT, WIDTH, 3), img.shape
        diff = np.abs(img.astype(np.int16) - ref[mode].astype(np.int16)).max(-1)
        out[mode] = (psnr(img, ref[mode]), float((diff > 3).mean()))
    print("browser vs torch (PSNR dB, fraction of pixels off by > 3 grey levels):", out)
    if os.environ.get("LTM_VIEWER_DUMP"):  # a folder: browser | torch side by side, per mode
        from PIL import Image

        for mode in got:
            Image.fromarray(np.concatenate([got[mode], ref[mode]], 1)).save(Path(os.environ["LTM_VIEWER_DUMP"])
                                                                             / f"ltm_viewer_{mode}.png")
    for mode, (p, bad) in out.items():
        # measured (Chromium 156, SwiftShader): PSNR 35.9 / 39.1 / 41.2 dB (full / specular / diffuse), 1.3-1.6 %
        # of pixels off by > 3. Those are the silhouettes (the torch renderer antialiases them, the page does not)
        # and isolated pixels whose vt lies within a few thousandths of a texel of a texel border (measured; GPUs
        # address textures with limited sub-texel precision, so NEAREST may pick the neighbour). LINEAR instead of
        # NEAREST still gives ~31 dB but ~45 % of pixels off: the fraction is the sharper check.
        assert p >= 30.0, (mode, out, messages)
        assert bad <= 0.03, (mode, out, messages)


def test_missing_mlp_json_is_reported(asset: Path, browser, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in asset.iterdir():
        if f.name not in ("mlp.json", "camera.json"):
            (broken / f.name).write_bytes(f.read_bytes())
    with _http_server(broken, tmp_path / "http.log") as url:
        page, _ = _open(browser, f"{url}/index.html")
        err = page.evaluate("window.viewerError")
        assert err is not None and "mlp.json" in err and "404" in err, err
        assert page.evaluate("window.viewerReady") is False
        assert page.locator("#error").is_visible()
        assert "mlp.json" in page.locator("#error").inner_text()
        page.close()


def test_orbit_mode_draws_and_follows_the_mouse(asset: Path, browser, tmp_path: Path) -> None:
    """Without ?camera= the page is the interactive viewer: it fills the window, draws the asset (not just the
    background) and a mouse drag (orbit) or the wheel (zoom) changes the picture."""
    with _http_server(asset, tmp_path / "http.log") as url:
        page, messages = _open(browser, f"{url}/index.html")
        assert page.evaluate("window.viewerError") is None, (page.evaluate("window.viewerError"), messages)
        assert "2 cascade(s), 360 triangles, H = 32" in page.locator("#hud").inner_text()
        before = snapshot(page)
        assert before.shape == (240, 320, 3)
        assert len(np.unique(before.reshape(-1, 3), axis=0)) > 50  # textured, not a cleared canvas
        next_frame = "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
        page.mouse.move(160, 120)
        page.mouse.down()
        page.mouse.move(220, 140, steps=2)
        page.mouse.up()
        page.evaluate(next_frame)
        dragged = snapshot(page)
        assert np.mean(np.abs(dragged.astype(int) - before.astype(int)).max(-1) > 10) > 0.2
        page.mouse.wheel(0, 400)
        page.evaluate(next_frame)
        zoomed = snapshot(page)
        assert np.mean(np.abs(zoomed.astype(int) - dragged.astype(int)).max(-1) > 10) > 0.2
        assert page.evaluate("window.viewerError") is None
        page.close()
