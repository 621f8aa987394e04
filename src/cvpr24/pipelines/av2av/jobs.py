"""AV2AV's training jobs: one module-level function per model, each cached and resumable (core's `cached_job`),
so `train` can run them two at a time on the two cores (`core.parallel.map_jobs`) and a killed run resumes.

Stage A needs only the corpus: the unit extractor (iteration 1 on MFCC k-means targets, iteration 2 on k-means of
its own layer-3 features), the ASR evaluator, the speaker encoder, the SyncNet expert and the viseme classifier.
Stage B needs stage A's units: the unit-to-unit translator (trained on AUDIO-ONLY units: the paper's A2A training),
the unit-to-mel vocoder and the face renderer (with and without its unit branch).

Every job returns tensors and plain containers only (the cache loads with `weights_only=True`); `load_*` rebuild
the models from them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvpr24.core.training import Checkpointer, cached_job, job_key
from cvpr24.pipelines.av2av import asr as R
from cvpr24.pipelines.av2av import face as FA
from cvpr24.pipelines.av2av import features as FE
from cvpr24.pipelines.av2av import speech as SP
from cvpr24.pipelines.av2av import translate as TR
from cvpr24.pipelines.av2av import units as U
from cvpr24.pipelines.av2av.common import LANGS


def code_fingerprint() -> str:
    """Hash of the model code the cached jobs depend on (a change re-trains)."""
    import hashlib

    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in ("jobs.py", "units.py", "features.py", "translate.py", "speech.py", "asr.py", "face.py", "common.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def _run(name: str, root: str, key_parts: dict[str, Any], fit, threads: int = 1) -> dict[str, Any]:
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    t0 = time.perf_counter()
    out, cached = cached_job(root, name, job_key(**key_parts), fit)
    return {**out, "cached": bool(cached), "seconds": 0.0 if cached else round(time.perf_counter() - t0, 2),
            "name": name}


def _sub(ck: Checkpointer, name: str) -> Checkpointer:
    return Checkpointer(ck.directory / name, keep=ck.keep)


def _hist(history: list[dict[str, float]], stage: str) -> list[dict[str, Any]]:
    return [{"stage": stage, **{k: float(v) for k, v in h.items()}} for h in history]


def nearest(centres: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """k-means assignment (argmin squared distance; ties to the lower index, as sklearn)."""
    c = np.asarray(centres, np.float64)
    x = np.asarray(feats, np.float64)
    d = (x * x).sum(1, keepdims=True) - 2 * x @ c.T + (c * c).sum(1)[None]
    return d.argmin(1).astype(np.int64)


# ------------------------------------------------------------------------------------------- stage A
def job_units(a104: list, noisy: list, lips: list, mfcc: list, cfg: dict, seed: int, root: str, fp: str,
              code: str, progress: bool = False) -> dict[str, Any]:
    """Iteration 1: k-means (K) on clean-audio MFCC -> targets -> TinyAVHubert; iteration 2: k-means (K) on the
    iteration-1 model's layer features of clean AV input -> targets -> the same model trained on (warm start)."""
    c1, c2 = dict(cfg["iter1"]), {**dict(cfg["iter1"]), **dict(cfg.get("iter2") or {})}
    k = int(c1["K"])

    def fit(ck: Checkpointer) -> dict[str, Any]:
        km1 = U.fit_kmeans(np.concatenate(mfcc), k, seed)
        targets1 = [U.assign(km1, m) for m in mfcc]
        sd1, h1 = U.fit_unit_model(a104, noisy, lips, targets1, c1, seed, _sub(ck, "iter1"), progress)
        model1 = U.load_unit_model(sd1, c1)
        layer = int(cfg.get("layer", 3))
        feats = [U.upsample_features(f) for f in U.layer_features(model1, a104, lips, layer=layer)]
        km2 = U.fit_kmeans(np.concatenate(feats), k, seed + 1)
        targets2 = [U.assign(km2, f) for f in feats]
        sd2, h2 = U.fit_unit_model(a104, noisy, lips, targets2, c2, seed + 2, _sub(ck, "iter2"), progress,
                                   init_state=sd1)
        return {"state1": sd1, "state": sd2, "centres2": torch.from_numpy(np.asarray(km2.cluster_centers_)),
                "history": _hist(h1, "units_iter1") + _hist(h2, "units_iter2"),
                "target_acc": torch.tensor(float(U.unit_accuracy(
                    U.extract_units_batch(U.load_unit_model(sd2, c2), a104, lips), targets2)))}

    return _run("units", root, {"job": "units", "cfg": cfg, "seed": seed, "code": code, "data": fp}, fit)


def job_asr(mels: list, texts: list, langs: list, charset: str, cfg: dict, seed: int, root: str, fp: str,
            code: str, progress: bool = False) -> dict[str, Any]:
    """The CTC recogniser behind ASR-BLEU; a fraction of its training mels are re-analysed after mel -> Griffin-Lim,
    so the recogniser is not biased against vocoder artefacts (spec 8.7)."""
    def fit(ck: Checkpointer) -> dict[str, Any]:
        rng = np.random.default_rng(seed)
        frac = float(cfg.get("gl_fraction", 0.5))
        pick = np.flatnonzero(rng.random(len(mels)) < frac)
        ms = list(mels)
        waves = SP.griffin_lim([mels[i] for i in pick], n_iter=int(cfg.get("gl_iters", 32)), seed=seed)
        for i, w in zip(pick, waves, strict=True):
            ms[i] = FE.log_mel(w.astype(np.float32))
        model_cfg = {k: v for k, v in cfg.items() if k not in ("gl_fraction", "gl_iters", "augment")}
        sd, h = R.fit_asr(ms, texts, langs, charset, model_cfg, seed, ck, progress, augment=cfg.get("augment"))
        return {"state": sd, "history": _hist(h, "asr")}

    return _run("asr", root, {"job": "asr", "cfg": cfg, "seed": seed, "code": code, "data": fp,
                              "charset": charset}, fit)


def job_speaker(waves: list, speakers: list, cfg: dict, seed: int, root: str, fp: str, code: str,
                progress: bool = False) -> dict[str, Any]:
    def fit(ck: Checkpointer) -> dict[str, Any]:
        sd, h = SP.fit_speaker_encoder(waves, speakers, cfg, seed, ck, progress)
        return {"state": sd, "history": _hist(h, "speaker")}

    return _run("speaker", root, {"job": "speaker", "cfg": cfg, "seed": seed, "code": code, "data": fp}, fit)


def job_syncnet(faces: list, mels: list, cfg: dict, seed: int, root: str, fp: str, code: str,
                progress: bool = False) -> dict[str, Any]:
    def fit(ck: Checkpointer) -> dict[str, Any]:
        model, h = FA.fit_syncnet(faces, mels, cfg, seed, ck, progress)
        return {"state": model.state_dict(), "history": _hist(h, "syncnet")}

    return _run("syncnet", root, {"job": "syncnet", "cfg": cfg, "seed": seed, "code": code, "data": fp}, fit)


def job_viseme(frames: np.ndarray, labels: np.ndarray, cfg: dict, seed: int, root: str, fp: str, code: str,
               progress: bool = False) -> dict[str, Any]:
    def fit(ck: Checkpointer) -> dict[str, Any]:
        model, h = FA.fit_viseme_classifier(frames, labels, cfg, seed, ck, progress)
        return {"state": model.state_dict(), "history": _hist(h, "viseme")}

    return _run("viseme", root, {"job": "viseme", "cfg": cfg, "seed": seed, "code": code, "data": fp}, fit)


# ------------------------------------------------------------------------------------------- stage B
def job_translation(pairs: list, valid_pairs: list, K: int, cfg: dict, seed: int, root: str, fp: str, code: str,
                    progress: bool = False) -> dict[str, Any]:
    model_cfg = {k: v for k, v in cfg.items() if k not in ("beam",)}

    def fit(ck: Checkpointer) -> dict[str, Any]:
        sd, h = TR.fit_translation(pairs, model_cfg, seed, ck, progress, valid_pairs=valid_pairs or None, K=K)
        return {"state": sd, "history": _hist(h, "translation")}

    return _run("translation", root, {"job": "translation", "cfg": cfg, "seed": seed, "code": code, "data": fp,
                                      "K": K}, fit)


def job_vocoder(items: list, cfg: dict, seed: int, root: str, fp: str, code: str,
                progress: bool = False) -> dict[str, Any]:
    def fit(ck: Checkpointer) -> dict[str, Any]:
        sd, h = SP.fit_unit_to_mel(items, cfg, seed, ck, progress)
        return {"state": sd, "history": _hist(h, "vocoder")}

    return _run("vocoder", root, {"job": "vocoder", "cfg": cfg, "seed": seed, "code": code, "data": fp}, fit)


def job_renderer(faces: list, units: list, mels: list, sync_state: dict | None, sync_cfg: dict, cfg: dict,
                 seed: int, root: str, fp: str, code: str, progress: bool = False) -> dict[str, Any]:
    name = "renderer" if cfg.get("use_units", True) else "renderer_nounits"

    def fit(ck: Checkpointer) -> dict[str, Any]:
        sync = load_syncnet(sync_state, sync_cfg) if sync_state is not None else None
        model, h = FA.fit_face_renderer(faces, units, cfg, seed, syncnet=sync, mels=mels, checkpointer=ck,
                                        progress=progress)
        return {"state": model.state_dict(), "history": _hist(h, name)}

    return _run(name, root, {"job": name, "cfg": cfg, "sync_cfg": sync_cfg, "seed": seed, "code": code,
                             "data": fp}, fit)


# ------------------------------------------------------------------------------------------- loaders
def load_units(out: dict, cfg: dict) -> U.TinyAVHubert:
    return U.load_unit_model(out["state"], {**dict(cfg["iter1"]), **dict(cfg.get("iter2") or {})})


def load_translation(out: dict, K: int, cfg: dict) -> tuple[TR.TinyUTUT, TR.UnitVocab]:
    vocab = TR.UnitVocab(K, LANGS)
    model_cfg = {k: v for k, v in cfg.items() if k not in ("beam",)}
    model = TR.build_model(vocab, model_cfg)
    model.load_state_dict(out["state"])
    return model.eval(), vocab


def load_vocoder(out: dict, cfg: dict) -> SP.UnitToMel:
    return SP.UnitToMel.from_state_dict(out["state"]).eval()


def load_speaker(out: dict) -> SP.SpeakerEncoder:
    return SP.SpeakerEncoder.from_state_dict(out["state"]).eval()


def load_asr(out: dict, cfg: dict, charset: str) -> R.CTCRecognizer:
    c = {**R.ASR_DEFAULTS, **{k: v for k, v in cfg.items() if k in R.ASR_DEFAULTS}}
    model = R.CTCRecognizer(len(charset), len(LANGS), c["channels"], c["hidden"], c["layers"], c["dropout"],
                            c["stride"])
    model.load_state_dict(out["state"])
    return model.eval()


def load_syncnet(state: dict, cfg: dict) -> FA.MiniSyncNet:
    c = FA.validate_sync_config(cfg)
    model = FA.MiniSyncNet(c["dim"], c["width"], c["rgb"])
    model.load_state_dict(state)
    return model.eval()


def load_renderer(out: dict, cfg: dict) -> FA.MiniWav2Lip:
    c = FA.validate_render_config(cfg)
    model = FA.MiniWav2Lip(c["K"], c["d"], c["ffn"], c["dropout"], c["use_units"])
    model.load_state_dict(out["state"])
    return model.eval()


def load_viseme(out: dict, cfg: dict) -> FA.VisemeClassifier:
    c = FA.validate_viseme_config(cfg)
    model = FA.VisemeClassifier(c["feat_dim"])
    model.load_state_dict(out["state"])
    return model.eval()
