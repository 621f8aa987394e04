"""AV2AV's train phase: every model, cached and resumable, two at a time on one thread each (jobs.py).

Stage A needs only the corpus (unit extractor, ASR, speaker encoder, SyncNet, viseme classifier); stage B needs
stage A's units: the translator on AUDIO-ONLY units (the paper's A2A training), the unit-to-mel vocoder on
audio-visual units with the speaker encoder's embeddings, and the face renderer with and without its unit branch.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch

from cvpr24.core.provenance import fingerprint_arrays
from cvpr24.core.seeding import derive_seed
from cvpr24.core.tracking import log_history_to_active_run
from cvpr24.pipelines.av2av import jobs as J
from cvpr24.pipelines.av2av.common import dedup

log = logging.getLogger(__name__)


def _idx(mi: dict[str, Any], split: str) -> np.ndarray:
    return np.flatnonzero(mi["meta"]["split"].to_numpy() == split)


def face_windows(mi: dict[str, Any], ids: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    pos = {s: i for i, s in enumerate(mi["meta"]["sample_id"])}
    return [mi["faces"][s] for s in ids], [mi["mel"][pos[s]] for s in ids]


def train(model_input: dict[str, Any], train: dict[str, Any], runtime: dict[str, Any]):
    """Every model (cached, resumable), stage A then stage B, two jobs at a time on one thread each."""
    from cvpr24.core.parallel import map_jobs
    from cvpr24.pipelines.av2av import corpus as C

    torch.set_num_threads(int(runtime.get("threads", 2)))
    torch.use_deterministic_algorithms(True, warn_only=True)
    mi = model_input
    seed, progress = int(runtime["seed"]), bool(runtime.get("progress", True))
    workers = int(train.get("workers", 2))
    root, code, fp = str(train["checkpoint_dir"]), J.code_fingerprint(), mi["fingerprint"]
    meta = mi["meta"]
    tr, va = _idx(mi, "train"), _idx(mi, "valid")
    face_ids = sorted(s for s in mi["faces"] if meta.set_index("sample_id").loc[s, "split"] == "train")
    faces, face_mels = face_windows(mi, face_ids)
    common = {"root": root, "fp": fp, "code": code, "progress": progress and workers == 1}
    stage_a = [
        (J.job_units, {"a104": [mi["a104"][i] for i in tr], "noisy": mi["noisy_train"],
                       "lips": [mi["lip"][i] for i in tr], "mfcc": [mi["mfcc"][i] for i in tr],
                       "cfg": dict(train["units"]), "seed": derive_seed(seed, "units")}),
        (J.job_speaker, {"waves": [mi["audio"][i] for i in tr], "speakers": meta.loc[tr, "speaker"].tolist(),
                         "cfg": dict(train["speaker"]), "seed": derive_seed(seed, "speaker")}),
        (J.job_syncnet, {"faces": faces, "mels": face_mels, "cfg": dict(train["syncnet"]),
                         "seed": derive_seed(seed, "syncnet")}),
    ]
    if all(s in mi["visemes"] for s in face_ids):
        stage_a.append((J.job_viseme, {"frames": np.concatenate(faces),
                                       "labels": np.concatenate([mi["visemes"][s] for s in face_ids]),
                                       "cfg": dict(train["viseme"]), "seed": derive_seed(seed, "viseme")}))
    outs = _map(map_jobs, stage_a, common, workers, "av2av: train stage A", progress)
    models = {o["name"]: o for o in outs}
    # stage A's units: audio-only (the translator's A2A training pairs) and audio-visual (vocoder, renderer)
    unit_model = J.load_units(models["units"], train["units"])
    trva = np.concatenate([tr, va])
    a_units = J.U.extract_units_batch(unit_model, [mi["a104"][i] for i in trva], None)
    av_units = J.U.extract_units_batch(unit_model, [mi["a104"][i] for i in trva], [mi["lip"][i] for i in trva])
    a_units = dict(zip(meta.loc[trva, "sample_id"], a_units, strict=True))
    av_units = dict(zip(meta.loc[trva, "sample_id"], av_units, strict=True))
    spk_model = J.load_speaker(models["speaker"])
    spk = J.SP.embed_speakers(spk_model, [mi["audio"][i] for i in tr])
    k = int(train["units"]["iter1"]["K"])
    pairs = {s: translation_pairs(meta, np.asarray(idx), a_units) for s, idx in (("train", tr), ("valid", va))}
    voc_items = [{"units50": av_units[meta.loc[i, "sample_id"]], "mel": mi["mel"][i], "spk_emb": spk[j],
                  "lang": meta.loc[i, "lang"]} for j, i in enumerate(tr)]
    face_units = [av_units[s] for s in face_ids]
    rcfg = dict(train["renderer"])
    # stage B's inputs come from stage A's models: its cache keys hold their fingerprint, so a re-trained unit
    # extractor or speaker encoder re-trains everything downstream (the ASR alone reads only the corpus)
    fp_b = fingerprint_arrays({**{f"a:{k}": v for k, v in a_units.items()}, **{f"av:{k}": v for k, v in av_units.items()},
                               "spk": spk, "sync": np.concatenate([v.numpy().ravel() for v in
                                                                   models["syncnet"]["state"].values()])})
    common_b = {**common, "fp": f"{fp}:{fp_b}"}
    stage_b = [   # the longest first: the pool hands the next job to whichever worker is free
        (J.job_translation, {"pairs": pairs["train"], "valid_pairs": pairs["valid"], "K": k,
                             "cfg": dict(train["translation"]), "seed": derive_seed(seed, "translation")}),
        (J.job_asr, {"mels": [mi["mel"][i] for i in tr],
                     "texts": [C.normalize_text(meta.loc[i, "text"]) for i in tr],
                     "langs": meta.loc[tr, "lang"].tolist(), "charset": C.CHARSET, "cfg": dict(train["asr"]),
                     "seed": derive_seed(seed, "asr"), "fp": fp}),   # reads the corpus only
        (J.job_vocoder, {"items": voc_items, "cfg": {**dict(train["vocoder"]), "n_units": k},
                         "seed": derive_seed(seed, "vocoder")}),
        (J.job_renderer, {"faces": faces, "units": face_units, "mels": face_mels,
                          "sync_state": models["syncnet"]["state"], "sync_cfg": dict(train["syncnet"]),
                          "cfg": {**rcfg, "K": k}, "seed": derive_seed(seed, "renderer")}),
        (J.job_renderer, {"faces": faces, "units": face_units, "mels": face_mels,
                          "sync_state": models["syncnet"]["state"], "sync_cfg": dict(train["syncnet"]),
                          "cfg": {**rcfg, "K": k, "use_units": False}, "seed": derive_seed(seed, "renderer")}),
    ]
    for o in _map(map_jobs, stage_b, common_b, workers, "av2av: train stage B", progress):
        models[o["name"]] = o
    log_rows, history = [], []
    for name, o in models.items():
        log_rows.append({"job": name, "cached": o["cached"], "seconds": o["seconds"]})
        history.extend({"job_id": name, **h} for h in o.get("history", []))
    train_log = pd.DataFrame(log_rows)
    log.info("av2av train: %d jobs (%d cached), %.0f s", len(train_log), int(train_log["cached"].sum()),
             float(train_log["seconds"].sum()))
    log_history_to_active_run([{k: v for k, v in h.items() if k in ("job_id", "step", "loss")} for h in history],
                              prefix="loss")
    hist = pd.DataFrame(history)
    for col in ("job_id", "stage", "step", "loss"):
        if col not in hist:
            hist[col] = np.nan
    keep = {n: {k: v for k, v in o.items() if k not in ("history",)} for n, o in models.items()}
    return keep, train_log, hist


def _map(map_jobs, specs, common, workers, desc, progress):
    jobs = [{"fn": fn, "kwargs": {**common, **kw}} for fn, kw in specs]   # a spec's own key (fp) wins
    return map_jobs(_call, jobs, workers=workers, threads=workers, desc=desc, progress=progress)


def _call(fn, kwargs):
    return fn(**kwargs)


def translation_pairs(meta: pd.DataFrame, idx: np.ndarray, units: dict[str, np.ndarray]) -> list[tuple]:
    """Every ordered pair of different languages of the same sentence tuple: (src units, src, tgt units, tgt)."""
    sub = meta.loc[idx]
    pairs = []
    for _tid, grp in sub.groupby("tuple_id", sort=True):
        rows = grp.sort_values("lang").to_dict("records")
        for a in rows:
            for b in rows:
                if a["lang"] != b["lang"]:
                    pairs.append((dedup(units[a["sample_id"]]), a["lang"], dedup(units[b["sample_id"]]),
                                  b["lang"]))
    return pairs


