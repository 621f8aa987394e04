"""SynthTalk generator: determinism and name-derived seeds, FF++ naming and splits, marginal matching with
calmer style flow at each method's smoothed levels, real dynamics (AR, speech driver, blinks) and a renderer
whose pixels respond where the latent says they should."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cvpr24.core.validation import DataValidationError
from cvpr24.pipelines.stylegru import synth as S

SMALL = {"n_ids": 4, "split_pairs": [1, 1, 0], "n_frames": 6, "image_size": 24, "n_cross": 2}


@pytest.fixture(scope="module")
def small():
    return S.make_synthtalk(SMALL, seed=0, progress=False)


def _by_key(data):
    return {(v["dataset"], v["method"], v["name"]): v for v in data["videos"]}


# ------------------------------------------------------------------------------- determinism / seeds
def test_same_seed_same_bytes_other_seed_differs(small):
    again = _by_key(S.make_synthtalk(SMALL, seed=0, progress=False))
    other = _by_key(S.make_synthtalk(SMALL, seed=1, progress=False))
    ref = _by_key(small)
    assert ref.keys() == again.keys() and len(ref) == 4 + 4 * 4 + 4 * 4
    for k, v in ref.items():
        assert v["frames"].tobytes() == again[k]["frames"].tobytes()
        assert v["latents"].tobytes() == again[k]["latents"].tobytes()
    same = [np.array_equal(v["frames"], other[k]["frames"]) for k, v in ref.items() if k in other]
    assert not any(same)


def test_video_bytes_do_not_depend_on_how_many_videos_are_generated(small):
    bigger = _by_key(S.make_synthtalk({**SMALL, "n_ids": 6, "split_pairs": [1, 1, 1], "n_cross": 4}, 0, False))
    ref = _by_key(small)
    for key in [("ffpp", "Origin", "000"), ("ffpp", "Origin", "003"), ("cdf", "Origin", "cdf_r001"),
                ("dfd", "X-DFD", "dfd_f000"), ("dfo", "Origin", "dfo_r000")]:
        assert ref[key]["frames"].tobytes() == bigger[key]["frames"].tobytes(), key
    shared = [k for k in ref if k in bigger and k[0] == "ffpp" and k[1] != "Origin"]
    for k in shared:  # a fake i_j present in both sets is the same video
        assert np.array_equal(ref[k]["frames"], bigger[k]["frames"])


def test_stable_hash_is_crc32_not_python_hash():
    import zlib

    assert S.stable_hash("abc") == zlib.crc32(b"abc")
    a = S.real_trajectory(S.video_rng(0, "ffpp/Origin/000", 0), 8)
    b = S.real_trajectory(S.video_rng(0, "ffpp/Origin/000", 0), 8)
    c = S.real_trajectory(S.video_rng(0, "ffpp/Origin/001", 0), 8)
    assert np.array_equal(a, b) and not np.allclose(a, c)


# ------------------------------------------------------------------------------- FF++ layout
def test_ffpp_naming_splits_and_record_fields(small):
    vids, splits = small["videos"], small["splits"]
    assert json.loads(json.dumps(splits)) == splits  # FF++ pair-list JSON format
    assert [len(splits[s]) for s in ("train", "val", "test")] == SMALL["split_pairs"]
    ids = {s: {i for p in splits[s] for i in p} for s in splits}
    assert all(len(p) == 2 and all(isinstance(i, str) for i in p) for s in splits for p in splits[s])
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert set().union(*ids.values()) == {"000", "001", "002", "003"}
    ff = [v for v in vids if v["dataset"] == "ffpp"]
    reals = {v["name"]: v for v in ff if v["method"] == "Origin"}
    assert set(reals) == {"000", "001", "002", "003"} and all(v["label"] == 0 for v in reals.values())
    for s, prs in splits.items():
        for a, b in prs:
            assert reals[a]["split"] == reals[b]["split"] == s
            for m in S.TRAIN_METHODS:
                got = {v["name"]: v for v in ff if v["method"] == m}
                for tg, sr in ((a, b), (b, a)):
                    rec = got[f"{tg}_{sr}"]
                    assert (rec["target"], rec["source"], rec["label"], rec["split"]) == (tg, sr, 1, s)
    assert len([v for v in ff if v["label"] == 1]) == 4 * SMALL["n_ids"]
    for m in S.CROSS_SETS:
        ds = S.CROSS_DATASETS[m]
        cs = [v for v in vids if v["dataset"] == ds]
        assert sorted(v["label"] for v in cs) == [0, 0, 1, 1] and {v["split"] for v in cs} == {"test"}
        assert {v["method"] for v in cs} == {"Origin", m}
    for v in vids:
        assert v["frames"].shape == (6, 24, 24, 3) and v["frames"].dtype == np.uint8
        assert v["latents"].shape == (6, 9, 8) and v["latents"].dtype == np.float32


def test_fake_frames_keep_the_target_background(small):
    ref = _by_key(small)
    a, b = small["splits"]["train"][0]
    real, fake = ref[("ffpp", "Origin", a)]["frames"], ref[("ffpp", "Deepfakes", f"{a}_{b}")]["frames"]
    corner = (slice(None), slice(0, 2), slice(0, 2))
    assert np.abs(real[corner].astype(float).mean() - fake[corner].astype(float).mean()) < 4


def test_bad_config_and_inputs_raise_clear_errors():
    with pytest.raises(DataValidationError, match="split_pairs"):
        S.make_synthtalk({**SMALL, "split_pairs": [2, 1, 0]}, 0, False)
    with pytest.raises(DataValidationError, match="unknown method"):
        S.fake_trajectory("Nope", np.zeros((4, 9, 8)), np.zeros((4, 9, 8)), None)
    with pytest.raises(DataValidationError, match=r"\(T, 9, 8\)"):
        S.render(np.zeros((4, 72)), 24, np.zeros(3), np.random.default_rng(0))
    with pytest.raises(DataValidationError, match="artifact"):
        S.render(np.zeros((2, 9, 8)), 24, np.zeros(3), np.random.default_rng(0), artifact="blur")


# ------------------------------------------------------------------------------- latent statistics
def _population(pop: str, n: int = 160, T: int = 32):
    return [S.real_trajectory(S.video_rng(7, f"{pop}/Origin/r{k}", 0), T, 25.0, pop) for k in range(n)]


@pytest.fixture(scope="module")
def populations():
    return {"ffpp": _population("ffpp"), "dfd": _population("dfd")}


@pytest.mark.parametrize("method", S.TRAIN_METHODS + S.CROSS_SETS)
def test_fakes_match_real_marginals_but_calm_the_flow_at_their_levels(method, populations):
    reals = populations["dfd" if method == "X-DFD" else "ffpp"]
    fakes = [S.fake_trajectory(method, reals[k], reals[k ^ 1], None) for k in range(len(reals))]
    R, F = np.stack(reals).astype(np.float64), np.stack(fakes).astype(np.float64)
    # per-frame marginal per dim, pooled over frames and videos
    sd = R.std(axis=(0, 1))
    assert np.abs(F.mean(axis=(0, 1)) - R.mean(axis=(0, 1))).max() < 0.05 * sd.min()
    assert np.abs(F.std(axis=(0, 1)) / sd - 1).max() < 0.05
    # within-video amplitude per dim (the part smoothing would shrink without the rescale)
    assert np.abs(F.std(axis=1).mean(0) / R.std(axis=1).mean(0) - 1).max() < 0.05
    ratio = S.level_flow_std(fakes) / S.level_flow_std(reals)
    smoothed = list(S.SMOOTHED_LEVELS[method])
    untouched = [lv for lv in range(S.N_LEVELS) if lv not in smoothed]
    assert (ratio[smoothed] < 0.8).all(), (method, ratio.round(2))
    assert (ratio[untouched] >= 0.9).all(), (method, ratio.round(2))


def test_smoothing_keeps_each_dims_temporal_mean_and_std_per_video(populations):
    tgt, src = populations["ffpp"][0], populations["ffpp"][1]
    fake = S.fake_trajectory("Deepfakes", tgt, src, None)
    fine, rest = list(S.GROUPS["fine"]), list(S.GROUPS["coarse"] + S.GROUPS["middle"])
    assert np.array_equal(fake[:, rest], tgt[:, rest])
    np.testing.assert_allclose(fake[:, fine].mean(0), src[:, fine].mean(0), atol=1e-5)
    np.testing.assert_allclose(fake[:, fine].std(0), src[:, fine].std(0), rtol=1e-4)
    assert not np.allclose(fake[:, fine], src[:, fine], atol=1e-3)  # but the trajectory changed
    f2f = S.fake_trajectory("Face2Face", tgt, src, None)
    mid = list(S.GROUPS["middle"])
    np.testing.assert_allclose(f2f[:, mid].mean(0), tgt[:, mid].mean(0), atol=1e-5)  # target identity
    np.testing.assert_allclose(f2f[:, mid].std(0), src[:, mid].std(0), rtol=1e-4)  # source expression


def test_real_dynamics_ar_speech_driver_and_blinks():
    reals = np.stack(_population("ffpp", n=120, T=64)).astype(np.float64)
    r = reals - reals.mean(1, keepdims=True)
    lag1 = (r[:, 1:] * r[:, :-1]).sum((0, 1)) / (r**2).sum((0, 1))  # (9, 8)
    assert lag1[list(S.GROUPS["coarse"])].mean() > 0.75 and lag1[list(S.GROUPS["fine"])].mean() < 0.6
    # speech: the mouth-opening direction carries 3-6 Hz power the other level-3 directions lack
    proj = np.einsum("ntj,kj->ntk", r[:, :, 3], S.MIX[3])  # pre-activations of level-3 params
    spec = (np.abs(np.fft.rfft(proj, axis=1)) ** 2).mean(0)
    freqs = np.fft.rfftfreq(64, 1 / 25.0)
    band = (freqs >= 2.5) & (freqs <= 6.5)
    share = spec[band].sum(0) / spec[1:].sum(0)
    k_open = S.PARAM_NAMES[3].index("mouth_open")
    assert share[k_open] > 1.5 * np.delete(share, k_open).max()
    # blinks: ~Poisson(0.3/s) -> P(at least one in 64 frames) = 1 - exp(-0.768) ~ 0.54; 3-frame closures
    eye = np.einsum("ntj,j->nt", r[:, :, 4], S.MIX[4][S.PARAM_NAMES[4].index("eye_open")])
    dip = eye - np.median(eye, axis=1, keepdims=True)
    frac = (dip < -2.0).any(1).mean()
    assert 0.35 < frac < 0.75
    assert (dip < -2.0).sum() / (0.3 * 64 / 25 * len(eye)) < 3.5  # about 3 frames per blink, not more
    opened = np.stack([S.latent_to_params(v)["eye_open"] for v in reals.astype(np.float32)])
    shut = opened[dip < -3.2]  # a blink's middle frame has the eyes (nearly) shut
    assert np.quantile(shut, 0.9) < 0.08 and shut.max() < 0.2 and np.median(opened) > 0.3


def test_dfd_population_is_shifted_and_moves_more(populations):
    ff, dfd = np.stack(populations["ffpp"]), np.stack(populations["dfd"])
    assert abs(dfd.mean() - 0.3) < 0.08 and abs(ff.mean()) < 0.08
    base_sd = dfd.mean(1).std(0).mean()
    assert 0.8 < base_sd < 1.0  # sqrt(0.8) = 0.89
    coarse = list(S.GROUPS["coarse"])
    assert (S.level_flow_std(list(dfd))[coarse] / S.level_flow_std(list(ff))[coarse]).min() > 1.4


# ------------------------------------------------------------------------------- renderer
def _draw(lat, size=48):
    img, masks = S._draw(S.latent_to_params(lat), size, np.full(3, 90.0, np.float32), None)
    return img.transpose(1, 2, 3, 0), masks


def test_render_shape_dtype_and_noise():
    lat = S.real_trajectory(np.random.default_rng(0), 5)
    bg = S.random_background(np.random.default_rng(1), 32)
    a = S.render(lat, 32, bg, np.random.default_rng(2))
    b = S.render(lat, 32, bg, np.random.default_rng(3))
    c = S.render(lat, 32, bg, np.random.default_rng(3), noise_sigma=0.0)
    assert a.shape == (5, 32, 32, 3) and a.dtype == np.uint8
    assert 2.0 < (a.astype(float) - c).std() < 4.0 and not np.array_equal(a, b)


def test_mouth_latent_moves_mouth_pixels_eye_latent_moves_eye_pixels_light_moves_everything():
    base = np.zeros((1, 9, 8), np.float32)
    mouth = base.copy()
    mouth[0, 3] += 2.0 * S.MIX[3][S.PARAM_NAMES[3].index("mouth_open")]
    eyes = base.copy()
    eyes[0, 4] -= 3.0 * S.MIX[4][S.PARAM_NAMES[4].index("eye_open")]
    light = base.copy()
    light[0, 7] += 2.0 * S.MIX[7][S.PARAM_NAMES[7].index("light_x")]
    img0, masks = _draw(base)
    region = np.maximum(masks["mouth"], _draw(mouth)[1]["mouth"])[0] > 0
    d_mouth = np.abs(_draw(mouth)[0] - img0).sum(-1)[0]
    d_eyes = np.abs(_draw(eyes)[0] - img0).sum(-1)[0]
    d_light = np.abs(_draw(light)[0] - img0).sum(-1)[0]
    assert d_mouth.sum() > 500 and d_mouth[region].sum() > 0.9 * d_mouth.sum()
    assert d_eyes.sum() > 300 and d_eyes[region].sum() < 0.05 * d_eyes.sum()
    rows = np.nonzero(d_eyes.sum(1))[0]
    assert rows.max() < 24  # eyes sit in the upper half
    head = masks["head"][0] > 0.5
    assert (d_light[head] > 3).mean() > 0.5  # lighting is global over the face
    assert (d_light[~(masks["fg"][0] > 0)] == 0).all()  # ... and leaves the background alone


def test_every_level_changes_the_picture():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((1, 9, 8)).astype(np.float32)
    img0 = _draw(base)[0]
    for lv in range(S.N_LEVELS):
        for k in range(S.LEVEL_DIM):
            lat = base.copy()
            lat[0, lv, k] += 1.0
            assert np.abs(_draw(lat)[0] - img0).max() > 2.0, (lv, k)


def test_artifacts_are_weak_local_and_distinct():
    lat = S.real_trajectory(np.random.default_rng(4), 3)
    bg = np.full(3, 100.0, np.float32)
    clean = S.render(lat, 48, bg, np.random.default_rng(0), noise_sigma=0).astype(float)
    diffs = {}
    for art in ("seam", "hue", "mouth_blur", "checker"):
        out = S.render(lat, 48, bg, np.random.default_rng(0), artifact=art, noise_sigma=0).astype(float)
        d = np.abs(out - clean)
        assert 0 < d.mean() < 2.0, art
        assert (d[:, :3, :3] == 0).all(), art  # corners (background) untouched
        diffs[art] = d.sum(-1) > 0
    for a in diffs:
        for b in diffs:
            if a < b:
                assert not np.array_equal(diffs[a], diffs[b])
    jpeg = S.render(lat, 48, bg, np.random.default_rng(0), jpeg_quality=60, noise_sigma=0).astype(float)
    assert 0 < np.abs(jpeg - clean).mean() < 6
    jit = S.render(lat, 48, bg, np.random.default_rng(0), colour_jitter=0.05, noise_sigma=0).astype(float)
    gains = jit.mean((1, 2)) / clean.mean((1, 2))  # (T, 3) per-frame colour gains
    assert gains.std(0).max() > 0.01


def test_random_frames_follow_the_real_per_frame_marginal(populations):
    frames, lat = S.render_random_frames(300, 24, np.random.default_rng(0))
    assert frames.shape == (300, 24, 24, 3) and frames.dtype == np.uint8 and lat.shape == (300, 9, 8)
    real = np.stack(populations["ffpp"]).reshape(-1, 9, 8)
    sd_ratio = lat.std(axis=(0, 2)) / real.std(axis=(0, 2))
    assert np.abs(sd_ratio - 1).max() < 0.1 and np.abs(lat.mean()) < 0.05
    again = S.render(lat[:4], 24, np.zeros(3), np.random.default_rng(0), noise_sigma=0)
    head = (S._draw(S.latent_to_params(lat[:4]), 24, np.zeros(3), None)[1]["fg"] > 0.99)
    assert np.abs(again.astype(float) - frames[:4])[head].mean() < 6  # same face, own noise/background
